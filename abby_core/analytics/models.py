"""Usage events and what they add up to: a day's :class:`DailySummary`, a window's :class:`UsageSummary`.

A :class:`Tally` is the one fold over events; a day's summary stores one, and a window
merges them. Latencies are kept as a histogram (buckets 20 % wide), so percentiles over any
number of days come from merged histograms, accurate to about ±10 %.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field, field_validator

from abby_core.errors import InvalidUser
from abby_core.storage.keys import MemberId, check_user_id
from abby_core.storage.models import CleanupReport, ReconcileReport

__all__ = [
    "AUDIT_ACTORS",
    "INTERRUPTED",
    "OK",
    "REFUSAL_CODES",
    "AuditAction",
    "AuditEvent",
    "DailySummary",
    "DayUsage",
    "EventKind",
    "MemberUsage",
    "Percentiles",
    "ProviderTally",
    "ProviderUsage",
    "Tally",
    "UsageEvent",
    "UsageSummary",
]

EventKind = Literal["imagine", "img2img", "upscale", "button"]
OK = "ok"
#: The outcome of a generation stopped midway (the member left, the bot stopped): a failure.
INTERRUPTED = "interrupted"
#: Outcomes that are a refusal (the member's or the operator's rule said no), not a failure.
#: ``not_configured`` (no provider key) never reached a provider: the configuration refused.
REFUSAL_CODES = frozenset(
    {
        "blocked",
        "blocked_prompt",
        "channel_not_allowed",
        "content_filtered",
        "daily_limit",
        "global_storage_full",
        "invalid_image",
        "invalid_input",
        "invalid_prompt",
        "invalid_user",
        "not_configured",
        "quota_exceeded",
        "user_storage_full",
    }
)

# Latency histogram: bucket 0 holds <= 10 ms, bucket i holds (10 ms·1.2^(i-1), 10 ms·1.2^i].
_BASE = 0.01
_GROWTH = 1.2
_BUCKETS = 90  # the last one (about 10 hours and up) takes everything longer


def _bucket(seconds: float) -> int:
    if seconds <= _BASE:
        return 0
    return min(_BUCKETS - 1, max(1, math.ceil(math.log(seconds / _BASE, _GROWTH) - 1e-9)))


def _bucket_value(index: int) -> float:
    """A bucket's representative latency: the geometric middle of its bounds."""
    return _BASE if index == 0 else _BASE * _GROWTH ** (index - 0.5)


def _snowflake_or_none(value: object) -> MemberId | None:
    """A stored or recorded id, checked (``None`` stays ``None``); a ``ValueError`` pydantic reports."""
    if value is None:
        return None
    try:
        return check_user_id(value)
    except InvalidUser as exc:
        raise ValueError(str(exc)) from None


class UsageEvent(BaseModel):
    """One generation outcome (or a refusal before it), as recorded by :class:`~abby_core.analytics.EventLog`.

    ``outcome`` is ``"ok"`` or an error code (``daily_limit``, ``generation_timeout``...).
    ``latency_seconds`` is the provider's time, ``None`` when no provider was called.
    ``prompt`` is dropped on recording unless the log stores prompts.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1
    time: AwareDatetime
    user_id: str
    guild_id: str | None = None
    kind: EventKind
    provider: str = Field(min_length=1, max_length=64)
    outcome: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    bytes_stored: int = Field(default=0, ge=0)
    latency_seconds: float | None = Field(default=None, ge=0)
    queue_wait_seconds: float | None = Field(default=None, ge=0)
    credits: float | None = Field(default=None, ge=0)
    #: The image was made past the member's daily allowance and paid with one of their credits.
    paid_with_credit: bool = False
    prompt: str | None = None

    @field_validator("user_id", "guild_id", mode="before")
    @classmethod
    def _snowflake(cls, value: object) -> object:
        return _snowflake_or_none(value)

    @property
    def refused(self) -> bool:
        return self.outcome in REFUSAL_CODES

    @property
    def failed(self) -> bool:
        return self.outcome != OK and not self.refused


AuditAction = Literal[
    "grant", "reset", "block", "unblock", "cleanup", "reconcile", "credit_purchase", "credit_refund", "credit_grant"
]
#: Who can act besides a Discord user (an admin's id): the dashboard's token, the bot's daily
#: maintenance, the ``abby`` command line, Discord's store (a purchase or refund of credits).
AUDIT_ACTORS = frozenset({"token", "maintenance", "cli", "store"})


class AuditEvent(BaseModel):
    """An admin action or a maintenance run, as recorded by :meth:`EventLog.record_audit`.

    ``actor`` is the Discord user id of the admin who acted, or one of :data:`AUDIT_ACTORS`.
    ``target`` is the member acted on (None for server-wide actions such as cleanup).
    ``details`` holds small numbers (``extra`` for a grant; ``objects``, ``bytes``... for a
    cleanup or reconcile; ``credits``, ``sku_id``, ``entitlement_id`` for a credit purchase or
    refund, ``credits`` for a credit grant).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1
    time: AwareDatetime
    actor: str
    action: AuditAction
    target: str | None = None
    details: dict[str, int | float] = Field(default_factory=dict, max_length=32)

    @field_validator("actor", mode="before")
    @classmethod
    def _actor(cls, value: object) -> object:
        if isinstance(value, str) and value in AUDIT_ACTORS:
            return value
        try:
            return check_user_id(value)
        except InvalidUser:
            raise ValueError(f"an actor is a user id or one of {sorted(AUDIT_ACTORS)}") from None

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: object) -> object:
        return _snowflake_or_none(value)

    @classmethod
    def of_credits(
        cls,
        action: Literal["credit_purchase", "credit_refund", "credit_grant"],
        user_id: object,
        credits: int,
        *,
        actor: str,
        time: datetime,
        sku_id: int | None = None,
        entitlement_id: int | None = None,
    ) -> AuditEvent:
        """The record of credits bought, refunded (``credits`` taken back) or granted by an admin."""
        details: dict[str, int | float] = {"credits": credits}
        if sku_id is not None:
            details["sku_id"] = sku_id
        if entitlement_id is not None:
            details["entitlement_id"] = entitlement_id
        return cls(time=time, actor=actor, action=action, target=str(user_id), details=details)

    @classmethod
    def of_cleanup(cls, report: CleanupReport, *, actor: str, time: datetime, days: int) -> AuditEvent:
        """The record of a cleanup that ran (not a dry run): what it removed, images older than ``days``."""
        details: dict[str, int | float] = {"objects": report.objects, "bytes": report.bytes, "users": report.users,
                   "partial_files": report.partial_files, "days": days}
        return cls(time=time, actor=actor, action="cleanup", details=details)

    @classmethod
    def of_reconcile(cls, report: ReconcileReport, *, actor: str, time: datetime) -> AuditEvent:
        """The record of a reconcile: what it counted and how much drift it fixed."""
        details: dict[str, int | float] = {"users": report.users, "objects": report.objects, "bytes": report.bytes,
                   "drift_users": len(report.drift), "drift_bytes": report.drift_bytes,
                   "partial_files": report.partial_files}
        return cls(time=time, actor=actor, action="reconcile", details=details)


