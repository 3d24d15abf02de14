"""Check prompts and images before anything is spent, and shrink results for storage.

Everything here is pure and synchronous (Pillow); callers run it before reserving
quota or calling a provider, so a bad upload costs nothing.

Decisions, stated once:

* **Prompts** are stripped; newlines and tabs become spaces; other control
  characters (C0, DEL, C1, e.g. NUL), invisible format characters (Unicode
  category ``Cf``: bidi overrides and isolates, zero-width spaces and joiners, BOM,
  soft hyphen) and lone surrogates (``Cs``, which cannot be encoded) are *refused*,
  not silently removed, so what the member sees is what is sent. A prompt made only
  of emoji is valid text and passes; so do emoji sequences that need no zero-width
  joiner.
* **Images** must really be PNG, JPEG or WebP, judged by their first bytes, not by
  their name. Size is checked before decoding, pixel count before loading, and
  Pillow's decompression-bomb warning is an error. Animated PNG/WebP use their
  first frame. EXIF and every other metadata block is dropped (the orientation is
  applied first), and trailing bytes after the image are never passed on, because
  the image is always re-encoded.
* **Generated images** lose what the generator wrote about itself before anyone stores or
  receives them (:func:`strip_metadata`): PNG text chunks (ComfyUI's whole workflow, the web
  UI's parameters), EXIF, XMP and comments, without decoding the picture. The colour profile
  stays. Abby records what it chooses (the seed, the provider's label, and the prompt when
  analytics keep prompts) in its own records, never inside the file.
"""

from __future__ import annotations

import contextlib
import io
import struct
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from abby_core.errors import InvalidImage, InvalidInput, InvalidPrompt

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_PROMPT_CHARS",
    "CompressedImage",
    "ImageFormat",
    "ImageLimits",
    "PreparedImage",
    "clean_prompt",
    "compress_for_storage",
    "prepare_image",
    "probe_image",
    "sniff_format",
    "strip_metadata",
]

MAX_PROMPT_CHARS = 10_000
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
ACCEPTED = "PNG, JPEG or WebP"

ImageFormat = Literal["png", "jpeg", "webp"]
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


# -- prompts -------------------------------------------------------------------------


