"""The edges between steps: reconcile during saves, reused or expired reservations,
cancellation, a total nobody synced, and failed reads that wrote nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from abby_core.config import load_settings
from abby_core.errors import ConfigError, ReservationInvalid, StorageUnavailable
from abby_core.storage import ObjectInfo, ReconcileReport, StorageManager, keys, usage_rules
from abby_core.storage.documents import GlobalLedger, ShardLedger, Snapshot
from abby_core.storage.keys import GLOBAL_LEDGER_KEY, USERS_PREFIX
from tests.storage.conftest import Clock
from tests.storage.test_manager import ALICE, BOB, png

T = TypeVar("T")


@pytest.fixture
async def manager(tmp_path: Path, clock: Clock):  # type: ignore[no-untyped-def]
    m = StorageManager(storage_root=tmp_path / "shared", clock=clock, max_user_daily_gens=5)
    yield m
    await m.aclose()


async def reconcile_while(
    manager: StorageManager, monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], T]
) -> tuple[ReconcileReport, T]:
    """Run ``reconcile`` and, once, ``meanwhile`` after it took its listing of the images.

    ``meanwhile`` runs on the worker thread (it calls the manager's synchronous steps), the
    way another request's worker would while reconcile holds a listing that is now stale.
    """
    backend = manager.backend
    real_list = backend.list_objects
    done: list[T] = []

    def stale_listing(prefix: str) -> Iterator[ObjectInfo]:
        snapshot = list(real_list(prefix))
        if prefix == USERS_PREFIX and not done:
            done.append(meanwhile())
        return iter(snapshot)

    monkeypatch.setattr(backend, "list_objects", stale_listing)
    try:
        report = await manager.reconcile()
    finally:
        monkeypatch.setattr(backend, "list_objects", real_list)
    assert done, "reconcile never listed the images"
    return report, done[0]


async def test_reconcile_keeps_a_save_that_lands_after_its_listing(
    manager: StorageManager, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await manager.save_image(await manager.reserve(ALICE), png())

    def save_late() -> str:
        clock.advance(seconds=1)
        reservation = manager.protocol.reserve(ALICE, manager.default_limits, manager.estimate_bytes)
        return manager.protocol.save(reservation, png(color=(9, 9, 9)), "image/png")[0]

    report, late = await reconcile_while(manager, monkeypatch, save_late)
    status = await manager.get_quota_status(ALICE)
    stored = sum(o.size for o in manager.backend.list_objects(f"{USERS_PREFIX}{ALICE}/"))
    assert status.user_bytes == stored == status.global_bytes
    assert report.drift == {}
    assert first.key != late


async def test_reconcile_does_not_count_back_an_image_deleted_after_its_listing(
    manager: StorageManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = await manager.save_image(await manager.reserve(ALICE), png())
    doomed = await manager.save_image(await manager.reserve(ALICE), png(color=(5, 5, 5)))
    loop = asyncio.get_running_loop()

    def member_deletes() -> int:  # from the worker thread, through the public API
        return asyncio.run_coroutine_threadsafe(manager.delete_image(ALICE, doomed.key), loop).result(30)

    await reconcile_while(manager, monkeypatch, member_deletes)
    status = await manager.get_quota_status(ALICE)
    assert (status.user_bytes, status.global_bytes) == (kept.size, kept.size)


async def test_reconcile_keeps_users_who_appear_while_it_runs(
    manager: StorageManager, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await manager.save_image(await manager.reserve(ALICE), png())

    def newcomer_saves() -> int:
        clock.advance(seconds=1)
        reservation = manager.protocol.reserve(BOB, manager.default_limits, manager.estimate_bytes)
        key, _ = manager.protocol.save(reservation, png(), "image/png")
        return len(manager.backend.get_object(key))

    _, size = await reconcile_while(manager, monkeypatch, newcomer_saves)
    stats = await manager.stats()
    assert dict(stats.top_users)[BOB] == size


async def test_a_reservation_saves_one_image_only(manager: StorageManager) -> None:
    reservation = await manager.reserve(ALICE)
    first = await manager.save_image(reservation, png())
    with pytest.raises(ReservationInvalid):
        await manager.save_image(reservation, png(color=(1, 1, 1)))
    assert await manager.get_image(ALICE, first.key) == png()  # the first image is intact
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.user_bytes) == (1, first.size)


async def test_a_hold_that_expires_during_the_upload_charges_nothing(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = StorageManager(storage_root=tmp_path, clock=clock, reservation_ttl_seconds=600)
    reservation = await manager.reserve(ALICE)
    real_put = manager.backend.put_object

    def slow_put(key: str, data: bytes, content_type: str) -> None:
        real_put(key, data, content_type)
        clock.advance(seconds=601)  # the upload outlived the hold

    monkeypatch.setattr(manager.backend, "put_object", slow_put)
    with pytest.raises(ReservationInvalid, match="expired"):
        await manager.save_image(reservation, png())
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (0, 0, 0)
    assert list(manager.backend.list_objects("images/")) == []
    await manager.aclose()


async def test_a_cancelled_reserve_leaves_no_hold(manager: StorageManager, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = manager.backend.write_doc
    entered = threading.Event()

    def slow_write(key: str, body: bytes, *, etag: str | None) -> str:
        entered.set()
        time.sleep(0.3)
        return real_write(key, body, etag=etag)

    monkeypatch.setattr(manager.backend, "write_doc", slow_write)
    task = asyncio.create_task(manager.reserve(ALICE))
    await asyncio.to_thread(entered.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.setattr(manager.backend, "write_doc", real_write)
    await asyncio.sleep(1.0)  # let any worker the cancellation left behind finish
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.in_flight, status.global_bytes) == (0, 0, 0)


async def test_a_total_nobody_synced_is_corrected_by_the_next_reservation(manager: StorageManager) -> None:
    stored = await manager.save_image(await manager.reserve(ALICE), png())
    # As if the process died between the user ledger and the usage documents: the member's
    # shard, and the global document, still have the old total.
    shard_key = keys.shard_key(keys.shard_of(ALICE))
    found = manager.backend.read_doc(shard_key)
    assert found is not None
    shard = ShardLedger.model_validate_json(found[0])
    shard.users[ALICE] = Snapshot(version=1, bytes=0)
    shard.version += 1
    manager.backend.write_doc(shard_key, shard.model_dump_json(by_alias=True).encode(), etag=found[1])
    found = manager.backend.read_doc(GLOBAL_LEDGER_KEY)
    assert found is not None
    glob = GlobalLedger.model_validate_json(found[0])
    usage_rules.apply_shard(glob, shard.shard, usage_rules.shard_snapshot(shard))
    glob.version += 1
    manager.backend.write_doc(GLOBAL_LEDGER_KEY, glob.model_dump_json(by_alias=True).encode(), etag=found[1])
    manager.ledger.forget()
    assert (await manager.get_quota_status(ALICE)).global_bytes == 0
    reservation = await manager.reserve(ALICE)
    assert (await manager.get_quota_status(ALICE)).global_bytes == stored.size + reservation.bytes


async def test_a_failed_read_holds_nothing(manager: StorageManager, monkeypatch: pytest.MonkeyPatch) -> None:
    manager.ledger.forget()
    real_read = manager.backend.read_doc

    def unreachable(key: str) -> None:
        raise StorageUnavailable("Could not read the quota ledger: the storage server could not be reached.")

    monkeypatch.setattr(manager.backend, "read_doc", unreachable)
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            await manager.reserve(ALICE)
    monkeypatch.setattr(manager.backend, "read_doc", real_read)
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.in_flight, status.global_bytes) == (0, 0, 0)


def test_region_names_are_checked_at_start_up() -> None:
    with pytest.raises(ConfigError, match="S3_REGION"):
        load_settings(env_file=None, S3_REGION="eu west 1")
    assert load_settings(env_file=None, S3_REGION="eu-west-1").s3.region == "eu-west-1"
