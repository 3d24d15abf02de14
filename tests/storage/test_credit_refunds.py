"""Refunds of credits, whatever order the purchase, the refund, a spend and a failure arrive in:
a refunded source leaves the member none of its unspent credits, never takes another source's,
and the member record (what a rebuild starts from) agrees with the member's document."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from abby_core.errors import DailyLimitExceeded, StorageUnavailable
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager, credit_rules, keys, rules
from abby_core.storage.documents import CreditSource, Hold, MemberRecord, UserLedger
from abby_core.storage.models import Reservation
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability.crashpoints import CrashPoints

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 200
USER = "777000222"


async def _use_the_day(manager: StorageManager, uid: str = USER) -> None:
    res = await manager.reserve(uid)
    assert not res.credit
    await manager.save_image(res, PNG)


def _agree(manager: StorageManager, uid: str = USER) -> None:
    """The member record accounts for exactly the balance of the member's document."""
    manager.ledger.forget()
    doc, record = manager.accounts.user(uid), manager.accounts.member(uid)
    assert not doc.holds, doc.holds
    assert record.credits == doc.credits, (record, doc.credits, doc.credit_log)
    assert record.credits_spent == doc.credits_spent


async def _rebuilt_credits(manager: StorageManager, uid: str = USER) -> int:
    manager.backend.delete_doc(keys.user_ledger_key(uid))
    manager.ledger.forget()
    return (await manager.get_quota_status(uid)).credits


