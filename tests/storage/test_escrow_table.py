"""The escrow's arithmetic without storage: one process's lease, its books and its global writes.

The global document lives in memory (:class:`_Books` stands in for ``Accounts``: it applies
each global write to a copy and keeps it), so every step is a few microseconds and each
decision of ``abby_core/storage/escrow.py`` is pinned at its boundary: when a lease stops
admitting, what a settle leaves leased, when a lease goes back, what closing does. The
escrow against real backends and processes is in ``test_escrow.py`` and
``test_escrow_multiprocess.py``; the slice rule itself is tabled in ``test_rules_table.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import ClassVar, TypeVar, cast

import pytest

from abby_core.errors import GlobalStorageFull, StorageError, StorageUnavailable
from abby_core.storage import escrow as escrow_module
from abby_core.storage import keys, usage_rules
from abby_core.storage.accounts import Accounts
from abby_core.storage.documents import GlobalLedger, Hold, ShardLedger, ShardSnapshot, Snapshot, UserLedger
from abby_core.storage.escrow import Escrow, LeaseView
from abby_core.storage.ledger import UncertainWrite
from tests.storage.conftest import Clock

pytestmark = pytest.mark.usefixtures("local_zone")

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIMIT = 1000
LIFETIME = timedelta(minutes=10)
MARGIN = timedelta(seconds=30)
MAX_SLICE = 300

_T = TypeVar("_T")


class _Books:
    """The part of ``Accounts`` an escrow uses, with the shard and global documents in memory."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.own_leases: set[str] = set()
        self.glob = GlobalLedger(shards={})
        self.shards: dict[str, ShardLedger] = {}
        self.users: dict[str, UserLedger] = {}
        self.writes = 0
        self.failure: StorageError | None = None  # the next global writes fail with this

    def publish_users(self, docs: dict[str, UserLedger]) -> dict[str, ShardSnapshot]:
        written: dict[str, ShardSnapshot] = {}
        for uid, doc in docs.items():
            shard = self.shards.setdefault(keys.shard_of(uid), ShardLedger(shard=keys.shard_of(uid), users={}))
            usage_rules.apply_snapshot(shard, uid, usage_rules.snapshot(doc, self.clock()))
            shard.version += 1
            written[shard.shard] = usage_rules.shard_snapshot(shard)
        return written

    def update_global(
        self, mutate: Callable[[GlobalLedger], _T], *, shards: dict[str, ShardSnapshot] | None = None
    ) -> tuple[_T, GlobalLedger]:
        if self.failure is not None:
            raise self.failure
        glob = self.glob.model_copy(deep=True)
        for shard, snap in (shards or {}).items():
            usage_rules.apply_shard(glob, shard, snap)
        result = mutate(glob)
        glob.version += 1
        self.glob, self.writes = glob, self.writes + 1
        return result, glob.model_copy(deep=True)

    def user(self, uid: str) -> UserLedger:
        return self.users[uid].model_copy(deep=True)

    def recorded(self, uid: str) -> Snapshot:
        """``uid``'s snapshot as the global document counts it (through its shard's snapshot)."""
        shard = self.shards[keys.shard_of(uid)]
        recorded = usage_rules.recorded_shard(self.glob, shard.shard)
        assert recorded == usage_rules.shard_snapshot(shard), "the global document is behind the shard"
        return shard.users[uid]

    def record(self, uid: str, snap: Snapshot) -> None:
        """Count ``snap`` for ``uid`` in the global document (written by some other process)."""
        shard = self.shards.setdefault(keys.shard_of(uid), ShardLedger(shard=keys.shard_of(uid), users={}))
        shard.users[uid] = snap
        shard.version += 1
        usage_rules.apply_shard(self.glob, shard.shard, usage_rules.shard_snapshot(shard))


@pytest.fixture
def books() -> _Books:
    return _Books(Clock(T0))


@pytest.fixture
def make_escrow(books: _Books) -> Iterator[Callable[[], Escrow]]:
    made: list[Escrow] = []

    def build() -> Escrow:
        escrow = Escrow(
            cast(Accounts, books), global_limit=LIMIT, lifetime=LIFETIME, margin=MARGIN, max_slice=MAX_SLICE
        )
        made.append(escrow)
        return escrow

    yield build
    for escrow in made:
        escrow.close()  # also stops its renewal timer