def clean_prompt(text: str, *, field: str = "prompt", max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Return ``text`` stripped, with newlines and tabs turned into spaces.

    Raises :class:`InvalidPrompt` (naming ``field``) when the text is empty after
    stripping, longer than ``max_chars``, or holds a control character (NUL, escape,
    C1 controls...) or an invisible format character (bidi overrides such as U+202E,
    zero-width spaces and joiners, BOM). Those are refused rather than removed.
    Emoji-only prompts pass.
    """
    if not isinstance(text, str):
        raise InvalidPrompt(f"The {field} must be text.")
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ").strip()
    if not text:
        raise InvalidPrompt(f"The {field} is empty.", reason="empty")
    if len(text) > max_chars:
        raise InvalidPrompt(
            f"The {field} is too long ({len(text):,} characters; the limit is {max_chars:,}).", reason="too_long"
        )
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise InvalidPrompt(
                f"The {field} contains a control character (U+{ord(ch):04X}).", reason="control_character"
            )
        if category == "Cs":
            # A lone surrogate (JSON can carry "\ud800") cannot be encoded for the provider.
            raise InvalidPrompt(
                f"The {field} contains an invalid character (U+{ord(ch):04X}, half of an emoji or symbol).",
                reason="invalid_character",
            )
        if category == "Cf":
            raise InvalidPrompt(
                f"The {field} contains an invisible formatting character (U+{ord(ch):04X}, "
                f"{unicodedata.name(ch, 'unnamed')}), such as a text-direction override or "
                "zero-width space.",
                reason="format_character",
            )
    return text


# -- images --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLimits:
    """What one endpoint of one provider accepts: sides, total pixels, aspect ratio, file size.

    ``name`` is the operation as a member reads it ("image-to-image"); each provider states
    its own (``Provider.input_limits``).
    """

    name: str
    min_side: int
    max_side: int
    min_pixels: int
    max_pixels: int
    max_aspect: float
    max_bytes: int = 9 * 1024 * 1024

    @classmethod
    def sides(cls, name: str, min_side: int, max_side: int, *, max_bytes: int) -> ImageLimits:
        """Limits on the sides alone: any shape between them (pixels and aspect follow from the sides)."""
        return cls(name, min_side, max_side, min_side**2, max_side**2, max_side / min_side, max_bytes)

    def narrowed(self, other: ImageLimits) -> ImageLimits:
        """What both accept (a picture fitted to it suits either endpoint)."""
        return ImageLimits(
            self.name,
            max(self.min_side, other.min_side),
            min(self.max_side, other.max_side),
            max(self.min_pixels, other.min_pixels),
            min(self.max_pixels, other.max_pixels),
            min(self.max_aspect, other.max_aspect),
            min(self.max_bytes, other.max_bytes),
        )


@dataclass(frozen=True)
class PreparedImage:
    """A checked image re-encoded as PNG, without metadata, within an endpoint's limits."""

    data: bytes
    content_type: str
    width: int
    height: int
    source_format: str


@dataclass(frozen=True)
class CompressedImage:
    """The result of :func:`compress_for_storage`, with sizes for logging and quotas."""

    data: bytes
    content_type: str
    bytes_before: int
    bytes_after: int


def sniff_format(data: bytes) -> ImageFormat:
    """Return the real format of ``data`` from its magic bytes.

    Raises :class:`InvalidImage` for anything but PNG, JPEG or WebP, naming GIF and
    SVG explicitly because members upload them most.
    """
    head = bytes(data[:512])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        raise InvalidImage(f"GIF images are not supported (only {ACCEPTED}).", reason="unsupported_format")
    lowered = head.lstrip().lower()
    if lowered.startswith(b"<?xml") or b"<svg" in lowered:
        raise InvalidImage(f"SVG images are not supported (only {ACCEPTED}).", reason="unsupported_format")
    if not head:
        raise InvalidImage("The file is empty.", reason="empty")
    raise InvalidImage(f"This file is not a {ACCEPTED} image.", reason="unsupported_format")


def _open(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[Image.Image, ImageFormat]:
    """Decode ``data`` fully after every cheap check; the only place Pillow reads input."""
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is too large ({len(data) / 1_048_576:.1f} MiB; the limit is "
            f"{max_bytes / 1_048_576:.0f} MiB)."
        )
    fmt = sniff_format(data)
    damaged = InvalidImage("The image is damaged or incomplete.", reason="damaged")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt.upper()])
            width, height = img.size
            if width * height > max_pixels:
                raise InvalidImage(
                    f"The image has too many pixels ({width}x{height}; the limit is "
                    f"{max_pixels / 1_000_000:.0f} megapixels)."
                )
            if (img.format or "").lower() != fmt:
                raise damaged
            img.seek(0)  # animated PNG/WebP: the first frame
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            f"The image has too many pixels (the limit is {max_pixels / 1_000_000:.0f} megapixels)."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise damaged from exc
    return img, fmt


def probe_image(data: bytes, *, max_bytes: int = 64 * 1024 * 1024) -> tuple[ImageFormat, int, int]:
    """Return ``(format, width, height)`` reading only the header (for provider output)."""
    if len(data) > max_bytes:
        raise InvalidImage("The image is too large.")
    fmt = sniff_format(data)
    try:
        with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage("The image is damaged or incomplete.", reason="damaged") from exc
    return fmt, width, height


