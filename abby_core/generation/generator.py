"""The façade the rest of Abby uses: validate, check configuration, call the provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import SecretStr

from abby_core.config import ApiSettings
from abby_core.errors import NotConfigured
from abby_core.generation.base import (
    GeneratedImage,
    GenerationRequest,
    ImageToImageRequest,
    Provider,
    TextToImageRequest,
)
from abby_core.generation.offline import OfflineProvider
from abby_core.generation.params import validate_image_to_image, validate_text_to_image, validate_upscale
from abby_core.generation.stability import NOT_CONFIGURED, StabilityProvider

__all__ = ["ImageGenerator"]


class ImageGenerator:
    """Makes images with one provider (Stability by default, or ``provider=``).

    Every call validates its input first (:class:`~abby_core.errors.InvalidInput`),
    then raises :class:`~abby_core.errors.NotConfigured` when the provider has no
    key, and only then touches the network. Callers that reserve quota can run the
    ``validate_*`` functions of :mod:`abby_core.generation` first and hand the
    request to :meth:`generate`. Use as ``async with`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        api_host: str = "https://api.stability.ai",
        *,
        provider: Provider | None = None,
        model: str = "core",
        timeout: float = 60,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider: Provider = provider or StabilityProvider(
            api_key,
            api_host,
            model=model,
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            sleep=sleep,
            clock=clock,
        )

    @classmethod
    def from_settings(cls, api: ApiSettings, **kw: Any) -> ImageGenerator:
        """Build from the ``api`` settings section; ``IMAGE_PROVIDER`` picks the provider."""
        if api.provider == "offline":
            return cls(provider=OfflineProvider())
        return cls(
            api.stability_api_key,
            api.stability_api_host,
            model=api.stability_model,
            timeout=api.timeout_seconds,
            max_retries=api.max_retries,
            **kw,
        )

    def __repr__(self) -> str:
        return f"ImageGenerator(provider={self._provider!r})"

    @property
    def configured(self) -> bool:
        """False when the provider needs a key it was not given."""
        return self._provider.configured

    @property
    def provider_name(self) -> str:
        return self._provider.name

    def _check_configured(self) -> None:
        if not self._provider.configured:
            raise NotConfigured(NOT_CONFIGURED, setting="STABILITY_API_KEY")

    async def generate(self, request: GenerationRequest) -> GeneratedImage:
        """Run a request built by a ``validate_*`` function."""
        self._check_configured()
        if isinstance(request, TextToImageRequest):
            return await self._provider.text_to_image(request)
        if isinstance(request, ImageToImageRequest):
            return await self._provider.image_to_image(request)
        return await self._provider.upscale(request)

    async def text_to_image(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        aspect_ratio: str = "1:1",
        seed: int = 0,
        style_preset: str | None = None,
        output_format: str = "png",
    ) -> GeneratedImage:
        """Make an image from a prompt; ``seed=0`` gets a fresh random seed each call (it is reported)."""
        request = validate_text_to_image(
            prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            seed=seed,
            style_preset=style_preset,
            output_format=output_format,
        )
        return await self.generate(request)

    async def image_to_image(
        self,
        image: bytes,
        prompt: str,
        *,
        strength: float = 0.6,
        negative_prompt: str | None = None,
        seed: int = 0,
        output_format: str = "png",
    ) -> GeneratedImage:
        """Remake ``image`` following ``prompt``; ``strength`` 0 keeps it, 1 ignores it."""
        # Decoding and resizing is CPU work: off the event loop.
        request = await asyncio.to_thread(
            validate_image_to_image,
            image,
            prompt,
            strength=strength,
            negative_prompt=negative_prompt,
            seed=seed,
            output_format=output_format,
        )
        return await self.generate(request)

    async def upscale_image(
        self,
        image: bytes,
        *,
        prompt: str | None = None,
        mode: str = "fast",
        output_format: str = "png",
    ) -> GeneratedImage:
        """Enlarge ``image`` (fast: 4x). ``creative`` polls for up to a few minutes."""
        request = await asyncio.to_thread(
            validate_upscale, image, prompt=prompt, mode=mode, output_format=output_format
        )
        return await self.generate(request)

    async def get_balance(self) -> float | None:
        """Credits left on the provider account; ``None`` for providers without credits."""
        self._check_configured()
        return await self._provider.get_balance()

    async def aclose(self) -> None:
        await self._provider.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
