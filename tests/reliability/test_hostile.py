"""Hostile input through ImageService and StorageManager, the path the bot and the CLI use.

Every refused case must raise the right Abby error with a clear, printable message,
write nothing (no object, no ledger change) and leave every quota as it was. The few
inputs that are valid however odd (emoji-only prompts, a PNG with a ZIP appended, a
JPEG with a huge EXIF block) must succeed and be stored, without the smuggled bytes.

Decisions: a file that merely starts with PNG magic but does not decode is refused;
a valid PNG with trailing data is accepted because it is always re-encoded (the
trailer never reaches the provider nor storage). Unit-level checks of the same
validators live in ``tests/test_images.py``, ``tests/storage/test_manager.py`` and
``tests/core/test_config.py`` (12 numeric variables x 5 bad values); here each attack
goes end to end.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from abby_core.config import load_settings
from abby_core.errors import (
    AbbyError,
    ConfigError,
    ImageNotFound,
    InvalidImage,
    InvalidInput,
    InvalidKey,
    InvalidPrompt,
    InvalidUser,
)
from abby_core.generation import ImageGenerator, OfflineProvider
from abby_core.pipeline import GenerationResult, ImageService
from abby_core.storage import StorageManager
from tests.reliability.scenarios import user
from tests.test_images import encode, huge_png, noisy

ALICE, BOB = user(1), user(2)
ZIP_MARK = b"polyglot-payload-0123456789"


def _png(size: tuple[int, int] = (200, 150)) -> bytes:
    return encode(noisy(size), "PNG")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("evil.js", ZIP_MARK)
    return buf.getvalue()


def _gif() -> bytes:
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _jpeg_huge_exif() -> bytes:
    img = noisy((120, 90))
    exif = img.getexif()
    exif[0x010E] = "x" * 60_000  # ImageDescription: a 60 kB EXIF block
    exif[0x0112] = 6  # rotated: the orientation must still be applied
    return encode(img, "JPEG", exif=exif.tobytes())


@dataclass(frozen=True)
class Ctx:
    service: ImageService
    storage: StorageManager
    alice_key: str
    bob_key: str
    alice_path: str


Attack = Callable[[Ctx], Awaitable[Any]]


def imagine(prompt: object, **kw: Any) -> Attack:
    return lambda c: c.service.imagine(ALICE, prompt, **kw)  # type: ignore[arg-type]


def img2img(image: bytes, prompt: str = "a fox", **kw: Any) -> Attack:
    return lambda c: c.service.img2img(ALICE, image, prompt, **kw)


def upscale(image: bytes, **kw: Any) -> Attack:
    return lambda c: c.service.upscale(ALICE, image, **kw)


def as_user(uid: object) -> Attack:
    return lambda c: c.service.imagine(uid, "a fox")


def delete(key: Callable[[Ctx], str]) -> Attack:
    return lambda c: c.storage.delete_image(ALICE, key(c))


def fetch(key: Callable[[Ctx], str]) -> Attack:
    return lambda c: c.storage.get_image(ALICE, key(c))


PNG = _png()
OK = GenerationResult  # the attack is valid input and must succeed

CASES: list[tuple[str, Attack, type]] = [
    # -- prompts
    ("prompt-empty", imagine(""), InvalidPrompt),
    ("prompt-whitespace", imagine(" \n\t \r\n "), InvalidPrompt),
    ("prompt-10001-chars", imagine("x" * 10_001), InvalidPrompt),
    ("prompt-NUL", imagine("a cat\x00 on a mat"), InvalidPrompt),
    ("prompt-ESC-sequence", imagine("\x1b[31mred\x1b[0m cat"), InvalidPrompt),
    ("prompt-DEL", imagine("a cat\x7f"), InvalidPrompt),
    ("prompt-C1-NEL", imagine("a cat\x85on a mat"), InvalidPrompt),
    ("prompt-RLO-override", imagine("a cat \u202egnp.exe"), InvalidPrompt),
    ("prompt-RLI-isolate", imagine("a cat \u2067x\u2069"), InvalidPrompt),
    ("prompt-zero-width-space", imagine("a\u200bcat"), InvalidPrompt),
    ("prompt-BOM", imagine("\ufeffa cat"), InvalidPrompt),
    ("prompt-lone-surrogate", imagine("a cat \ud800"), InvalidPrompt),
    ("prompt-bytes", imagine(b"a cat"), InvalidPrompt),
    ("prompt-None", imagine(None), InvalidPrompt),
    ("negative-prompt-10001", imagine("a cat", negative_prompt="y" * 10_001), InvalidPrompt),
    ("negative-prompt-NUL", imagine("a cat", negative_prompt="dogs\x00"), InvalidPrompt),
    ("aspect-ratio-1:0", imagine("a cat", aspect_ratio="1:0"), InvalidInput),
    ("seed-negative", imagine("a cat", seed=-1), InvalidInput),
    ("seed-2**32", imagine("a cat", seed=2**32), InvalidInput),
    ("style-preset-traversal", imagine("a cat", style_preset="../../etc/passwd"), InvalidInput),
    ("prompt-emoji-only", imagine("🦊🌲✨🌙"), OK),
    ("prompt-arabic-rtl-text", imagine("ثعلب في الثلج"), OK),
    ("prompt-exactly-10000", imagine("a" * 10_000), OK),
    # -- attachments
    ("image-not-an-image", img2img(b"hello, I am a text file\n" * 10), InvalidImage),
    ("image-empty", img2img(b""), InvalidImage),
    ("image-truncated-png", img2img(PNG[: len(PNG) // 2]), InvalidImage),
    ("image-png-magic-then-html", img2img(b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>"), InvalidImage),
    ("image-png-magic-then-zip", upscale(b"\x89PNG\r\n\x1a\n" + _zip()), InvalidImage),
    ("image-100-megapixel-bomb", img2img(huge_png(10_000, 10_000)), InvalidImage),
    ("image-65535-square-bomb", upscale(huge_png(65_535, 65_535)), InvalidImage),
    ("image-30-MB", upscale(b"\x89PNG\r\n\x1a\n" + b"\0" * (30 * 1024 * 1024)), InvalidImage),
    ("image-animated-gif", img2img(_gif()), InvalidImage),
    ("image-svg", upscale(b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"), InvalidImage),
    ("image-svg-xml-prolog", img2img(b"<?xml version='1.0'?>\n<svg/>"), InvalidImage),
    ("image-truncated-jpeg", img2img(encode(noisy(), "JPEG")[:300]), InvalidImage),
    ("image-webp-header-garbage", upscale(b"RIFF\x10\0\0\0WEBPVP8 " + b"\xff" * 64), InvalidImage),
    ("image-bmp", img2img(encode(noisy(), "BMP")), InvalidImage),
    ("image-tiff", upscale(encode(noisy(), "TIFF")), InvalidImage),
    ("image-1x2000-too-thin", img2img(encode(noisy((2000, 1)), "PNG")), InvalidImage),
    ("upscale-unknown-mode", upscale(PNG, mode="huge"), InvalidInput),
    ("img2img-strength-nan", img2img(PNG, strength=float("nan")), InvalidInput),
    ("image-png-with-zip-appended", upscale(PNG + _zip()), OK),
    ("image-jpeg-60kB-exif", img2img(_jpeg_huge_exif()), OK),
    # -- user ids
    ("user-traversal", as_user("../1"), InvalidUser),
    ("user-negative", as_user("-1"), InvalidUser),
    ("user-exponent", as_user("1e9"), InvalidUser),
    ("user-30-digits", as_user("1" * 30), InvalidUser),
    ("user-over-2**64", as_user(str(2**64)), InvalidUser),
    ("user-unicode-digits", as_user("١٢٣٤٥٦"), InvalidUser),
    ("user-fullwidth-digits", as_user("１２３"), InvalidUser),
    ("user-empty", as_user(""), InvalidUser),
    ("user-zero", as_user("0"), InvalidUser),
    ("user-leading-zero", as_user("0123"), InvalidUser),
    ("user-trailing-newline", as_user("123\n"), InvalidUser),
    ("user-bool", as_user(True), InvalidUser),
    ("user-float", as_user(1.0), InvalidUser),
    ("user-None", as_user(None), InvalidUser),
    # -- keys given to delete / gallery
    ("delete-traversal-to-ledger", delete(lambda c: "../../ledger/global.json"), InvalidKey),
    ("delete-other-users-key", delete(lambda c: c.bob_key), InvalidKey),
    ("fetch-other-users-key", fetch(lambda c: c.bob_key), InvalidKey),
    ("delete-other-users-name-only", delete(lambda c: c.bob_key.rsplit("/", 1)[1]), ImageNotFound),
    ("delete-absolute-path", delete(lambda c: "/etc/passwd"), InvalidKey),
    ("delete-own-absolute-path", delete(lambda c: c.alice_path), InvalidKey),
    ("delete-windows-path", delete(lambda c: "C:\\Windows\\win.ini"), InvalidKey),
    ("delete-dotdot-inside-prefix", delete(lambda c: f"images/users/{ALICE}/../{BOB}/x.png"), InvalidKey),
    ("delete-ledger-key", delete(lambda c: f"ledger/users/{ALICE}.json"), InvalidKey),
    ("delete-own-key-with-NUL", delete(lambda c: c.alice_key + "\x00"), InvalidKey),
    ("delete-url-encoded-traversal", delete(lambda c: "..%2F..%2Fledger%2Fglobal.json"), InvalidKey),
    ("delete-201-chars", delete(lambda c: "a" * 201), InvalidKey),
    ("fetch-own-missing-name", fetch(lambda c: "20200101T000000Z-0123456789abcdef.png"), ImageNotFound),
]


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def _clear(message: str) -> bool:
    return 10 <= len(message) <= 400 and not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in message)


async def run_case(attack: Attack, expected: type, root: Path) -> tuple[bool, str]:
    """Run one attack on a fresh folder where Alice and Bob each have an image; say if it held."""
    storage = StorageManager(storage_root=root, max_user_daily_gens=5)
    service = ImageService(storage, ImageGenerator(provider=OfflineProvider()))
    try:
        first = await service.imagine(ALICE, "alice's first image")
        bob = await service.imagine(BOB, "bob's image")
        ctx = Ctx(service, storage, first.stored.key, bob.stored.key, first.stored.path or "")
        before_files = _files(root)
        before = [await storage.get_quota_status(u) for u in (ALICE, BOB)]
        try:
            result = await attack(ctx)
        except AbbyError as exc:
            result = exc
        except Exception as exc:  # a crash: the case fails, and says how
            return False, f"crashed with {type(exc).__name__}: {exc}"
        after = [await storage.get_quota_status(u) for u in (ALICE, BOB)]
        if expected is OK:
            if not isinstance(result, GenerationResult):
                return False, f"valid input refused: {result!r}"
            stored = await storage.get_image(ALICE, result.stored.key)
            if stored != result.data or ZIP_MARK in stored or b"Exif" in stored:
                return False, "stored bytes differ from the result or carry smuggled data"
            bob_same = (after[1].daily_used, after[1].user_bytes) == (before[1].daily_used, before[1].user_bytes)
            if after[0].daily_used != before[0].daily_used + 1 or not bob_same:
                return False, f"accepted input charged wrongly: {before} -> {after}"
            return True, "accepted and stored"
        if not isinstance(result, expected) or isinstance(result, GenerationResult):
            return False, f"expected {expected.__name__}, got {result!r}"
        if not _clear(str(result)):
            return False, f"unclear message: {str(result)!r}"
        if _files(root) != before_files:
            return False, "something was written"
        if after != before:
            return False, f"quota changed: {before} -> {after}"
        return True, f"{type(result).__name__}: {result}"
    finally:
        await storage.aclose()


@pytest.mark.parametrize(("attack", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_hostile_input(attack: Attack, expected: type, tmp_path: Path) -> None:
    held, detail = await run_case(attack, expected, tmp_path / "shared")
    assert held, detail


# -- configuration: what tests/core/test_config.py does not already try ------------------------

CONFIG_CASES: list[tuple[str, dict[str, str]]] = [
    ("global-mb-nan", {"MAX_GLOBAL_STORAGE_MB": "nan"}),
    ("user-mb-inf", {"MAX_USER_STORAGE_MB": "inf"}),
    ("gen-size-nan", {"IMAGE_GEN_SIZE_MB": "nan"}),
    ("s3-timeout-inf", {"S3_TIMEOUT_SECONDS": "inf"}),
    ("stability-timeout-nan", {"STABILITY_TIMEOUT_SECONDS": "nan"}),
    ("daily-gens-fraction", {"MAX_USER_DAILY_GENS": "5.5"}),
    ("daily-gens-huge", {"MAX_USER_DAILY_GENS": "99999999999999999999"}),
    ("stability-retries-negative", {"STABILITY_MAX_RETRIES": "-1"}),
    ("stability-retries-huge", {"STABILITY_MAX_RETRIES": "1000"}),
    ("stability-retries-word", {"STABILITY_MAX_RETRIES": "some"}),
    ("guild-id-negative", {"DISCORD_GUILD_ID": "-1"}),
    ("guild-id-word", {"DISCORD_GUILD_ID": "my-server"}),
    ("reservation-ttl-zero", {"RESERVATION_TTL_SECONDS": "0"}),
    ("reservation-ttl-over-7-days", {"RESERVATION_TTL_SECONDS": "604801"}),
    ("link-ttl-over-7-days", {"PRESIGNED_URL_TTL_SECONDS": "604801"}),
    ("backend-uppercase", {"STORAGE_BACKEND": "S3"}),
    ("backend-unknown", {"STORAGE_BACKEND": "dropbox"}),
    ("store-lossless-word", {"IMAGE_STORE_LOSSLESS": "maybe"}),
    ("tier-storage-nan", {"QUOTA_TIERS": "111:5:nan"}),
    ("tier-storage-inf", {"QUOTA_TIERS": "111:5:inf"}),
    ("tier-daily-huge", {"QUOTA_TIERS": "111:99999999999:5"}),
    ("tier-negative", {"QUOTA_TIERS": "111:-5:100"}),
]


@pytest.mark.parametrize("env", [c[1] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_hostile_configuration(env: dict[str, str]) -> None:
    secret = "sk-config-SECRET-0001"
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, STABILITY_API_KEY=secret, **env)
    message = str(refused.value)
    assert next(iter(env)) in message and "must be" in message
    assert secret not in message and _clear(message.replace("\n", " "))


def test_there_are_at_least_forty_attacks() -> None:
    assert len(CASES) + len(CONFIG_CASES) >= 40
