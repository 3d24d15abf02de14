"""abby_core.doctor: every check's verdict, without the CLI."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.config import load_settings
from abby_core.doctor import CHECK_NAMES, Check, config_failed, discord_token_check, run_checks
from abby_core.errors import ConfigError
from abby_core.generation import ImageGenerator
from abby_core.storage import StorageManager
from tests.fixtures.fake_stability import API_KEY, FakeStability
from tests.fixtures.seaweedfs import SeaweedFS

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB"


async def _run(clock: object = None, **env: object) -> dict[str, Check]:
    settings = load_settings(env_file=None, **env)
    storage = StorageManager.from_settings(settings)
    generator = ImageGenerator.from_settings(settings.api)
    try:
        checks = await run_checks(settings, storage, generator, clock=clock)  # type: ignore[arg-type]
    finally:
        await storage.aclose()
        await generator.aclose()
    assert [c.name for c in checks] == list(CHECK_NAMES)
    return {c.name: c for c in checks}


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, "skip"), (TOKEN, "ok"), ("not-a-token", "fail"), ("a.b.c", "fail"), (TOKEN + ".extra", "fail")],
)
def test_discord_token_shape(token: str | None, status: str) -> None:
    check = discord_token_check(load_settings(env_file=None, DISCORD_TOKEN=token))
    assert check.status == status
    assert token is None or token not in check.detail


def test_config_failed_skips_the_rest() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None, MAX_USER_DAILY_GENS=0)
    checks = config_failed(caught.value)
    assert checks[0].status == "fail" and "MAX_USER_DAILY_GENS" in checks[0].detail
    assert [c.status for c in checks[1:]] == ["skip"] * (len(CHECK_NAMES) - 1)


async def test_filesystem_root_missing_is_not_created(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    checks = await _run(STORAGE_ROOT=root, IMAGE_PROVIDER="offline")
    assert checks["storage"].status == "ok" and "created on first use" in checks["storage"].detail
    assert not root.exists()
    skipped = ("privacy", "lifecycle", "presigned_link", "clock", "stability", "image_server")
    assert {checks[n].status for n in skipped} == {"skip"}


async def test_filesystem_existing_root(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    checks = await _run(STORAGE_ROOT=root, IMAGE_PROVIDER="offline", DISCORD_TOKEN=TOKEN)
    assert checks["storage"].status == "ok" and checks["conditional_writes"].status == "ok"
    assert checks["discord_token"].status == "ok"
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


async def test_filesystem_root_not_writable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    checks = await _run(STORAGE_ROOT=tmp_path / "file" / "shared", IMAGE_PROVIDER="offline")
    assert checks["storage"].status == "fail" and checks["conditional_writes"].status == "skip"


async def test_stability_missing_key_good_key_bad_key(tmp_path: Path, fake_stability: FakeStability) -> None:
    missing = await _run(STORAGE_ROOT=tmp_path, IMAGE_PROVIDER="stability")
    assert missing["stability"].status == "fail" and "disabled" in missing["stability"].detail
    good = await _run(
        STORAGE_ROOT=tmp_path, STABILITY_API_KEY=API_KEY, STABILITY_API_HOST=fake_stability.url
    )
    assert good["stability"].status == "ok" and "42.5 credits" in good["stability"].detail
    bad = await _run(
        STORAGE_ROOT=tmp_path, STABILITY_API_KEY="sk-wrong-0000", STABILITY_API_HOST=fake_stability.url,
        STABILITY_MAX_RETRIES=0,
    )
    assert bad["stability"].status == "fail" and "sk-wrong" not in bad["stability"].detail


@pytest.mark.seaweedfs
async def test_s3_checks_and_clock_skew(seaweedfs: SeaweedFS) -> None:
    env = {
        "STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": seaweedfs.endpoint, "S3_ACCESS_KEY_ID": seaweedfs.access_key,
        "S3_SECRET_ACCESS_KEY": seaweedfs.secret_key, "S3_BUCKET": f"doctor-{uuid.uuid4().hex[:10]}",
        "IMAGE_PROVIDER": "offline",
    }
    settings = load_settings(env_file=None, **env)
    async with StorageManager.from_settings(settings) as storage:
        await storage.ensure_ready()
    fine = await _run(**env)
    assert {fine[n].status for n in ("storage", "privacy", "lifecycle", "conditional_writes", "presigned_link")} == {
        "ok"
    }
    assert fine["clock"].status == "ok"
    skewed = await _run(clock=lambda: datetime.now(UTC) + timedelta(minutes=11), **env)
    assert skewed["clock"].status == "fail" and "ahead of" in skewed["clock"].detail
    # 90 s behind: two hosts each that far from the server may be 3 minutes apart, past the
    # 2 minutes the shared queue, slots, leases and holds are safe for (docs/SCALING.md).
    behind = await _run(clock=lambda: datetime.now(UTC) - timedelta(seconds=90), **env)
    assert behind["clock"].status == "fail" and "behind" in behind["clock"].detail
    broken_link = await _run(S3_PUBLIC_ENDPOINT_URL="http://127.0.0.1:9", **env)
    assert broken_link["presigned_link"].status == "fail" and broken_link["presigned_link"].fix


def test_core_never_imports_the_cli_libraries() -> None:
    code = (
        # httpx's own command line (httpx._main) loads rich when click is installed: not Abby's import.
        "import sys; sys.modules['httpx._main'] = None;"
        "import abby_core.doctor, abby_core.pipeline, abby_core.storage.manager;"
        "bad = [m for m in ('typer', 'rich', 'discord') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_no_provider_configured_yet_is_one_line_not_a_failure(tmp_path: Path) -> None:
    """A fresh install (the README's try-it): no IMAGE_PROVIDER, no key. Not a failure: say what to set."""
    fresh = await _run(STORAGE_ROOT=tmp_path)
    check = fresh["stability"]
    assert check.status == "skip" and check.detail.startswith("not configured yet")
    assert "STABILITY_API_KEY" in check.detail and "IMAGE_PROVIDER" in check.detail and "\n" not in check.detail
    assert not [c for c in fresh.values() if c.status == "fail"]
    chosen = await _run(STORAGE_ROOT=tmp_path, IMAGE_PROVIDER="stability")  # asked for Stability: a failure
    assert chosen["stability"].status == "fail"
