"""The test clocks: a clock started near real time stays clear of midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.clocks import DAY_MARGIN, day_safe_now

NEWFOUNDLAND = ZoneInfo("America/St_Johns")


@pytest.mark.parametrize(
    ("real", "started"),
    [
        (datetime(2026, 12, 7, 12, 0, tzinfo=UTC), datetime(2026, 12, 7, 12, 0, tzinfo=UTC)),
        (datetime(2026, 12, 7, 0, 0, tzinfo=UTC), datetime(2026, 12, 7, 0, 0, tzinfo=UTC)),
        (datetime(2026, 12, 7, 23, 29, 59, tzinfo=UTC), datetime(2026, 12, 7, 23, 29, 59, tzinfo=UTC)),
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), datetime(2026, 12, 7, 23, 30, tzinfo=UTC)),
        (datetime(2026, 12, 7, 23, 57, 30, tzinfo=UTC), datetime(2026, 12, 7, 23, 30, tzinfo=UTC)),
        (datetime(2026, 12, 7, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 12, 7, 23, 30, tzinfo=UTC)),
        # Another zone: the day that must not turn is the UTC day the ledger counts by.
        (
            datetime(2026, 12, 7, 20, 28, tzinfo=UTC).astimezone(NEWFOUNDLAND),
            datetime(2026, 12, 7, 20, 28, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 7, 23, 58, tzinfo=UTC).astimezone(NEWFOUNDLAND),
            datetime(2026, 12, 7, 23, 30, tzinfo=UTC),
        ),
    ],
)
def test_a_clock_started_near_real_time_leaves_room_before_midnight(real: datetime, started: datetime) -> None:
    start = day_safe_now(real)
    assert start == started
    assert start.astimezone(UTC).date() == (start + DAY_MARGIN - timedelta(microseconds=1)).astimezone(UTC).date()
    assert real - DAY_MARGIN <= start <= real
