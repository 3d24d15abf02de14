"""Edges of the quota core that once broke: clocks across midnight, damaged ledgers, cleanup
racing generations, bad sizes, partial files, and documents from the first schema."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.errors import DailyLimitExceeded, InvalidInput, UserBlocked
from abby_core.storage import FilesystemBackend, StorageManager
from abby_core.storage.keys import GLOBAL_LEDGER_KEY, user_ledger_key
from tests.storage.conftest import Clock
from tests.storage.test_manager import ALICE, BOB, png

MIDNIGHT = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


async def test_clocks_apart_across_midnight_never_roll_the_day_back(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    behind, ahead = Clock(MIDNIGHT - timedelta(seconds=20)), Clock(MIDNIGHT - timedelta(seconds=17))
    one = StorageManager(backend, max_user_daily_gens=5, clock=behind)
    two = StorageManager(backend, max_user_daily_gens=5, clock=ahead)
    made = 0
    try:
        for i in range(40):
            manager = (one, two)[i % 2]
            try:
                await manager.save_image(await manager.reserve(ALICE), png(color=(i, 0, 0)))
                made += 1
            except DailyLimitExceeded:
                pass
            behind.advance(seconds=1)
            ahead.advance(seconds=1)
    finally:
        await one.aclose()
        await two.aclose()
    assert made <= 10  # at most one daily limit for each UTC day either host saw


async def test_a_damaged_ledger_keeps_todays_count_blocks_and_grants(tmp_path: Path, clock: Clock) -> None:
    manager = StorageManager(storage_root=tmp_path, max_user_daily_gens=5, clock=clock)
    try:
        made = [await manager.save_image(await manager.reserve(ALICE), png(color=(i, 1, 1))) for i in range(5)]
        for stored in made[:4]:
            await manager.delete_image(ALICE, stored.key)
        await manager.grant(BOB, 2)
        await manager.set_blocked(BOB, True)
        for uid in (ALICE, BOB):
            (tmp_path / user_ledger_key(uid)).write_bytes(b'{"schema": 2, "vers')  # truncated
        manager.ledger.forget()
        status = await manager.get_quota_status(ALICE)
        assert (status.daily_used, status.user_bytes) == (5, made[4].size)
        with pytest.raises(DailyLimitExceeded):
            await manager.reserve(ALICE)
        with pytest.raises(UserBlocked):
            await manager.reserve(BOB)
        await manager.set_blocked(BOB, False)
        assert (await manager.get_quota_status(BOB)).daily_limit == 7
    finally:
        await manager.aclose()


async def test_cleanup_never_touches_a_generation_in_flight_or_a_young_image(tmp_path: Path, clock: Clock) -> None:
    manager = StorageManager(storage_root=tmp_path, clock=clock)
    try:
        kept = await manager.save_image(await manager.reserve(ALICE), png())
        in_flight = await manager.reserve(ALICE)
        report = await manager.cleanup_old_files(0)
        assert report.objects == 0
        late = await manager.save_image(in_flight, png(color=(3, 3, 3)))
        assert {i.key for i in await manager.list_images(ALICE)} == {kept.key, late.key}
        assert (await manager.get_image(ALICE, late.key)) == png(color=(3, 3, 3))
    finally:
        await manager.aclose()


@pytest.mark.parametrize("days", [-1, 3_650_000, 1.5, True, "7"])
async def test_cleanup_refuses_ages_it_cannot_use(tmp_path: Path, days: object) -> None:
    async with StorageManager(storage_root=tmp_path) as manager:
        with pytest.raises(InvalidInput, match="0 to 36500"):
            await manager.cleanup_old_files(days)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [-1_000_000_000, 0, float("nan"), float("inf"), 1.5, "big", True, 10**15])
async def test_reserve_refuses_sizes_that_are_not_bytes(tmp_path: Path, size: object) -> None:
    async with StorageManager(storage_root=tmp_path, max_global_storage_mb=1) as manager:
        with pytest.raises(InvalidInput, match="whole number of bytes"):
            await manager.reserve(ALICE, size_bytes=size)  # type: ignore[arg-type]
        assert list(manager.backend.list_objects("ledger/")) == []


async def test_partial_files_of_killed_writes_are_swept(tmp_path: Path, clock: Clock) -> None:
    manager = StorageManager(storage_root=tmp_path, clock=clock)
    try:
        await manager.save_image(await manager.reserve(ALICE), png())
        folder = tmp_path / "images" / "users" / ALICE
        stale, fresh = folder / ".tmp-stale", folder / ".tmp-fresh"
        stale.write_bytes(b"half an image")
        fresh.write_bytes(b"a write in progress")
        old = time.time() - 7200
        os.utime(stale, (old, old))
        report = await manager.reconcile()
        assert report.partial_files == 1
        assert not stale.exists() and fresh.exists()
    finally:
        await manager.aclose()


async def test_first_schema_documents_are_read_and_upgraded(tmp_path: Path, clock: Clock) -> None:
    day = clock().date().isoformat()
    created = clock().isoformat()
    key = f"images/users/{ALICE}/{clock():%Y%m%dT%H%M%SZ}-00112233aabbccdd.png"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(png())
    size = len(png())
    user_doc = {"schema": 1, "version": 3, "user_id": ALICE, "day": day, "count": 2, "bonus": 1, "blocked": False,
                "objects": {key: [size, created]}, "reservations": {}}
    global_doc = {"schema": 1, "version": 5, "users": {ALICE: [size, 3]}, "reservations": {}}
    (tmp_path / "ledger" / "users").mkdir(parents=True)
    (tmp_path / user_ledger_key(ALICE)).write_text(json.dumps(user_doc))
    (tmp_path / GLOBAL_LEDGER_KEY).write_text(json.dumps(global_doc))
    async with StorageManager(storage_root=tmp_path, max_user_daily_gens=5, clock=clock) as manager:
        status = await manager.get_quota_status(ALICE)
        assert (status.daily_used, status.daily_limit, status.user_bytes, status.global_bytes) == (2, 6, size, size)
        await manager.save_image(await manager.reserve(ALICE), png(color=(8, 8, 8)))
    stored = json.loads((tmp_path / user_ledger_key(ALICE)).read_text())
    assert stored["schema"] == 2 and stored["count"] == 3 and key in stored["objects"]


async def test_cancelled_save_is_taken_back(tmp_path: Path, clock: Clock) -> None:
    manager = StorageManager(storage_root=tmp_path, clock=clock)
    real_put = manager.backend.put_object
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_put(key: str, data: bytes, content_type: str) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)  # Ctrl+C arrives during the upload
        real_put(key, data, content_type)

    manager.backend.put_object = slow_put  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(manager.save_image(await manager.reserve(ALICE), png()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        status = await manager.get_quota_status(ALICE)
        assert (status.daily_used, status.user_bytes, status.in_flight) == (0, 0, 0)
        assert list(manager.backend.list_objects("images/")) == []
    finally:
        await manager.aclose()


async def test_admin_actions_on_a_member_without_a_ledger_count_once(
    make_manager: Callable[..., StorageManager],
) -> None:
    """The hot document is rebuilt from the member record, which already has the change."""
    manager = make_manager(max_user_daily_gens=5)
    await manager.grant("31337", 3)
    assert (await manager.get_quota_status("31337")).daily_limit == 8
    await manager.grant("31337", 2)
    assert (await manager.get_quota_status("31337")).daily_limit == 10
    await manager.set_blocked("31338", True)
    assert (await manager.get_quota_status("31338")).blocked
