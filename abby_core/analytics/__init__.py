"""Usage analytics: every generation outcome recorded as an event, compacted per day, summarised.

    log = EventLog(backend, clock=clock, store_prompts=False, retention_days=90)
    log.record(UsageEvent(time=now, user_id="123", kind="imagine", provider="stability", outcome="ok", ...))
    log.compact_finished(); log.prune()          # daily housekeeping
    log.summary(days=30)                         # what ``abby stats`` shows
    log.record_audit(AuditEvent(time=now, actor="cli", action="cleanup", details={"objects": 3}))
    log.audit_events(limit=20)                   # admin actions and maintenance runs, newest first
"""

from abby_core.analytics.log import CompactReport, EventLog, PruneReport
from abby_core.analytics.models import (
    AUDIT_ACTORS,
    INTERRUPTED,
    OK,
    REFUSAL_CODES,
    AuditAction,
    AuditEvent,
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
    "AUDIT_ACTORS",
    "INTERRUPTED",
    "OK",
    "REFUSAL_CODES",
    "AuditAction",
    "AuditEvent",
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
