"""The Stable Diffusion web UI API (AUTOMATIC1111, Forge, ``--api``): :class:`Automatic1111Provider`,
the one class that makes images there.

Calls are JSON: ``POST /sdapi/v1/txt2img``, ``img2img`` and ``extra-single-image`` answer
with base64 images once the job is done, ``GET /sdapi/v1/progress`` describes the running
job. The parts live beside this module: the calls, their retries and where every httpx
error becomes an Abby error (:mod:`~abby_core.generation.automatic1111_http`); running one
job at a time, following its progress and stopping it
(:mod:`~abby_core.generation.automatic1111_progress`); what the server's answers mean
(:mod:`~abby_core.generation.automatic1111_answers`). This module turns Abby's requests
into the server's payloads.

The server silently replaces an unknown checkpoint (``override_settings``) or sampler
with its defaults, so the configured names are checked against ``/sd-models``,
``/samplers`` and ``/upscalers`` first; a miss is a :class:`~abby_core.errors.ConfigError`
naming what the server has. Good names are remembered, misses are asked again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from abby_core.errors import ConfigError, GenerationUnavailable
from abby_core.generation._policy import RetryPolicy
from abby_core.generation._results import generated_image, random_seed
from abby_core.generation.automatic1111_answers import (
    LISTINGS,
    UNREADABLE_IMAGE,
    Generated,
    Info,
    JobKind,
    Setting,
    UnknownName,
    Upscaled,
    WebUIReport,
    decode,
    image_size,
    match,
    parse,
    size_for,
)
from abby_core.generation.automatic1111_http import API, WebUIClient
from abby_core.generation.automatic1111_progress import JobRunner
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
)
from abby_core.images import ImageLimits

__all__ = ["Automatic1111Provider", "JobKind", "Setting", "UnknownName", "WebUIReport"]

_INSPECT_TIMEOUT = 15.0
_MAX_UPSCALE_SIDE = 4096
_MAX_BODY_IMAGE = 48 * 1024 * 1024  # sent as base64 in JSON: a body a third larger


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
        auth = httpx.BasicAuth(username, secret) if username is not None and secret is not None else None
        self._has_auth = auth is not None
        self._model, self._sampler, self._upscaler = model, sampler, upscaler
        self._steps, self._cfg_scale, self._size = steps, cfg_scale, image_size
        self._upscale_factor = upscale_factor
        self._client = WebUIClient(
            base_url.strip(), auth=auth, secret=secret or "", sampler=sampler, timeout=timeout,
            policy=policy or RetryPolicy(max_retries=max_retries), transport=transport, sleep=sleep,
        )
        self._jobs = JobRunner(self._client, timeout=timeout, poll_interval=poll_interval)

    def __repr__(self) -> str:
        return (f"Automatic1111Provider(url={self._client.shown_url!r}, model={self._model!r}, "
                f"auth={self._has_auth})")

    # -- provider interface --------------------------------------------------------------

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        width, height = size_for(request.aspect_ratio, self._size)
        prompt = request.prompt
        if request.style_preset:  # the web UI has no presets: the style is asked for in words
            prompt = f"{prompt}, {request.style_preset.replace('-', ' ')} style"
        payload = await self._sampling_payload(prompt, request.negative_prompt, request.seed)
        payload.update(width=width, height=height)
        return await self._generate("text-to-image", "txt2img", payload, request.output_format)

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        width, height = image_size(request.image)
        payload = await self._sampling_payload(request.prompt, request.negative_prompt, request.seed)
        payload.update(
            init_images=[base64.b64encode(request.image).decode("ascii")],
            denoising_strength=request.strength,
            width=max(64, width // 8 * 8),
            height=max(64, height // 8 * 8),
        )
        return await self._generate("image-to-image", "img2img", payload, request.output_format)

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        upscaler = await self._client.known("upscaler", self._upscaler)
        width, height = image_size(request.image)
        factor = max(1.0, min(self._upscale_factor, _MAX_UPSCALE_SIDE / max(width, height)))
        payload = {
            "image": base64.b64encode(request.image).decode("ascii"),
            "upscaler_1": upscaler,
            "resize_mode": 0,
            "upscaling_resize": round(factor, 3),
        }
        body = parse(Upscaled, await self._jobs.run("upscale", "extra-single-image", payload))
        if not body.image:
            raise GenerationUnavailable("The image server sent no image back.")
        label = f"{upscaler} upscale"
        return await self._result(decode(body.image), 0, label, request.output_format, None)

    async def aclose(self) -> None:
        """Stop watching abandoned jobs and close the connection pool; safe to call twice."""
        self._jobs.aclose()
        await self._client.aclose()

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
        for setting, route in LISTINGS.items():
            listings[setting] = await self._client.call("GET", f"{API}/{route}", timeout=_INSPECT_TIMEOUT, retry=False)
        configured: dict[Setting, str | None] = {"model": self._model, "sampler": self._sampler,
                                                 "upscaler": self._upscaler}
        offered: dict[Setting, tuple[str, ...]] = {}
        unknown: list[UnknownName] = []
        for setting, wanted in configured.items():
            found, names = match(setting, wanted, listings[setting])
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
            payload["sampler_name"] = await self._client.known("sampler", self._sampler)
        if self._model is not None:
            payload["override_settings"] = {"sd_model_checkpoint": await self._client.known("model", self._model)}
        return payload

    async def _generate(
        self, kind: JobKind, path: str, payload: dict[str, Any], output_format: OutputFormat
    ) -> GeneratedImage:
        """Run a txt2img/img2img job; the seed is the one ``info`` reports, else the one sent."""
        body = parse(Generated, await self._jobs.run(kind, path, payload))
        if not body.images:
            raise GenerationUnavailable("The image server sent no image back.")
        try:
            info = parse(Info, json.loads(body.info))
        except ValueError:  # the image is still good; the seed sent is the one used
            info = Info()
        label = info.sd_model_name or self._model or "Stable Diffusion"
        task_id = str(payload["force_task_id"])
        seed = info.seed if info.seed is not None else int(payload["seed"])
        return await self._result(decode(body.images[0]), seed, label, output_format, task_id)

    # -- images ----------------------------------------------------------------------------

    async def _result(
        self, data: bytes, seed: int, label: str, output_format: OutputFormat, request_id: str | None
    ) -> GeneratedImage:
        # The server encodes in its own samples_format.
        return await asyncio.to_thread(
            generated_image, data, provider=self.name, label=label, seed=seed, request_id=request_id,
            unreadable=UNREADABLE_IMAGE, output_format=output_format,
        )

