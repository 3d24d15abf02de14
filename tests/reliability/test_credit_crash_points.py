"""One generation paid with a credit, and the refunds that meet it, interrupted at every storage
call in turn (raise, lost answer, cancel, kill): a credit is spent exactly when the image is kept,
a refunded pack leaves none of its unspent credits, the member record agrees with the member's
document, and a rebuilt user document has the same balance.

Every mode runs on the filesystem; a real S3 server adds something to "raise" only (there a
refused write does not say whether it landed; on the filesystem it does): a lost answer is
uncertain on both, and a cancel or a kill does not depend on the backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from abby_core.pipeline import GenerationResult
from abby_core.storage import StorageBackend, StorageManager, credit_rules, rules
from abby_core.storage.documents import UserLedger
from abby_core.storage.keys import user_ledger_key, user_prefix
from abby_core.storage.models import Reservation
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability import scenarios
from tests.reliability.crashpoints import ACTIONS, TTL, CrashPoints, crash_child, credit_verdict, describe

DAILY = 1  # the member's daily allowance, used up before the generation under test
CREDITS = 2
LATE = 3  # a pack bought while the generation is in flight, and refunded at once
MODES = [pytest.param("filesystem", action, id=f"filesystem-{action}") for action in ACTIONS] + [
    pytest.param("seaweedfs", "raise", id="seaweedfs-raise", marks=pytest.mark.seaweedfs)
]


class CommitWatch(CrashPoints):
    """Passes every call through, and notes whether a write that spends a credit of ``uid``
    reached storage (the commit landed, whatever became of the generation afterwards)."""

    def __init__(self, inner: StorageBackend, uid: str) -> None:
        super().__init__(inner)
        self.key = user_ledger_key(uid)
        self.committed = False

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        tag = super().write_doc(key, body, etag=etag)
        if key == self.key and UserLedger.model_validate_json(body).credits_spent:
            self.committed = True
        return tag


def _manager(backend: StorageBackend, clock: Clock, *, escrow: bool = False) -> StorageManager:
    return StorageManager(
        backend, max_user_daily_gens=DAILY, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1, escrow=escrow
    )


async def _member(backend: StorageBackend, uid: str) -> dict[str, int]:
    """A member who used the day's allowance and holds ``CREDITS`` credits; returns their images."""
    setup = _manager(backend, Clock(day_safe_now()))
    try:
        service = scenarios.service_with(setup, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
        first = await service.imagine(uid, "the day's allowance")
        assert not first.paid_with_credit
        assert await setup.add_credits(uid, CREDITS, source=f"pack:{uid}")
        status = await setup.get_quota_status(uid)
        assert (status.daily_used, status.daily_limit, status.credits) == (DAILY, DAILY, CREDITS), status
    finally:
        await setup.aclose()
    return {o.key: o.size for o in backend.list_objects(user_prefix(uid))}


async def _clean_run(backend: StorageBackend, uid: str, *, escrow: bool = False) -> list[str]:
    """The storage calls of one uninterrupted credit-paid generation, in order."""
    await _member(backend, uid)
    probe = CrashPoints(backend)
    manager = _manager(probe, Clock(day_safe_now()), escrow=escrow)
    try:
        service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
        result = await service.imagine(uid, "counting")
        assert result.paid_with_credit and result.status.credits == CREDITS - 1, result.status
    finally:
        await manager.aclose()
    return probe.calls


def _cancel_on(crash: CrashPoints, task: asyncio.Task[Any]) -> None:
    """``crash``'s "cancel" cancels ``task`` (from the storage worker thread it runs on)."""
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        loop.call_soon_threadsafe(task.cancel)

    crash.on_cancel = cancel


def _record_drift(records: dict[str, list[str]]) -> None:
    """The member record's copy of the credits spent must equal the user document's after the
    holds' lifetime and reconcile: behind, a rebuilt user document gives a spent credit back;
    ahead, it takes an unspent one from the member. Checked last, once every other invariant held.
    """
    assert records == {}


@pytest.mark.parametrize(("backend_name", "action"), MODES)
async def test_every_storage_call_of_a_credit_generation_interrupted_in_process(
    backend: StorageBackend, action: str
) -> None:
    await _interrupt_every_call(backend, action, escrow=False)


@pytest.mark.parametrize(("backend_name", "action"), MODES)
async def test_every_storage_call_of_a_credit_generation_interrupted_in_process_with_escrow(
    backend: StorageBackend, action: str
) -> None:
    """The same with STORAGE_ESCROW: the lease's refill and settle are storage calls too."""
    await _interrupt_every_call(backend, action, escrow=True)


async def _interrupt_every_call(backend: StorageBackend, action: str, *, escrow: bool) -> None:
    calls = await _clean_run(backend, scenarios.user(18999), escrow=escrow)
    assert len(calls) >= 10, calls  # reserve, upload, commit, the member record's copy and their reads
    failures: dict[str, list[str]] = {}
    records: dict[str, list[str]] = {}
    outcomes: set[str] = set()
    sides: set[tuple[bool, bool]] = set()  # (the commit landed, success was reported)
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(19000 + at)
        before = await _member(backend, uid)
        clock = Clock(day_safe_now())
        watch = CommitWatch(backend, uid)
        crash = CrashPoints(watch, at=at, action=action)
        manager = _manager(crash, clock, escrow=escrow)
        service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
        task = asyncio.create_task(service.imagine(uid, f"paid, crash at {at}"))
        _cancel_on(crash, task)
        try:
            reported: object = await task
        except BaseException as exc:
            reported = exc
        crash.at = 0  # storage answers normally from here on
        outcomes.add(describe(reported))
        sides.add((watch.committed, isinstance(reported, GenerationResult)))
        where = f"call {at} ({calls[at - 1]}), reported {describe(reported)}"
        wrong: list[str] = []
        if isinstance(reported, GenerationResult) and not (watch.committed and reported.paid_with_credit):
            wrong.append("reported success without a credit-paid commit")
        try:
            found, record, _ = await credit_verdict(
                reported, backend, uid, same=manager, clock=clock, before=before, credits=CREDITS
            )
        finally:
            await manager.aclose()
        if wrong + found:
            failures[where] = wrong + found
        if record:
            records[where] = record
    assert failures == {}
    # The points reach both sides of the commit: interrupted before it, a run fails; after it,
    # it succeeds anyway, or (cancelled) its commit is taken back.
    assert (False, False) in sides and (True, action != "cancel") in sides, (sorted(sides), outcomes)
    _record_drift(records)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["filesystem"])
