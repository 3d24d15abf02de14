"""The Stable Diffusion web UI API (AUTOMATIC1111, Forge, ``--api``): the only module that speaks to it.

Calls are JSON: ``POST /sdapi/v1/txt2img``, ``img2img`` and ``extra-single-image`` answer
with base64 images once the job is done, ``GET /sdapi/v1/progress`` describes the running
job. httpx errors stop here and become :mod:`abby_core.errors` classes (``raise ... from exc``).

What the design rests on (the server's behaviour, not ours to change):

* The server silently replaces an unknown checkpoint (``override_settings``) or sampler
  with its defaults, so the configured names are checked against ``/sd-models``,
  ``/samplers`` and ``/upscalers`` first; a miss is a :class:`~abby_core.errors.ConfigError`
  naming what the server has. Good names are remembered, misses are asked again.
* It runs one job at a time and ``/interrupt`` stops *whichever* job is running. The provider
  sends one job at a time too, and only interrupts a job it saw start after its request
  was sent (a new ``job_timestamp`` in ``/progress``). When the awaiting task is cancelled
  or the timeout passes, a job already running is interrupted at once; one still queued
  behind someone else's is watched and interrupted when it starts. The next job is sent
  only once the server has answered the abandoned one.
* An interrupted job still answers 200 with a half-finished image; it is refused.
* A POST is never retried (the GPU may already be on it); only a connection that could
  not be opened is, following :class:`~abby_core.generation._policy.RetryPolicy`. When it
  still cannot be opened, the request never left: :class:`~abby_core.errors.ProviderUnreachable`.
  Only the job's POST starts a job, and the calls after it (progress, interrupt) never
  raise to the caller, so that error always means no job was sent.
* Progress goes to :func:`~abby_core.generation.base.report_progress` when someone listens:
  ``queued`` while another job holds the server, ``running`` from ``/progress`` (the preview
  is fetched only then), ``finished`` when the POST has answered with a good image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter, ValidationError

from abby_core.errors import (
    AbbyError,
    ConfigError,
    GenerationTimeout,
    GenerationUnavailable,
    InvalidImage,
    PromptRejected,
    ProviderAuthError,
    ProviderUnreachable,
)
from abby_core.generation._policy import RetryPolicy
from abby_core.generation._results import generated_image, random_seed
from abby_core.generation._status import OWNER, error_for_status, sanitize
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    Progress,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
    report_progress,
    wants_progress,
)
from abby_core.images import ImageLimits, probe_image, sniff_format

__all__ = ["Automatic1111Provider", "JobKind", "Setting", "UnknownName", "WebUIReport"]

log = logging.getLogger("abby.generation")

JobKind = Literal["text-to-image", "image-to-image", "upscale"]
Setting = Literal["model", "sampler", "upscaler"]
_API = "/sdapi/v1"
_LISTINGS: dict[Setting, str] = {"model": "sd-models", "sampler": "samplers", "upscaler": "upscalers"}
_INSPECT_TIMEOUT = 15.0
_GRACE = 30.0  # seconds an interrupted or abandoned job is given to answer
_STOP_WAIT = 5.0  # how long a cancelled call waits for its interrupt to be sent
_SNAPSHOT_TIMEOUT = 10.0
_MAX_UPSCALE_SIDE = 4096
_MAX_BODY_IMAGE = 48 * 1024 * 1024  # sent as base64 in JSON: a body a third larger
_UNREADABLE = "The image server gave an unreadable answer."
_UNREADABLE_IMAGE = "The image server sent an unreadable image."
_UNREADABLE_INPUT = "The image could not be read before sending it."
_T = TypeVar("_T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class _State(_Model):
    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False

    @property
    def busy(self) -> bool:
        return self.job_count != 0  # -1 while the model loads


class _Progress(_Model):
    progress: float = 0.0
    eta_relative: float = 0.0
    state: _State
    current_image: str | None = None


class _Checkpoint(_Model):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str = ""

    def names(self) -> set[str]:
        base = self.title.rsplit(" [", 1)[0]
        file = self.filename.replace("\\", "/").rsplit("/", 1)[-1]
        return {n for n in (self.title, self.model_name, base, file, self.hash, self.sha256) if n}


class _Named(_Model):
    name: str
    aliases: list[str] = []


class _Generated(_Model):
    images: list[str] | None = None
    info: str = ""


class _Info(_Model):
    seed: int | None = None
    sd_model_name: str | None = None


class _Upscaled(_Model):
    image: str | None = None


@dataclass(frozen=True)
class UnknownName:
    """A configured ``setting`` whose name ``wanted`` the web UI does not have; ``available`` are its names."""

    setting: Setting
    wanted: str
    available: tuple[str, ...]


@dataclass(frozen=True)
class WebUIReport:
    """What the web UI's API lists (checkpoint titles, sampler and upscaler names), and the
    configured names it lacks (``abby doctor``). Unset settings (no model, no sampler) are not judged."""

    models: tuple[str, ...]
    samplers: tuple[str, ...]
    upscalers: tuple[str, ...]
    unknown: tuple[UnknownName, ...]


def _match(setting: Setting, wanted: str | None, listing: Any) -> tuple[str | None, list[str]]:
    """The server's name for ``wanted`` in a ``/sd-models``, ``/samplers`` or ``/upscalers`` answer
    (None when it is not there, or not asked), and the names the server offers."""
    if setting == "model":
        checkpoints = _parse(list[_Checkpoint], listing)
        found = next((c.title for c in checkpoints if wanted and wanted in c.names()), None)
        return found, [c.title for c in checkpoints]
    items = _parse(list[_Named], listing)
    # The API does not resolve aliases itself (it falls back to its default).
    lookup = {alias.lower(): i.name for i in items for alias in (i.name, *i.aliases)}
    found = lookup.get(wanted.lower()) if wanted and wanted.lower() != "none" else None
    return found, [i.name for i in items if i.name != "None"]


def _parse(kind: type[_T], data: Any) -> _T:
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        raise GenerationUnavailable(_UNREADABLE) from exc


class _Watch:
    """Tells the provider's job apart from other clients' jobs in ``/progress`` snapshots."""

    def __init__(self, before: _State | None) -> None:
        # The job running when the request was sent is not ours; unknown means none was.
        self._before: str | None = None
        self._last: tuple[int, int] | None = None
        if before is not None and before.busy:
            self._before, self._last = before.job_timestamp, (before.job_no, before.sampling_step)
        self.timestamp: str | None = None  # our job's, once seen
        self.stopped = False  # our job was seen interrupted or skipped

    def ours(self, state: _State) -> bool:
        if not state.busy:
            return False
        if self.timestamp is None:
            position = (state.job_no, state.sampling_step)
            # Timestamps have one-second resolution: a job that went backwards is a new one.
            restarted = self._last is not None and position < self._last
            if state.job_timestamp == self._before and not restarted:
                self._last = position
                return False
            self.timestamp = state.job_timestamp
        if state.job_timestamp != self.timestamp:
            return False
        self.stopped = self.stopped or state.interrupted or state.skipped
        return True

    def ended_stopped(self, state: _State) -> bool:
        """Whether an idle server's last job was ours and was interrupted or skipped."""
        mine = self.timestamp is None or state.job_timestamp == self.timestamp
        return not state.busy and mine and (state.interrupted or state.skipped)


