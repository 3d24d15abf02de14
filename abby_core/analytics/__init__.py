"""Usage analytics: every generation outcome recorded as an event, compacted per day, summarised.

    log = EventLog(backend, clock=clock, store_prompts=False, retention_days=90)
    log.record(UsageEvent(time=now, user_id="123", kind="imagine", provider="stability", outcome="ok", ...))
    log.compact_finished(); log.prune()          # daily housekeeping
    log.summary(days=30)                         # what ``abby stats`` shows
"""

from abby_core.analytics.log import CompactReport, EventLog, PruneReport
from abby_core.analytics.models import (
    OK,
    REFUSAL_CODES,
    DailySummary,
    DayUsage,
    EventKind,
    MemberUsage,
    Percentiles,
    ProviderUsage,
    Tally,
    UsageEvent,
    UsageSummary,
)

__all__ = [
    "OK",
    "REFUSAL_CODES",
    "CompactReport",
    "DailySummary",
    "DayUsage",
    "EventKind",
    "EventLog",
    "MemberUsage",
    "Percentiles",
    "ProviderUsage",
    "PruneReport",
    "Tally",
    "UsageEvent",
    "UsageSummary",
]