async def test_a_refund_while_a_credit_paid_generation_is_in_flight_takes_the_credit_when_it_fails(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _use_the_day(manager)
    await manager.add_credits(USER, 1, source="entitlement:10")
    res = await manager.reserve(USER)
    assert res.credit  # the pack's one credit is promised to this generation
    assert await manager.refund_credits(USER, source="entitlement:10") == 1  # taken if the generation fails
    assert (await manager.get_quota_status(USER)).credits == 0
    await manager.release(res)
    assert (await manager.get_quota_status(USER)).credits == 0
    assert await manager.refund_credits(USER, source="entitlement:10") == 1  # the same again, nothing more
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(USER)
    _agree(manager)
    assert await _rebuilt_credits(manager) == 0


async def test_a_refund_while_a_credit_paid_generation_is_in_flight_leaves_it_spent_when_it_succeeds(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _use_the_day(manager)
    await manager.add_credits(USER, 2, source="entitlement:11")
    res = await manager.reserve(USER)
    assert await manager.refund_credits(USER, source="entitlement:11") == 2  # one now, one if it fails
    await manager.save_image(res, PNG)  # it did not fail: that credit was spent, not refunded
    status = await manager.get_quota_status(USER)
    assert (status.credits, status.daily_used) == (0, 2)
    assert manager.accounts.user(USER).credits_spent == 1
    # A pack bought later is the member's whole: the refund took nothing of it.
    await manager.add_credits(USER, 3, source="entitlement:12")
    assert (await manager.get_quota_status(USER)).credits == 3
    _agree(manager)
    assert await _rebuilt_credits(manager) == 3


async def test_a_discarded_generation_whose_credit_a_refund_claimed_gives_it_to_the_refund(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await _use_the_day(manager)
    await manager.add_credits(USER, 1, source="entitlement:13")
    res = await manager.reserve(USER)
    await manager.refund_credits(USER, source="entitlement:13")
    await manager.discard(res, await manager.save_image(res, PNG))  # committed, then taken back
    status = await manager.get_quota_status(USER)
    assert (status.credits, status.daily_used) == (0, 1)
    _agree(manager)
    assert await _rebuilt_credits(manager) == 0


class SlowRecords(CrashPoints):
    """Holds the first write of ``uid``'s member record until ``go`` is set (``reached``: it is waiting)."""

    def __init__(self, inner: StorageBackend, uid: str) -> None:
        super().__init__(inner)
        self.key = keys.member_key(uid)
        self.reached, self.go = threading.Event(), threading.Event()

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        if key == self.key and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(60), "the test never let the write go"
        return super().write_doc(key, body, etag=etag)


async def test_a_refund_that_overtakes_its_purchase_leaves_a_tombstone_the_purchase_respects(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    slow = SlowRecords(backend, USER)
    buyer, refunder = StorageManager(slow, clock=clock), StorageManager(backend, clock=clock)
    try:
        adding = asyncio.create_task(buyer.add_credits(USER, 5, source="entitlement:14"))
        assert await asyncio.to_thread(slow.reached.wait, 60)
        await refunder.refund_credits(USER, source="entitlement:14")  # while the purchase's write waits
        slow.go.set()
        assert not await adding  # the source was refunded: nothing is added
        assert (await refunder.get_quota_status(USER)).credits == 0
        assert not await refunder.add_credits(USER, 5, source="entitlement:14")  # the event again
        assert (await refunder.get_quota_status(USER)).credits == 0
        await refunder.add_credits(USER, 2, source="entitlement:15")  # another pack is untouched
        assert (await buyer.get_quota_status(USER)).credits == 2
        _agree(refunder)
        assert await _rebuilt_credits(refunder) == 2
    finally:
        slow.go.set()
        await buyer.aclose()
        await refunder.aclose()


class NoMemberDocument(CrashPoints):
    """Storage fails every call on ``uid``'s member document (a crash between the two writes of an add)."""

    def __init__(self, inner: StorageBackend, uid: str) -> None:
        super().__init__(inner)
        self.key = keys.user_ledger_key(uid)

    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        if key == self.key:
            raise StorageUnavailable("stopped before the member's document (test)")
        return super().read_doc(key)


async def test_a_refund_after_an_add_cut_short_takes_only_that_source(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    manager = StorageManager(backend, clock=clock)
    cut = StorageManager(NoMemberDocument(backend, USER), clock=clock)
    try:
        await manager.add_credits(USER, 2, source="entitlement:A")
        with pytest.raises(StorageUnavailable):
            await cut.add_credits(USER, 5, source="entitlement:B")  # the member record has B, the document not
        assert await manager.refund_credits(USER, source="entitlement:B") == 5
        assert (await manager.get_quota_status(USER)).credits == 2  # pack A's, untouched
        assert not await manager.add_credits(USER, 5, source="entitlement:B")  # the retry adds nothing
        assert (await manager.get_quota_status(USER)).credits == 2
        _agree(manager)
        assert await _rebuilt_credits(manager) == 2
    finally:
        await manager.aclose()
        await cut.aclose()


# -- the refund rule, a pure function: inputs in, decision out ------------------------------------
@pytest.mark.parametrize(
    ("given", "credits", "claimed", "free", "decided"),
    [
        (5, 7, 0, 7, (5, 0)),  # plenty: all the source gave, now
        (5, 5, 0, 5, (5, 0)),  # exactly the balance
        (4, 5, 0, 5, (4, 0)),  # less than the balance: the rest is another source's
        (6, 5, 0, 5, (5, 0)),  # some were spent: never more than is left
        (2, 0, 0, 0, (0, 0)),  # all spent: nothing to take
        (0, 5, 0, 5, (0, 0)),  # a tombstone gave nothing
        (5, 5, 0, 4, (4, 1)),  # one credit promised to a generation in flight: taken if it fails
        (1, 1, 0, 0, (0, 1)),  # the only credit is promised
        (3, 5, 0, 2, (2, 1)),  # promised credits beyond the source's are not claimed
        (3, 4, 2, 1, (1, 1)),  # another refund claimed two: only the rest is this one's
        (2, 2, 2, 0, (0, 0)),  # everything is claimed already
        (5, 5, 1, 4, (4, 0)),  # one claimed, the rest free
    ],
)
def test_the_refund_rule(given: int, credits: int, claimed: int, free: int, decided: tuple[int, int]) -> None:
    assert credit_rules.refund_split(given=given, credits=credits, claimed=claimed, free=free) == decided


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def _doc(credits: int = 0, *, promised: int = 0, **log: CreditSource) -> UserLedger:
    holds = {
        f"h{n}": Hold(bytes=1, expires=NOW + timedelta(minutes=5), day=TODAY, stem=f"s{n}", credit=True)
        for n in range(promised)
    }
    return UserLedger(user_id=USER, day=TODAY, count=1, credits=credits, holds=holds, credit_log=log)


def _book(doc: UserLedger) -> tuple[int, int, dict[str, tuple[int, bool, int, list[str]]]]:
    log = {s: (e.credits, e.refunded, e.removed, e.claims) for s, e in doc.credit_log.items()}
    return doc.credits, doc.credits_spent, log


@pytest.mark.parametrize(
    ("doc", "steps", "book"),
    [
        # add, then refund; a second add and a second refund change nothing
        (_doc(), ["add p 3", "refund p 3", "add p 3", "refund p 3"], (0, 0, {"p": (3, True, 3, [])})),
        # the refund first: a tombstone the add respects
        (_doc(), ["refund p 0", "add p 3"], (0, 0, {"p": (0, True, 0, [])})),
        # an add the member record has and the document not: applied, then refunded
        (_doc(2, a=CreditSource(credits=2)), ["refund b 5"], (2, 0, {"a": (2, False, 0, []), "b": (5, True, 5, [])})),
        # the only credit is promised: claimed, and taken when its generation fails
        (_doc(1, promised=1, p=CreditSource(credits=1)), ["refund p 1"], (1, 0, {"p": (1, True, 0, ["h0"])})),
        (_doc(1, promised=1, p=CreditSource(credits=1)), ["refund p 1", "drop h0"], (0, 0, {"p": (1, True, 1, [])})),
        # ... or spent when it succeeds; taken back after all, it goes to the refund
        (
            _doc(1, promised=1, p=CreditSource(credits=1)),
            ["refund p 1", "commit h0"],
            (0, 1, {"p": (1, True, 0, ["h0"])}),
        ),
        (
            _doc(1, promised=1, p=CreditSource(credits=1)),
            ["refund p 1", "commit h0", "uncommit h0"],
            (0, 0, {"p": (1, True, 1, [])}),
        ),
        # an unclaimed generation that fails gives its credit back; taken back, it does too
        (_doc(1, promised=1, p=CreditSource(credits=1)), ["drop h0"], (1, 0, {"p": (1, False, 0, [])})),
        (_doc(1, promised=1), ["commit h0", "uncommit h0"], (1, 0, {})),
        # two refunds never claim the same promised credit
        (
            _doc(2, promised=2, p=CreditSource(credits=1), q=CreditSource(credits=1)),
            ["refund p 1", "refund q 1"],
            (2, 0, {"p": (1, True, 0, ["h0"]), "q": (1, True, 0, ["h1"])}),
        ),
    ],
)
def test_the_credit_book_in_every_order(doc: UserLedger, steps: list[str], book: object) -> None:
    doc = doc.model_copy(deep=True)
    for step in steps:
        verb, name, *amount = step.split()
        if verb == "add":
            credit_rules.add_credits(doc, source=name, credits=int(amount[0]))
        elif verb == "refund":
            credit_rules.refund_credits(doc, source=name, credits=int(amount[0]), now=NOW)
        elif verb == "drop":
            rules.drop_hold(doc, name)
        elif verb == "commit":
            rules.commit(doc, rid=name, key=f"k-{name}", size=1, now=NOW, skew=timedelta(0))
        else:
            rules.uncommit(doc, key=f"k-{name}", day=TODAY, rid=name, credit=True)
    assert _book(doc) == book


def test_a_claimed_hold_is_promised_until_it_is_dropped() -> None:
    """A failed generation whose credit a refund claimed does not free it for another in between."""
    doc = _doc(1, promised=1, p=CreditSource(credits=1))
    credit_rules.refund_credits(doc, source="p", credits=1, now=NOW)
    rules.settle(doc, rid="h0", key=None)  # voided, not dropped yet
    assert rules.credits_left(doc, NOW) == 0
    assert credit_rules.refund_taken(doc, "p") == 1
    rules.drop_hold(doc, "h0")
    assert (rules.credits_left(doc, NOW), credit_rules.refund_taken(doc, "p")) == (0, 1)


def test_an_old_credit_log_is_read_as_sources() -> None:
    old = {"user_id": USER, "day": TODAY.isoformat(), "credits": 3, "credit_log": {"a": 5, "refund:a": -2, "b": 0}}
    doc = UserLedger.model_validate(old)
    assert _book(doc) == (3, 0, {"a": (5, True, 2, []), "b": (0, False, 0, [])})


def test_the_member_record_mirrors_only_a_newer_document() -> None:
    doc = _doc(1, promised=1, p=CreditSource(credits=1))
    credit_rules.refund_credits(doc, source="p", credits=1, now=NOW)
    doc.version = 7
    record = MemberRecord(user_id=USER, credit_sources={"p": 1, "later": 4}, credit_refunds={"p": 0, "x": 0})
    assert credit_rules.mirror_credits(record, doc)
    assert (record.credit_sources, record.credit_refunds) == ({"p": 1, "later": 4}, {"p": 1, "x": 0})
    assert record.credits == 4  # the add of "later" is on its way to the document: kept
    older = doc.model_copy(update={"version": 6, "credits_spent": 9})
    assert not credit_rules.mirror_credits(record, older) and record.credits_spent == 0


# -- a property: random interleavings of purchase, duplicate event, spend, failure and refund -------
PACKS = (1, 2)
Step = tuple[str, int]
# A purchase of a pack already bought is the duplicate event; "cut": an add that stops between its two writes.
VERBS = ["buy", "buy", "cut", "refund", "refund", "reserve", "reserve", "commit", "fail", "fail", "discard"]
steps = st.lists(st.tuples(st.sampled_from(VERBS), st.integers(0, len(PACKS) - 1)), min_size=4, max_size=10)


async def _run_steps(root: Path, sequence: list[Step]) -> None:
    backend = FilesystemBackend(root)
    backend.ensure_ready(cleanup_days=7)
    clock = Clock(day_safe_now())
    manager = StorageManager(backend, max_user_daily_gens=1, clock=clock)
    cut = StorageManager(NoMemberDocument(backend, USER), max_user_daily_gens=1, clock=clock)
    in_flight: list[Reservation] = []
    in_doc: set[int] = set()  # packs added to the member's document
    pending: set[int] = set()  # packs whose add was cut short after the member record
    refunded: set[int] = set()
    paid = 0  # credit-paid images kept

    async def free() -> int:
        return (await manager.get_quota_status(USER)).credits

    try:
        await _use_the_day(manager)
        for verb, n in sequence:
            source = f"entitlement:{n}"
            before = await free()
            if verb == "buy":
                added = await manager.add_credits(USER, PACKS[n], source=source)
                arrives = n not in refunded and n not in in_doc
                assert added == (arrives and n not in pending), (verb, n)
                assert await free() == before + PACKS[n] * arrives
                if arrives:
                    in_doc.add(n)
                    pending.discard(n)
            elif verb == "cut":
                with contextlib.suppress(StorageUnavailable):
                    await cut.add_credits(USER, PACKS[n], source=source)
                if n not in refunded and n not in in_doc:
                    pending.add(n)
                assert await free() == before
            elif verb == "refund":
                await manager.refund_credits(USER, source=source)
                # Of the credits nobody was promised, the pack's go at once (unless it was refunded before).
                fresh = n in in_doc and n not in refunded
                assert await free() == (max(0, before - PACKS[n]) if fresh else before)
                refunded.add(n)
                pending.discard(n)
            elif verb == "reserve":
                with contextlib.suppress(DailyLimitExceeded):
                    in_flight.append(await manager.reserve(USER))
                    assert in_flight[-1].credit and await free() == before - 1
            elif in_flight:
                res = in_flight.pop(n % len(in_flight))
                if verb == "fail":
                    await manager.release(res)
                    assert await free() in (before, before + 1)
                else:
                    stored = await manager.save_image(res, PNG)
                    paid += 1
                    assert await free() == before
                    if verb == "discard":
                        await manager.discard(res, stored)
                        paid -= 1
            doc = manager.accounts.user(USER)
            given = sum(e.credits for e in doc.credit_log.values())
            taken = {s: credit_rules.refund_taken(doc, s) for s, e in doc.credit_log.items() if e.refunded}
            assert all(taken[s] <= doc.credit_log[s].credits for s in taken), doc.credit_log
            assert doc.credits_spent == paid
            assert doc.credits == given - sum(e.removed for e in doc.credit_log.values()) - paid
            kept = sum(PACKS[i] for i in in_doc - refunded)
            assert max(0, kept - paid) <= doc.credits and await free() <= kept, (kept, paid, doc)
        for res in in_flight:
            await manager.release(res)
        for n in pending:  # the event comes again (or the store's sweep): the add completes
            await manager.add_credits(USER, PACKS[n], source=f"entitlement:{n}")
        in_doc |= pending
        credits = await free()
        assert credits <= sum(PACKS[i] for i in in_doc - refunded), "a refunded pack left a credit"
        _agree(manager)
        assert await _rebuilt_credits(manager) == credits
    finally:
        await manager.aclose()
        await cut.aclose()


@settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the checkout; derandomized, so every run tries the same sequences
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=steps)
@example(sequence=[("buy", 0), ("reserve", 0), ("refund", 0), ("fail", 0)])  # in flight, then fails
@example(sequence=[("buy", 0), ("reserve", 0), ("refund", 0), ("commit", 0), ("buy", 1)])  # ... succeeds
@example(sequence=[("buy", 0), ("reserve", 0), ("refund", 0), ("discard", 0)])  # ... is taken back
@example(sequence=[("refund", 0), ("buy", 0), ("buy", 1)])  # the refund first
@example(sequence=[("buy", 1), ("cut", 0), ("refund", 0), ("buy", 0)])  # an add cut short
@example(sequence=[("buy", 0), ("buy", 1), ("reserve", 0), ("reserve", 0), ("refund", 1), ("refund", 0),
                   ("fail", 0), ("commit", 0)])  # two refunds, two generations in flight
def test_credits_add_up_after_any_interleaving(tmp_path: Path, sequence: list[Step]) -> None:
    """After every step: credits = bought − refunded-unspent − spent, never negative, never a
    credit of a refunded pack; at the end, the member record agrees and a rebuild has the same."""
    root = tmp_path / uuid.uuid4().hex
    asyncio.run(_run_steps(root, sequence))
