"""When the global storage limit is reached at the current rate: ``abby stats`` and the dashboard.

A projection further out than :data:`OUTLOOK_HORIZON_DAYS` (10 years) is not a date: it is
reported as "not full within 10 years" (a huge limit on a quiet server would otherwise be
a date past the calendar's end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from abby_core.analytics.models import UsageSummary
from abby_core.storage.models import GlobalStats

__all__ = ["OUTLOOK_HORIZON_DAYS", "Outlook", "outlook"]

OUTLOOK_HORIZON_DAYS = 3650
"""How far ahead a projection gives a date (10 years); beyond it, only that it is not within."""


@dataclass(frozen=True)
class Outlook:
    """Storage used against the global limit, and when it is reached at the window's rate."""

    used: int
    limit: int
    bytes_per_day: float
    days_until_full: float | None  # None: nothing was stored in the window, or not within the horizon
    full_on: date | None
    not_full_within_days: int | None = None  # OUTLOOK_HORIZON_DAYS when the limit is further than that

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "global_bytes": self.used,
            "global_limit_bytes": self.limit,
            "days_until_full": self.days_until_full,
            "full_on": None if self.full_on is None else self.full_on.isoformat(),
            "not_full_within_days": self.not_full_within_days,
        }


def outlook(summary: UsageSummary, usage: GlobalStats, today: date) -> Outlook:
    """The space left divided by the bytes stored per day since the window's first active day."""
    left = max(0, usage.global_limit_bytes - usage.global_bytes)
    rate = summary.bytes_per_day
    days = None if rate <= 0 else left / rate
    beyond = days is not None and math.ceil(days) > OUTLOOK_HORIZON_DAYS
    if days is None or beyond:
        return Outlook(
            used=usage.global_bytes, limit=usage.global_limit_bytes, bytes_per_day=rate, days_until_full=None,
            full_on=None, not_full_within_days=OUTLOOK_HORIZON_DAYS if beyond else None,
        )
    return Outlook(
        used=usage.global_bytes,
        limit=usage.global_limit_bytes,
        bytes_per_day=rate,
        days_until_full=round(days, 1),
        full_on=today + timedelta(days=math.ceil(days)),
    )
