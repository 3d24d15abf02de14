"""Clocks that disagree: two processes whose clocks are up to ``CLOCK_BOUND`` apart never let a
hold or a lease of the global budget be taken for gone while its owner can still use it.

The queue's and the member slots' own skew tests are in ``test_queue.py`` and ``test_slots.py``.
Each decision is pinned by a table test of its pure function in ``rules.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.errors import DailyLimitExceeded
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager, rules, usage_rules
from abby_core.storage.documents import GlobalLedger, Hold, Lease
from abby_core.storage.escrow import LeaseView
from tests.fixtures.clocks import Clock, Ticks, day_safe_now
from tests.storage.test_escrow import _escrow_manager, _kill, _make
from tests.storage.test_manager import ALICE, png

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TTL = 900
BOUND = rules.CLOCK_BOUND.total_seconds()


@pytest.mark.parametrize("offset", [90, BOUND])
async def test_a_looker_whose_clock_is_ahead_counts_a_hold_its_owner_can_still_commit(
    tmp_path: Path, offset: float
) -> None:
    backend = FilesystemBackend(tmp_path)
    owner_clock, looker_clock = Clock(T0), Clock(T0 + timedelta(seconds=offset))
    owner = StorageManager(backend, max_user_daily_gens=1, reservation_ttl_seconds=TTL, clock=owner_clock)
    looker = StorageManager(backend, max_user_daily_gens=1, reservation_ttl_seconds=TTL, clock=looker_clock)
    try:
        held = await owner.reserve(ALICE)
        # The owner's last moment to commit: its hold's expiry less the skew it keeps to spare.
        last = held.expires_at - owner.protocol.skew - timedelta(seconds=1)
        owner_clock.now, looker_clock.now = last, last + timedelta(seconds=offset)
        with pytest.raises(DailyLimitExceeded):
            await looker.reserve(ALICE)  # the looker's clock says the hold expired; it still counts
        await owner.save_image(held, png())
        status = await looker.get_quota_status(ALICE)
        assert status.daily_used == 1
    finally:
        await owner.aclose()
        await looker.aclose()


def _hold(expires: datetime, *, void: bool = False) -> Hold:
    return Hold(bytes=10, expires=expires, day=date(2026, 11, 25), stem="s", void=void)


@pytest.mark.parametrize(
    ("hold", "now", "counts", "dropped"),
    [
        (_hold(T0), T0 - timedelta(seconds=1), True, False),
        (_hold(T0), T0, True, False),  # expired: can no longer commit, but counts until droppable
        (_hold(T0), T0 + rules.PURGE_MARGIN - timedelta(microseconds=1), True, False),
        (_hold(T0), T0 + rules.PURGE_MARGIN, False, True),
        (_hold(T0 + timedelta(hours=1), void=True), T0, False, True),
    ],
)
def test_a_hold_counts_until_another_process_may_drop_it(
    hold: Hold, now: datetime, counts: bool, dropped: bool
) -> None:
    assert rules.counts(hold, now) is counts
    assert rules.droppable(hold, now) is dropped
    assert counts is not dropped  # one fact: a hold counts exactly until it may be dropped


@pytest.mark.parametrize(
    ("now", "committable"),
    [
        (T0 - timedelta(seconds=61), True),
        (T0 - timedelta(seconds=60), False),  # the owner keeps ``skew`` to spare
        (T0, False),
    ],
)
def test_only_a_hold_with_time_to_spare_commits(now: datetime, committable: bool) -> None:
    assert rules.committable(_hold(T0), now, timedelta(seconds=60)) is committable
    assert rules.committable(_hold(T0, void=True), now, timedelta(seconds=60)) is False


def test_the_margins_cover_the_documented_bound() -> None:
    """A looker ``CLOCK_BOUND`` ahead of an owner stops counting a hold only after the owner's
    last commit: ``PURGE_MARGIN`` (plus the owner's ``skew``) covers it."""
    assert rules.PURGE_MARGIN >= rules.CLOCK_BOUND


@contextlib.asynccontextmanager
async def _processes(backend: StorageBackend, *clocks: Clock) -> AsyncIterator[list[StorageManager]]:
    """One escrow manager per clock on ``backend``: processes sharing one storage."""
    managers = [_escrow_manager(backend, clock) for clock in clocks]
    try:
        yield managers
    finally:
        for manager in managers:
            await manager.aclose()


async def _leased(manager: StorageManager, uid: str) -> LeaseView:
    """Make one image for ``uid`` (which takes a lease) and return the lease."""
    await _make(manager, uid)
    assert manager.escrow is not None
    lease = manager.escrow.view()
    assert lease.expires is not None
    return lease


@pytest.mark.parametrize("offset", [90, BOUND])
async def test_a_looker_whose_clock_is_ahead_never_takes_back_a_lease_still_in_use(
    tmp_path: Path, offset: float
) -> None:
    """Escrow: process A admits from its lease until a margin before it expires (A's clock);
    B, ``offset`` seconds ahead, writes the global document just then: A's lease stays."""
    clock_a, clock_b = Clock(day_safe_now()), Clock()
    async with _processes(FilesystemBackend(tmp_path), clock_a, clock_b) as (a, b):
        lease = await _leased(a, "5000")
        assert a.escrow is not None and lease.expires is not None
        clock_a.now = lease.expires - a.escrow.margin - timedelta(seconds=1)
        assert a.escrow.free > 0  # A still admits from it without a global write
        clock_b.now = clock_a.now + timedelta(seconds=offset)
        await _make(b, "6000")
        assert b.accounts.recovered_leases == 0
        assert lease.lease_id in b.accounts.global_doc().leases
        await _make(a, "5001")  # admitted from the lease, which the global document still counts
        assert a.escrow.settles == 1


@pytest.mark.parametrize(
    ("now", "dead"),
    [
        (T0, False),
        (T0 + timedelta(seconds=135) - timedelta(microseconds=1), False),
        (T0 + timedelta(seconds=135), True),  # expiry plus the margin
    ],
)
def test_a_lease_is_dead_past_its_expiry_plus_the_margin(now: datetime, dead: bool) -> None:
    doc = GlobalLedger(shards={}, leases={"l1": Lease(bytes=1, expires=T0, owner="a")})
    assert usage_rules.dead_leases(doc, now, timedelta(seconds=135)) == (["l1"] if dead else [])


async def test_a_lease_is_taken_for_dead_only_the_clock_bound_after_its_owner_stops_admitting(tmp_path: Path) -> None:
    manager = StorageManager(FilesystemBackend(tmp_path), escrow=True)
    try:
        assert manager.escrow is not None
        assert manager.accounts.lease_margin == manager.escrow.margin + rules.CLOCK_BOUND
    finally:
        await manager.aclose()


async def test_a_lease_seen_unchanged_for_its_lifetime_is_taken_back_whatever_the_clocks(tmp_path: Path) -> None:
    """The survivor's clock is ``CLOCK_BOUND`` behind, so by its clock the lease has not even
    expired; what it saw (no settle for a lifetime and margin) is enough."""
    clock = Clock(day_safe_now())
    async with _processes(FilesystemBackend(tmp_path), clock, Clock(clock.now - rules.CLOCK_BOUND)) as (
        dead,
        survivor,
    ):
        lease = await _leased(dead, "7000")
        _kill(dead)
        ticks = Ticks()
        survivor.accounts.monotonic = ticks
        assert survivor.accounts.lease_silence is not None and survivor.escrow is not None
        await _make(survivor, "7001")  # the survivor's first look at the lease
        ticks.now = survivor.accounts.lease_silence.total_seconds()
        await _make(survivor, "7002")  # unchanged for exactly that long: not yet
        assert lease.lease_id in survivor.accounts.global_doc().leases
        ticks.now += 0.5
        survivor.escrow.settle()
        assert survivor.accounts.recovered_leases == 1
        assert lease.lease_id not in survivor.accounts.global_doc().leases


async def test_a_lease_its_owner_settles_is_never_taken_for_silent(tmp_path: Path) -> None:
    clock = Clock(day_safe_now())
    async with _processes(FilesystemBackend(tmp_path), clock, Clock(clock.now - rules.CLOCK_BOUND)) as (owner, other):
        ticks = Ticks()
        other.accounts.monotonic = ticks
        assert owner.escrow is not None and other.escrow is not None and other.accounts.lease_silence is not None
        lease = await _leased(owner, "7100")
        await _make(other, "7101")
        for _ in range(3):
            ticks.now += other.accounts.lease_silence.total_seconds() * 0.9
            clock.advance(seconds=1)
            owner.escrow.settle(renew=True)  # the owner renews: a new expiry, a new version
            other.escrow.settle(renew=True)
        assert other.accounts.recovered_leases == 0
        assert lease.lease_id in other.accounts.global_doc().leases