class Percentiles(BaseModel):
    """Latency percentiles in seconds."""

    p50: float
    p90: float
    p99: float


class ProviderTally(BaseModel):
    """One provider's outcomes and latency histogram (bucket index -> count)."""

    ok: int = 0
    failures: int = 0
    refusals: int = 0
    latency: dict[int, int] = Field(default_factory=dict)
    latency_min: float | None = None
    latency_max: float | None = None

    def add(self, event: UsageEvent) -> None:
        if event.outcome == OK:
            self.ok += 1
        elif event.refused:
            self.refusals += 1
        else:
            self.failures += 1
        seconds = event.latency_seconds
        if seconds is not None:
            index = _bucket(seconds)
            self.latency[index] = self.latency.get(index, 0) + 1
            self.latency_min = seconds if self.latency_min is None else min(self.latency_min, seconds)
            self.latency_max = seconds if self.latency_max is None else max(self.latency_max, seconds)

    def merge(self, other: ProviderTally) -> None:
        self.ok += other.ok
        self.failures += other.failures
        self.refusals += other.refusals
        for index, count in other.latency.items():
            self.latency[index] = self.latency.get(index, 0) + count
        for bound in (other.latency_min, other.latency_max):
            if bound is not None:
                self.latency_min = bound if self.latency_min is None else min(self.latency_min, bound)
                self.latency_max = bound if self.latency_max is None else max(self.latency_max, bound)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failure_rate(self) -> float | None:
        """Failures among the attempts the provider answered or failed (refusals left out)."""
        attempts = self.ok + self.failures
        return self.failures / attempts if attempts else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percentiles(self) -> Percentiles | None:
        return _percentiles(self.latency, self.latency_min, self.latency_max)


def _percentiles(histogram: dict[int, int], low: float | None, high: float | None) -> Percentiles | None:
    total = sum(histogram.values())
    if not total or low is None or high is None:
        return None

    def rank(q: float) -> float:
        wanted = max(1, math.ceil(q * total))  # nearest rank
        if wanted == total:
            return round(high, 3)  # the largest is known exactly
        seen = 0
        for index in sorted(histogram):
            seen += histogram[index]
            if seen >= wanted:
                return round(min(high, max(low, _bucket_value(index))), 3)
        return round(high, 3)  # pragma: no cover - the loop always reaches the total

    return Percentiles(p50=rank(0.5), p90=rank(0.9), p99=rank(0.99))


class UserTally(BaseModel):
    events: int = 0
    images: int = 0
    refusals: int = 0
    bytes: int = 0


