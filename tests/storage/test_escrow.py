"""Escrow of the global budget (STORAGE_ESCROW): leases admit holds without a global write,
the limit stays exact between processes, and a dead process's lease comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from abby_core.errors import GlobalStorageFull, UserStorageFull
from abby_core.storage import StorageBackend, StorageManager, keys, usage_rules
from tests.storage.conftest import Clock

SIZE = 1000
LIMIT_MB = 0.05  # 50 images of SIZE bytes
PNG = b"\x89PNG\r\n\x1a\n"


def _image(size: int = SIZE) -> bytes:
    return PNG + b"x" * (size - len(PNG))


def _escrow_manager(backend: StorageBackend, clock: Clock, **extra: object) -> StorageManager:
    options: dict[str, object] = {
        "max_global_storage_mb": LIMIT_MB,
        "max_user_storage_mb": 10,
        "max_user_daily_gens": 10_000,
        "image_gen_size_mb": SIZE / 1_000_000,
        "reservation_ttl_seconds": 120,
        "clock": clock,
        "escrow": True,
    }
    options.update(extra)
    return StorageManager(backend, **options)  # type: ignore[arg-type]


def _stored(backend: StorageBackend) -> int:
    return sum(o.size for o in backend.list_objects(keys.USERS_PREFIX))


async def _make(manager: StorageManager, uid: str) -> None:
    res = await manager.reserve(uid, size_bytes=SIZE)
    await manager.save_image(res, _image())


async def test_saves_write_the_global_document_only_when_the_lease_is_settled(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    manager = _escrow_manager(backend, clock, max_global_storage_mb=10)
    try:
        for n in range(20):
            await _make(manager, f"{100 + n}")
        assert manager.escrow is not None
        # One lease for all twenty: the first hold took a slice of 32 images.
        assert manager.escrow.settles == 1
        glob = manager.accounts.global_doc()
        assert list(glob.leases) == [manager.escrow.lease_id]
        # Stored bytes are covered by the snapshots plus the lease, never by less.
        assert usage_rules.snapshot_usage(glob) + glob.leases[manager.escrow.lease_id].bytes >= _stored(backend)
        stats = await manager.stats()
        assert stats.leases and stats.leases[0].bytes == glob.leases[manager.escrow.lease_id].bytes
    finally:
        await manager.aclose()
    glob = manager.accounts.global_doc()
    assert glob.leases == {}
    assert usage_rules.snapshot_usage(glob) == _stored(backend) == 20 * SIZE


async def test_two_processes_fill_the_budget_exactly(make_backend: Callable[..., StorageBackend], clock: Clock) -> None:
    first = make_backend()
    second = _same_storage(first, make_backend)
    a, b = _escrow_manager(first, clock), _escrow_manager(second, clock)
    made = 0
    refusals_in_a_row = 0
    highest = 0
    try:
        for turn in range(400):
            manager = (a, b)[turn % 2]
            try:
                await _make(manager, f"{1000 + turn}")
            except GlobalStorageFull:
                refusals_in_a_row += 1
                if refusals_in_a_row >= 4:
                    break
            else:
                made += 1
                refusals_in_a_row = 0
            highest = max(highest, _stored(first))
    finally:
        await a.aclose()
        await b.aclose()
    assert made == 50
    assert highest <= 50 * SIZE
    glob = a.accounts.global_doc()
    assert glob.leases == {}
    assert usage_rules.snapshot_usage(glob) == _stored(first) == 50 * SIZE
    report = await _reconciled(first, clock)
    assert report == {}


def _same_storage(backend: StorageBackend, make_backend: Callable[..., StorageBackend]) -> StorageBackend:
    """A second backend object (another process's) on the same folder or bucket."""
    from abby_core.storage import FilesystemBackend
    from abby_core.storage.s3 import S3Backend

    if isinstance(backend, FilesystemBackend):
        return FilesystemBackend(backend.root)
    assert isinstance(backend, S3Backend)
    return make_backend(bucket=backend.bucket)


async def _reconciled(backend: StorageBackend, clock: Clock) -> dict[str, tuple[int, int]]:
    auditor = StorageManager(backend, max_global_storage_mb=LIMIT_MB, clock=clock)
    try:
        return (await auditor.reconcile()).drift
    finally:
        await auditor.aclose()


async def test_a_dead_process_lease_comes_back_after_its_lifetime(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    dead = _escrow_manager(backend, clock)
    for n in range(3):
        await _make(dead, f"{2000 + n}")
    assert dead.escrow is not None
    lease = dead.escrow.view()
    assert lease.granted > 0 and lease.expires is not None
    _kill(dead)

    survivor = _escrow_manager(_same_storage(backend, make_backend), clock)
    try:
        # While the lease may still be in use, its whole slice stays counted.
        before = await survivor.stats()
        assert before.leased_bytes >= lease.granted
        clock.now = lease.expires + survivor.accounts.lease_margin + timedelta(seconds=1)
        made = 0
        for n in range(60):
            try:
                await _make(survivor, f"{3000 + n}")
            except GlobalStorageFull:
                break
            made += 1
        assert survivor.accounts.recovered_leases == 1
        # Everything but the dead process's three images, which still count.
        assert made == 47
    finally:
        await survivor.aclose()
    glob = survivor.accounts.global_doc()
    assert glob.leases == {}
    assert usage_rules.snapshot_usage(glob) == _stored(backend) == 50 * SIZE


def _kill(manager: StorageManager) -> None:
    """Stop a manager the way SIGKILL would: its lease is neither renewed nor given back."""
    assert manager.escrow is not None
    with manager.escrow._lock:
        if manager.escrow._timer is not None:
            manager.escrow._timer.cancel()
        manager.escrow._closed = True
    manager.workers.shutdown()


async def test_a_refused_hold_gives_its_bytes_back_to_the_lease(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    manager = _escrow_manager(make_backend(), clock, max_user_storage_mb=0.0015)
    try:
        await _make(manager, "4000")
        assert manager.escrow is not None
        free = manager.escrow.view().free
        with pytest.raises(UserStorageFull):
            await manager.reserve("4000", size_bytes=SIZE)  # the member's own limit refuses it
        assert manager.escrow.view().free == free
        assert manager.escrow.view().in_flight == 0
    finally:
        await manager.aclose()


async def test_a_failed_generation_returns_its_bytes_at_settle(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    manager = _escrow_manager(backend, clock)
    try:
        res = await manager.reserve("5000", size_bytes=SIZE)
        await manager.release(res)
        assert manager.escrow is not None
        manager.escrow.settle(renew=False)
        glob = manager.accounts.global_doc()
        assert glob.leases == {}
        assert usage_rules.global_usage(glob) == 0
        status = await manager.get_quota_status("5000")
        assert status.user_bytes == 0 and status.daily_used == 0
    finally:
        await manager.aclose()


async def test_slices_shrink_as_the_budget_runs_out(make_backend: Callable[..., StorageBackend], clock: Clock) -> None:
    backend = make_backend()
    managers = [_escrow_manager(_same_storage(backend, make_backend), clock) for _ in range(3)]
    try:
        slices = []
        for n, manager in enumerate(managers):
            await _make(manager, f"{6000 + n}")
            assert manager.escrow is not None
            slices.append(manager.escrow.view().granted)
        # The first took half of the budget it saw; each later one a share of what was left.
        assert slices[0] == 25 * SIZE
        assert slices[1] < slices[0] and slices[2] < slices[1]
        glob = managers[0].accounts.global_doc()
        assert usage_rules.global_usage(glob) <= 50 * SIZE
    finally:
        await asyncio.gather(*(m.aclose() for m in managers))
    glob = managers[0].accounts.global_doc()
    assert glob.leases == {} and usage_rules.snapshot_usage(glob) == 3 * SIZE
