"""A member's older images move out of their document into the catalogue, on every backend,
and every feature still counts them once: delete, cleanup, archive, restore, reconcile, stats."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from abby_core.errors import SaveOutcomeUnknown
from abby_core.storage import StorageBackend, StorageManager, catalogue_rules, keys, rules, usage_rules
from abby_core.storage.catalogue_rules import RECENT
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability.crashpoints import IN_PROCESS_MODES, TTL, CrashPoints, counted_snapshot, describe, interrupted
from tests.storage.test_archive import photo
from tests.storage.test_manager import png

USER = "321000000000000001"
FOLD_AT = 4  # small, so a few images show what thousands do


@pytest.fixture(autouse=True)
def small_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue_rules, "FOLD_AT", FOLD_AT)


async def _history(manager: StorageManager, clock: Clock, count: int, *, image: Callable[[int], bytes]) -> list[str]:
    """``count`` images, each made a little more than ``RECENT`` after the one before."""
    made = []
    for n in range(count):
        made.append((await manager.save_image(await manager.reserve(USER), image(n))).key)
        clock.advance(seconds=RECENT.total_seconds() + 60)
    return made


async def _counted_once(manager: StorageManager, *, settled: bool = True) -> None:
    """The member's document, catalogue, images, status and the global count all agree
    (``settled=False``: the global count may still be above, never below, until refreshed)."""
    uid = keys.check_user_id(USER)
    doc = manager.accounts.user(uid)
    catalogue = manager.accounts.catalogue(uid, doc)
    stored = {o.key: o.size for o in manager.backend.list_objects(keys.user_prefix(uid))}
    assert {k: e.size for k, e in catalogue.items()} == stored
    assert rules.user_bytes(doc) == sum(stored.values())
    assert (await manager.get_quota_status(USER)).user_bytes == sum(stored.values())
    assert len(await manager.list_images(USER)) == len(stored)
    if settled:
        snap = counted_snapshot(manager.accounts, uid)
        assert snap is not None and snap.bytes == sum(stored.values())
    else:
        assert usage_rules.global_usage(manager.accounts.global_doc()) >= sum(stored.values())


async def test_older_images_move_into_the_catalogue_and_stay_counted_once(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(max_user_daily_gens=50)
    made = await _history(manager, clock, 3 * FOLD_AT, image=lambda n: png(color=(n, 0, 0)))
    doc = manager.accounts.user(keys.check_user_id(USER))
    assert len(doc.objects) <= FOLD_AT + 1, sorted(doc.objects)
    assert doc.segments and sum(s.count for s in doc.segments.values()) + len(doc.objects) == len(made)
    await _counted_once(manager)
    # A catalogued image deleted: it leaves its segment, and the member's bytes.
    oldest = made[0]
    assert oldest not in doc.objects
    before = (await manager.get_quota_status(USER)).user_bytes
    freed = await manager.delete_image(USER, oldest.rsplit("/", 1)[-1])
    assert (await manager.get_quota_status(USER)).user_bytes == before - freed
    await _counted_once(manager)
    report = await manager.reconcile()
    assert report.drift == {}
    stats = await manager.stats()
    assert dict(stats.top_users)[USER] == before - freed


async def test_cleanup_and_reconcile_count_catalogued_images_once(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(max_user_daily_gens=50, cleanup_days=7)
    await _history(manager, clock, 2 * FOLD_AT, image=lambda n: png(color=(0, n, 0)))
    clock.advance(days=7 - (2 * FOLD_AT) * RECENT.days / 2)  # the older half is past seven days
    report = await manager.cleanup_old_files()
    assert report.objects > 0
    await _counted_once(manager)
    # Reconcile from a document that lost its catalogue totals: rebuilt from the images, counted once.
    manager.backend.delete_doc(keys.user_ledger_key(keys.check_user_id(USER)))
    manager.ledger.forget()
    await manager.reconcile()
    await _counted_once(manager)


async def test_catalogued_images_are_archived_and_restored(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(archive=True, max_user_daily_gens=50, cleanup_days=7)
    made = await _history(manager, clock, 2 * FOLD_AT, image=photo)
    assert made[0] not in manager.accounts.user(keys.check_user_id(USER)).objects  # catalogued
    clock.advance(days=8)
    await manager.archive_old()
    archived = await manager.list_archived(USER)
    assert len(archived) == len(made)
    await _counted_once(manager)
    restored = await manager.restore_archived(USER, archived[-1].name)
    assert restored.key in {k.rsplit(".", 1)[0] + ".webp" for k in made}
    await _counted_once(manager)
    assert (await manager.reconcile()).drift == {}


@pytest.mark.parametrize(("backend_kind", "action"), IN_PROCESS_MODES, indirect=["backend_kind"])
async def test_a_generation_that_moves_images_into_the_catalogue_interrupted_at_every_call(
    make_backend: Callable[..., StorageBackend], action: str
) -> None:
    """What was reported is what is charged, and every image is counted once, whichever
    storage call of the generation (its commit, then the move) is interrupted."""

    async def history() -> tuple[StorageBackend, Clock]:
        backend, clock = make_backend(), Clock(day_safe_now() - 2 * FOLD_AT * RECENT)
        setup = StorageManager(backend, clock=clock, max_user_daily_gens=50)
        try:
            await _history(setup, clock, FOLD_AT, image=lambda n: png(color=(n, 9, 9)))
        finally:
            await setup.aclose()
        return backend, clock

    backend, clock = await history()
    probe = CrashPoints(backend)
    clean = StorageManager(probe, clock=clock, max_user_daily_gens=50, reservation_ttl_seconds=TTL)
    try:
        await clean.save_image(await clean.reserve(USER), png(color=(1, 2, 3)))
        assert clean.accounts.user(keys.check_user_id(USER)).segments, "the generation moved older images"
    finally:
        await clean.aclose()
    calls = list(probe.calls)
    failures: dict[str, list[str]] = {}
    for at in range(1, len(calls) + 1):
        backend, clock = await history()
        crash = CrashPoints(backend, at=at, action=action)
        manager = StorageManager(crash, clock=clock, max_user_daily_gens=50, reservation_ttl_seconds=TTL)
        reported = await interrupted(crash, partial(_generate, manager))
        await manager.aclose()
        clock.advance(seconds=TTL + rules.PURGE_MARGIN.total_seconds() + 1)
        other = StorageManager(backend, clock=clock, max_user_daily_gens=50, reservation_ttl_seconds=TTL)
        try:
            wrong = await _judge(other, reported)
        finally:
            await other.aclose()
        if wrong:
            failures[f"call {at} ({calls[at - 1]}), reported {describe(reported)}"] = wrong
    assert failures == {}


async def _generate(manager: StorageManager) -> str:
    return (await manager.save_image(await manager.reserve(USER), png(color=(1, 2, 3)))).key


async def _judge(manager: StorageManager, reported: object) -> list[str]:
    wrong: list[str] = []
    for when in ("before reconcile", "after reconcile"):
        try:
            await _counted_once(manager, settled=when == "after reconcile")
        except AssertionError as exc:
            wrong.append(f"{when}: {exc}")
        stored = {o.key for o in manager.backend.list_objects(keys.user_prefix(keys.check_user_id(USER)))}
        kept = len(stored) == FOLD_AT + 1
        if isinstance(reported, str) and not kept:
            wrong.append(f"{when}: reported success but the image is not kept")
        if isinstance(reported, BaseException) and not isinstance(reported, SaveOutcomeUnknown) and kept:
            wrong.append(f"{when}: reported {describe(reported)} but the image is kept")
        if when == "before reconcile":
            drift = (await manager.reconcile()).drift
            if drift:
                wrong.append(f"reconcile found drift {drift}")
    return wrong
