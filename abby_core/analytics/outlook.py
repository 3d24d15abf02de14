"""When the global storage limit is reached at the current rate: ``abby stats`` and the dashboard."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from abby_core.analytics.models import UsageSummary
from abby_core.storage.models import GlobalStats

__all__ = ["Outlook", "outlook"]


@dataclass(frozen=True)
class Outlook:
    """Storage used against the global limit, and when it is reached at the window's rate."""

    used: int
    limit: int
    bytes_per_day: float
    days_until_full: float | None  # None: nothing was stored in the window
    full_on: date | None

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "global_bytes": self.used,
            "global_limit_bytes": self.limit,
            "days_until_full": self.days_until_full,
            "full_on": None if self.full_on is None else self.full_on.isoformat(),
        }


def outlook(summary: UsageSummary, usage: GlobalStats, today: date) -> Outlook:
    """The space left divided by the bytes stored per day over the summary's window."""
    left = max(0, usage.global_limit_bytes - usage.global_bytes)
    rate = summary.bytes_per_day
    days = None if rate <= 0 else left / rate
    return Outlook(
        used=usage.global_bytes,
        limit=usage.global_limit_bytes,
        bytes_per_day=rate,
        days_until_full=None if days is None else round(days, 1),
        full_on=None if days is None else today + timedelta(days=math.ceil(days)),
    )
