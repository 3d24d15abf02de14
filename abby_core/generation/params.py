"""Validators for generation requests: run them before reserving quota.

Each ``validate_*`` returns a frozen request a provider can run as is, or raises an
:class:`~abby_core.errors.InvalidInput` subclass whose message a member can act on.
Nothing here touches the network.
"""

from __future__ import annotations

import math
from typing import TypedDict, get_args

from abby_core.errors import InvalidInput, InvalidPrompt
from abby_core.generation.base import (
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    TextToImageRequest,
    UpscaleMode,
    UpscaleRequest,
)
from abby_core.images import clean_prompt, prepare_image

__all__ = [
    "ASPECT_RATIOS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "STYLE_PRESETS",
    "UPSCALE_MODES",
    "ImageToImageOptions",
    "ImagineOptions",
    "Img2ImgOptions",
    "TextToImageOptions",
    "UpscaleImageOptions",
    "UpscaleOptions",
    "validate_image_to_image",
    "validate_text_to_image",
    "validate_upscale",
]

ASPECT_RATIOS: tuple[str, ...] = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
UPSCALE_MODES: tuple[str, ...] = get_args(UpscaleMode)
STYLE_PRESETS: tuple[str, ...] = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
    "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk",
    "origami", "photographic", "pixel-art", "tile-texture",
)
MAX_SEED = 4_294_967_294


# The options of each request, for callers that pass them on (``**options: Unpack[...]``):
# a caller passes only what it was given, so each default is its validator's alone.
class ImagineOptions(TypedDict, total=False):
    """A text-to-image request's options besides the prompt (:func:`validate_text_to_image`)."""

    negative_prompt: str | None
    aspect_ratio: str
    seed: int
    style_preset: str | None


class Img2ImgOptions(TypedDict, total=False):
    """An image-to-image request's options (:func:`validate_image_to_image`)."""

    strength: float
    negative_prompt: str | None
    seed: int


class UpscaleOptions(TypedDict, total=False):
    """An upscale request's options (:func:`validate_upscale`)."""

    prompt: str | None
    mode: str


class _OutputFormat(TypedDict, total=False):
    output_format: str


class TextToImageOptions(ImagineOptions, _OutputFormat, total=False):
    """:class:`ImagineOptions` and the file format of the result."""


class ImageToImageOptions(Img2ImgOptions, _OutputFormat, total=False):
    """:class:`Img2ImgOptions` and the file format of the result."""


class UpscaleImageOptions(UpscaleOptions, _OutputFormat, total=False):
    """:class:`UpscaleOptions` and the file format of the result."""


# How a refused field is named in a core message; adapters name their own option instead.
_LABELS = {"aspect_ratio": "The aspect ratio", "style_preset": "The style", "mode": "The upscale mode",
           "output_format": "The output format"}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        shown = str(value)[:30]
        raise InvalidInput(
            f"{_LABELS[name]} must be one of {', '.join(allowed)} (got {shown!r}).",
            parameter=name, value=shown, allowed=allowed,
        )
    return value


def _seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"seed must be a whole number from 0 to {MAX_SEED} (0 picks one at random).")
    return seed


def _negative(negative_prompt: str | None) -> str | None:
    if negative_prompt is None or not negative_prompt.strip():
        return None
    return clean_prompt(negative_prompt, field="negative prompt")


def _format(output_format: str) -> OutputFormat:
    _choice("output_format", output_format, OUTPUT_FORMATS)
    return output_format  # type: ignore[return-value]  # checked just above


def validate_text_to_image(
    prompt: str,
    *,
    negative_prompt: str | None = None,
    aspect_ratio: str = "1:1",
    seed: int = 0,
    style_preset: str | None = None,
    output_format: str = "png",
) -> TextToImageRequest:
    """Check a text-to-image request; an empty negative prompt or style counts as none."""
    return TextToImageRequest(
        prompt=clean_prompt(prompt),
        negative_prompt=_negative(negative_prompt),
        aspect_ratio=_choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS),
        seed=_seed(seed),
        style_preset=_choice("style_preset", style_preset, STYLE_PRESETS) if style_preset else None,
        output_format=_format(output_format),
    )


def validate_image_to_image(
    image: bytes,
    prompt: str,
    *,
    limits: InputLimits,
    strength: float = 0.6,
    negative_prompt: str | None = None,
    seed: int = 0,
    output_format: str = "png",
) -> ImageToImageRequest:
    """Check an image-to-image request; the image is cleaned and fitted to ``limits`` (the
    provider's ``input_limits``: an image within them keeps its size).

    ``strength`` is how much the result may depart from the image: 0 keeps it,
    1 ignores it.
    """
    text = clean_prompt(prompt)
    if (
        isinstance(strength, bool)
        or not isinstance(strength, int | float)
        or not math.isfinite(strength)
        or not 0 <= strength <= 1
    ):
        raise InvalidInput("strength must be a number from 0 to 1.")
    negative = _negative(negative_prompt)
    checked_seed = _seed(seed)
    fmt = _format(output_format)
    prepared = prepare_image(image, limits.image_to_image)
    return ImageToImageRequest(prepared.data, text, float(strength), negative, checked_seed, fmt)


def validate_upscale(
    image: bytes,
    *,
    limits: InputLimits,
    prompt: str | None = None,
    mode: str = "fast",
    output_format: str = "png",
) -> UpscaleRequest:
    """Check an upscale request; ``conservative`` and ``creative`` need a prompt.

    The image is resized into the provider's limits for the mode (``limits``, its
    ``input_limits``; Stability's fast mode: 32..1536 px a side and 1,024..1,048,576 px in
    total) rather than sent to be refused.
    """
    _choice("mode", mode, UPSCALE_MODES)
    if mode == "fast":
        text = clean_prompt(prompt) if prompt and prompt.strip() else None
    elif prompt is None or not prompt.strip():
        raise InvalidPrompt(f"A prompt describing the image is needed for {mode} upscaling.", parameter="prompt")
    else:
        text = clean_prompt(prompt)
    fmt = _format(output_format)
    prepared = prepare_image(image, limits.upscale[mode])  # type: ignore[index]  # mode checked above
    return UpscaleRequest(prepared.data, mode, text, fmt)  # type: ignore[arg-type]  # checked
