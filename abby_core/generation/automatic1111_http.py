"""The transport to one Stable Diffusion web UI API: JSON calls, retried only when nothing left.

:class:`WebUIClient` makes every call :class:`~abby_core.generation.automatic1111.Automatic1111Provider`
sends. httpx errors stop here and become :mod:`abby_core.errors` classes (``raise ... from
exc``); error answers go through
:func:`~abby_core.generation.automatic1111_answers.answer_error`.

A POST is never retried (the GPU may already be on it); only a connection that could not be
opened is, following :class:`~abby_core.generation._policy.RetryPolicy`. When it still cannot
be opened, the request never left: :class:`~abby_core.errors.ProviderUnreachable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from abby_core.errors import ConfigError, GenerationTimeout, GenerationUnavailable, ProviderUnreachable
from abby_core.generation._http import ClientPool, json_object, shown_url
from abby_core.generation._policy import RetryPolicy
from abby_core.generation.automatic1111_answers import (
    LISTINGS,
    UNREADABLE,
    Setting,
    answer_error,
    match,
    sampler_not_found,
)

__all__ = ["API", "WebUIClient"]

API = "/sdapi/v1"


class WebUIClient:
    """Calls to the web UI at ``url`` (already checked), with ``auth`` on each.

    ``sampler`` is the configured sampler, named when the server says it has none; the
    server's names for the configured settings are remembered by :meth:`known`.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: httpx.BasicAuth | None,
        secret: str,
        sampler: str | None,
        timeout: float,
        policy: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.shown_url = shown_url(url).rstrip("/")
        self._secret = secret
        self._sampler = sampler
        self._policy = policy
        self._sleep = sleep
        self._names: dict[str, str] = {}  # setting -> the name the server knows it by
        self._pool = ClientPool(
            "The image server client is closed (the bot is shutting down).",
            base_url=url.rstrip("/"),
            auth=auth,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        retry: bool = True,
    ) -> Any:
        """One request; returns the decoded JSON of a 2xx answer or raises an Abby error.

        A connection that could not be opened is tried again; if it never opens, the request
        never left, and the error is :class:`~abby_core.errors.ProviderUnreachable`.
        """
        attempts = self._policy.max_retries if retry else 0
        kw: dict[str, Any] = {"json": json, "params": params}
        if timeout is not None:
            kw["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        for attempt in range(attempts + 1):
            try:
                response = await self._pool.get().request(method, path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached the server
                if attempt == attempts:
                    raise ProviderUnreachable(
                        f"The image server at {self.shown_url} is not reachable right now; "
                        "nothing was used from the quota."
                    ) from exc
            except httpx.TimeoutException as exc:
                raise GenerationTimeout("The image server took too long to answer.") from exc
            except httpx.LocalProtocolError:
                # Not chained: the request's headers hold the password.
                raise GenerationUnavailable(
                    "The image server could not be called (a malformed request)."
                ) from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise GenerationUnavailable(
                    "The connection to the image server broke."
                ) from exc
            else:
                if not response.is_success:
                    body = json_object(response)
                    if sampler_not_found(response.status_code, body):
                        self._names.pop("sampler", None)
                    raise answer_error(
                        response.status_code, body, shown_url=self.shown_url, sampler=self._sampler,
                        secrets=(self._secret,),
                    )
                try:
                    return response.json()
                except ValueError as exc:
                    raise GenerationUnavailable(UNREADABLE) from exc
            await self._sleep(self._policy.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def known(self, setting: Setting, wanted: str) -> str:
        """The server's name for a configured model, sampler or upscaler, or a ConfigError."""
        if setting in self._names:
            return self._names[setting]
        found, offered = match(setting, wanted, await self.call("GET", f"{API}/{LISTINGS[setting]}"))
        if found is None:
            shown = ", ".join(offered[:12]) + (", ..." if len(offered) > 12 else "")
            raise ConfigError(f"The image server has no {setting} {wanted!r}. It has: {shown or 'none'}.")
        self._names[setting] = found
        return found
