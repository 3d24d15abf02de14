"""Stability AI's REST API (v2beta): the only module that speaks to it.

Requests are multipart/form-data with ``Authorization: Bearer <key>`` and
``Accept: image/*``; images come back as bytes with ``finish-reason`` and ``seed``
headers, errors as JSON ``{id, name, errors[]}``. httpx errors stop here and become
:mod:`abby_core.errors` classes (``raise ... from exc``); statuses go through
:func:`~abby_core.generation._status.error_for_status`, waits through
:class:`~abby_core.generation._policy.RetryPolicy`.

Read timeouts are not retried: the provider may still be working on (and billing)
the first request, and the member has already waited the full timeout. When no
attempt could even open a connection, nothing was sent:
:class:`~abby_core.errors.ProviderUnreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import httpx
from pydantic import SecretStr

from abby_core.errors import (
    ConfigError,
    ContentFiltered,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    NotConfigured,
    ProviderUnreachable,
)
from abby_core.generation._http import LIMITS, ClientPool, json_object
from abby_core.generation._policy import RetryPolicy, parse_retry_after
from abby_core.generation._results import generated_image
from abby_core.generation._status import error_for_status
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
)
from abby_core.images import ImageLimits

__all__ = ["MODELS", "NOT_CONFIGURED", "StabilityProvider"]

NOT_CONFIGURED = "Image generation is not configured: the server owner has not set STABILITY_API_KEY."
_GENERATE = "/v2beta/stable-image/generate"
_UPSCALE = "/v2beta/stable-image/upscale"
# model setting -> (endpoint, ``model`` form field, label shown to members)
MODELS: dict[str, tuple[str, str | None, str]] = {
    "core": (f"{_GENERATE}/core", None, "Stable Image Core"),
    "ultra": (f"{_GENERATE}/ultra", None, "Stable Image Ultra"),
    "sd3": (f"{_GENERATE}/sd3", "sd3.5-large", "Stable Diffusion 3.5 Large"),
    "sd3.5-large": (f"{_GENERATE}/sd3", "sd3.5-large", "Stable Diffusion 3.5 Large"),
    "sd3.5-large-turbo": (f"{_GENERATE}/sd3", "sd3.5-large-turbo", "Stable Diffusion 3.5 Large Turbo"),
    "sd3.5-medium": (f"{_GENERATE}/sd3", "sd3.5-medium", "Stable Diffusion 3.5 Medium"),
}
_UPSCALE_LABELS = {
    "fast": "Stable Fast Upscale",
    "conservative": "Stable Conservative Upscale",
    "creative": "Stable Creative Upscale",
}
_KEY = re.compile(r"[\x21-\x7e]{1,512}")  # printable ASCII, no spaces: it goes into a header
_RESULT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Fields = dict[str, str]


class StabilityProvider(Provider):
    """Client for api.stability.ai (or ``api_host``, e.g. a fake server in tests).

    The HTTP connection pool is created on first use and closed by :meth:`aclose`.
    Without a key :attr:`configured` is false and every call raises
    :class:`~abby_core.errors.NotConfigured` without touching the network.
    """

    name = "stability"
    # Stability's published limits (the v2beta image-to-image and upscale endpoints, 10 MiB bodies).
    input_limits = InputLimits(
        ImageLimits("image-to-image", 64, 2048, 4_096, 1_048_576, 2.5),
        MappingProxyType({
            "fast": ImageLimits("fast upscale", 32, 1536, 1_024, 1_048_576, 1536 / 32),
            "conservative": ImageLimits("conservative upscale", 64, 4096, 4_096, 4_194_304, 2.5),
            "creative": ImageLimits("creative upscale", 64, 1024, 4_096, 1_048_576, 2.5),
        }),
    )

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        api_host: str = "https://api.stability.ai",
        *,
        model: str = "core",
        timeout: float = 60,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = 10.0,
        poll_deadline: float = 300.0,
        policy: RetryPolicy | None = None,
    ) -> None:
        if model not in MODELS:
            raise ConfigError(f"STABILITY_MODEL must be one of {', '.join(MODELS)}.")
        if timeout <= 0 or max_retries < 0:
            raise ConfigError("The Stability timeout must be above 0 and max_retries at least 0.")
        if poll_interval <= 0 or poll_deadline <= 0:
            raise ConfigError("The creative-upscale poll interval and deadline must be above 0 seconds.")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        key = key.strip() if key else None
        if key and not _KEY.fullmatch(key):
            # It goes into an HTTP header: anything else fails there, with the key in the error.
            raise ConfigError(
                "STABILITY_API_KEY has characters an API key cannot have (spaces, quotes, non-ASCII): "
                "copy it again from the Stability AI account page."
            )
        self._key = SecretStr(key) if key else None
        self._host = api_host.rstrip("/")
        self._model = model
        self._policy = policy or RetryPolicy(max_retries=max_retries)
        self._sleep = sleep
        self._clock = clock
        self._poll_interval = poll_interval
        self._poll_deadline = poll_deadline
        self._pool = ClientPool(
            "The image service client is closed (the bot is shutting down).",
            base_url=self._host,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=LIMITS,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"StabilityProvider(host={self._host!r}, model={self._model!r}, configured={self.configured})"

    @property
    def configured(self) -> bool:
        return self._key is not None

    # -- provider interface --------------------------------------------------------

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        path, model_field, label = MODELS[self._model]
        fields: Fields = {
            "prompt": request.prompt,
            "aspect_ratio": request.aspect_ratio,
            "seed": str(request.seed),
            "output_format": request.output_format,
        }
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        if request.style_preset:
            fields["style_preset"] = request.style_preset
        if model_field:
            fields["model"] = model_field
        response = await self._send("POST", path, fields=fields)
        return self._image(response, label, request.seed)

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        # Core and Ultra have no image-to-image mode here; SD3.5 does.
        _, model_field, label = MODELS[self._model if MODELS[self._model][1] else "sd3"]
        fields: Fields = {
            "mode": "image-to-image",
            "prompt": request.prompt,
            "strength": f"{request.strength:g}",
            "seed": str(request.seed),
            "output_format": request.output_format,
            "model": model_field or "sd3.5-large",
        }
        if request.negative_prompt:
            fields["negative_prompt"] = request.negative_prompt
        response = await self._send("POST", f"{_GENERATE}/sd3", fields=fields, image=request.image)
        return self._image(response, label, request.seed)

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        fields: Fields = {"output_format": request.output_format}
        if request.prompt:
            fields["prompt"] = request.prompt
        label = _UPSCALE_LABELS[request.mode]
        path = f"{_UPSCALE}/{request.mode}"
        if request.mode != "creative":
            response = await self._send("POST", path, fields=fields, image=request.image)
            return self._image(response, label, 0)
        started = await self._send(
            "POST", path, fields=fields, image=request.image, accept="application/json"
        )
        result_id = json_object(started).get("id")
        if not isinstance(result_id, str) or not _RESULT_ID.match(result_id):
            raise GenerationUnavailable("The image service gave an unreadable answer.")
        return await self._poll(result_id, label)

    async def get_balance(self) -> float | None:
        response = await self._send("GET", "/v1/user/balance", accept="application/json")
        credits = json_object(response).get("credits")
        if isinstance(credits, bool) or not isinstance(credits, int | float):
            raise GenerationUnavailable("The image service gave an unreadable balance.")
        return float(credits)

    async def aclose(self) -> None:
        """Close the connection pool; the provider cannot be used afterwards."""
        await self._pool.aclose()

    # -- HTTP ------------------------------------------------------------------------

    async def _poll(self, result_id: str, label: str) -> GeneratedImage:
        """Wait for an async result: every ``poll_interval`` seconds until ``poll_deadline``.

        The result is already paid for, so a failed or slow poll is not fatal: it waits
        for the next one (never faster than ``poll_interval``) until the deadline.
        """
        deadline = self._clock() + self._poll_deadline
        for _ in range(math.ceil(self._poll_deadline / self._poll_interval) + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            await self._sleep(min(self._poll_interval, remaining))
            try:
                response = await self._send("GET", f"/v2beta/results/{result_id}", retries=0)
            except GenerationUnavailable:  # includes timeouts and rate limits: try the next poll
                if self._pool.closed:
                    raise
                continue
            if response.status_code != 202:
                return self._image(response, label, 0, request_id=result_id)
        raise GenerationTimeout("The image service took too long to finish the upscale.")

    async def _send(
        self,
        method: str,
        path: str,
        *,
        fields: Fields | None = None,
        image: bytes | None = None,
        accept: str = "image/*",
        retries: int | None = None,
    ) -> httpx.Response:
        """One call with retries; returns a 2xx response or raises an Abby error.

        A POST is retried only when the request cannot have reached the service (it could
        not connect) or the service answered that it did not run it (429, 5xx): a
        connection that breaks after the request was sent may already have been billed.
        Only when no attempt ever reached the service is the error ProviderUnreachable.
        """
        if self._key is None:
            raise NotConfigured(NOT_CONFIGURED)
        key = self._key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}", "Accept": accept}
        # Always multipart (as the API requires), even with no file to send.
        files: dict[str, Any] | None = None
        if method == "POST":
            files = {"image": ("image.png", image, "image/png")} if image is not None else {"none": ""}
        attempts = self._policy.max_retries if retries is None else retries
        reached = False  # an earlier attempt got to the service
        for retry in range(attempts + 1):
            last = retry == attempts
            try:
                response = await self._pool.get().request(method, path, data=fields, files=files, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last and not reached:
                    raise ProviderUnreachable(
                        "The image service is not reachable right now; nothing was used from the quota."
                    ) from exc
                if last:
                    raise GenerationUnavailable(
                        "The image service could not be reached."
                    ) from exc
            except httpx.PoolTimeout as exc:
                if last:
                    raise GenerationTimeout(
                        "The image service could not be reached in time."
                    ) from exc
            except httpx.TimeoutException as exc:
                raise GenerationTimeout(
                    "The image service took too long to answer (STABILITY_TIMEOUT_SECONDS)."
                ) from exc
            except httpx.LocalProtocolError:
                # Our own request could not be written (a malformed header); never retried,
                # and not chained: the header holds the key.
                raise GenerationUnavailable(
                    "The image service could not be called (a malformed request)."
                ) from None
            except httpx.TransportError as exc:
                if last or method == "POST":  # sent, maybe processed: retrying could charge twice
                    raise GenerationUnavailable(
                        "The connection to the image service broke."
                    ) from exc
                reached = True
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise GenerationUnavailable(
                    f"The image service could not be called ({type(exc).__name__})."
                ) from exc
            else:
                reached = True
                if response.is_success:
                    return response
                retry_after = parse_retry_after(response.headers)
                too_long = retry_after is not None and retry_after > self._policy.retry_after_cap
                if last or too_long or not self._policy.should_retry(response.status_code):
                    raise error_for_status(
                        response.status_code, json_object(response), retry_after=retry_after, secrets=(key,)
                    )
                await self._sleep(self._policy.delay(retry, retry_after))
                continue
            await self._sleep(self._policy.delay(retry))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    def _image(
        self, response: httpx.Response, label: str, seed: int, *, request_id: str | None = None
    ) -> GeneratedImage:
        finish = response.headers.get("finish-reason", "SUCCESS").strip().upper()
        request_id = request_id or response.headers.get("x-request-id")
        if finish == "CONTENT_FILTERED":
            raise ContentFiltered(
                "The image was blocked by the image service's content filter.",
                status=response.status_code,
                request_id=request_id,
            )
        if finish != "SUCCESS":
            raise GenerationError(f"The image service did not finish the image ({finish[:30]}).")
        with contextlib.suppress(ValueError):
            seed = int(response.headers.get("seed", seed))
        # As sent: the service was asked for the output format.
        return generated_image(
            response.content, provider=self.name, label=label, seed=seed, request_id=request_id,
            unreadable="The image service sent an unreadable image.",
        )