async def test_every_storage_call_of_a_credit_generation_killed(
    backend: StorageBackend, config: dict[str, Any]
) -> None:
    """Killed at every call (a child process, without escrow): all or nothing, never half."""
    calls = await _clean_run(backend, scenarios.user(17999))
    failures: dict[str, list[str]] = {}
    records: dict[str, list[str]] = {}
    killed = 0
    kept: set[bool] = set()
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(17000 + at)
        before = await _member(backend, uid)
        reported = await crash_child(scenarios.spawn(dict(config, mode="crash", user=uid, at=at, daily=DAILY)))
        killed += reported is None
        wrong, record, was_kept = await credit_verdict(
            reported, backend, uid, same=None, clock=Clock(day_safe_now()), before=before, credits=CREDITS
        )
        if reported is None:
            kept.add(was_kept)
        where = f"killed at call {at} ({calls[at - 1]})"
        if wrong:
            failures[where] = wrong
        if record:
            records[where] = record
    assert failures == {}
    # Killed on both sides of the commit: some killed runs are undone, some kept.
    assert killed >= len(calls) - 2 and kept == {True, False}, (killed, len(calls), kept)
    _record_drift(records)


# -- refunds ------------------------------------------------------------------------------------
async def refund_story(manager: StorageManager, uid: str) -> None:
    """What refunds do while a credit-paid generation of ``uid`` is in flight: the pack that
    pays for it is refunded, another pack is bought and refunded at once."""
    await manager.refund_credits(uid, source=f"pack:{uid}")
    await manager.add_credits(uid, LATE, source=f"late:{uid}")
    await manager.refund_credits(uid, source=f"late:{uid}")


async def _in_flight(backend: StorageBackend, uid: str, clock: Clock) -> Reservation:
    """A member of :func:`_member` with a credit-paid generation reserved (its credit promised)."""
    await _member(backend, uid)
    setup = _manager(backend, clock)
    try:
        res = await setup.reserve(uid)
    finally:
        await setup.aclose()
    assert res.credit
    return res


