"""Security: private bucket, links that cannot be derived, keys that cannot be guessed, no secret leaks.

Covered elsewhere, not repeated: anonymous GET of an image or a ledger document and an
anonymous LIST are refused, and tampered, lengthened or expired links are refused
(``tests/storage/test_s3_seaweedfs.py``); settings reprs hide secrets and a bad secret is
named but never shown (``tests/core/test_config.py``).
"""

from __future__ import annotations

import logging
import math
import traceback
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from abby_core.config import load_settings
from abby_core.errors import AbbyError, ConfigError, ProviderAuthError, StorageUnavailable
from abby_core.generation import ImageGenerator
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager
from abby_core.storage.s3 import S3Backend
from tests.fixtures.fake_stability import FakeStability
from tests.fixtures.seaweedfs import SeaweedFS
from tests.reliability.scenarios import FixedProvider, noise_png, service_with, user
from tests.storage.conftest import s3_settings

ALICE, BOB = user(11), user(12)


@pytest.fixture
async def s3_manager(seaweedfs: SeaweedFS) -> AsyncIterator[StorageManager]:
    backend = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    backend.ensure_ready(cleanup_days=7)
    manager = StorageManager(backend)
    yield manager
    await manager.aclose()


@pytest.mark.seaweedfs
async def test_b_cannot_turn_own_link_into_a_link_to_a(s3_manager: StorageManager, seaweedfs: SeaweedFS) -> None:
    alice_png = noise_png(40)
    service = service_with(s3_manager, FixedProvider([alice_png, noise_png(40)], delay=0))
    alices = (await service.imagine(ALICE, "alice's")).stored
    bobs = (await service.imagine(BOB, "bob's")).stored
    assert alices.url and bobs.url
    # Bob knows (or guesses) Alice's key and puts it in his own signed link.
    assert httpx.get(bobs.url.replace(bobs.key, alices.key)).status_code == 403
    # Or keeps his signature and swaps only the owner folder.
    assert httpx.get(bobs.url.replace(f"/{BOB}/", f"/{ALICE}/")).status_code == 403
    assert httpx.get(bobs.url).status_code == 200 and httpx.get(alices.url).status_code == 200
    # Anonymous writes and deletes are refused too (reads and listing: see the module docstring).
    bucket = s3_manager.backend.bucket  # type: ignore[attr-defined]
    target = f"{seaweedfs.endpoint}/{bucket}/{alices.key}"
    assert httpx.put(target, content=b"overwritten").status_code == 403
    assert httpx.delete(target).status_code == 403
    assert httpx.put(f"{seaweedfs.endpoint}/{bucket}/ledger/global.json", content=b"{}").status_code == 403
    assert await s3_manager.get_image(ALICE, alices.key) == alice_png
    assert len(await s3_manager.list_images(ALICE)) == 1


async def test_key_suffix_has_at_least_64_random_bits(tmp_path: Path) -> None:
    manager = StorageManager(storage_root=tmp_path, max_user_daily_gens=1000, image_gen_size_mb=0.001)
    try:
        suffixes = [(await manager.reserve(ALICE)).key_stem.rsplit("-", 1)[1] for _ in range(800)]
    finally:
        await manager.aclose()
    assert len(set(suffixes)) == len(suffixes)
    assert {len(s) for s in suffixes} == {16} and all(c in "0123456789abcdef" for s in suffixes for c in s)
    # Every one of the 16 hex digits must be uniform: a fixed digit (like a UUID's version
    # nibble) or a clock-derived one loses bits. Empirical entropy per digit ~3.98 bits here.
    per_digit = []
    for position in range(16):
        counts = Counter(s[position] for s in suffixes)
        per_digit.append(-sum(n / len(suffixes) * math.log2(n / len(suffixes)) for n in counts.values()))
    assert min(per_digit) > 3.85, per_digit
    assert 4 * len(per_digit) >= 64


SECRETS = {
    "STABILITY_API_KEY": "sk-STABILITY-secret-5a5a5a5a5a5a",
    "S3_SECRET_ACCESS_KEY": "S3-secret-6b6b6b6b6b6b6b6b",
    "DISCORD_TOKEN": "MTIz.DISCORD-secret.7c7c7c7c7c7c",
}


def _everything_about(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(getattr(exc, "__dict__", ""))


@pytest.mark.seaweedfs
async def test_no_secret_in_logs_errors_or_reprs(
    seaweedfs: SeaweedFS, fake_stability: FakeStability, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything: abby, botocore, urllib3, httpx, httpcore
    for name in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "abby"):
        caplog.set_level(logging.DEBUG, logger=name)  # put back after the test, not left at DEBUG for the rest
    settings = load_settings(
        env_file=None,
        STORAGE_BACKEND="s3",
        S3_ENDPOINT_URL=seaweedfs.endpoint,
        S3_ACCESS_KEY_ID=seaweedfs.access_key,  # the right id, the wrong secret
        S3_BUCKET="abby-secrets-test",
        S3_TIMEOUT_SECONDS=2,
        S3_MAX_ATTEMPTS=1,
        STABILITY_MAX_RETRIES=0,
        STABILITY_API_HOST=fake_stability.url,
        **SECRETS,
    )
    seen: list[str] = [repr(settings), str(settings), repr(settings.s3), repr(settings.api), repr(settings.discord)]
    storage = StorageManager.from_settings(settings)
    generator = ImageGenerator.from_settings(settings.api)
    seen += [repr(storage), repr(storage.backend), repr(generator), str(vars(storage.backend))]
    try:
        # Wrong S3 secret: every storage path refuses, clearly.
        for attempt in (storage.reserve(ALICE), storage.get_quota_status(ALICE), storage.ensure_ready()):
            with pytest.raises(StorageUnavailable) as refused:
                await attempt
            seen.append(_everything_about(refused.value))
        # 401 from the provider, through the whole pipeline on a working storage.
        good = StorageManager(storage_root=seaweedfs.data_dir.parent / "fs-for-secrets")
        with pytest.raises(ProviderAuthError) as rejected:
            await ImageService(good, generator).imagine(ALICE, "a cat")
        seen.append(_everything_about(rejected.value))
        await good.aclose()
        assert fake_stability.routes_hit("core") == 1
    finally:
        await generator.aclose()
        await storage.aclose()
    # Configuration errors with every secret set.
    for bad in ({"MAX_USER_DAILY_GENS": "x"}, {"S3_ENDPOINT_URL": "nope"}, {"IMAGE_GEN_SIZE_MB": "99999"}):
        with pytest.raises(ConfigError) as config_error:
            load_settings(env_file=None, **SECRETS, **bad)
        seen.append(_everything_about(config_error.value))
    text = caplog.text + "\n".join(seen) + "".join(r.getMessage() + repr(r.args) for r in caplog.records)
    assert "botocore" in caplog.text or any(r.name.startswith("botocore") for r in caplog.records)
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} leaked"
    assert all(isinstance(e, AbbyError) for e in (refused.value, rejected.value, config_error.value))
