"""A local renderer that needs no network and no key: for development and demos.

A gradient and shapes seeded by the prompt and seed, the prompt written on top and a
visible "Local preview — not AI-generated" label, so nobody mistakes them for the real
thing. The same prompt and seed give the same bytes; seed 0 picks a fresh random seed
for each request (reported in :attr:`GeneratedImage.seed`), as Stability does.

The caption font is Pillow's built-in one, which covers basic Latin only. Accented
letters are drawn without their accents; characters it has no glyph for at all (CJK,
emoji, other scripts) become a visible ``[?]`` and the caption says "(some characters
not shown)", instead of rows of empty boxes. (A font covering CJK and emoji would be
tens of megabytes for a preview.)

Rendering is CPU work (tens of milliseconds an image), so it runs in a worker thread:
on the event loop, a burst of generations would stall the bot for seconds.
"""

from __future__ import annotations

import asyncio
import functools
import io
import random
import textwrap
import threading
import unicodedata
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

from abby_core.generation._results import random_seed
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
)

__all__ = ["LABEL", "NOT_SHOWN", "PLACEHOLDER", "OfflineProvider", "caption_text", "has_glyph", "random_seed"]

LABEL = "Local preview — not AI-generated"
PLACEHOLDER = "[?]"
NOT_SHOWN = "(some characters not shown)"
LONG_SIDE = 1024
UPSCALE_FACTOR = 4
UPSCALE_MAX_SIDE = 4096
# Look-alikes NFKD does not give; anything else the font lacks is decomposed first.
_FOLD = {"—": "-", "–": "-", "‐": "-", "‑": "-", "−": "-", "“": '"', "”": '"', "„": '"', "‘": "'", "«": '"', "»": '"'}
_NOT_A_CHARACTER = "\U0010fffd"  # private use: no font draws it, so it renders as the font's .notdef box
_glyph_lock = threading.Lock()  # one FreeType face, used from worker threads


@functools.cache
def _coverage() -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, tuple[tuple[int, int], bytes]]:
    font = _font(32)
    box = font.getmask(_NOT_A_CHARACTER)
    return font, (box.size, bytes(box))


@functools.lru_cache(maxsize=4096)
def has_glyph(char: str) -> bool:
    """Whether the caption font draws ``char``, rather than its empty .notdef box."""
    with _glyph_lock:
        font, notdef = _coverage()
        mask = font.getmask(char)
        return (mask.size, bytes(mask)) != notdef


def _fold(char: str) -> str | None:
    """``char`` as characters the font has (``é`` -> ``e``, ``Ａ`` -> ``A``), or ``None``."""
    folded = _FOLD.get(char) or "".join(
        c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
    )
    return folded if folded and all(has_glyph(c) for c in folded) else None


def caption_text(text: str) -> tuple[str, bool]:
    """``text`` as the caption font can draw it, and whether some characters were left out.

    Characters the font has stay; others are replaced by a look-alike it has (accents
    dropped, full-width forms narrowed); each run of characters with neither, such as
    CJK or emoji, becomes one :data:`PLACEHOLDER`.
    """
    out: list[str] = []
    left_out = False
    for char in text:
        shown = char if has_glyph(char) else _fold(char)
        if shown is not None:
            out.append(shown)
            continue
        left_out = True
        if not out or out[-1] != PLACEHOLDER:
            out.append(PLACEHOLDER)
    return "".join(out), left_out