class _Reporter:
    """One job's progress for the current listener: nothing when nobody listens, each change once."""

    def __init__(self, kind: JobKind) -> None:
        self._kind = kind
        self._last: tuple[object, ...] = ()
        self._preview: str | None = None  # the last preview sent, as the server encoded it

    async def __call__(self, progress: Progress) -> None:
        """Report ``progress`` if it says something new (a preview here always is)."""
        where = (progress.stage, progress.queue_position, progress.step, progress.steps)
        if wants_progress() and (where != self._last or progress.preview is not None):
            self._last = where
            await report_progress(progress)

    async def running(self, snapshot: _Progress) -> None:
        """Our job as one ``/progress`` snapshot shows it; a preview only when it is a new one."""
        state = snapshot.state
        # Step counters are stale while the model loads (job_count -1) and during upscales.
        counting = state.job_count > 0 and state.sampling_steps > 0 and self._kind != "upscale"
        step = min(state.sampling_step + 1, state.sampling_steps) if counting else None  # steps done
        preview, preview_type = None, None
        if snapshot.current_image and snapshot.current_image != self._preview:
            self._preview = snapshot.current_image
            try:
                preview = _decode(snapshot.current_image)
                preview_type = f"image/{sniff_format(preview)}"
            except (GenerationUnavailable, InvalidImage):
                preview = None
        steps = state.sampling_steps if counting else None
        await self(Progress("running", step=step, steps=steps, preview=preview, preview_type=preview_type))


