"""Prompt and image checks that run before anything is spent."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from abby_core import images
from abby_core.errors import InvalidImage, InvalidPrompt
from abby_core.generation.stability import StabilityProvider
from abby_core.images import (
    clean_prompt,
    compress_for_storage,
    prepare_image,
    sniff_format,
)

# Stability's limits: the tightest there are, so the fitting function has the most to do.
IMAGE_TO_IMAGE = StabilityProvider.input_limits.image_to_image
FAST_UPSCALE = StabilityProvider.input_limits.upscale["fast"]


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noisy(size: tuple[int, int] = (200, 150), mode: str = "RGB") -> Image.Image:
    return Image.effect_noise(size, 64).convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width x height`` pixels, a few hundred bytes long."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# -- prompts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  a fox  ", "a fox"),
        ("a fox\nin\tsnow\r\n", "a fox in snow"),
        ("🦊🌲✨", "🦊🌲✨"),
        ("un renard roux, ß, 狐狸, ثعلب", "un renard roux, ß, 狐狸, ثعلب"),
        ("x" * 10_000, "x" * 10_000),
    ],
)
def test_clean_prompt_accepts(raw: str, clean: str) -> None:
    assert clean_prompt(raw) == clean


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        (" \n\t ", "empty"),
        ("x" * 10_001, "too long"),
        ("a\x00b", "control character"),
        ("a\x1b[31mred", "control character"),
        ("a\x85b", "control character"),
        ("abc\u202eevil", "invisible"),
        ("a\u200bb", "invisible"),
        ("\ufeffhello", "invisible"),
        ("👨\u200d👩\u200d👧", "invisible"),  # ZWJ sequences are refused with the rest of Cf
    ],
)
def test_clean_prompt_refuses(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPrompt, match=reason):
        clean_prompt(raw)


def test_clean_prompt_names_the_field() -> None:
    with pytest.raises(InvalidPrompt, match="negative prompt"):
        clean_prompt("", field="negative prompt")


# -- sniffing ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats(fmt: str) -> None:
    data = encode(noisy(), fmt)
    assert sniff_format(data) == fmt.lower()
    prepared = prepare_image(data, IMAGE_TO_IMAGE)
    assert prepared.source_format == fmt.lower()
    assert Image.open(io.BytesIO(prepared.data)).format == "PNG"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not a PNG, JPEG or WebP"),
        (b"%PDF-1.7\n...", "not a PNG, JPEG or WebP"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b"  <svg width='10' height='10'></svg>", "SVG"),
    ],
)
def test_not_an_accepted_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message) as info:
        prepare_image(data, IMAGE_TO_IMAGE)
    if message != "empty":
        assert "PNG, JPEG or WebP" in str(info.value)


def test_animated_gif_is_refused_naming_accepted_formats() -> None:
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImage, match=r"GIF images are not supported.*PNG, JPEG or WebP"):
        prepare_image(data, IMAGE_TO_IMAGE)


def test_animated_png_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (80, 80), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    out = Image.open(io.BytesIO(prepare_image(data, IMAGE_TO_IMAGE).data))
    assert getattr(out, "n_frames", 1) == 1
    assert out.convert("RGB").getpixel((10, 10)) == (255, 0, 0)


def test_truncated_png_is_refused() -> None:
    data = encode(noisy((300, 300)), "PNG")
    with pytest.raises(InvalidImage, match="damaged or incomplete"):
        prepare_image(data[: len(data) // 2], IMAGE_TO_IMAGE)


def test_polyglot_with_wrong_magic_is_refused() -> None:
    # JPEG magic bytes in front of a PNG body.
    data = b"\xff\xd8\xff" + encode(noisy(), "PNG")
    with pytest.raises(InvalidImage):
        prepare_image(data, IMAGE_TO_IMAGE)


def test_polyglot_payload_after_the_image_is_not_passed_on() -> None:
    payload = b"PK\x03\x04<script>alert(1)</script>" * 20
    prepared = prepare_image(encode(noisy(), "PNG") + payload, IMAGE_TO_IMAGE)
    assert b"<script>" not in prepared.data and b"PK\x03\x04" not in prepared.data


def test_decompression_bomb_of_100_megapixels_is_refused_cheaply() -> None:
    data = huge_png(10_000, 10_000)
    assert len(data) < 1_000
    with pytest.raises(InvalidImage, match="too many pixels"):
        prepare_image(data, IMAGE_TO_IMAGE)


def test_pixel_cap_below_pillows_own_limit() -> None:
    with pytest.raises(InvalidImage, match="too many pixels"):
        prepare_image(huge_png(8_000, 6_000), IMAGE_TO_IMAGE)  # 48 MP > 40 MP


def test_pillows_bomb_error_becomes_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="too many pixels"):
        prepare_image(huge_png(20_000, 20_000), IMAGE_TO_IMAGE, max_pixels=10**12)


def test_30_mb_file_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kw: object) -> None:
        raise AssertionError("decoded a file that was too large")

    monkeypatch.setattr(images.Image, "open", never)
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * (30 * 1024 * 1024)
    with pytest.raises(InvalidImage, match=r"too large.*10 MiB"):
        prepare_image(data, IMAGE_TO_IMAGE)


def test_jpeg_with_huge_exif_is_stripped_and_oriented() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010E] = "x" * 60_000  # ImageDescription, ~60 KB
    data = encode(noisy((200, 100)), "JPEG", exif=exif.tobytes())
    assert len(data) > 60_000
    prepared = prepare_image(data, IMAGE_TO_IMAGE)
    out = Image.open(io.BytesIO(prepared.data))
    assert "exif" not in out.info and b"Exif" not in prepared.data
    assert out.size[0] < out.size[1]  # the orientation was applied before stripping


def test_transparency_is_kept() -> None:
    img = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    out = Image.open(io.BytesIO(prepare_image(encode(img, "PNG"), IMAGE_TO_IMAGE).data))
    assert out.mode == "RGBA"


@pytest.mark.parametrize(
    ("size", "limits"),
    [
        ((20, 20), FAST_UPSCALE),  # too few pixels: enlarged
        ((3000, 1000), FAST_UPSCALE),  # too wide: shrunk
        ((1100, 1100), FAST_UPSCALE),  # too many pixels in total
        ((40, 60), IMAGE_TO_IMAGE),  # sides under 64
        ((3000, 3000), IMAGE_TO_IMAGE),
    ],
)
def test_images_are_resized_into_endpoint_limits(size: tuple[int, int], limits: images.ImageLimits) -> None:
    prepared = prepare_image(encode(Image.new("RGB", size, "white"), "PNG"), limits)
    w, h = prepared.width, prepared.height
    assert Image.open(io.BytesIO(prepared.data)).size == (w, h)
    assert limits.min_side <= min(w, h) and max(w, h) <= limits.max_side
    assert limits.min_pixels <= w * h <= limits.max_pixels
    assert abs(w / h - size[0] / size[1]) < 0.05


def test_too_thin_for_image_to_image() -> None:
    with pytest.raises(InvalidImage, match="long and thin"):
        prepare_image(encode(Image.new("RGB", (900, 300)), "PNG"), IMAGE_TO_IMAGE)


# -- storage -----------------------------------------------------------------------


def test_png_is_stored_unchanged_by_default() -> None:
    data = encode(noisy(), "PNG")
    out = compress_for_storage(data)
    assert out.data is data
    assert (out.content_type, out.bytes_before, out.bytes_after) == ("image/png", len(data), len(data))


def test_webp_storage_is_smaller_and_reports_sizes() -> None:
    gradient = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
    data = encode(gradient, "PNG", compress_level=1)
    out = compress_for_storage(data, fmt="webp", quality=80)
    assert out.content_type == "image/webp"
    assert out.bytes_before == len(data) and out.bytes_after == len(out.data)
    assert out.bytes_after < out.bytes_before
    assert Image.open(io.BytesIO(out.data)).format == "WEBP"


def test_lossless_webp_keeps_pixels() -> None:
    img = noisy((64, 64))
    out = compress_for_storage(encode(img, "PNG"), fmt="webp", lossless=True)
    assert Image.open(io.BytesIO(out.data)).convert("RGB").tobytes() == img.tobytes()


def test_jpeg_to_png_storage_converts() -> None:
    out = compress_for_storage(encode(noisy(), "JPEG"))
    assert out.content_type == "image/png" and out.data.startswith(b"\x89PNG")


def test_storage_rejects_bad_quality() -> None:
    from abby_core.errors import InvalidInput

    with pytest.raises(InvalidInput):
        compress_for_storage(encode(noisy(), "PNG"), fmt="webp", quality=0)


# -- generator metadata ------------------------------------------------------------------------------

WORKFLOW = '{"3": {"class_type": "KSampler"}, "4": {"inputs": {"ckpt_name": "secret_model.safetensors"}}}'


def icc_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with_software() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = "ComfyUI"  # Software
    exif[0x010E] = "a red fox, negative: blurry"  # ImageDescription
    return exif


def test_generator_text_is_stripped_from_a_png_and_the_picture_kept() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", WORKFLOW)
    info.add_text("workflow", WORKFLOW, zip=True)  # zTXt
    info.add_itxt("parameters", "a red fox, Negative prompt: blurry", lang="en")
    img = noisy((64, 48))
    data = encode(img, "PNG", pnginfo=info, exif=exif_with_software(), icc_profile=icc_profile())
    data += b"trailing bytes a generator appended"
    assert b"secret_model" in data and b"iTXt" in data and b"zTXt" in data and b"eXIf" in data
    clean = images.strip_metadata(data)
    out = Image.open(io.BytesIO(clean))
    assert out.text == {} and "exif" not in out.info
    assert b"secret_model" not in clean and b"trailing" not in clean
    assert out.info.get("icc_profile") == icc_profile()  # the colours stay as the generator meant them
    assert out.tobytes() == img.tobytes()


def test_exif_xmp_and_comments_are_stripped_from_a_jpeg_without_re_encoding() -> None:
    img = noisy((64, 48))
    data = encode(img, "JPEG", quality=90, exif=exif_with_software(), icc_profile=icc_profile(),
                  comment=b"made by a generator", xmp=b"<x:xmpmeta>ComfyUI workflow</x:xmpmeta>")
    clean = images.strip_metadata(data)
    out = Image.open(io.BytesIO(clean))
    assert "exif" not in out.info and "xmp" not in out.info and "comment" not in out.info
    assert b"ComfyUI" not in clean and b"made by a generator" not in clean
    assert out.info.get("icc_profile") == icc_profile()
    assert out.tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert clean.endswith(data[data.index(b"\xff\xda"):])  # the same scans: not decoded and encoded again
    assert images.strip_metadata(data + b"appended after the end") == clean


def test_exif_and_xmp_are_stripped_from_a_webp() -> None:
    img = noisy((64, 48))
    data = encode(img, "WEBP", quality=80, exif=exif_with_software(), icc_profile=icc_profile(),
                  xmp=b"<x:xmpmeta>ComfyUI workflow</x:xmpmeta>")
    clean = images.strip_metadata(data)
    out = Image.open(io.BytesIO(clean))
    assert "exif" not in out.info and "xmp" not in out.info
    assert b"ComfyUI" not in clean and int.from_bytes(clean[4:8], "little") == len(clean) - 8
    assert out.info.get("icc_profile") == icc_profile()
    assert out.tobytes() == Image.open(io.BytesIO(data)).tobytes()


def test_an_image_without_metadata_is_kept_byte_for_byte() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encode(noisy((32, 32)), fmt)
        assert images.strip_metadata(data) == data, fmt


def test_a_damaged_image_is_refused_when_stripped() -> None:
    data = encode(noisy((32, 32)), "PNG")
    with pytest.raises(InvalidImage, match="damaged"):
        images.strip_metadata(data[: len(data) // 2])