async def _refund_verdict(backend: StorageBackend, uid: str, res: Reservation, clock: Clock) -> list[str]:
    """The refunds are made again (the store's sweep: a deleted pack is never added again), then
    the generation fails (even user numbers) or is kept (odd): nothing of either pack is left
    (the late one counts only if its add reached the member record), the kept image spent its
    credit, the member record agrees and a rebuilt document has the same balance."""
    fails = int(uid) % 2 == 0
    again = _manager(backend, clock)
    try:
        for name in ("pack", "late"):
            await again.refund_credits(uid, source=f"{name}:{uid}")
        if fails:
            await again.release(res)
        else:
            await again.save_image(res, scenarios.noise_png(40))
        clock.advance(seconds=TTL + rules.PURGE_MARGIN.total_seconds() + 1)
        await again.reconcile()
        doc, record = again.accounts.user(uid), again.accounts.member(uid)
        paid = 0 if fails else 1
        found = {
            "credits": doc.credits,
            "spent": doc.credits_spent,
            "refunded": [credit_rules.refund_taken(doc, f"{name}:{uid}") for name in ("pack", "late")],
            "holds": len(doc.holds),
            "record": (record.credits, record.credits_spent),
        }
        late = LATE if f"late:{uid}" in record.credit_sources else 0
        expected = {"credits": 0, "spent": paid, "refunded": [CREDITS - paid, late], "holds": 0, "record": (0, paid)}
        wrong = [f"{found} instead of {expected}"] if found != expected else []
        backend.delete_doc(user_ledger_key(uid))
        again.ledger.forget()
        if (rebuilt := (await again.get_quota_status(uid)).credits) != 0:
            wrong.append(f"a rebuilt document has {rebuilt} credit(s)")
    finally:
        await again.aclose()
    return wrong


async def _refund_calls(backend: StorageBackend) -> list[str]:
    uid = scenarios.user(28999)
    res = await _in_flight(backend, uid, Clock(day_safe_now()))
    probe = CrashPoints(backend)
    manager = _manager(probe, Clock(day_safe_now()))
    try:
        await refund_story(manager, uid)
    finally:
        await manager.aclose()
    assert await _refund_verdict(backend, uid, res, Clock(day_safe_now())) == []
    return probe.calls


@pytest.mark.parametrize(("backend_name", "action"), [("filesystem", action) for action in ACTIONS])
async def test_every_storage_call_of_the_refunds_interrupted_in_process(backend: StorageBackend, action: str) -> None:
    """Refunds meeting a credit-paid generation in flight, an add cut short among them (on the
    filesystem only: the refunds' writes are plain ledger writes, and "lose" makes them uncertain)."""
    calls = await _refund_calls(backend)
    # Two tombstones, two refunds and their copies, the add's two writes, the first reads.
    assert calls.count("write_doc") == 8 and len(calls) >= 10, calls
    failures: dict[str, list[str]] = {}
    outcomes: set[str] = set()
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(29000 + at)
        clock = Clock(day_safe_now())
        res = await _in_flight(backend, uid, clock)
        crash = CrashPoints(backend, at=at, action=action)
        manager = _manager(crash, clock)
        task = asyncio.create_task(refund_story(manager, uid))
        _cancel_on(crash, task)
        try:
            await task
            reported: object = "success"
        except BaseException as exc:
            reported = exc
        crash.at = 0
        await manager.aclose()
        outcomes.add(describe(reported))
        if wrong := await _refund_verdict(backend, uid, res, clock):
            failures[f"call {at} ({calls[at - 1]}), reported {describe(reported)}"] = wrong
    assert failures == {}
    assert "success" not in outcomes or action == "cancel", outcomes  # every point interrupted the story


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["filesystem"])
async def test_every_storage_call_of_the_refunds_killed(backend: StorageBackend, config: dict[str, Any]) -> None:
    calls = await _refund_calls(backend)
    failures: dict[str, list[str]] = {}
    killed = 0
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(27000 + at)
        clock = Clock(day_safe_now())
        res = await _in_flight(backend, uid, clock)
        reported = await crash_child(scenarios.spawn(dict(config, mode="refund", user=uid, at=at)))
        killed += reported is None
        if wrong := await _refund_verdict(backend, uid, res, clock):
            failures[f"killed at call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    assert killed == len(calls), (killed, len(calls))
