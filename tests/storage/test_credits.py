"""Credits (bought packs, admin grants) and premium tiers: spent after the daily allowance,
once per source, never by a failure, refunded only while unspent, kept through a rebuild."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from abby_core.config import PremiumTier
from abby_core.errors import DailyLimitExceeded, InvalidInput, SaveOutcomeUnknown, StorageError
from abby_core.storage import StorageBackend, StorageManager, keys
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability.crashpoints import CrashPoints

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 200
USER = "777000111"


async def _make(manager: StorageManager, uid: str = USER, **tiers: object) -> None:
    res = await manager.reserve(uid, **tiers)  # type: ignore[arg-type]
    await manager.save_image(res, PNG)


async def test_credits_pay_past_the_daily_allowance_and_never_expire(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(max_user_daily_gens=2)
    assert await manager.add_credits(USER, 3, source="entitlement:1")
    for _ in range(2):
        await _make(manager)
    assert (await manager.get_quota_status(USER)).credits == 3  # the allowance went first
    for left in (2, 1, 0):
        await _make(manager)
        status = await manager.get_quota_status(USER)
        assert status.credits == left
    assert status.daily_used == 5
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(USER)
    with pytest.raises(DailyLimitExceeded):
        await manager.precheck(USER)
    # Credits outlive midnight; the allowance comes back.
    await manager.add_credits(USER, 1, source="grant:a1")
    clock.advance(days=1)
    status = await manager.get_quota_status(USER)
    assert (status.daily_used, status.credits) == (0, 1)


async def test_a_failed_generation_spends_no_credit_and_a_promised_credit_is_not_lent_twice(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _make(manager)
    await manager.add_credits(USER, 1, source="entitlement:2")
    first = await manager.reserve(USER)
    assert first.credit
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(USER)  # the one credit is promised to the first
    await manager.release(first)
    assert (await manager.get_quota_status(USER)).credits == 1
    second = await manager.reserve(USER)
    await manager.save_image(second, PNG)
    assert (await manager.get_quota_status(USER)).credits == 0


async def test_each_source_is_credited_once_even_from_two_processes(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    managers = [StorageManager(backend, clock=clock) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(m.add_credits(USER, 20, source="entitlement:3") for m in managers for _ in range(3))
        )
        assert sorted(results) == [False] * 5 + [True]
        assert (await managers[0].get_quota_status(USER)).credits == 20
        assert not await managers[1].add_credits(USER, 20, source="entitlement:3")
    finally:
        for m in managers:
            await m.aclose()


async def test_a_crash_between_the_record_and_the_ledger_is_completed_by_the_retry(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    interrupted = 0
    for at in range(1, 8):
        uid, source = f"{880000 + at}", f"entitlement:{at}"
        manager = StorageManager(CrashPoints(backend, at=at, action="raise"), clock=clock)
        try:
            await manager.add_credits(uid, 5, source=source)
        except StorageError:
            interrupted += 1
        finally:
            await manager.aclose()
        again = StorageManager(backend, clock=clock)
        try:
            await again.add_credits(uid, 5, source=source)  # the event comes again, or the startup sweep
            assert (await again.get_quota_status(uid)).credits == 5, at
            assert not await again.add_credits(uid, 5, source=source)
            assert (await again.get_quota_status(uid)).credits == 5, at
        finally:
            await again.aclose()
    assert interrupted >= 3  # the record's read and write, and the ledger's


async def test_a_refund_takes_back_only_unspent_and_unpromised_credits(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _make(manager)
    await manager.add_credits(USER, 5, source="entitlement:4")
    await manager.add_credits(USER, 2, source="grant:g1")
    await _make(manager)
    await _make(manager)
    in_flight = await manager.reserve(USER)  # a credit promised to a generation in flight
    assert (await manager.get_quota_status(USER)).credits == 4
    # The 4 unpromised credits now, and the promised one if its generation fails.
    assert await manager.refund_credits(USER, source="entitlement:4") == 5
    assert await manager.refund_credits(USER, source="entitlement:4") == 5  # idempotent
    assert (await manager.get_quota_status(USER)).credits == 0
    await manager.save_image(in_flight, PNG)  # the promised credit is still there to spend
    status = await manager.get_quota_status(USER)
    assert (status.credits, status.daily_used) == (0, 4)
    assert await manager.refund_credits(USER, source="entitlement:4") == 4  # it was spent, not refunded
    assert await manager.refund_credits(USER, source="entitlement:unknown") == 0


async def test_credits_survive_a_rebuilt_ledger(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _make(manager)
    await manager.add_credits(USER, 10, source="entitlement:5")
    await manager.add_credits(USER, 3, source="entitlement:6")
    await _make(manager)
    await manager.refund_credits(USER, source="entitlement:6")
    assert (await manager.get_quota_status(USER)).credits == 9
    manager.backend.delete_doc(keys.user_ledger_key(USER))
    manager.ledger.forget()
    assert (await manager.get_quota_status(USER)).credits == 9
    assert not await manager.add_credits(USER, 10, source="entitlement:5")  # still applied once
    assert (await manager.get_quota_status(USER)).credits == 9


async def test_an_interrupted_credit_generation_gives_its_credit_back(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _make(manager)
    await manager.add_credits(USER, 1, source="entitlement:7")
    res = await manager.reserve(USER)
    stored = await manager.save_image(res, PNG)
    assert (await manager.get_quota_status(USER)).credits == 0
    await manager.discard(res, stored)
    status = await manager.get_quota_status(USER)
    assert (status.credits, status.daily_used) == (1, 1)


async def _credits_after_rebuild(manager: StorageManager) -> int:
    manager.backend.delete_doc(keys.user_ledger_key(USER))
    manager.ledger.forget()
    return (await manager.get_quota_status(USER)).credits


async def test_a_discarded_credit_generation_is_not_charged_by_a_rebuilt_ledger(
    make_manager: Callable[..., StorageManager],
) -> None:
    """The commit copies the credit spent into the member record; taking it back lowers it again."""
    manager = make_manager(max_user_daily_gens=1)
    await _make(manager)
    await manager.add_credits(USER, 2, source="entitlement:8")
    res = await manager.reserve(USER)
    await manager.discard(res, await manager.save_image(res, PNG))
    assert manager.accounts.member(USER).credits_spent == 0
    assert await _credits_after_rebuild(manager) == 2


async def test_a_copy_of_the_credits_spent_that_storage_refused_is_retried(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    """The member record's copy fails after the commit: it is made before the next operation, and
    reconcile repairs a record that is behind or ahead all the same."""
    crash = CrashPoints(make_backend())
    manager = StorageManager(crash, max_user_daily_gens=1, clock=clock)
    try:
        await _make(manager)
        await manager.add_credits(USER, 2, source="entitlement:9")
        res = await manager.reserve(USER)
        crash.calls.clear()
        crash.at, crash.action = 10**6, "raise"
        original = crash.inner.write_doc

        def refuse_records(key: str, body: bytes, *, etag: str | None) -> str:
            if key == keys.member_key(USER):
                raise StorageError("storage refused the member record (test)")
            return original(key, body, etag=etag)

        crash.inner.write_doc = refuse_records  # type: ignore[method-assign]
        await manager.save_image(res, PNG)  # charged and reported: the copy is what failed
        assert manager.accounts.member(USER).credits_spent == 0
        crash.inner.write_doc = original  # type: ignore[method-assign]
        await manager.get_quota_status(USER)  # any next operation finishes it first
        assert manager.accounts.member(USER).credits_spent == 1

        for wrong in (0, 2):  # behind, then ahead, as a killed process could leave it
            manager.accounts.update_member(USER, lambda r, n=wrong: setattr(r, "credits_spent", n))
            await manager.reconcile()
            assert manager.accounts.member(USER).credits_spent == 1
        assert await _credits_after_rebuild(manager) == 1
    finally:
        await manager.aclose()


async def test_premium_tiers_follow_the_active_subscription(make_backend: Callable[..., StorageBackend]) -> None:
    tier = PremiumTier(sku_id=4242, daily_gens=3, storage_mb=100)
    manager = StorageManager(make_backend(), max_user_daily_gens=1, premium_tiers=[tier])
    try:
        for _ in range(3):
            await _make(manager, sku_ids=[4242])
        with pytest.raises(DailyLimitExceeded):
            await manager.reserve(USER, sku_ids=[4242])
        # The subscription ended: back to the default limit at the next request.
        status = await manager.get_quota_status(USER)
        assert (status.daily_used, status.daily_limit) == (3, 1)
    finally:
        await manager.aclose()


@pytest.mark.parametrize("credits", [0, -1, 100_001, 2.5, True])
async def test_credit_amounts_are_checked(make_manager: Callable[..., StorageManager], credits: object) -> None:
    with pytest.raises(InvalidInput):
        await make_manager().add_credits(USER, credits, source="grant:x")  # type: ignore[arg-type]


async def test_a_storage_failure_at_every_call_spends_the_credit_only_if_the_image_was_kept(
    make_backend: Callable[..., StorageBackend],
) -> None:
    backend = make_backend()
    outcomes = set()
    for action in ("raise", "lose"):
        for at in range(1, 12):
            uid = f"{990000 + at}" if action == "raise" else f"{991000 + at}"
            clock = Clock(day_safe_now())
            setup = StorageManager(backend, max_user_daily_gens=1, clock=clock)
            try:
                await _make(setup, uid)
                await setup.add_credits(uid, 1, source=f"e-{action}-{at}")
            finally:
                await setup.aclose()
            crash = CrashPoints(backend, at=at, action=action)
            manager = StorageManager(crash, max_user_daily_gens=1, clock=clock, settle_seconds=1)
            reported: str
            try:
                await _make(manager, uid)
                reported = "success"
            except SaveOutcomeUnknown:
                reported = "unknown"
            except StorageError:
                reported = "failure"
            crash.at = 0
            try:
                status = await manager.get_quota_status(uid)
            finally:
                await manager.aclose()
            images = len(list(backend.list_objects(keys.user_prefix(uid))))
            state = (status.credits, images, status.daily_used)
            kept, not_kept = (0, 2, 2), (1, 1, 1)
            expected = {"success": [kept], "failure": [not_kept], "unknown": [kept, not_kept]}[reported]
            assert state in expected, (action, at, reported, state)
            outcomes.add(reported)
    assert {"success", "failure"} <= outcomes