@pytest.fixture
def escrow(make_escrow: Callable[[], Escrow]) -> Escrow:
    return make_escrow()


def _member(version: int, *held: int) -> UserLedger:
    """A member's document at ``version`` with a hold of each size in ``held``."""
    holds = {
        f"h{n}": Hold(bytes=size, expires=T0 + timedelta(minutes=15), day=date(2026, 11, 25), stem=f"s{n}")
        for n, size in enumerate(held)
    }
    return UserLedger(user_id="42", day=date(2026, 11, 25), version=version, holds=holds)


def _leased(books: _Books, escrow: Escrow) -> int | None:
    lease = books.glob.leases.get(escrow.lease_id)
    return None if lease is None else lease.bytes


def test_the_first_charge_takes_a_slice(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    view = escrow.view()
    assert (view.granted, view.free, view.in_flight, view.expires) == (MAX_SLICE, 200, 100, T0 + LIFETIME)
    assert _leased(books, escrow) == MAX_SLICE
    escrow.charge(200)  # fits: no global write
    assert (books.writes, escrow.view().free) == (1, 0)


@pytest.mark.parametrize(("before_expiry", "usable"), [(MARGIN + timedelta(microseconds=1), True), (MARGIN, False)])
def test_a_lease_admits_until_a_margin_before_it_expires(
    books: _Books, escrow: Escrow, before_expiry: timedelta, usable: bool
) -> None:
    escrow.charge(100)
    books.clock.now = T0 + LIFETIME - before_expiry
    assert escrow.free == (200 if usable else 0)
    escrow.charge(100)
    assert books.writes == (1 if usable else 2)  # an unusable lease is settled before it admits


def test_a_used_lease_takes_a_fresh_slice_and_an_idle_one_goes_back(books: _Books, escrow: Escrow) -> None:
    token = escrow.charge(100)
    escrow.landed(token, "42", _member(1, 100))
    escrow.settle()  # used since the last settle: the hold is in the snapshot, and a fresh slice
    assert books.recorded("42") == usage_rules.snapshot(_member(1, 100), T0)
    assert (escrow.view().granted, escrow.view().landed, _leased(books, escrow)) == (MAX_SLICE, 0, MAX_SLICE)
    escrow.settle()  # idle since: the whole lease goes back
    view = escrow.view()
    assert (view.granted, view.free, view.expires, escrow.free) == (0, 0, None, 0)
    assert _leased(books, escrow) is None
    assert usage_rules.global_usage(books.glob) == 100


def test_a_settle_keeps_what_is_in_flight_leased(books: _Books, escrow: Escrow) -> None:
    escrow.charge(120)
    escrow.settle(renew=False)
    assert (escrow.view().granted, escrow.view().free, _leased(books, escrow)) == (120, 0, 120)


def test_a_refund_gives_the_bytes_back_to_the_lease(escrow: Escrow) -> None:
    token = escrow.charge(100)
    escrow.refund(token)
    escrow.refund(token)  # once only
    assert (escrow.view().free, escrow.view().in_flight) == (MAX_SLICE, 0)


def test_a_hold_that_may_have_landed_stays_covered_and_its_document_is_read_at_settle(
    books: _Books, escrow: Escrow
) -> None:
    first, second = escrow.charge(100), escrow.charge(50)
    escrow.landed(first, "42", _member(1, 100))
    escrow.uncertain(second, "42")  # its write's answer was lost
    assert (escrow.view().in_flight, escrow.view().landed) == (0, 150)
    books.users["42"] = _member(2, 100, 50)  # it did land
    escrow.settle()
    assert books.recorded("42") == usage_rules.snapshot(_member(2, 100, 50), T0)
    assert escrow.view().landed == 0


def test_a_document_read_at_settle_never_replaces_a_newer_one_served(books: _Books, escrow: Escrow) -> None:
    escrow.uncertain(escrow.charge(50), "42")
    escrow.served("42", _member(3, 50))  # a later write answered
    books.users["42"] = _member(2, 50)  # a stale read
    escrow.settle()
    assert books.recorded("42").version == 3


def test_the_last_bytes_go_to_whoever_asks_and_never_past_the_limit(
    books: _Books, make_escrow: Callable[[], Escrow]
) -> None:
    """Two processes charge 100 bytes in turn and never land: together they admit exactly the limit."""
    processes = [make_escrow(), make_escrow()]
    admitted, refused = 0, 0
    while refused < len(processes):
        refused = 0
        for escrow in processes:
            try:
                escrow.charge(100)
                admitted += 100
            except GlobalStorageFull:
                refused += 1
            assert usage_rules.global_usage(books.glob) <= LIMIT
    assert admitted == LIMIT


def test_a_charge_past_the_limit_is_refused_and_leases_nothing(books: _Books, escrow: Escrow) -> None:
    with pytest.raises(GlobalStorageFull) as caught:
        escrow.charge(LIMIT + 1)
    assert (caught.value.used, caught.value.limit) == (0, LIMIT)
    assert (escrow.view().granted, escrow.view().in_flight, _leased(books, escrow)) == (0, 0, None)
    escrow.charge(LIMIT)  # exactly the limit fits
    assert _leased(books, escrow) == LIMIT


def test_a_lost_settle_admits_nothing_until_the_lease_is_settled(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    books.failure = UncertainWrite("lost")
    with pytest.raises(UncertainWrite):
        escrow.settle()
    assert escrow.free == 0
    books.failure = None
    escrow.charge(100)
    assert books.writes == 2


def test_close_gives_the_lease_back_once_and_admits_nothing_after(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)  # still in flight: stays leased until it expires
    escrow.close()
    assert (books.writes, _leased(books, escrow)) == (2, 100)
    escrow.close()
    assert books.writes == 2
    with pytest.raises(StorageError):
        escrow.charge(1)


def test_closing_an_unused_escrow_writes_nothing(books: _Books, escrow: Escrow) -> None:
    escrow.close()
    assert books.writes == 0


def test_closing_when_storage_is_away_still_closes(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    books.failure = StorageUnavailable("away")
    escrow.close()
    with pytest.raises(StorageError):
        escrow.charge(1)


def test_the_timer_renews_the_lease(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    books.clock.advance(minutes=5)
    escrow._on_timer()
    assert escrow.view().expires == T0 + timedelta(minutes=5) + LIFETIME
    assert books.glob.leases[escrow.lease_id].expires == T0 + timedelta(minutes=5) + LIFETIME


def test_a_timer_that_cannot_reach_storage_tries_again(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    armed = escrow._timer
    books.failure = StorageUnavailable("away")
    escrow._on_timer()
    assert escrow._timer is not None and escrow._timer is not armed
    escrow.close()
    assert escrow._timer is None
    escrow._on_timer()  # a timer that fires as the escrow closes arms no other
    assert escrow._timer is None


def test_every_settle_changes_the_lease_even_on_a_clock_that_stood_still(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    first = books.glob.leases[escrow.lease_id].expires
    escrow.settle(renew=True)
    assert books.glob.leases[escrow.lease_id].expires == first + timedelta(microseconds=1)


def test_a_served_member_is_recorded_at_the_next_settle(books: _Books, escrow: Escrow) -> None:
    escrow.served("42", _member(1, 10))
    escrow.settle()
    assert books.recorded("42") == usage_rules.snapshot(_member(1, 10), T0)


# -- what mutation testing found unpinned -------------------------------------------------------
def test_a_new_escrow_holds_nothing(escrow: Escrow) -> None:
    assert escrow.view() == LeaseView(lease_id=escrow.lease_id, granted=0, free=0, in_flight=0, landed=0, expires=None)
    assert escrow.settles == 0


def test_a_charge_of_nothing_writes_nothing(books: _Books, escrow: Escrow) -> None:
    escrow.charge(0)
    assert (books.writes, escrow.view().granted) == (0, 0)


def test_a_first_charge_of_one_byte_takes_a_whole_slice(books: _Books, escrow: Escrow) -> None:
    escrow.charge(1)
    assert (books.writes, escrow.view().granted, escrow.view().free) == (1, MAX_SLICE, MAX_SLICE - 1)


def test_the_last_byte_is_leased_and_the_next_is_refused(books: _Books, escrow: Escrow) -> None:
    books.record("7", Snapshot(version=1, bytes=LIMIT - 1))
    escrow.charge(1)
    assert _leased(books, escrow) == 1
    assert escrow.view().expires == T0 + LIFETIME
    with pytest.raises(GlobalStorageFull) as caught:
        escrow.charge(1)
    assert (caught.value.used, caught.value.limit) == (LIMIT - 1, LIMIT)  # the lease's own bytes are not "used"
    assert (escrow.view().in_flight, usage_rules.global_usage(books.glob)) == (1, LIMIT)


def test_the_lease_names_its_owner_and_settles_are_counted(books: _Books, escrow: Escrow) -> None:
    escrow.charge(100)
    escrow.settle(renew=True)
    assert books.glob.leases[escrow.lease_id].owner == escrow.owner
    assert escrow.settles == books.writes == 2


def test_landed_bytes_add_up_and_a_token_counts_once(books: _Books, escrow: Escrow) -> None:
    books.users["42"] = _member(2, 100, 50)
    first, second, refunded = escrow.charge(100), escrow.charge(50), escrow.charge(10)
    escrow.refund(refunded)
    escrow.landed(first, "42", _member(1, 100))
    escrow.landed(second, "42", _member(2, 100, 50))
    escrow.landed(first, "42", _member(2, 100, 50))  # already landed
    escrow.landed(refunded, "42", _member(2, 100, 50))  # refunded: nothing in flight
    escrow.uncertain(refunded, "42")
    assert (escrow.view().landed, escrow.view().in_flight) == (150, 0)


def test_an_older_document_never_replaces_a_newer_one_served(books: _Books, escrow: Escrow) -> None:
    token = escrow.charge(50)
    escrow.served("42", _member(3, 50))
    escrow.landed(token, "42", _member(2, 50))  # its answer came after a later write's
    escrow.settle()
    assert books.recorded("42").version == 3


def test_a_settled_member_is_not_written_again_at_close(books: _Books, escrow: Escrow) -> None:
    escrow.served("42", _member(1, 10))
    escrow.settle(renew=False)
    escrow.close()
    assert books.writes == 1


def test_close_records_a_member_served_without_a_lease(books: _Books, escrow: Escrow) -> None:
    escrow.served("42", _member(1, 10))
    escrow.close()
    assert (books.writes, books.recorded("42")) == (1, usage_rules.snapshot(_member(1, 10), T0))


def test_a_closed_escrow_says_so() -> None:
    escrow = Escrow(
        cast(Accounts, _Books(Clock(T0))), global_limit=LIMIT, lifetime=LIFETIME, margin=MARGIN, max_slice=MAX_SLICE
    )
    escrow.close()
    with pytest.raises(StorageError) as caught:
        escrow.charge(1)
    assert caught.value.message == "The storage manager is closed."


class _Timer:
    """Stands in for ``threading.Timer``: records what would run, and when."""

    armed: ClassVar[list[_Timer]] = []

    def __init__(self, delay: float, function: Callable[[], None]) -> None:
        self.delay, self.function, self.daemon = delay, function, False
        _Timer.armed.append(self)

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        pass


def test_the_renewal_timer_fires_four_fifths_of_the_way_to_the_margin(
    books: _Books, escrow: Escrow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Timer, "armed", [])
    monkeypatch.setattr(escrow_module, "threading", SimpleNamespace(Timer=_Timer))
    escrow.charge(100)
    books.clock.now = T0 + LIFETIME - MARGIN  # then re-armed at the margin: as soon as it may
    escrow._arm_timer()
    assert [(t.delay, t.function, t.daemon) for t in _Timer.armed] == [
        ((LIFETIME - MARGIN).total_seconds() * 0.8, escrow._on_timer, True),
        (0.05, escrow._on_timer, True),
    ]