def _normalise(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation and move to RGB/RGBA; the copy carries no metadata."""
    # A broken orientation tag must not refuse the image.
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    out = img.convert("RGBA" if has_alpha else "RGB")
    out.info.clear()
    return out


def _target_size(width: int, height: int, limits: ImageLimits) -> tuple[int, int]:
    aspect = max(width, height) / min(width, height)
    if aspect > limits.max_aspect:
        raise InvalidImage(
            f"The image is too long and thin for {limits.name} ({width}x{height}); "
            f"the sides may differ by at most {limits.max_aspect:g} to 1."
        )
    scale = 1.0
    pixels = width * height
    if pixels > limits.max_pixels:
        scale = (limits.max_pixels / pixels) ** 0.5
    if max(width, height) * scale > limits.max_side:
        scale = limits.max_side / max(width, height)
    if min(width, height) * scale < limits.min_side:
        scale = limits.min_side / min(width, height)
    if pixels * scale * scale < limits.min_pixels:
        scale = (limits.min_pixels / pixels) ** 0.5
    if scale == 1.0:
        return width, height
    # Round away from the limit that forced the resize.
    w = max(limits.min_side, min(limits.max_side, round(width * scale)))
    h = max(limits.min_side, min(limits.max_side, round(height * scale)))
    while w * h > limits.max_pixels:
        w, h = max(limits.min_side, w - 1), max(limits.min_side, h - 1)
    while w * h < limits.min_pixels:
        w, h = min(limits.max_side, w + 1), min(limits.max_side, h + 1)
    return w, h


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def prepare_image(
    data: bytes,
    limits: ImageLimits,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> PreparedImage:
    """Check an uploaded image and return it as a metadata-free PNG within ``limits``.

    The one fitting function: ``limits`` are the provider's own (``Provider.input_limits``).
    Refuses (:class:`InvalidImage`) files over ``max_bytes`` before decoding, anything
    not PNG/JPEG/WebP, more than ``max_pixels`` pixels, truncated or damaged files and
    shapes too thin for the endpoint. Too small or too large images are resized
    (LANCZOS), keeping their aspect ratio; an image within the limits keeps its size.
    The PNG is shrunk further if it would be over ``limits.max_bytes``.
    """
    max_output_bytes = limits.max_bytes
    img, fmt = _open(data, max_bytes=max_bytes, max_pixels=max_pixels)
    img = _normalise(img)
    size = _target_size(img.width, img.height, limits)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    out = _png(img)
    for _ in range(6):  # bounded: each pass keeps ~56% of the pixels
        if len(out) <= max_output_bytes:
            break
        w, h = round(img.width * 0.75), round(img.height * 0.75)
        if min(w, h) < limits.min_side or w * h < limits.min_pixels:
            break
        img = img.resize((w, h), Image.Resampling.LANCZOS)
        out = _png(img)
    if len(out) > max_output_bytes:
        raise InvalidImage("The image holds too much detail to send.", reason="too_detailed")
    return PreparedImage(out, "image/png", img.width, img.height, fmt)


def compress_for_storage(
    data: bytes,
    *,
    fmt: Literal["png", "webp"] = "png",
    quality: int = 90,
    lossless: bool = False,
    max_bytes: int = 64 * 1024 * 1024,
) -> CompressedImage:
    """Re-encode a generated image for storage (``IMAGE_STORE_FORMAT``).

    ``fmt="png"`` keeps a PNG exactly as it comes (bytes unchanged: the generator already
    took out the provider's metadata, see :func:`strip_metadata`);
    other inputs are converted to PNG. ``fmt="webp"`` encodes WebP at ``quality``
    (1..100), or losslessly. Alpha is kept. Raises :class:`InvalidImage` when the
    data is not an image Abby accepts.
    """
    if not 1 <= quality <= 100:
        raise InvalidInput("IMAGE_STORE_QUALITY must be a whole number from 1 to 100.")
    before = len(data)
    if fmt == "png" and sniff_format(data) == "png":
        return CompressedImage(data, "image/png", before, before)
    img, _ = _open(data, max_bytes=max_bytes, max_pixels=MAX_IMAGE_PIXELS)
    img = _normalise(img)
    buf = io.BytesIO()
    try:
        if fmt == "webp":
            img.save(buf, format="WEBP", quality=quality, lossless=lossless, method=4)
        else:
            img.save(buf, format="PNG", optimize=False, compress_level=6)
    except (ValueError, OSError) as exc:  # e.g. WebP's 16383-pixel side limit
        raise InvalidImage(f"The image could not be stored as {fmt.upper()} ({type(exc).__name__}).") from exc
    out = buf.getvalue()
    return CompressedImage(out, CONTENT_TYPES[fmt], before, len(out))


# -- generator metadata ----------------------------------------------------------------------

# Chunks that draw the picture (and its animation) or say how its colours are meant; every
# other chunk (tEXt, iTXt, zTXt, eXIf, tIME, private ones) is dropped.
_PNG_KEEP = frozenset({
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"cICP", b"mDCv", b"cLLi", b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT",
})
_WEBP_KEEP = frozenset({b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"})
_WEBP_EXIF_XMP_FLAGS = 0x08 | 0x04
_JPEG_ICC = b"ICC_PROFILE\0"


def strip_metadata(data: bytes) -> bytes:
    """``data`` without what its generator wrote about itself; the picture is not re-encoded.

    PNG keeps only the chunks that draw it or state its colours (text chunks, EXIF, times and
    private chunks go, as do bytes after ``IEND``); JPEG loses its APP segments but JFIF, the
    ICC profile and Adobe's colour transform, and its comments; WebP its EXIF and XMP chunks.
    EXIF's orientation goes too (generators write upright images). Returns ``data`` itself when
    nothing was there. Raises :class:`InvalidImage` when the container is damaged.
    """
    fmt = sniff_format(data)
    try:
        parts = {"png": _png_parts, "jpeg": _jpeg_parts, "webp": _webp_parts}[fmt](data)
    except (IndexError, struct.error, ValueError) as exc:
        raise InvalidImage("The image is damaged or incomplete.", reason="damaged") from exc
    out = b"".join(parts)
    return data if out == data else out


def _png_parts(data: bytes) -> list[bytes]:
    parts, pos = [data[:8]], 8
    while True:
        (length,) = struct.unpack_from(">I", data, pos)
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data):
            raise ValueError("a chunk runs past the end")
        if kind in _PNG_KEEP:
            parts.append(data[pos:end])
        if kind == b"IEND":
            return parts
        pos = end


def _jpeg_parts(data: bytes) -> list[bytes]:
    parts, pos = [data[:2]], 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError("no marker where one belongs")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # the scans up to the end of the image (0xFFD9 is never inside one)
            end = data.index(b"\xff\xd9", pos) + 2
            parts.append(data[pos:end])
            return parts
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            parts.append(data[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("a segment runs past the end")
        body = data[pos + 4 : end]
        kept = (
            (marker not in range(0xE0, 0xF0) and marker != 0xFE)  # not APPn, not a comment
            or (marker == 0xE0 and body.startswith((b"JFIF\0", b"JFXX\0")))
            or (marker == 0xE2 and body.startswith(_JPEG_ICC))
            or (marker == 0xEE and body.startswith(b"Adobe"))
        )
        if kept:
            parts.append(data[pos:end])
        pos = end


def _webp_parts(data: bytes) -> list[bytes]:
    (size,) = struct.unpack_from("<I", data, 4)
    if size + 8 > len(data) or size < 4:
        raise ValueError("the RIFF size runs past the end")
    chunks, pos, end = [], 12, 8 + size
    while pos < end:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        stop = pos + 8 + length + (length & 1)
        if stop > end + (length & 1):
            raise ValueError("a chunk runs past the end")
        if kind == b"VP8X":
            flags = data[pos + 8] & ~_WEBP_EXIF_XMP_FLAGS
            chunks.append(data[pos : pos + 8] + bytes([flags]) + data[pos + 9 : stop])
        elif kind in _WEBP_KEEP:
            chunks.append(data[pos:stop])
        pos = stop
    body = b"WEBP" + b"".join(chunks)
    return [b"RIFF", struct.pack("<I", len(body)), body]
