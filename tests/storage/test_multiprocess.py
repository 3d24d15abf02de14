"""Exact quotas across OS processes that share one bucket or one storage root."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from abby_core.storage import FilesystemBackend, StorageBackend
from abby_core.storage.keys import user_ledger_key
from abby_core.storage.s3 import S3Backend
from tests.fixtures.seaweedfs import SeaweedFS
from tests.storage.conftest import s3_settings

ROOT = Path(__file__).resolve().parents[2]
USER = "424242424242424242"


def hammer(config: dict[str, Any], processes: int) -> list[dict[str, Any]]:
    config = dict(config, start_at=time.time() + 4.0)  # all processes start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.storage.hammer", json.dumps(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def check(backend: StorageBackend, results: list[dict[str, Any]], daily: int, attempts: int) -> None:
    assert [r["errors"] for r in results] == [[] for _ in results]
    assert sum(r["granted"] for r in results) == daily
    assert sum(r["refused"] for r in results) == attempts - daily
    found = backend.read_doc(user_ledger_key(USER))
    assert found is not None
    ledger = json.loads(found[0])
    assert ledger["count"] == daily and ledger["holds"] == {}
    assert len(ledger["objects"]) == daily
    assert len(list(backend.list_objects(f"images/users/{USER}/"))) == daily


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path: Path) -> None:
    config = {"backend": "filesystem", "root": str(tmp_path), "user": USER, "daily": 5, "attempts": 50, "save": True}
    results = hammer(config, processes=2)
    check(FilesystemBackend(tmp_path), results, daily=5, attempts=100)


@pytest.mark.slow
@pytest.mark.seaweedfs
def test_two_processes_on_one_bucket(seaweedfs: SeaweedFS) -> None:
    backend = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    backend.ensure_ready(cleanup_days=7)
    config = {
        "backend": "s3",
        "endpoint": seaweedfs.endpoint,
        "access_key": seaweedfs.access_key,
        "secret_key": seaweedfs.secret_key,
        "bucket": backend.bucket,
        "user": USER,
        "daily": 5,
        "attempts": 50,
        "save": True,
    }
    results = hammer(config, processes=2)
    check(backend, results, daily=5, attempts=100)
    assert all(r["granted"] + r["refused"] == 50 for r in results)
