"""The quota rules as table tests: a document and the inputs in, the decision out; no storage.

Each rule of ``abby_core/storage/rules.py`` (and of the credit book,
``abby_core/storage/credit_rules.py``) is pinned at its boundaries, so that a change of
a comparison, a sign or a kept value in a rule fails here and not only (or never) in a
test of the whole manager. The refund rule and the credit book have more tables in
``test_credit_refunds.py``; the clock bound's (``counts``, ``droppable``, ``committable``,
``dead_leases``) are in ``test_clocks.py``.

Every test runs in local time zones far from UTC: the day is the UTC day wherever the
process runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from abby_core.config import MB, PremiumTier, QuotaTier
from abby_core.errors import (
    DailyLimitExceeded,
    GlobalStorageFull,
    InvalidInput,
    QuotaExceeded,
    ReservationInvalid,
    UserBlocked,
    UserStorageFull,
)
from abby_core.storage import credit_rules, rules, usage_rules
from abby_core.storage.documents import (
    CreditSource,
    Entry,
    GlobalLedger,
    Hold,
    Lease,
    MemberRecord,
    ShardHold,
    ShardLedger,
    ShardSnapshot,
    Snapshot,
    SnapshotHold,
    UserLedger,
)
from abby_core.storage.models import QuotaStatus, UserLimits

pytestmark = pytest.mark.usefixtures("local_zone")

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
YESTERDAY = TODAY - timedelta(days=1)
TTL = 900
SKEW = timedelta(seconds=60)
LIMITS = UserLimits(daily_gens=2, storage_bytes=int(2.5 * MB))


def _held(size: int = MB, *, day: date = TODAY, credit: bool = False, expires: datetime | None = None) -> Hold:
    return Hold(bytes=size, expires=expires or NOW + timedelta(seconds=TTL), day=day, stem="s", credit=credit)


def _void(held: Hold) -> Hold:
    return held.model_copy(update={"void": True})


def _doc(*, day: date = TODAY, holds: dict[str, Hold] | None = None, **fields: object) -> UserLedger:
    return UserLedger.model_validate({"user_id": "42", "day": day, "holds": holds or {}, **fields})


def _hold(doc: UserLedger, rid: str, size: int, *, renew: bool = False, now: datetime = NOW) -> Hold:
    return rules.hold(
        doc, rid=rid, size=size, stem=f"st-{rid}", limits=LIMITS, now=now, ttl=TTL, skew=SKEW, renew=renew
    )


Refusal = tuple[type[QuotaExceeded], int, int]  # what was refused: the error, used, limit


def _refusal(exc: QuotaExceeded) -> Refusal:
    return type(exc), exc.used, exc.limit


# -- the day ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 11, 25, 23, 30, tzinfo=UTC), date(2026, 11, 25)),  # already the 26th in Chatham
        (datetime(2026, 11, 26, 0, 30, tzinfo=UTC), date(2026, 11, 26)),  # still the 25th in St. John's
        (datetime(2026, 11, 26, 9, 0, tzinfo=timezone(timedelta(hours=13, minutes=45))), date(2026, 11, 25)),
        (datetime(2026, 11, 25, 21, 0, tzinfo=timezone(timedelta(hours=-3, minutes=-30))), date(2026, 11, 26)),
    ],
)
def test_the_day_is_the_utc_day_wherever_the_process_runs(moment: datetime, day: date) -> None:
    assert rules.day_of(moment) == day


def test_the_day_ends_at_midnight_utc() -> None:
    assert rules.next_midnight(date(2026, 11, 25)) == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stored", "now", "kept"),
    [
        (TODAY, NOW, (TODAY, 1, 2)),
        (TODAY, datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC), (TODAY, 1, 2)),
        (TODAY, datetime(2026, 11, 26, 0, 0, tzinfo=UTC), (date(2026, 11, 26), 0, 0)),  # a new day restarts
        (TODAY, NOW - timedelta(days=1), (TODAY, 1, 2)),  # a clock behind never takes the day back
    ],
)
def test_the_daily_count_restarts_at_midnight_and_never_goes_back(
    stored: date, now: datetime, kept: tuple[date, int, int]
) -> None:
    doc = _doc(day=stored, count=1, bonus=2)
    rules.roll_day(doc, now)
    assert (doc.day, doc.count, doc.bonus) == kept


# -- limits and tiers ----------------------------------------------------------------------------
DEFAULTS = UserLimits(daily_gens=5, storage_bytes=100 * MB)
TIERS = [
    QuotaTier(role_id=1, daily_gens=10, storage_mb=50),
    QuotaTier(role_id=2, daily_gens=3, storage_mb=250.5),
    QuotaTier(role_id=3, daily_gens=20, storage_mb=300),
]
PREMIUM = [PremiumTier(sku_id=9, daily_gens=7, storage_mb=1000)]


@pytest.mark.parametrize(
    ("roles", "skus", "limits"),
    [
        ((), (), DEFAULTS),
        ((4,), (8,), DEFAULTS),  # roles and SKUs without a tier
        ((1,), (), UserLimits(10, 100 * MB)),  # each limit the most generous: more generations ...
        ((2,), (), UserLimits(5, 250_500_000)),  # ... more storage (fractional megabytes)
        ((1, 2), (), UserLimits(10, 250_500_000)),
        ((1, 2, 3), (), UserLimits(20, 300 * MB)),
        ((), (9,), UserLimits(7, 1000 * MB)),  # a premium subscription
        ((3,), (9,), UserLimits(20, 1000 * MB)),
    ],
)
def test_a_member_gets_the_most_generous_of_the_defaults_and_their_tiers(
    roles: tuple[int, ...], skus: tuple[int, ...], limits: UserLimits
) -> None:
    assert rules.limits_for(DEFAULTS, TIERS, roles, PREMIUM, skus) == limits


# -- what a hold counts --------------------------------------------------------------------------
def test_committed_images_and_holds_not_yet_droppable_count_as_the_members_bytes() -> None:
    doc = _doc(
        objects={"a": Entry(size=300, created=NOW), "b": Entry(size=200, created=NOW)},
        holds={
            "live": _held(10),
            "expired": _held(20, expires=NOW - rules.PURGE_MARGIN + timedelta(seconds=1)),
            "gone": _held(40, expires=NOW - rules.PURGE_MARGIN),
            "void": _void(_held(80)),
        },
    )
    assert rules.user_bytes(doc) == 500  # committed only
    assert rules.user_bytes(doc, NOW) == 530
    assert rules.user_bytes(doc, NOW, skip="live") == 520


@pytest.mark.parametrize(
    ("holds", "credits", "left"),
    [
        ({}, 2, 2),
        ({"a": _held(), "b": _held()}, 1, 1),  # generations within the allowance promise no credit
        ({"a": _held(credit=True)}, 2, 1),
        ({"a": _held(credit=True), "b": _held(credit=True)}, 1, 0),  # never below zero
        ({"a": _void(_held(credit=True))}, 1, 1),  # a failed one promises nothing
    ],
)
def test_credits_left_are_those_no_generation_in_flight_was_promised(
    holds: dict[str, Hold], credits: int, left: int
) -> None:
    assert rules.credits_left(_doc(holds=holds, credits=credits), NOW) == left


# -- holding -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "size", "credit"),
    [
        (_doc(), 2_500_000, False),  # exactly the storage limit
        (_doc(count=1), MB, False),  # the last generation of the allowance
        (_doc(count=1, holds={"a": _held(day=YESTERDAY)}), MB, False),  # yesterday's hold is not today's
        (_doc(count=2, credits=1), MB, True),  # past the allowance a credit pays ...
        (_doc(holds={"a": _held(), "b": _held(0)}, credits=1), MB, True),  # ... also past it in flight
        (_doc(count=2, bonus=1), MB, False),  # a granted bonus extends the allowance
        (_doc(holds={"a": _held(expires=NOW - rules.PURGE_MARGIN)}, count=1), 2_500_000, False),  # dropped
    ],
)
def test_a_hold_is_admitted(doc: UserLedger, size: int, credit: bool) -> None:
    doc = doc.model_copy(deep=True)
    held = _hold(doc, "new", size)
    assert doc.holds["new"] == held
    assert (held.bytes, held.day, held.credit, held.void) == (size, TODAY, credit, False)
    assert held.expires == NOW + timedelta(seconds=TTL)


@pytest.mark.parametrize(
    ("doc", "size", "refused"),
    [
        (_doc(), 2_500_001, (UserStorageFull, 0, 2_500_000)),
        (_doc(objects={"k": Entry(size=MB, created=NOW)}), 1_500_001, (UserStorageFull, MB, 2_500_000)),
        # another hold in flight counts against the storage limit too
        (_doc(holds={"a": _held(1_500_000)}), 1_500_000, (UserStorageFull, 1_500_000, 2_500_000)),
        (_doc(count=2), MB, (DailyLimitExceeded, 2, 2)),
        (_doc(count=1, holds={"a": _held(0)}), MB, (DailyLimitExceeded, 2, 2)),  # in flight counts
        (_doc(count=2, bonus=1, credits=0, holds={"a": _held(0)}), MB, (DailyLimitExceeded, 3, 3)),
        (_doc(count=2, credits=1, holds={"a": _held(credit=True)}), MB, (DailyLimitExceeded, 3, 2)),  # promised
        (_doc(count=2, credits=1), 2_500_001, (UserStorageFull, 0, 2_500_000)),  # a credit buys no storage
    ],
)
def test_a_hold_is_refused(doc: UserLedger, size: int, refused: Refusal) -> None:
    doc = doc.model_copy(deep=True)
    before = doc.model_dump()
    with pytest.raises(QuotaExceeded) as caught:
        _hold(doc, "new", size)
    assert _refusal(caught.value) == refused
    assert doc.model_dump() == before


def test_a_full_day_is_refused_until_midnight_utc() -> None:
    with pytest.raises(DailyLimitExceeded) as caught:
        _hold(_doc(count=2), "new", MB)
    assert caught.value.resets_at == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def test_a_blocked_member_is_refused_first() -> None:
    with pytest.raises(UserBlocked):
        _hold(_doc(blocked=True, count=2), "new", 10 * MB)


def test_a_second_concurrent_hold_over_the_storage_limit_is_refused() -> None:
    doc = _doc()
    _hold(doc, "first", 1_500_000)
    with pytest.raises(UserStorageFull):
        _hold(doc, "second", 1_500_000)
    assert list(doc.holds) == ["first"]


def test_the_last_daily_generation_and_then_the_credit() -> None:
    """Two generations a day and one credit: the third in flight is paid by the credit, the fourth refused."""
    doc = _doc(credits=1)
    assert [_hold(doc, rid, 0).credit for rid in ("a", "b", "c")] == [False, False, True]
    with pytest.raises(DailyLimitExceeded):
        _hold(doc, "d", 0)


@pytest.mark.parametrize(
    ("held", "size", "grown"),
    [
        (_held(MB), 2 * MB, 2 * MB),  # a larger image than the estimate: the hold grows
        (_held(2 * MB), MB, 2 * MB),  # never shrinks
        (_held(1_500_000), 2_500_000, 2_500_000),  # its own bytes do not count against it
    ],
)
def test_a_renewed_hold_grows_to_the_larger_size(held: Hold, size: int, grown: int) -> None:
    doc = _doc(count=1, holds={"h": held})  # the hold is the last generation of the day
    renewed = _hold(doc, "h", size, renew=True, now=NOW + timedelta(seconds=60))
    assert doc.holds["h"] == renewed
    assert (renewed.bytes, renewed.day, renewed.credit) == (grown, TODAY, False)
    assert renewed.expires == NOW + timedelta(seconds=60 + TTL)


def test_a_renewed_hold_is_refused_only_the_bytes_beyond_the_limit() -> None:
    doc = _doc(holds={"h": _held(MB), "other": _held(MB)})
    with pytest.raises(UserStorageFull) as caught:
        _hold(doc, "h", 1_500_001, renew=True)
    assert _refusal(caught.value) == (UserStorageFull, MB, 2_500_000)
    assert doc.holds["h"].bytes == MB


def test_a_renewed_credit_paid_hold_stays_credit_paid() -> None:
    doc = _doc(count=2, credits=1, holds={"h": _held(credit=True)})
    assert _hold(doc, "h", 2 * MB, renew=True).credit is True


def test_a_renewed_hold_keeps_the_day_it_was_made_on() -> None:
    """A hold made before midnight counts on that day, even when it is renewed after it."""
    after_midnight = datetime(2026, 11, 26, 0, 1, tzinfo=UTC)
    doc = _doc(count=2, holds={"h": _held(day=TODAY, expires=after_midnight + timedelta(minutes=5))})
    renewed = _hold(doc, "h", MB, renew=True, now=after_midnight)
    assert (renewed.day, doc.day, doc.count) == (TODAY, date(2026, 11, 26), 0)


@pytest.mark.parametrize(
    ("holds", "renew"),
    [
        ({}, True),  # nothing to renew
        ({"h": _held(expires=NOW + SKEW)}, True),  # too close to its expiry to be committed
        ({"h": _void(_held())}, True),
        ({"h": _held()}, False),  # a new hold under an id in use
    ],
)
def test_a_hold_id_that_cannot_be_held(holds: dict[str, Hold], renew: bool) -> None:
    doc = _doc(holds=holds)
    with pytest.raises(ReservationInvalid):
        _hold(doc, "h", MB, renew=renew)
    assert doc.holds == holds


# -- committing, settling, taking back -----------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "book"),
    [
        (_doc(count=1, holds={"h": _held()}), (2, 0, 0)),
        (_doc(count=1, holds={"h": _held(day=YESTERDAY)}), (1, 0, 0)),  # counted on its own day
        (_doc(count=2, credits=3, credits_spent=2, holds={"h": _held(credit=True)}), (3, 2, 3)),
    ],
)
def test_a_commit_counts_the_generation_and_spends_its_credit(doc: UserLedger, book: tuple[int, int, int]) -> None:
    doc = doc.model_copy(deep=True)
    rules.commit(doc, rid="h", key="img", size=1234, now=NOW, skew=SKEW)
    assert (doc.count, doc.credits, doc.credits_spent) == book
    assert doc.objects == {"img": Entry(size=1234, created=NOW)}
    assert doc.holds == {}
    rules.commit(doc, rid="h", key="img", size=1234, now=NOW, skew=SKEW)  # a retried commit
    assert (doc.count, doc.credits, doc.credits_spent) == book


@pytest.mark.parametrize("held", [None, _held(expires=NOW + SKEW), _void(_held())])
def test_a_commit_without_a_live_hold_charges_nothing(held: Hold | None) -> None:
    doc = _doc(holds={"h": held} if held else {}, credits=1)
    before = doc.model_dump()
    with pytest.raises(ReservationInvalid):
        rules.commit(doc, rid="h", key="img", size=1, now=NOW, skew=SKEW)
    assert doc.model_dump() == before


@pytest.mark.parametrize(
    ("objects", "key", "settled", "void"),
    [
        ({"img": Entry(size=1, created=NOW)}, "img", rules.Settled.COMMITTED, False),
        ({}, "img", rules.Settled.VOIDED, True),  # a lost commit: voided, never kept without a charge
        ({"other": Entry(size=1, created=NOW)}, "img", rules.Settled.VOIDED, True),
        ({}, None, rules.Settled.VOIDED, True),
    ],
)
def test_an_unknown_outcome_is_committed_only_when_the_image_is_in_the_document(
    objects: dict[str, Entry], key: str | None, settled: rules.Settled, void: bool
) -> None:
    doc = _doc(objects=objects, holds={"h": _held()})
    assert rules.settle(doc, rid="h", key=key) is settled
    assert doc.holds["h"].void is void
    assert doc.holds["h"].model_copy(update={"void": False}) == _held()


@pytest.mark.parametrize(
    ("doc", "day", "credit", "book"),
    [
        (_doc(count=1), TODAY, False, (0, 0, 0)),
        (_doc(count=1), YESTERDAY, False, (1, 0, 0)),  # yesterday's image is not today's count
        (_doc(count=0), TODAY, False, (0, 0, 0)),  # never below zero
        (_doc(count=1, credits_spent=1), TODAY, False, (0, 0, 1)),  # an ordinary generation mints nothing
        (_doc(count=1, credits=2, credits_spent=3), TODAY, True, (0, 3, 2)),  # a credit-paid one gives it back
        (_doc(count=1, credits=2, credits_spent=0), TODAY, True, (0, 2, 0)),  # ... only a spent one
    ],
)
def test_taking_back_a_committed_image(doc: UserLedger, day: date, credit: bool, book: tuple[int, int, int]) -> None:
    doc = doc.model_copy(update={"objects": {"img": Entry(size=1, created=NOW)}}, deep=True)
    assert rules.uncommit(doc, key="img", day=day, rid="h", credit=credit) is True
    assert (doc.count, doc.credits, doc.credits_spent) == book
    assert doc.objects == {}
    assert rules.uncommit(doc, key="img", day=day, rid="h", credit=credit) is False  # only once
    assert (doc.count, doc.credits, doc.credits_spent) == book


# -- where a member stands, and the early refusal -------------------------------------------------
STATE = QuotaStatus(
    user_id="42",
    daily_used=1,
    daily_limit=2,
    resets_at=datetime(2026, 11, 26, tzinfo=UTC),
    user_bytes=1500,
    user_limit_bytes=2000,
    global_bytes=9000,
    global_limit_bytes=10_000,
)


def test_the_status_counts_generations_in_flight() -> None:
    doc = _doc(
        count=1,
        bonus=1,
        credits=2,
        objects={"k": Entry(size=100, created=NOW)},
        holds={"a": _held(10, credit=True), "b": _held(20, day=YESTERDAY), "c": _void(_held(40))},
    )
    state = rules.status(doc, limits=LIMITS, now=NOW, global_bytes=7, global_limit=9)
    assert state == replace(
        STATE,
        daily_used=2,
        daily_limit=3,
        user_bytes=130,
        user_limit_bytes=2_500_000,
        global_bytes=7,
        global_limit_bytes=9,
        in_flight=2,
        credits=1,
    )


@pytest.mark.parametrize(
    ("change", "size", "refused"),
    [
        ({}, 500, None),  # exactly the storage limit, the last generation of the day
        ({"daily_used": 2}, 500, (DailyLimitExceeded, 2, 2)),
        ({"daily_used": 2, "credits": 1}, 500, None),  # one credit left pays
        ({"daily_used": 3, "credits": 1}, 500, None),
        ({}, 501, (UserStorageFull, 1500, 2000)),
        ({"global_bytes": 9500}, 500, None),  # exactly the global limit
        ({"global_bytes": 9501}, 500, (GlobalStorageFull, 9501, 10_000)),
        ({"global_bytes": 9600, "user_bytes": 0}, 100, None),
        ({"global_bytes": 9600, "user_bytes": 0}, 401, (GlobalStorageFull, 9600, 10_000)),
    ],
)
def test_the_early_refusal(change: dict[str, int], size: int, refused: Refusal | None) -> None:
    state = replace(STATE, **change)
    if refused is None:
        rules.precheck(state, size)
        return
    with pytest.raises(QuotaExceeded) as caught:
        rules.precheck(state, size)
    assert _refusal(caught.value) == refused


def test_the_early_refusal_of_a_blocked_member() -> None:
    with pytest.raises(UserBlocked):
        rules.precheck(replace(STATE, blocked=True), 0)


# -- the global ledger ---------------------------------------------------------------------------
def _snap(version: int, size: int = 0, **holds: int) -> Snapshot:
    return Snapshot(
        version=version,
        bytes=size,
        holds={rid: SnapshotHold(bytes=b, expires=NOW + timedelta(seconds=TTL)) for rid, b in holds.items()},
    )


def test_a_snapshot_keeps_committed_bytes_and_every_hold_not_yet_dropped() -> None:
    doc = _doc(
        version=4,
        objects={"k": Entry(size=100, created=NOW)},
        holds={
            "live": _held(10),
            "void": _void(_held(20)),  # its upload may still be stored
            "expired": _held(40, expires=NOW - rules.PURGE_MARGIN + timedelta(seconds=1)),
            "gone": _held(80, expires=NOW - rules.PURGE_MARGIN),
        },
    )
    snap = usage_rules.snapshot(doc, NOW)
    assert (snap.version, snap.bytes) == (4, 100)
    assert {rid: h.bytes for rid, h in snap.holds.items()} == {"live": 10, "void": 20, "expired": 40}


def _shard(version: int, size: int = 0, members: int = 0, *, shard: str = "2a", **holds: int) -> ShardSnapshot:
    expires = NOW + timedelta(seconds=TTL)
    return ShardSnapshot(
        version=version,
        bytes=size,
        members=members,
        holds={rid: ShardHold(shard=shard, user="2", bytes=b, expires=expires) for rid, b in holds.items()},
    )


def _global(shards: dict[str, ShardSnapshot], **fields: object) -> GlobalLedger:
    """A global document that recorded these shard snapshots."""
    doc = GlobalLedger(shards={}, **fields)  # type: ignore[arg-type]
    for shard, snap in shards.items():
        usage_rules.apply_shard(doc, shard, snap)
    return doc


@pytest.mark.parametrize(
    ("stored", "applied", "kept"),
    [
        (None, _snap(3, 10), _snap(3, 10)),
        (_snap(3, 10), _snap(4, 20), _snap(4, 20)),
        (_snap(4, 20), _snap(3, 10), _snap(4, 20)),  # an older snapshot never replaces a newer one
        # the same version taken later (a hold past the purge margin left out) does not replace it
        # either: what was counted stays counted until the document moves on
        (_snap(4, 20, h=5), _snap(4, 20), _snap(4, 20, h=5)),
    ],
)
def test_a_snapshot_only_moves_forward(stored: Snapshot | None, applied: Snapshot, kept: Snapshot) -> None:
    doc = ShardLedger(shard="2a", users={"42": stored} if stored else {})
    usage_rules.apply_snapshot(doc, "42", applied)
    assert doc.users == {"42": kept}


@pytest.mark.parametrize(
    ("stored", "applied", "kept"),
    [
        (None, _shard(3, 10), _shard(3, 10)),
        (_shard(3, 10), _shard(4, 20), _shard(4, 20)),
        (_shard(4, 20), _shard(3, 10), _shard(4, 20)),  # an older shard snapshot never replaces a newer one
        (_shard(4, 20, h=5), _shard(4, 20), _shard(4, 20, h=5)),
    ],
)
def test_a_shard_snapshot_only_moves_forward(
    stored: ShardSnapshot | None, applied: ShardSnapshot, kept: ShardSnapshot
) -> None:
    doc = _global({"2a": stored} if stored else {})
    usage_rules.apply_shard(doc, "2a", applied)
    assert usage_rules.recorded_shard(doc, "2a") == kept
    assert set(doc.holds) == set(kept.holds)  # the shard's holds are those of the snapshot kept


def test_a_newer_shard_snapshot_replaces_only_its_own_holds() -> None:
    doc = _global({"00": _shard(1, shard="00", a=1, b=2), "ff": _shard(1, shard="ff", c=3)})
    usage_rules.apply_shard(doc, "00", _shard(2, shard="00", b=2, d=4))
    assert sorted(doc.holds) == ["b", "c", "d"]
    assert usage_rules.global_usage(doc) == 2 + 3 + 4


def test_a_shard_the_global_document_never_recorded_is_none() -> None:
    assert usage_rules.recorded_shard(_global({"00": _shard(1, shard="00")}), "01") is None


def test_a_shard_snapshot_sums_its_members_and_lists_their_holds() -> None:
    doc = ShardLedger(
        shard="2a", version=7, users={"1": _snap(3, 100, a=10), "2": _snap(1), "3": _snap(2, 50, b=20, c=30)}
    )
    expires = NOW + timedelta(seconds=TTL)
    assert usage_rules.shard_snapshot(doc) == ShardSnapshot(
        version=7,
        bytes=150,
        members=2,  # members with images
        holds={
            "a": ShardHold(shard="2a", user="1", bytes=10, expires=expires),
            "b": ShardHold(shard="2a", user="3", bytes=20, expires=expires),
            "c": ShardHold(shard="2a", user="3", bytes=30, expires=expires),
        },
    )


def test_global_usage_is_every_shard_every_lease_and_a_layout_not_moved_yet() -> None:
    doc = _global(
        {"00": _shard(1, 100, shard="00", a=10, b=20), "ff": _shard(1, 1000, shard="ff")},
        leases={"l": Lease(bytes=5, expires=NOW), "m": Lease(bytes=7, expires=NOW)},
    )
    assert usage_rules.global_usage(doc) == 1142
    doc.users = {"1": _snap(1, 300, c=3)}  # before shards: one snapshot a member
    assert usage_rules.global_usage(doc) == 1445


@pytest.mark.parametrize(
    ("expires", "stale"),
    [
        (NOW - timedelta(seconds=1), ["2"]),
        (NOW, ["2"]),  # at the deadline
        (NOW + timedelta(seconds=1), []),
    ],
)
def test_members_with_a_hold_expired_before_the_deadline_are_refreshed(expires: datetime, stale: list[str]) -> None:
    held = SnapshotHold(bytes=1, expires=expires)
    hold = ShardHold(shard="00", user="2", bytes=1, expires=expires)
    doc = _global({"00": ShardSnapshot(version=1, bytes=0, holds={"h": hold})})
    assert usage_rules.stale_holders(doc, NOW) == stale
    legacy = GlobalLedger(users={"2": Snapshot(version=1, bytes=0, holds={"h": held})})
    assert usage_rules.stale_holders(legacy, NOW) == stale


@pytest.mark.parametrize(
    ("held", "refused"),
    [
        (400, None),  # exactly the limit
        (401, (GlobalStorageFull, 600, 1000)),  # what is used besides the hold
    ],
)
def test_a_hold_is_recorded_in_the_global_ledger_up_to_the_limit(held: int, refused: Refusal | None) -> None:
    doc = _global(
        {"01": _shard(1, 500, shard="01"), "02": _shard(1, 50, shard="02")}, leases={"l": Lease(bytes=50, expires=NOW)}
    )
    if refused is None:
        usage_rules.global_hold(doc, shard="02", snap=_shard(2, 50, shard="02", h=held), rid="h", limit=1000)
        assert usage_rules.recorded_shard(doc, "02") == _shard(2, 50, shard="02", h=held)
        return
    with pytest.raises(QuotaExceeded) as caught:
        usage_rules.global_hold(doc, shard="02", snap=_shard(2, 50, shard="02", h=held), rid="h", limit=1000)
    assert _refusal(caught.value) == refused


def test_an_over_limit_ledger_still_records_a_snapshot_without_the_hold() -> None:
    """A snapshot taken after the hold ended only brings the ledger closer to the truth."""
    doc = _global({"01": _shard(1, 2000, shard="01")})
    usage_rules.global_hold(doc, shard="02", snap=_shard(1, 10, shard="02"), rid="h", limit=1000)
    assert usage_rules.recorded_shard(doc, "02") == _shard(1, 10, shard="02")


# 1000 bytes; snapshots use 300, another lease 100: 600 are left for this lease on top of its in-flight part.
@pytest.mark.parametrize(
    ("covered", "need", "want", "mine", "slice_"),
    [
        (200, 50, 500, 0, 133),  # 400 left, shared among the other lease, this one and a newcomer
        (200, 50, 500, 999, 133),  # what this lease held before does not count against it
        (200, 50, 100, 0, 100),  # never more than it wants
        (200, 150, 500, 0, 150),  # never less than it needs
        (200, 400, 500, 0, 400),  # all that is left
        (200, 401, 500, 0, None),  # more than is left
        (0, 0, 0, 0, 0),  # an idle lease wants nothing
        (600, 0, 500, 0, 0),  # everything is in flight
        (601, 0, 0, 0, None),  # in flight beyond the limit: not even nothing fits
    ],
)
def test_a_lease_slice_is_a_fair_share_of_what_is_left(
    covered: int, need: int, want: int, mine: int, slice_: int | None
) -> None:
    leases = {"other": Lease(bytes=100, expires=NOW)}
    if mine:
        leases["me"] = Lease(bytes=mine, expires=NOW)
    doc = _global({"01": _shard(1, 250, shard="01", a=50)}, leases=leases)
    assert usage_rules.lease_slice(doc, lease_id="me", covered=covered, need=need, want=want, limit=1000) == slice_


# -- the bounds checked at the door --------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, 7), (1, 1), (100, 100), (100.0, 100), (99, 99)],
)
def test_check_size_takes_a_whole_number_of_bytes_up_to_the_global_limit(size: object, expected: int) -> None:
    assert rules.check_size(size, estimate=7, limit=100) == expected
    assert type(rules.check_size(size, estimate=7, limit=100)) is int


@pytest.mark.parametrize(
    ("size", "says"),
    [
        (0, "from 1 to 100"),
        (-1, "from 1 to 100"),
        (101, "from 1 to 100"),
        (1.5, "from 1 to 100"),
        (True, "not True"),
        (float("nan"), "not nan"),
        (float("inf"), "not inf"),
        ("10", "not '10'"),
    ],
)
def test_check_size_refuses_what_is_not_a_size_and_says_what_it_was_given(size: object, says: str) -> None:
    with pytest.raises(InvalidInput, match="size to reserve") as refused:
        rules.check_size(size, estimate=7, limit=100)
    assert says in str(refused.value)


@pytest.mark.parametrize("source", ["a", "entitlement:123", "grant_2026-11-25", "x" * 100, "A:Z_0-9"])
def test_check_source_takes_1_to_100_letters_digits_and_separators(source: str) -> None:
    assert rules.check_source(source) == source


@pytest.mark.parametrize("source", ["", "x" * 101, "a b", "a/b", "é", "a\n", None, 12])
def test_check_source_refuses_anything_else(source: object) -> None:
    with pytest.raises(InvalidInput, match="credit source"):
        rules.check_source(source)


# -- what mutation testing found unpinned -------------------------------------------------------
# Messages of core errors are shown: the CLI prints every core message, the Discord
# translator an InvalidInput's, so each is pinned whole.
@pytest.mark.parametrize(
    ("check", "top", "says"),
    [
        (rules.check_grant, rules.MAX_GRANT, "The number of extra generations must be a whole number from 1 to 1000."),
        (rules.check_credits, rules.MAX_CREDITS, "The number of credits must be a whole number from 1 to 100000."),
    ],
)
def test_a_grant_or_credits_is_taken_up_to_its_bound_and_refused_past_it(
    check: Callable[[object], int], top: int, says: str
) -> None:
    assert (check(1), check(top)) == (1, top)
    for refused in (0, top + 1, True, 2.0, "3"):
        with pytest.raises(InvalidInput) as caught:
            check(refused)
        assert caught.value.message == says


def test_check_source_says_what_a_source_may_be() -> None:
    with pytest.raises(InvalidInput) as caught:
        rules.check_source("a b")
    assert caught.value.message == "A credit source must be 1 to 100 letters, digits, ':', '_' or '-'."


def test_a_blocked_member_is_named_wherever_they_are_refused() -> None:
    with pytest.raises(UserBlocked) as by_hold:
        _hold(_doc(blocked=True), "r", MB)
    with pytest.raises(UserBlocked) as by_rule:
        rules.check_room(
            blocked=True, user_id="7", daily_used=0, daily_limit=1, resets_at=NOW, user_used=0, user_limit=1, size=0
        )
    state = QuotaStatus(
        user_id="9", daily_used=0, daily_limit=2, resets_at=NOW, user_bytes=0, user_limit_bytes=MB,
        global_bytes=0, global_limit_bytes=MB, in_flight=0, blocked=True, credits=0,
    )  # fmt: skip
    with pytest.raises(UserBlocked) as by_precheck:
        rules.precheck(state, 1)
    assert (by_hold.value.user_id, by_rule.value.user_id, by_precheck.value.user_id) == ("42", "7", "9")


@pytest.mark.parametrize(
    ("holds", "renew", "says"),
    [
        ({}, True, "The generation took too long and its quota hold expired; nothing was charged."),
        ({"r": _held()}, False, "This reservation id is already in use."),
    ],
)
def test_a_hold_id_that_cannot_be_held_says_why(holds: dict[str, Hold], renew: bool, says: str) -> None:
    with pytest.raises(ReservationInvalid) as caught:
        _hold(_doc(holds=holds), "r", MB, renew=renew)
    assert caught.value.message == says


def test_a_commit_without_a_live_hold_says_nothing_was_charged() -> None:
    with pytest.raises(ReservationInvalid) as caught:
        rules.commit(_doc(), rid="r", key="k", size=MB, now=NOW, skew=SKEW)
    assert caught.value.message == (
        "The generation took too long to save and its quota hold expired; nothing was charged."
    )


def test_a_hold_is_new_unless_renewal_is_asked_for() -> None:
    doc = _doc()
    rules.hold(doc, rid="r", size=MB, stem="s", limits=LIMITS, now=NOW, ttl=TTL, skew=SKEW)
    assert list(doc.holds) == ["r"]


def test_taking_back_an_image_gives_back_no_credit_unless_it_was_credit_paid() -> None:
    doc = _doc(objects={"k": Entry(size=MB, created=NOW)}, count=1, credits=3, credits_spent=1)
    assert rules.uncommit(doc, key="k", day=TODAY, rid="r")
    assert (doc.count, doc.credits, doc.credits_spent) == (0, 3, 1)


def test_taking_back_an_image_adds_its_credit_to_what_the_claiming_refund_took() -> None:
    doc = _doc(
        objects={"k": Entry(size=MB, created=NOW)},
        count=1,
        credits_spent=1,
        credit_log={"p": CreditSource(credits=5, refunded=True, removed=2, claims=["r"])},
    )
    assert rules.uncommit(doc, key="k", day=TODAY, rid="r", credit=True)
    assert doc.credit_log["p"] == CreditSource(credits=5, refunded=True, removed=3, claims=[])
    assert (doc.credits, doc.credits_spent, credit_rules.refund_taken(doc, "p")) == (0, 0, 3)


def test_a_credit_source_is_added_once() -> None:
    doc = _doc()
    assert credit_rules.add_credits(doc, source="p", credits=5) is True
    assert credit_rules.add_credits(doc, source="p", credits=5) is False
    assert doc.credits == 5


@pytest.mark.parametrize("log", [{}, {"p": CreditSource(credits=5)}])
def test_a_source_not_refunded_took_nothing_back(log: dict[str, CreditSource]) -> None:
    assert credit_rules.refund_taken(_doc(credit_log=log), "p") == 0


def test_dropping_a_hold_that_is_gone_changes_nothing() -> None:
    doc = _doc(credits=2)
    rules.drop_hold(doc, "gone")
    assert (doc.holds, doc.credits) == ({}, 2)


def test_mirroring_the_same_credit_book_again_changes_nothing() -> None:
    doc = _doc(version=3, credits=5, credits_spent=1, credit_log={"p": CreditSource(credits=5)})
    record = MemberRecord(user_id="42")
    assert credit_rules.mirror_credits(record, doc) is True
    assert credit_rules.mirror_credits(record, doc) is False
    assert (record.credit_sources, record.credits_spent, record.credits_version) == ({"p": 5}, 1, 3)


def test_the_credit_log_of_a_member_record() -> None:
    record = MemberRecord(user_id="42", credit_sources={"a": 5, "b": 3}, credit_refunds={"b": 2, "c": 0})
    assert credit_rules.credit_log_of(record) == {
        "a": CreditSource(credits=5),
        "b": CreditSource(credits=3, refunded=True, removed=2),
        "c": CreditSource(refunded=True),
    }