def _size(aspect_ratio: str) -> tuple[int, int]:
    w, h = (int(part) for part in aspect_ratio.split(":"))
    if w >= h:
        return LONG_SIDE, round(LONG_SIDE * h / w / 8) * 8
    return round(LONG_SIDE * w / h / 8) * 8, LONG_SIDE


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _render(prompt: str, seed: int, size: tuple[int, int]) -> Image.Image:
    rng = random.Random(f"{seed}:{prompt}")
    # A 3x3 grid of colours blown up with bicubic resampling is a cheap, smooth gradient.
    grid = Image.new("RGB", (3, 3))
    grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(9)])
    img = grid.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img, "RGBA")
    width, height = size
    for _ in range(rng.randint(4, 9)):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(min(size) // 16, min(size) // 4)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randint(60, 160))
        box = (x - r, y - r, x + r, y + r)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    _caption(draw, prompt, size)
    return img


def _caption(draw: ImageDraw.ImageDraw, prompt: str, size: tuple[int, int]) -> None:
    width, height = size
    shown, left_out = caption_text(prompt[:300])
    lines = textwrap.wrap(shown, width=max(20, width // 22))[:5]
    text = "\n".join([*lines, NOT_SHOWN] if left_out else lines)
    body = _font(max(14, width // 40))
    draw.multiline_text((24, 24), text, font=body, fill=(255, 255, 255, 255), stroke_width=2,
                        stroke_fill=(0, 0, 0, 255))
    label_font = _font(max(14, width // 32))
    label, _ = caption_text(LABEL)  # the built-in font has no em dash
    box = draw.textbbox((0, 0), label, font=label_font)
    pad = 12
    x, y = 24, height - (box[3] - box[1]) - 3 * pad
    draw.rectangle((x - pad, y - pad, x + box[2] + pad, y + box[3] + pad), fill=(0, 0, 0, 190))
    draw.text((x, y), label, font=label_font, fill=(255, 214, 0, 255))


def _encode(img: Image.Image, output_format: OutputFormat) -> bytes:
    buf = io.BytesIO()
    if output_format == "png":
        img.save(buf, format="PNG", compress_level=1)
    elif output_format == "jpeg":
        img.convert("RGB").save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="WEBP", quality=90, method=0)
    return buf.getvalue()


class OfflineProvider(Provider):
    """Renders placeholder images locally; always configured, never billed.

    ``seed_source`` gives the seed for requests with seed 0 (tests pass a fixed one).
    """

    name = "offline"
    # It draws over any picture with something to show: 16 px a side or more (a 2000x1 strip is refused).
    input_limits = InputLimits.sides(16, 16384, max_bytes=64 * 1024 * 1024)

    def __init__(self, *, seed_source: Callable[[], int] = random_seed) -> None:
        self._seed_source = seed_source

    def _result(self, img: Image.Image, seed: int, output_format: OutputFormat) -> GeneratedImage:
        return GeneratedImage(
            data=_encode(img, output_format),
            content_type=f"image/{output_format}",
            seed=seed,
            width=img.width,
            height=img.height,
            provider=self.name,
            finish_reason="SUCCESS",
            label=LABEL,
        )

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        return await asyncio.to_thread(self._text_to_image, request, request.seed or self._seed_source())

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        return await asyncio.to_thread(self._image_to_image, request, request.seed or self._seed_source())

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        return await asyncio.to_thread(self._upscale, request)

    def _text_to_image(self, request: TextToImageRequest, seed: int) -> GeneratedImage:
        img = _render(request.prompt, seed, _size(request.aspect_ratio))
        return self._result(img, seed, request.output_format)

    def _image_to_image(self, request: ImageToImageRequest, seed: int) -> GeneratedImage:
        with Image.open(io.BytesIO(request.image)) as opened:
            source = opened.convert("RGB")
        scale = LONG_SIDE / max(source.size)
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        source = source.resize(size, Image.Resampling.LANCZOS)
        art = _render(request.prompt, seed, size)
        # strength 0 keeps the input, 1 replaces it, as with the real endpoint.
        img = Image.blend(source, art, request.strength)
        _caption(ImageDraw.Draw(img, "RGBA"), request.prompt, size)
        return self._result(img, seed, request.output_format)

    def _upscale(self, request: UpscaleRequest) -> GeneratedImage:
        with Image.open(io.BytesIO(request.image)) as opened:
            source = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
        scale = min(UPSCALE_FACTOR, UPSCALE_MAX_SIDE / max(source.size))
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        img = source.resize(size, Image.Resampling.LANCZOS)
        return self._result(img, 0, request.output_format)
