"""The façade the rest of Abby uses: validate, check configuration, call the provider."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, Unpack

import httpx
from pydantic import SecretStr

from abby_core.config import ApiSettings, ProviderName
from abby_core.errors import ConfigError, GenerationUnavailable, InvalidImage, NotConfigured, ProviderUnreachable
from abby_core.generation.base import (
    GeneratedImage,
    GenerationRequest,
    ImageToImageRequest,
    InputLimits,
    ProgressCallback,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
    reporting_progress,
)
from abby_core.generation.offline import OfflineProvider
from abby_core.generation.params import (
    ImageToImageOptions,
    TextToImageOptions,
    UpscaleImageOptions,
    validate_image_to_image,
    validate_text_to_image,
    validate_upscale,
)
from abby_core.generation.stability import NOT_CONFIGURED, StabilityProvider
from abby_core.images import strip_metadata

__all__ = ["FallbackProvider", "ImageGenerator", "build_provider", "load_workflows"]

log = logging.getLogger("abby.generation")


def load_workflows(folder: Path | None) -> dict[str, Any]:
    """The bundled ComfyUI workflows, each replaced by ``folder/{kind}.json`` where that file exists."""
    from abby_core.generation.comfyui import WORKFLOW_KINDS, Workflow, default_workflows

    workflows: dict[str, Any] = dict(default_workflows())
    if folder is not None:
        if not folder.is_dir():
            raise ConfigError(f"COMFYUI_WORKFLOWS: {folder} is not a folder.")
        for kind in WORKFLOW_KINDS:
            path = folder / f"{kind}.json"
            if path.is_file():
                workflows[kind] = Workflow.load(path)
    return workflows


def build_provider(name: ProviderName, api: ApiSettings, **kw: Any) -> Provider:
    """The provider ``name`` configured from the ``api`` section (``kw`` go to Stability's client)."""
    if name == "offline":
        return OfflineProvider()
    if name == "comfyui":
        from abby_core.generation.comfyui import ComfyUIProvider

        c = api.comfyui
        if c.url is None:
            raise ConfigError("The ComfyUI provider needs COMFYUI_URL (for example http://127.0.0.1:8188).")
        return ComfyUIProvider(
            c.url,
            load_workflows(c.workflows),
            auth_header=c.auth_header,
            auth_header_name=c.auth_header_name,
            timeout=c.timeout_seconds,
        )
    if name == "automatic1111":
        from abby_core.generation.automatic1111 import Automatic1111Provider

        a = api.a1111
        if a.url is None:
            raise ConfigError("The AUTOMATIC1111 provider needs A1111_URL (for example http://127.0.0.1:7860).")
        return Automatic1111Provider(
            a.url,
            username=a.username,
            password=a.password,
            model=a.model,
            sampler=a.sampler,
            steps=a.steps,
            upscaler=a.upscaler,
            timeout=a.timeout_seconds,
        )
    return StabilityProvider(
        api.stability_api_key,
        api.stability_api_host,
        model=api.stability_model,
        timeout=api.timeout_seconds,
        max_retries=api.max_retries,
        **kw,
    )


class FallbackProvider(Provider):
    """``primary``, and ``secondary`` when the primary cannot be reached.

    Input pictures are fitted to what both take (:meth:`InputLimits.narrowed`), as the
    request is built before anyone knows which one will serve it.

    Only :class:`~abby_core.errors.ProviderUnreachable` (nothing was sent) moves a request
    to the second provider: never a failure after a job may have started, so a member is
    never charged twice.
    """

    def __init__(self, primary: Provider, secondary: Provider) -> None:
        self.primary, self.secondary = primary, secondary
        self.name = primary.name  # type: ignore[misc]
        self.input_limits = primary.input_limits.narrowed(secondary.input_limits)

    def __repr__(self) -> str:
        return f"FallbackProvider({self.primary!r}, then {self.secondary!r})"

    @property
    def configured(self) -> bool:
        return self.primary.configured

    async def _either(self, call: Callable[[Provider], Awaitable[GeneratedImage]]) -> GeneratedImage:
        try:
            return await call(self.primary)
        except ProviderUnreachable as exc:
            log.warning("%s is not reachable (%s); using %s instead.", self.primary.name, exc, self.secondary.name)
            if not self.secondary.configured:
                raise
            return await call(self.secondary)

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        return await self._either(lambda p: p.text_to_image(request))

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        return await self._either(lambda p: p.image_to_image(request))

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        return await self._either(lambda p: p.upscale(request))

    async def get_balance(self) -> float | None:
        return await self.primary.get_balance()

    async def aclose(self) -> None:
        await self.primary.aclose()
        await self.secondary.aclose()


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
        """Build from the ``api`` settings section: ``IMAGE_PROVIDER`` picks the provider,
        ``IMAGE_PROVIDER_FALLBACK`` the one used when it cannot be reached."""
        provider = build_provider(api.provider, api, **kw)
        if api.fallback is not None:
            provider = FallbackProvider(provider, build_provider(api.fallback, api, **kw))
        return cls(provider=provider)

    def __repr__(self) -> str:
        return f"ImageGenerator(provider={self._provider!r})"

    @property
    def configured(self) -> bool:
        """False when the provider needs a key it was not given."""
        return self._provider.configured

    @property
    def provider_name(self) -> str:
        return self._provider.name

    @property
    def input_limits(self) -> InputLimits:
        """The input pictures the provider takes: hand them to ``validate_image_to_image``/``validate_upscale``."""
        return self._provider.input_limits

    def _check_configured(self) -> None:
        if not self._provider.configured:
            raise NotConfigured(NOT_CONFIGURED, setting="STABILITY_API_KEY")

    async def generate(self, request: GenerationRequest, *, progress: ProgressCallback | None = None) -> GeneratedImage:
        """Run a request built by a ``validate_*`` function; the image comes back without the
        metadata its generator embedded (:func:`~abby_core.images.strip_metadata`).

        ``progress`` receives :class:`~abby_core.generation.base.Progress` updates from
        providers that report them (local GPU servers); others never call it.
        """
        self._check_configured()
        with reporting_progress(progress):
            if isinstance(request, TextToImageRequest):
                image = await self._provider.text_to_image(request)
            elif isinstance(request, ImageToImageRequest):
                image = await self._provider.image_to_image(request)
            else:
                image = await self._provider.upscale(request)
        # Every provider's image, before anyone stores or receives it: without its generator's
        # metadata (ComfyUI embeds its whole workflow, the web UI its parameters).
        try:
            data = await asyncio.to_thread(strip_metadata, image.data)  # a walk over a large PNG: off the loop
        except InvalidImage as exc:
            raise GenerationUnavailable("The image service sent an unreadable image.") from exc
        return image if data is image.data else dataclasses.replace(image, data=data)

    async def text_to_image(self, prompt: str, **options: Unpack[TextToImageOptions]) -> GeneratedImage:
        """Make an image from a prompt; ``seed=0`` gets a fresh random seed each call (it is reported)."""
        return await self.generate(validate_text_to_image(prompt, **options))

    async def image_to_image(self, image: bytes, prompt: str, **options: Unpack[ImageToImageOptions]) -> GeneratedImage:
        """Remake ``image`` following ``prompt``; ``strength`` 0 keeps it, 1 ignores it."""
        # Decoding and resizing is CPU work: off the event loop.
        request = await asyncio.to_thread(validate_image_to_image, image, prompt, limits=self.input_limits, **options)
        return await self.generate(request)

    async def upscale_image(self, image: bytes, **options: Unpack[UpscaleImageOptions]) -> GeneratedImage:
        """Enlarge ``image`` (fast: 4x). ``creative`` polls for up to a few minutes."""
        request = await asyncio.to_thread(validate_upscale, image, limits=self.input_limits, **options)
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
