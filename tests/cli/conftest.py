"""Helpers for the CLI tests: every test runs in its own empty folder (no .env leaks in)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from abby_cli.main import app
from tests.fixtures.fake_stability import API_KEY, FakeStability
from tests.fixtures.seaweedfs import SeaweedFS

USER = "123456789012345678"
Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def abby() -> Invoke:
    """``abby(*args)`` runs the app in-process and returns typer's Result (stdout and stderr apart)."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


def one_json(result: Result) -> dict[str, Any]:
    """The single JSON object a ``--json`` command printed; fails if stdout holds anything else."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must be one JSON line, got: {result.stdout!r} (stderr: {result.stderr!r})"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    assert obj["ok"] is (result.exit_code == 0), obj
    return obj


def png_file(path: Path, size: tuple[int, int] = (256, 256)) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_PROVIDER", "offline")


@pytest.fixture
def stability(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStability]:
    """The fake Stability API on its own thread, configured through the environment."""
    with FakeStability.threaded() as fake:
        monkeypatch.setenv("IMAGE_PROVIDER", "stability")
        monkeypatch.setenv("STABILITY_API_HOST", fake.url)
        monkeypatch.setenv("STABILITY_API_KEY", API_KEY)
        monkeypatch.setenv("STABILITY_MAX_RETRIES", "0")
        yield fake


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """STORAGE_BACKEND=s3 on SeaweedFS with a fresh bucket name (not created yet); returns it."""
    bucket = f"cli-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("S3_ENDPOINT_URL", seaweedfs.endpoint)
    monkeypatch.setenv("S3_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "1")
    return bucket
