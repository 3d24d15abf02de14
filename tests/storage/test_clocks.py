"""Clocks that disagree: two processes whose clocks are up to ``CLOCK_BOUND`` apart never let a
hold or a lease of the global budget be taken for gone while its owner can still use it.

The queue's and the member slots' own skew tests are in ``test_queue.py`` and ``test_slots.py``.
Each decision is pinned by a table test of its pure function in ``rules.py``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.errors import DailyLimitExceeded
from abby_core.storage import FilesystemBackend, StorageManager, rules
from abby_core.storage.documents import Hold
from tests.storage.conftest import Clock
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
