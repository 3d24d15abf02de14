"""Escrow across OS processes on a real S3 server: 8 bot processes against a small global
limit end exactly at it, never pass it at any instant, and a process killed while it holds
a lease costs no budget once the lease's lifetime is over. One process's clock is 90 s off
in each (docs/SCALING.md: clocks up to 2 minutes apart are safe)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from abby_core.errors import GlobalStorageFull
from abby_core.storage import StorageManager, keys, usage_rules
from abby_core.storage.rules import PURGE_MARGIN
from abby_core.storage.s3 import S3Backend
from tests.fixtures.seaweedfs import SeaweedFS
from tests.storage.conftest import s3_settings

ROOT = Path(__file__).resolve().parents[2]
SIZE = 2_000
IMAGES = 120  # the global limit, in images
TTL = 30  # seconds: leases last 15 s, and are taken for dead once seen unchanged for 18.75 s
SKEW = 90  # seconds: how far one process's clock is ahead of the others'

pytestmark = [pytest.mark.slow, pytest.mark.seaweedfs]


def _bucket(seaweedfs: SeaweedFS) -> S3Backend:
    backend = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    backend.ensure_ready(cleanup_days=7)
    return backend


def _config(seaweedfs: SeaweedFS, backend: S3Backend, **extra: Any) -> dict[str, Any]:
    config = {
        "backend": "s3",
        "endpoint": seaweedfs.endpoint,
        "access_key": seaweedfs.access_key,
        "secret_key": seaweedfs.secret_key,
        "bucket": backend.bucket,
        "size": SIZE,
        "limit_bytes": IMAGES * SIZE,
        "ttl": TTL,
        "tasks": 4,
        "members": 5,
        "seconds": 600,  # a bound for a run gone wrong; each ends when the budget is full
        "start_at": time.time() + 3.0,
    }
    config.update(extra)
    return config


def _spawn(config: dict[str, Any], n: int, *, clock_offset: float = 0) -> subprocess.Popen[str]:
    config = dict(config, first_user=10**6 * (n + 1), clock_offset=clock_offset)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.escrow_worker", json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Sampler:
    """Sums the stored images every few milliseconds while the processes run."""

    def __init__(self, backend: S3Backend) -> None:
        self.backend = backend
        self.highest = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(o.size for o in self.backend.list_objects(keys.USERS_PREFIX))
            self.highest = max(self.highest, total)
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _summary(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=660)  # past the workers' own bound: a hang, not a slow machine
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _check_exact(backend: S3Backend, saved: int) -> None:
    stored = [o for o in backend.list_objects(keys.USERS_PREFIX)]
    assert len(stored) == saved == IMAGES
    assert sum(o.size for o in stored) == IMAGES * SIZE
    found = backend.read_doc(keys.GLOBAL_LEDGER_KEY)
    assert found is not None
    glob = json.loads(found[0])
    assert glob["leases"] == {}


async def _reconcile(backend: S3Backend) -> dict[str, tuple[int, int]]:
    auditor = StorageManager(backend, max_global_storage_mb=IMAGES * SIZE / 1_000_000)
    try:
        drift = (await auditor.reconcile()).drift
        glob = auditor.accounts.global_doc()
        assert usage_rules.snapshot_usage(glob) == IMAGES * SIZE
        return drift
    finally:
        await auditor.aclose()


async def test_eight_processes_end_exactly_at_the_global_limit(seaweedfs: SeaweedFS) -> None:
    backend = _bucket(seaweedfs)
    config = _config(seaweedfs, backend)
    with Sampler(backend) as sampler:
        procs = [_spawn(config, n, clock_offset=SKEW if n == 0 else 0) for n in range(8)]
        results = [_summary(p) for p in procs]
    assert [r["errors"] for r in results] == [[]] * 8
    assert all(r["done"] for r in results)
    saved = sum(r["saved"] for r in results)
    _check_exact(backend, saved)
    # Work was spread (more than one process saved images), and never over the limit.
    assert sum(1 for r in results if r["saved"]) >= 2
    assert sampler.samples >= 5
    assert sampler.highest <= IMAGES * SIZE
    assert await _reconcile(backend) == {}


def _read_until(proc: subprocess.Popen[str], saved: int) -> None:
    assert proc.stdout is not None
    for line in _lines(proc):
        if json.loads(line).get("saved", 0) >= saved:
            return
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"the process ended before it saved {saved} images: {err[-2000:]}")


def _lines(proc: subprocess.Popen[str]) -> Iterator[str]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            return
        yield line


async def test_a_process_killed_while_it_holds_a_lease_loses_no_budget(seaweedfs: SeaweedFS) -> None:
    backend = _bucket(seaweedfs)
    config = _config(seaweedfs, backend, tasks=2)
    with Sampler(backend) as sampler:
        victim = _spawn(config, 0, clock_offset=SKEW)  # by the others' clocks its lease expires 90 s late
        others = [_spawn(config, n) for n in range(1, 4)]
        _read_until(victim, 10)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        results = [_summary(p) for p in others]
    assert victim.returncode == -signal.SIGKILL
    assert [r["errors"] for r in results] == [[]] * 3
    assert all(r["done"] for r in results)  # ended by the full budget, not by the time bound
    # The survivors took the dead process's lease back once they saw it unchanged for its
    # lifetime and margin, long before their clocks said it had expired.
    assert sum(r["recovered"] for r in results) >= 1
    assert sampler.highest <= IMAGES * SIZE

    # What the victim uploaded but never committed counts until its holds can be dropped
    # (their lifetime and the purge margin); past that, the daily maintenance drops them,
    # and the budget they held is usable again: the store fills exactly to the limit.
    later = datetime.now(UTC) + timedelta(seconds=SKEW + TTL) + PURGE_MARGIN + timedelta(seconds=1)
    auditor = StorageManager(
        backend, max_global_storage_mb=IMAGES * SIZE / 1_000_000, max_user_daily_gens=1000, clock=lambda: later
    )
    try:
        assert (await auditor.reconcile()).drift == {}
        topped_up = 0
        for n in range(IMAGES):
            try:
                res = await auditor.reserve(str(9_000_000 + n), size_bytes=SIZE)
            except GlobalStorageFull:
                break
            await auditor.save_image(res, b"\x89PNG\r\n\x1a\n" + b"x" * (SIZE - 8))
            topped_up += 1
    finally:
        await auditor.aclose()
    stored = list(backend.list_objects(keys.USERS_PREFIX))
    assert sum(o.size for o in stored) == IMAGES * SIZE
    assert topped_up < IMAGES // 4  # only what the victim had in flight, not its whole lease
    found = backend.read_doc(keys.GLOBAL_LEDGER_KEY)
    assert found is not None and json.loads(found[0])["leases"] == {}
