"""The transport to one ComfyUI server: its HTTP calls and its websocket.

:class:`ComfyUIClient` makes every call :class:`~abby_core.generation.comfyui.ComfyUIProvider`
sends. httpx, websockets and socket errors stop here and become :mod:`abby_core.errors`
classes (``raise ... from exc``); HTTP statuses go through
:func:`~abby_core.generation._status.error_for_status`, except 401/403, which come from a
proxy's auth header. A connection that cannot be opened before the job's ``POST /prompt``
was sent (``before_job``) is :class:`~abby_core.errors.ProviderUnreachable`: no job exists.

The websocket is the ``websockets`` library's client, on its own connection (the injected
httpx ``transport`` carries only the HTTP calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from abby_core.errors import (
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    ProviderAuthError,
    ProviderUnreachable,
)
from abby_core.generation._http import LIMITS, ClientPool, json_object, shown_url
from abby_core.generation._status import OWNER, error_for_status
from abby_core.images import sniff_format

__all__ = ["UPLOAD_SUBFOLDER", "ComfyUIClient"]

log = logging.getLogger("abby.generation.comfyui")

UPLOAD_SUBFOLDER = "abby"
_MAX_MESSAGE = 32 * 1024 * 1024  # previews are small; anything larger is not ComfyUI talking


class ComfyUIClient:
    """HTTP calls and the websocket to the server at ``url`` (already checked, without trailing slash).

    ``headers`` go with every request, the websocket included; ``secret`` (the auth header's
    value) is kept out of every message. One call is never retried (a second
    ``POST /prompt`` would queue the job twice).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        secret: str | None,
        auth_name: str,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.shown_url = shown_url(url)
        self._headers = headers
        self._secret = secret
        self._auth_name = auth_name
        self._timeout = timeout
        self._pool = ClientPool(
            "The ComfyUI client is closed (the bot is shutting down).",
            base_url=url, headers=headers, timeout=timeout, limits=LIMITS, transport=transport,
        )
        self._queue_lock = asyncio.Lock()
        self._queue_copy: tuple[float, dict[str, Any]] | None = None

    def secrets(self) -> tuple[str, ...]:
        return (self._secret,) if self._secret else ()

    async def aclose(self) -> None:
        await self._pool.aclose()

    # -- HTTP --------------------------------------------------------------------------

    async def call(
        self, method: str, path: str, *, check: bool = True, before_job: bool = False, **kw: Any
    ) -> httpx.Response:
        """One HTTP call, never retried. ``before_job``: no prompt of this job was sent yet."""
        with self.translated(before_job=before_job):
            response = await self._pool.get().request(method, path, **kw)
        if check:
            self.check(response)
        return response

    async def call_json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """:meth:`call`, and the answer's JSON object (``{}`` when it has none)."""
        return json_object(await self.call(method, path, **kw))

    def check(self, response: httpx.Response) -> None:
        if not response.is_success:
            raise self.status_error(response.status_code)

    def status_error(self, status: int) -> GenerationError:
        """An error answer as an Abby error; 401/403 come from a proxy's auth header, not an API key."""
        if status in (401, 403):
            sent = (
                f"this bot's auth header ({self._auth_name})" if self._secret
                else "an auth header, and this bot sends none (COMFYUI_AUTH_HEADER)"
            )
            return ProviderAuthError(
                f"The ComfyUI server refused the request (HTTP {status}): it asks for {sent}. {OWNER}",
                status=status,
            )
        return error_for_status(status, {}, secrets=self.secrets())

    @contextlib.contextmanager
    def translated(self, *, before_job: bool = False) -> Iterator[None]:
        """httpx errors as Abby errors. ``before_job``: no prompt was sent yet, so a connection
        that could not be opened means no job exists (ProviderUnreachable)."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if before_job:
                raise self.unreachable() from exc
            if isinstance(exc, httpx.ConnectTimeout):
                raise GenerationTimeout("The ComfyUI server did not answer in time.") from exc
            raise GenerationUnavailable(f"The ComfyUI server at {self.shown_url} could not be reached.") from exc
        except httpx.TimeoutException as exc:
            raise GenerationTimeout("The ComfyUI server did not answer in time.") from exc
        except httpx.LocalProtocolError:
            # Not chained: the request's headers hold the auth value.
            raise GenerationUnavailable(
                "The ComfyUI server could not be called (a malformed request)."
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # The connection broke or the server hung up (killed, restarted): a job may exist.
            raise GenerationUnavailable(f"The ComfyUI server at {self.shown_url} could not be reached.") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise GenerationUnavailable(
                f"The connection to the ComfyUI server failed ({type(exc).__name__})."
            ) from exc

    def unreachable(self) -> ProviderUnreachable:
        return ProviderUnreachable(
            f"The ComfyUI server at {self.shown_url} is not reachable right now; nothing was used from the quota."
        )

    # -- the server's routes -------------------------------------------------------------

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        entry = (await self.call_json("GET", f"/history/{prompt_id}")).get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def queue(self, taken_after: float) -> dict[str, Any]:
        """``/queue`` as it was at some moment after ``taken_after`` (loop time), shared by every
        job of this provider: one read serves all the jobs that ask about the same moment.

        Every ``status`` message (the queue changed) reaches every waiting job's socket; without
        sharing, each of them would read and parse the whole queue each time.
        """
        async with self._queue_lock:
            if self._queue_copy is not None and self._queue_copy[0] >= taken_after:
                return self._queue_copy[1]
            started = asyncio.get_running_loop().time()
            answer = await self.call_json("GET", "/queue")
            self._queue_copy = (started, answer)
            return answer

    async def queue_or_none(self, taken_after: float) -> dict[str, Any] | None:
        """``/queue`` for a progress report, or None when it cannot be read (the job goes on)."""
        try:
            return await self.queue(taken_after)
        except GenerationError as exc:
            log.debug("Could not read the ComfyUI queue for a progress report: %s", exc)
            return None

    async def upload(self, image: bytes) -> str:
        """Store ``image`` in the server's ``input/abby`` folder; the name a ``LoadImage`` node takes."""
        fmt = sniff_format(image)
        name = f"abby-{uuid.uuid4().hex}.{'jpg' if fmt == 'jpeg' else fmt}"
        answer = await self.call_json(
            "POST",
            "/upload/image",
            files={"image": (name, image, f"image/{fmt}")},
            data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"},
            before_job=True,
        )
        stored, subfolder = answer.get("name"), answer.get("subfolder") or ""
        if not isinstance(stored, str) or not isinstance(subfolder, str):
            raise GenerationUnavailable("The ComfyUI server gave an unreadable answer to the image upload.")
        return f"{subfolder}/{stored}" if subfolder else stored

    # -- websocket -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connect(self, client_id: str) -> AsyncIterator[ClientConnection | None]:
        """The job's websocket, or None when the server (or a proxy) will not open one.

        A connection that cannot be opened at all is ProviderUnreachable (no job exists yet);
        a refused auth header is the operator's error, as on any call.
        """
        url = self._pool.get().build_request("GET", "/ws", params={"clientId": client_id}).url
        url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
        try:
            socket = await connect(
                str(url),
                additional_headers=self._headers,
                open_timeout=self._timeout.connect,
                max_size=_MAX_MESSAGE,
                compression=None,  # previews are JPEG or PNG already
                ping_interval=None,  # the job's /history and /queue checks notice a dead server
                close_timeout=1,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise self.status_error(status) from exc
            log.info("The ComfyUI server opened no websocket (HTTP %s); following jobs by polling", status)
            socket = None
        except (OSError, TimeoutError) as exc:
            raise self.unreachable() from exc
        except WebSocketException as exc:  # not the protocol (a proxy's answer, a bad accept key)
            log.info("The ComfyUI server opened no websocket (%s); following jobs by polling", type(exc).__name__)
            socket = None
        if socket is None:
            yield None
            return
        try:
            yield socket
        finally:
            await socket.close()
