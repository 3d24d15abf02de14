"""The provider interface and the values that cross it.

A provider turns an already validated request into a :class:`GeneratedImage`. It
never validates user input (``params`` did) and never lets a foreign exception out:
every failure is an :class:`~abby_core.errors.AbbyError`. Adding a backend
(AUTOMATIC1111, Forge, ...) means adding one module that subclasses :class:`Provider`.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Literal, get_args

from abby_core.images import ImageLimits

__all__ = [
    "GeneratedImage",
    "GenerationRequest",
    "ImageToImageRequest",
    "InputLimits",
    "OutputFormat",
    "Progress",
    "ProgressCallback",
    "ProgressReports",
    "Provider",
    "TextToImageRequest",
    "UpscaleMode",
    "UpscaleRequest",
    "report_progress",
    "reporting_progress",
    "wants_progress",
]

log = logging.getLogger("abby.generation")

OutputFormat = Literal["png", "jpeg", "webp"]
UpscaleMode = Literal["fast", "conservative", "creative"]


@dataclass(frozen=True)
class GeneratedImage:
    """One image a provider made, with what is needed to show and store it.

    ``seed`` is the seed the image was made with (the random one picked when the request
    said 0), so it can be made again; 0 when the operation has none (upscaling).
    """

    data: bytes = field(repr=False)
    content_type: str
    seed: int
    width: int
    height: int
    provider: str
    finish_reason: str
    label: str
    request_id: str | None = None


@dataclass(frozen=True)
class InputLimits:
    """The input pictures one provider takes: for image-to-image, and for each upscale mode.

    Pictures outside them are resized into them (or refused when no resize can fit them)
    before anything is held, rather than sent to be refused.
    """

    image_to_image: ImageLimits
    upscale: Mapping[UpscaleMode, ImageLimits]

    @classmethod
    def sides(cls, min_side: int, max_side: int, *, max_bytes: int) -> InputLimits:
        """The same side limits for every operation, and no other (any aspect ratio between them)."""
        return cls(
            ImageLimits.sides("image-to-image", min_side, max_side, max_bytes=max_bytes),
            MappingProxyType({
                mode: ImageLimits.sides(f"{mode} upscale", min_side, max_side, max_bytes=max_bytes)
                for mode in get_args(UpscaleMode)
            }),
        )

    def narrowed(self, other: InputLimits) -> InputLimits:
        """What both providers take (a picture for a provider with a fallback must suit both)."""
        return InputLimits(
            self.image_to_image.narrowed(other.image_to_image),
            MappingProxyType({mode: limits.narrowed(other.upscale[mode]) for mode, limits in self.upscale.items()}),
        )


@dataclass(frozen=True)
class TextToImageRequest:
    """A checked text-to-image request (build it with ``validate_text_to_image``); seed 0: random."""

    prompt: str
    negative_prompt: str | None = None
    aspect_ratio: str = "1:1"
    seed: int = 0
    style_preset: str | None = None
    output_format: OutputFormat = "png"


@dataclass(frozen=True)
class ImageToImageRequest:
    """A checked image-to-image request; ``image`` is already a clean PNG within limits."""

    image: bytes = field(repr=False)
    prompt: str
    strength: float = 0.6
    negative_prompt: str | None = None
    seed: int = 0
    output_format: OutputFormat = "png"


@dataclass(frozen=True)
class UpscaleRequest:
    """A checked upscale request; ``image`` fits the chosen mode's limits."""

    image: bytes = field(repr=False)
    mode: UpscaleMode = "fast"
    prompt: str | None = None
    output_format: OutputFormat = "png"


GenerationRequest = TextToImageRequest | ImageToImageRequest | UpscaleRequest


@dataclass(frozen=True)
class Progress:
    """Where one generation on an image server is, as the server reports it.

    ``stage``: ``queued`` (waiting; ``queue_position`` jobs ahead when the server says),
    ``running`` (``step`` of ``steps`` when known; ``preview`` a small image of the work so
    far, of ``preview_type``), ``finished`` (made; being fetched and stored).
    """

    stage: Literal["queued", "running", "finished"]
    queue_position: int | None = None
    step: int | None = None
    steps: int | None = None
    preview: bytes | None = field(default=None, repr=False)
    preview_type: str | None = None


ProgressCallback = Callable[[Progress], Awaitable[None] | None]
_PROGRESS: ContextVar[ProgressCallback | None] = ContextVar("abby_progress", default=None)


@contextlib.contextmanager
def reporting_progress(callback: ProgressCallback | None) -> Iterator[None]:
    """Send the progress of generations started inside this block to ``callback``."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def wants_progress() -> bool:
    """Whether someone listens (providers skip fetching previews when nobody does)."""
    return _PROGRESS.get() is not None


async def report_progress(progress: Progress) -> None:
    """Hand ``progress`` to the listener of the current generation; a failing listener is logged."""
    callback = _PROGRESS.get()
    if callback is None:
        return
    try:
        result = callback(progress)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.warning("A progress listener failed; the generation goes on.", exc_info=True)


class ProgressReports:
    """One generation's reports to the current listener: none when nobody listens, none that says
    nothing new.

    A report is new when its stage, queue position or step differs from the last one sent, or
    when it carries a preview not yet sent at that point (a report without a preview, at the
    point of the last one with it, adds nothing: listeners keep the newest preview).
    """

    def __init__(self) -> None:
        self.last: Progress | None = None  # the last report sent
        self._preview: tuple[tuple[object, ...], bytes] | None = None  # the last preview sent, and where

    async def __call__(self, progress: Progress) -> None:
        if not wants_progress():
            return
        where = (progress.stage, progress.queue_position, progress.step, progress.steps)
        last = self.last
        moved = last is None or where != (last.stage, last.queue_position, last.step, last.steps)
        preview = (where, progress.preview) if progress.preview is not None else None
        if moved or (preview is not None and preview != self._preview):
            self.last = progress
            if preview is not None:
                self._preview = preview
            await report_progress(progress)


class Provider(abc.ABC):
    """A backend that makes images. Subclasses set :attr:`name` and :attr:`input_limits`.

    Edge cases every provider honours:

    * methods are only called when :attr:`configured` is true (the generator checks);
    * a request with seed 0 gets a fresh random seed, picked once for that request,
      and the seed actually used is reported in :attr:`GeneratedImage.seed`; any other
      seed is used as given, so the same request makes the same image again;
    * failures raise :mod:`abby_core.errors` classes, never foreign exceptions;
    * ``get_balance`` returns ``None`` when the backend has no notion of credits;
    * ``aclose`` may be called more than once.
    """

    name: ClassVar[str]
    #: The input pictures it takes, from its own documentation or source; requests are fitted to them.
    input_limits: InputLimits

    @property
    def configured(self) -> bool:
        """Whether the provider has what it needs (e.g. an API key) to be called."""
        return True

    @abc.abstractmethod
    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage: ...

    @abc.abstractmethod
    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage: ...

    @abc.abstractmethod
    async def upscale(self, request: UpscaleRequest) -> GeneratedImage: ...

    async def get_balance(self) -> float | None:
        """Credits left on the account, or ``None`` when not applicable."""
        return None

    async def aclose(self) -> None:
        """Release connections; safe to call twice."""
        return None