class Tally(BaseModel):
    """Counts over any set of events; tallies of disjoint sets merge into the tally of their union."""

    events: int = 0
    images: int = 0
    failures: int = 0
    bytes: int = 0
    credits: float = 0.0
    credits_spent: int = 0  # members' credits that paid for an image (past their daily allowance)
    by_kind: dict[str, int] = Field(default_factory=dict)
    by_outcome: dict[str, int] = Field(default_factory=dict)
    refusals: dict[str, int] = Field(default_factory=dict)
    users: dict[str, UserTally] = Field(default_factory=dict)
    providers: dict[str, ProviderTally] = Field(default_factory=dict)

    @property
    def refused(self) -> int:
        return sum(self.refusals.values())

    def add(self, event: UsageEvent) -> None:
        self.events += 1
        self.bytes += event.bytes_stored
        self.credits += event.credits or 0.0
        _bump(self.by_kind, event.kind)
        _bump(self.by_outcome, event.outcome)
        user = self.users.setdefault(event.user_id, UserTally())
        user.events += 1
        user.bytes += event.bytes_stored
        if event.outcome == OK:
            self.images += 1
            user.images += 1
            self.credits_spent += int(event.paid_with_credit)
        elif event.refused:
            _bump(self.refusals, event.outcome)
            user.refusals += 1
        else:
            self.failures += 1
        self.providers.setdefault(event.provider, ProviderTally()).add(event)

    def merge(self, other: Tally) -> None:
        self.events += other.events
        self.images += other.images
        self.failures += other.failures
        self.bytes += other.bytes
        self.credits += other.credits
        self.credits_spent += other.credits_spent
        for mine, theirs in ((self.by_kind, other.by_kind), (self.by_outcome, other.by_outcome),
                             (self.refusals, other.refusals)):
            for name, count in theirs.items():
                _bump(mine, name, count)
        for uid, user in other.users.items():
            into = self.users.setdefault(uid, UserTally())
            into.events += user.events
            into.images += user.images
            into.refusals += user.refusals
            into.bytes += user.bytes
        for name, provider in other.providers.items():
            self.providers.setdefault(name, ProviderTally()).merge(provider)


def _bump(counts: dict[str, int], name: str, by: int = 1) -> None:
    counts[name] = counts.get(name, 0) + by


class DailySummary(BaseModel):
    """``events/daily/{day}.json``: one finished day, written once by compaction."""

    v: Literal[1] = 1
    day: date
    compacted_at: AwareDatetime
    tally: Tally


class DayUsage(BaseModel):
    day: date
    events: int
    images: int
    refusals: int
    failures: int
    bytes: int


class MemberUsage(BaseModel):
    user_id: str
    events: int
    images: int
    refusals: int
    bytes: int


class ProviderUsage(BaseModel):
    ok: int
    failures: int
    refusals: int
    failure_rate: float | None
    latency: Percentiles | None


class UsageSummary(BaseModel):
    """A window of days (``start`` to ``end``, today, inclusive) for ``abby stats``."""

    start: date
    end: date
    days: int
    events: int
    images: int
    refusals_total: int
    failures: int
    bytes: int
    credits: float
    credits_spent: int
    """Members' credits that paid for images past their daily allowance."""
    per_day: list[DayUsage]
    refusals: dict[str, int]
    top_members: list[MemberUsage]
    providers: dict[str, ProviderUsage]
    latency: Percentiles | None
    failure_rate: float | None
    bytes_per_day: float
    """Average bytes stored per day since the first day with events in the window (today counts)."""

    @classmethod
    def build(cls, start: date, end: date, days: dict[date, Tally], *, top: int = 10) -> UsageSummary:
        total = Tally()
        per_day = []
        for offset in range((end - start).days + 1):
            day = date.fromordinal(start.toordinal() + offset)
            tally = days.get(day, Tally())
            total.merge(tally)
            per_day.append(
                DayUsage(day=day, events=tally.events, images=tally.images, refusals=tally.refused,
                         failures=tally.failures, bytes=tally.bytes)
            )
        members = sorted(total.users.items(), key=lambda item: (-item[1].images, -item[1].events, item[0]))
        all_latency = ProviderTally()
        for provider in total.providers.values():
            all_latency.merge(provider)
        active = [d.day for d in per_day if d.events]
        span = (end - active[0]).days + 1 if active else 1
        return cls(
            start=start,
            end=end,
            days=len(per_day),
            events=total.events,
            images=total.images,
            refusals_total=total.refused,
            failures=total.failures,
            bytes=total.bytes,
            credits=round(total.credits, 6),
            credits_spent=total.credits_spent,
            per_day=per_day,
            refusals=dict(sorted(total.refusals.items(), key=lambda item: (-item[1], item[0]))),
            top_members=[MemberUsage(user_id=uid, **user.model_dump()) for uid, user in members[:top]],
            providers={
                name: ProviderUsage(ok=p.ok, failures=p.failures, refusals=p.refusals,
                                    failure_rate=p.failure_rate, latency=p.percentiles)
                for name, p in sorted(total.providers.items())
            },
            latency=all_latency.percentiles,
            failure_rate=all_latency.failure_rate,
            bytes_per_day=total.bytes / span,
        )