class Automatic1111Provider(Provider):
    """Client for a Stable Diffusion web UI started with ``--api`` (optionally ``--api-auth``).

    ``model`` is a checkpoint as ``/sd-models`` lists it (title, file name, with or without
    extension, or hash); ``None`` keeps the server's current one. ``sampler`` is a name or
    alias from ``/samplers``; ``None`` keeps the API's default. ``image_size`` is the side of
    a square image; other aspect ratios keep about as many pixels, in multiples of 64.
    ``timeout`` covers waiting in the server's queue and the job itself. ``/progress`` is read
    every ``poll_interval`` seconds while a job runs; what it shows goes to the listener set
    with :func:`~abby_core.generation.base.reporting_progress` around the call, if any.
    """

    name = "automatic1111"
    # The web UI's API sets no bound on an input picture. Image to image works at the picture's size
    # in steps of 8, from 64 (this client's floor, the UI's sliders' too); larger sides are the GPU's
    # to refuse. Upscales stop at _MAX_UPSCALE_SIDE.
    input_limits = InputLimits(
        ImageLimits.sides("image-to-image", 64, 16384, max_bytes=_MAX_BODY_IMAGE),
        InputLimits.sides(16, _MAX_UPSCALE_SIDE, max_bytes=_MAX_BODY_IMAGE).upscale,
    )

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | SecretStr | None = None,
        model: str | None = None,
        sampler: str | None = None,
        steps: int = 25,
        cfg_scale: float = 7.0,
        image_size: int = 1024,
        upscaler: str = "R-ESRGAN 4x+",
        upscale_factor: float = 4.0,
        timeout: float = 300,
        poll_interval: float = 1.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        policy: RetryPolicy | None = None,
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("The web UI address must be an http(s) URL, as in http://127.0.0.1:7860.")
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        if (username is None) != (secret is None):
            raise ConfigError("The web UI user name and password must be set together.")
        if username is not None and secret is not None and (
            not username or ":" in username or not (username + secret).isascii()
        ):
            raise ConfigError("The web UI user name must be non-empty ASCII without ':' (and the password ASCII).")
        problems = [
            text for bad, text in (
                (not 1 <= steps <= 150, "steps must be from 1 to 150"),
                (not 1 <= cfg_scale <= 30, "the CFG scale must be from 1 to 30"),
                (not 256 <= image_size <= 2048, "the image size must be from 256 to 2048 pixels"),
                (not 1 < upscale_factor <= 8, "the upscale factor must be above 1 and at most 8"),
                (timeout <= 0 or poll_interval <= 0, "the timeout and poll interval must be above 0 seconds"),
                (max_retries < 0, "max_retries must be at least 0"),
            ) if bad
        ]
        if problems:
            raise ConfigError("The web UI settings are invalid: " + "; ".join(problems) + ".", problems=problems)
        self._url = base_url.strip().rstrip("/")
        self._shown_url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"
        self._auth = httpx.BasicAuth(username, secret) if username is not None and secret is not None else None
        self._secret = secret or ""
        self._model, self._sampler, self._upscaler = model, sampler, upscaler
        self._steps, self._cfg_scale, self._size = steps, cfg_scale, image_size
        self._upscale_factor = upscale_factor
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._policy = policy or RetryPolicy(max_retries=max_retries)
        self._transport = transport
        self._sleep = sleep
        self._names: dict[str, str] = {}  # setting -> the name the server knows it by
        self._jobs = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Automatic1111Provider(url={self._shown_url!r}, model={self._model!r}, auth={self._auth is not None})"

    # -- provider interface --------------------------------------------------------------

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        width, height = _size(request.aspect_ratio, self._size)
        prompt = request.prompt
        if request.style_preset:  # the web UI has no presets: the style is asked for in words
            prompt = f"{prompt}, {request.style_preset.replace('-', ' ')} style"
        payload = await self._sampling_payload(prompt, request.negative_prompt, request.seed)
        payload.update(width=width, height=height)
        return await self._generate("text-to-image", "txt2img", payload, request.output_format)

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        _, width, height = _inspect(request.image, _UNREADABLE_INPUT)
        payload = await self._sampling_payload(request.prompt, request.negative_prompt, request.seed)
        payload.update(
            init_images=[base64.b64encode(request.image).decode("ascii")],
            denoising_strength=request.strength,
            width=max(64, width // 8 * 8),
            height=max(64, height // 8 * 8),
        )
        return await self._generate("image-to-image", "img2img", payload, request.output_format)

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        upscaler = await self._known("upscaler", self._upscaler)
        _, width, height = _inspect(request.image, _UNREADABLE_INPUT)
        factor = max(1.0, min(self._upscale_factor, _MAX_UPSCALE_SIDE / max(width, height)))
        payload = {
            "image": base64.b64encode(request.image).decode("ascii"),
            "upscaler_1": upscaler,
            "resize_mode": 0,
            "upscaling_resize": round(factor, 3),
        }
        body = _parse(_Upscaled, await self._job("upscale", "extra-single-image", payload))
        if not body.image:
            raise GenerationUnavailable("The image server sent no image back.")
        label = f"{upscaler} upscale"
        return await self._result(_decode(body.image), 0, label, request.output_format, None)

    async def aclose(self) -> None:
        """Stop watching abandoned jobs and close the connection pool; safe to call twice."""
        self._closed = True
        for task in list(self._background):
            task.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def inspect(self) -> WebUIReport:
        """Read ``/sd-models``, ``/samplers`` and ``/upscalers`` once each and judge the configured
        names by them (nothing is remembered; no job is sent; a connection is not retried).

        Raises :class:`~abby_core.errors.ProviderUnreachable` when no connection opens,
        :class:`~abby_core.errors.ProviderAuthError` on 401 (``--api-auth`` and no or wrong
        credentials), :class:`~abby_core.errors.ConfigError` when the address does not answer
        as the API (FastAPI's 404: a web UI started without ``--api``),
        :class:`~abby_core.errors.GenerationTimeout`, and other Abby errors for other answers.
        """
        listings: dict[Setting, Any] = {}
        for setting, route in _LISTINGS.items():
            listings[setting] = await self._call("GET", f"{_API}/{route}", timeout=_INSPECT_TIMEOUT, retry=False)
        configured: dict[Setting, str | None] = {"model": self._model, "sampler": self._sampler,
                                                 "upscaler": self._upscaler}
        offered: dict[Setting, tuple[str, ...]] = {}
        unknown: list[UnknownName] = []
        for setting, wanted in configured.items():
            found, names = _match(setting, wanted, listings[setting])
            offered[setting] = tuple(names)
            if wanted is not None and found is None:
                unknown.append(UnknownName(setting, wanted, tuple(names)))
        return WebUIReport(offered["model"], offered["sampler"], offered["upscaler"], tuple(unknown))

    # -- requests ------------------------------------------------------------------------

    async def _sampling_payload(self, prompt: str, negative: str | None, seed: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": negative or "",
            # Seed 0 asks for a random one: picked here, so it is known even if ``info`` is lost.
            "seed": seed or random_seed(),
            "steps": self._steps,
            "cfg_scale": self._cfg_scale,
            "batch_size": 1,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
            "force_task_id": f"abby-{uuid.uuid4().hex}",
        }
        if self._sampler is not None:
            payload["sampler_name"] = await self._known("sampler", self._sampler)
        if self._model is not None:
            payload["override_settings"] = {"sd_model_checkpoint": await self._known("model", self._model)}
        return payload

    async def _generate(
        self, kind: JobKind, path: str, payload: dict[str, Any], output_format: OutputFormat
    ) -> GeneratedImage:
        """Run a txt2img/img2img job; the seed is the one ``info`` reports, else the one sent."""
        body = _parse(_Generated, await self._job(kind, path, payload))
        if not body.images:
            raise GenerationUnavailable("The image server sent no image back.")
        try:
            info = _parse(_Info, json.loads(body.info))
        except ValueError:  # the image is still good; the seed sent is the one used
            info = _Info()
        label = info.sd_model_name or self._model or "Stable Diffusion"
        task_id = str(payload["force_task_id"])
        seed = info.seed if info.seed is not None else int(payload["seed"])
        return await self._result(_decode(body.images[0]), seed, label, output_format, task_id)

    async def _known(self, setting: Setting, wanted: str) -> str:
        """The server's name for a configured model, sampler or upscaler, or a ConfigError."""
        if setting in self._names:
            return self._names[setting]
        found, offered = _match(setting, wanted, await self._call("GET", f"{_API}/{_LISTINGS[setting]}"))
        if found is None:
            shown = ", ".join(offered[:12]) + (", ..." if len(offered) > 12 else "")
            raise ConfigError(f"The image server has no {setting} {wanted!r}. It has: {shown or 'none'}.")
        self._names[setting] = found
        return found

    # -- jobs ----------------------------------------------------------------------------

    async def _job(self, kind: JobKind, path: str, payload: dict[str, Any]) -> Any:
        """Send one job and follow it; on timeout or cancellation, stop it on the server."""
        post: asyncio.Task[Any] | None = None
        watch = _Watch(None)
        report = _Reporter(kind)
        locked = False
        try:
            async with asyncio.timeout(self._timeout):
                await self._jobs.acquire()
                locked = True
                before = await self._snapshot(preview=False)
                watch = _Watch(before.state if before is not None else None)
                post = asyncio.ensure_future(
                    self._call("POST", f"{_API}/{path}", json=payload, timeout=self._timeout + _GRACE)
                )
                if before is not None and before.state.busy:
                    await report(Progress("queued"))  # another job holds the server: ours waits
                await self._follow(post, watch, report)
                body = post.result()
                if kind != "upscale":
                    after = await self._snapshot(preview=False)
                    if watch.stopped or (after is not None and watch.ended_stopped(after.state)):
                        raise GenerationUnavailable(
                            "The job was stopped on the image server before it finished."
                        )
                await report(Progress("finished"))
                return body
        except BaseException as exc:
            if post is not None and not post.done():
                locked = False  # the stopper releases it once the server has answered
                await self._abandon(post, watch)
            elif post is not None and not post.cancelled():
                post.exception()  # already raised to the caller, or replaced by this exception
            if isinstance(exc, TimeoutError):
                raise GenerationTimeout(
                    f"The image server did not finish within {self._timeout:g} seconds."
                ) from None
            raise
        finally:
            if locked:
                self._jobs.release()

    async def _follow(self, post: asyncio.Task[Any], watch: _Watch, report: _Reporter) -> None:
        for _ in range(math.ceil(self._timeout / self._poll_interval) + 2):
            done, _ = await asyncio.wait({post}, timeout=self._poll_interval)
            if done:
                return
            # Read even when nobody listens: the watch must see our job start, to stop it if need be.
            snapshot = await self._snapshot(preview=wants_progress())
            if snapshot is None:
                continue
            if watch.ours(snapshot.state):
                await report.running(snapshot)
            elif watch.timestamp is None and snapshot.state.busy:
                await report(Progress("queued"))
        await asyncio.wait({post})  # the caller's timeout ends this

    async def _snapshot(self, *, preview: bool) -> _Progress | None:
        """The server's progress, or ``None`` when it cannot be read right now."""
        params = {"skip_current_image": "false" if preview else "true"}
        try:
            data = await self._call("GET", f"{_API}/progress", params=params, timeout=_SNAPSHOT_TIMEOUT, retry=False)
            return _parse(_Progress, data)
        except AbbyError as exc:
            log.debug("Could not read the image server's progress: %s", exc)
            return None

    async def _abandon(self, post: asyncio.Task[Any], watch: _Watch) -> None:
        """Hand the job to a stopper task and wait briefly for its first look (and interrupt).

        The stopper is a task of its own: a second cancellation of the caller does not stop it.
        """
        attempted = asyncio.Event()
        stopper = asyncio.ensure_future(self._stop(post, watch, attempted))
        self._background.add(stopper)
        stopper.add_done_callback(self._background.discard)
        waiter = asyncio.ensure_future(attempted.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=_STOP_WAIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _stop(self, post: asyncio.Task[Any], watch: _Watch, attempted: asyncio.Event) -> None:
        """Interrupt the job once it is ours and running, then wait for the server's answer."""
        try:
            for _ in range(math.ceil((self._timeout + _GRACE) / self._poll_interval) + 1):
                if post.done():
                    break
                snapshot = await self._snapshot(preview=False)
                if snapshot is not None and watch.ours(snapshot.state):
                    await self._call("POST", f"{_API}/interrupt", timeout=_SNAPSHOT_TIMEOUT, retry=False)
                    attempted.set()
                    await asyncio.wait({post}, timeout=_GRACE)
                    break
                attempted.set()  # not started yet (queued behind another job): look again
                await asyncio.wait({post}, timeout=self._poll_interval)
        except AbbyError as exc:
            log.warning("Could not stop an abandoned job on the image server: %s", exc)
        finally:
            attempted.set()
            if post.done() and not post.cancelled():
                post.exception()  # its error was already reported to the caller as cancel/timeout
            post.cancel()
            self._jobs.release()

    # -- HTTP ------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise GenerationUnavailable("The image server client is closed (the bot is shutting down).")
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._url,
                auth=self._auth,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
                transport=self._transport,
            )
        return self._client

    async def _call(
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
                response = await self._http().request(method, path, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached the server
                if attempt == attempts:
                    raise ProviderUnreachable(
                        f"The image server at {self._shown_url} is not reachable right now; "
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
                    raise self._error(response)
                try:
                    return response.json()
                except ValueError as exc:
                    raise GenerationUnavailable(_UNREADABLE) from exc
            await self._sleep(self._policy.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _error(self, response: httpx.Response) -> AbbyError:
        """Map an error answer: FastAPI's ``{"detail"}`` or the web UI's ``{"error", "detail", ...}``."""
        try:
            body = response.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        status, detail = response.status_code, body.get("detail")
        secrets = (self._secret,)
        if status == 401:
            return ProviderAuthError(
                f"The image server refused this bot's user name and password. {OWNER}", status=401
            )
        if status == 404 and detail == "Not Found":
            return ConfigError(f"{self._shown_url} does not answer as a web UI API (is its API enabled?).")
        if status in (400, 404) and detail == "Sampler not found":
            self._names.pop("sampler", None)
            return ConfigError(f"The image server has no sampler {self._sampler!r}.")
        if status == 422 and isinstance(detail, list):
            problems = [
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', '')}"
                for e in detail[:3] if isinstance(e, dict)
            ]
            detail = sanitize("; ".join(problems), secrets=secrets)
            return PromptRejected(f"The image server refused the request ({detail}).", status=422, detail=detail)
        error = body.get("error")
        name = error if isinstance(error, str) else ""
        text = next((v for v in (detail, body.get("errors"), body.get("message")) if isinstance(v, str) and v), "")
        if name or text:
            log.warning("The image server answered %s: %s %s", status, sanitize(name, secrets=secrets),
                        sanitize(text, secrets=secrets))
        if name == "OutOfMemoryError":
            return GenerationUnavailable(
                "The image server ran out of GPU memory (a smaller image needs less)."
            )
        return error_for_status(status, {"errors": [text]} if text else {}, secrets=secrets)

    # -- images ----------------------------------------------------------------------------

    async def _result(
        self, data: bytes, seed: int, label: str, output_format: OutputFormat, request_id: str | None
    ) -> GeneratedImage:
        # The server encodes in its own samples_format.
        return await asyncio.to_thread(
            generated_image, data, provider=self.name, label=label, seed=seed, request_id=request_id,
            unreadable=_UNREADABLE_IMAGE, output_format=output_format,
        )


def _size(aspect_ratio: str, side: int) -> tuple[int, int]:
    """Width and height for ``aspect_ratio`` with about ``side * side`` pixels, in multiples of 64."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    scale = side / math.sqrt(w * h)
    return max(64, round(w * scale / 64) * 64), max(64, round(h * scale / 64) * 64)


def _decode(b64: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GenerationUnavailable(_UNREADABLE_IMAGE) from exc


def _inspect(data: bytes, unreadable: str) -> tuple[str, int, int]:
    """``(format, width, height)``; inputs were checked by ``params``, so only results should fail."""
    try:
        return probe_image(data)
    except InvalidImage as exc:
        raise GenerationUnavailable(unreadable) from exc

