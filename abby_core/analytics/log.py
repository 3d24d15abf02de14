"""The usage event log over a :class:`~abby_core.storage.StorageBackend`.

Layout (beside ``images/`` and ``ledger/``, so the image lifecycle rule never touches it)::

    events/raw/{YYYY-MM-DD}/{YYYYmmddTHHMMSSffffff}Z-{random}.json   one event, written once
    events/daily/{YYYY-MM-DD}.json                                   a finished day, compacted
    events/audit/{YYYY-MM-DD}/{YYYYmmddTHHMMSSffffff}Z-{random}-{action}.json
                                                                     an admin action or maintenance run

Recording writes one small object per event: no shared document, so nothing to contend on
and nothing to retry. The day in a raw key is the day the event was *recorded* (this log's
clock), so a day's folder only grows while the day lasts; compaction waits ``settle`` past
midnight for the last writes in flight, folds the folder into the daily summary, and only
then deletes it. A summary that already exists is never rewritten: the raw objects beside it
were counted in it (a compaction stopped before its deletion), so they are only deleted.

Audit records (who granted, reset, blocked; what cleanup and reconcile found) are few, are
written once like raw events, are never compacted, and are pruned with the rest. The action
is in the key, so the latest of an action is found from a listing alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import ValidationError

from abby_core.analytics.models import (
    AuditAction,
    AuditEvent,
    DailySummary,
    DayUsage,
    Tally,
    UsageEvent,
    UsageSummary,
    UserTally,
)
from abby_core.errors import ImageNotFound, StorageError
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import check_user_id

__all__ = [
    "AUDIT_PREFIX",
    "DAILY_PREFIX",
    "EVENTS_PREFIX",
    "RAW_PREFIX",
    "CompactReport",
    "EventLog",
    "PruneReport",
]

log = logging.getLogger("abby.analytics")

EVENTS_PREFIX = "events/"
RAW_PREFIX = "events/raw/"
DAILY_PREFIX = "events/daily/"
AUDIT_PREFIX = "events/audit/"
_JSON = "application/json"
_EVENTS_REMEMBERED = 200_000


def raw_prefix(day: date) -> str:
    return f"{RAW_PREFIX}{day.isoformat()}/"


def daily_key(day: date) -> str:
    return f"{DAILY_PREFIX}{day.isoformat()}.json"


def _day_of(key: str, prefix: str) -> date | None:
    """The day in a raw or daily key (``None`` for anything else under the prefix)."""
    name = key[len(prefix):].split("/", 1)[0].removesuffix(".json")
    try:
        return date.fromisoformat(name) if len(name) == 10 else None
    except ValueError:
        return None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CompactReport:
    """What :meth:`EventLog.compact` did with one day.

    ``status``: ``compacted`` (summary written, raw deleted), ``already_compacted`` (a
    summary existed; leftover raw objects deleted), ``empty`` (nothing recorded),
    ``not_finished`` (the day is today, or ended less than ``settle`` ago: nothing done),
    ``unreadable`` (the existing summary cannot be parsed: raw objects kept, logged).
    """

    day: date
    status: Literal["compacted", "already_compacted", "empty", "not_finished", "unreadable"]
    events: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class PruneReport:
    cutoff: date
    """Days before this one were removed."""
    summaries: int
    raw_objects: int
    audit_records: int = 0


class EventLog:
    """Record usage events, compact finished days, summarise a window, prune old days.

    Synchronous and thread-safe like the backend; call it from a worker thread (or use
    :meth:`arecord`). ``clock`` returns timezone-aware UTC. Prompts are stored only with
    ``store_prompts`` (``ANALYTICS_STORE_PROMPTS``); ``retention_days``
    (``ANALYTICS_RETENTION_DAYS``) is how many days :meth:`prune` keeps.
    """

    def __init__(
        self,
        backend: StorageBackend,
        *,
        clock: Callable[[], datetime] | None = None,
        store_prompts: bool = False,
        retention_days: int = 90,
        settle: timedelta = timedelta(minutes=15),
        max_workers: int = 8,
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.backend = backend
        self.clock = clock or _utcnow
        self.store_prompts = store_prompts
        self.retention_days = retention_days
        self.settle = settle
        self.max_workers = max_workers
        self._read_events: dict[str, UsageEvent] = {}  # raw events already read, by key (oldest first)
        self._cache_lock = threading.Lock()

    # -- recording ---------------------------------------------------------------------------
    def record(self, event: UsageEvent) -> bool:
        """Store ``event`` as its own object; ``False`` (logged) if storage refused. Never raises.

        A generation must never fail because of analytics, so every error here is logged
        and turned into ``False``.
        """
        if not self.store_prompts and event.prompt is not None:
            event = event.model_copy(update={"prompt": None})

        def key(now: datetime, stamp: str) -> str:
            return f"{raw_prefix(now.date())}{stamp}.json"

        return self._write(key, event, f"Usage event not recorded ({event.kind} {event.outcome})")

    async def arecord(self, event: UsageEvent) -> bool:
        """:meth:`record` on a worker thread."""
        return await asyncio.to_thread(self.record, event)

    # -- audit --------------------------------------------------------------------------------
    def record_audit(self, event: AuditEvent) -> bool:
        """Store an admin action or maintenance run as its own object; ``False`` (logged) on failure.

        Never raises: the action it describes already happened, and must not be reported as
        failed because its record could not be written.
        """

        def key(now: datetime, stamp: str) -> str:
            return f"{AUDIT_PREFIX}{now.date().isoformat()}/{stamp}-{event.action}.json"

        return self._write(key, event, f"Audit record not written ({event.action} by {event.actor})")

    async def arecord_audit(self, event: AuditEvent) -> bool:
        """:meth:`record_audit` on a worker thread."""
        return await asyncio.to_thread(self.record_audit, event)

    def _write(self, key: Callable[[datetime, str], str], event: UsageEvent | AuditEvent, lost: str) -> bool:
        """Store ``event`` as its own object under ``key(now, stamp)`` (the stamp is the time and a
        random part, so keys sort by time and never collide); ``False`` and ``lost`` logged if not."""
        try:
            now = self.clock()
            stamp = f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(8)}"
            self.backend.put_object(key(now, stamp), event.model_dump_json(exclude_none=True).encode(), _JSON)
            return True
        except StorageError as exc:
            log.warning("%s: %s", lost, exc)
        except Exception:
            log.exception("%s", lost)
        return False

    def audit_events(
        self, limit: int = 50, *, action: AuditAction | None = None, target: str | None = None
    ) -> list[AuditEvent]:
        """The latest ``limit`` audit records, newest first, of ``action`` and about ``target`` if given.

        One listing of ``events/audit/``, then a read per record returned (a read per record
        looked at when ``target`` is given). Unreadable records are skipped (logged); records
        deleted meanwhile are left out. Storage errors propagate.
        """
        found = sorted((info.key for info in self.backend.list_objects(AUDIT_PREFIX)), reverse=True)
        if action is not None:
            found = [key for key in found if key.endswith(f"-{action}.json")]
        events: list[AuditEvent] = []
        for key in found:
            if len(events) >= limit:
                break
            body = self._get(key)
            if body is None:
                continue
            try:
                event = AuditEvent.model_validate_json(body)
            except ValidationError as exc:
                log.warning("Skipped an unreadable audit record %s: %s", key, exc)
                continue
            if target is None or event.target == target:
                events.append(event)
        return events

    def latest_audit(self, action: AuditAction) -> AuditEvent | None:
        """The newest record of ``action`` (the last cleanup, the last reconcile), or None."""
        found = self.audit_events(1, action=action)
        return found[0] if found else None

    # -- compaction --------------------------------------------------------------------------
    def compact(self, day: date) -> CompactReport:
        """Fold a finished ``day`` into ``events/daily/{day}.json``, then delete its raw objects.

        Safe to run twice, from several processes, and while today's events arrive: the
        summary is created only if missing, and raw objects are deleted only once a
        summary holds them. Storage errors propagate (nothing is lost: run it again).
        """
        if datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + self.settle > self.clock():
            return CompactReport(day, "not_finished")
        raw = [info.key for info in self.backend.list_objects(raw_prefix(day))]
        existing = self._read_summary(day)
        if existing == "unreadable":
            return CompactReport(day, "unreadable")
        if existing is not None:
            self._delete(raw)
            return CompactReport(day, "already_compacted", existing.tally.events, len(raw))
        if not raw:
            return CompactReport(day, "empty")
        tally, complete = self._fold_checked(raw)
        if not complete:
            # Raw objects vanished while we read them: another compaction finished first.
            theirs = self._read_summary(day)
            if isinstance(theirs, DailySummary):
                self._delete(raw)
                return CompactReport(day, "already_compacted", theirs.tally.events, len(raw))
        summary = DailySummary(day=day, compacted_at=self.clock(), tally=tally)
        status: Literal["compacted", "already_compacted"] = "compacted"
        try:
            self.backend.write_doc(daily_key(day), summary.model_dump_json().encode(), etag=None)
        except ConditionFailed:
            # Another compactor got there first; its summary stands.
            status = "already_compacted"
            theirs = self._read_summary(day)
            if isinstance(theirs, DailySummary) and theirs.tally != tally:
                log.warning("Two compactions of %s disagree (%d vs %d events); the first one stands.",
                            day, theirs.tally.events, tally.events)
        self._delete(raw)
        return CompactReport(day, status, tally.events, len(raw))

    def compact_finished(self) -> list[CompactReport]:
        """Compact every day that has raw events and is finished (the daily housekeeping job)."""
        days = sorted({d for d in self._raw_days() if d < self.clock().date()})
        return [self.compact(day) for day in days]

    # -- reading -----------------------------------------------------------------------------
    def summary(self, days: int = 30, *, top: int = 10) -> UsageSummary:
        """The last ``days`` days, today included: one read per past day plus today's raw events.

        A past day not compacted yet is folded from its raw objects instead.
        """
        start, today, tallies = self._window(days)
        return UsageSummary.build(start, today, tallies, top=top)

    def member_days(self, user_id: object, days: int = 30) -> list[DayUsage]:
        """One member's last ``days`` days, oldest first, today included (every day listed, zeros too).

        Read like :meth:`summary` (the daily summaries' per-member counts plus today's raw
        events). Daily summaries keep no per-member failure count, so ``failures`` is what is
        left of a member's events after images and refusals. :class:`InvalidUser` for a bad id.
        """
        uid = check_user_id(user_id)
        start, _, tallies = self._window(days)
        found: list[DayUsage] = []
        for offset in range(days):
            day = start + timedelta(days=offset)
            tally = tallies.get(day)
            user = (tally.users.get(uid) if tally is not None else None) or UserTally()
            failures = max(0, user.events - user.images - user.refusals)
            found.append(DayUsage(day=day, failures=failures, **user.model_dump()))
        return found

    def _window(self, days: int) -> tuple[date, date, dict[date, Tally]]:
        """The first and last day of the last ``days`` days and the tally of each day that has events."""
        if days < 1:
            raise ValueError("days must be at least 1")
        today = self.clock().date()
        start = today - timedelta(days=days - 1)
        raw: dict[date, list[str]] = {}
        for info in self.backend.list_objects(RAW_PREFIX):
            day = _day_of(info.key, RAW_PREFIX)
            if day is not None and start <= day <= today:
                raw.setdefault(day, []).append(info.key)
        tallies: dict[date, Tally] = {}
        finished = [start + timedelta(days=offset) for offset in range(days - 1)]
        # One document per finished day, read side by side: on a remote bucket the round trips add up.
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="abby-analytics") as pool:
            summaries = dict(zip(finished, pool.map(self._read_summary, finished), strict=True))
        for offset in range(days):
            day = start + timedelta(days=offset)
            found = summaries.get(day)
            if isinstance(found, DailySummary):
                tallies[day] = found.tally
            elif day in raw:
                tally, complete = self._fold_checked(raw[day])
                if not complete and day < today:
                    # Compacted while we read it: its summary now holds every event.
                    again = self._read_summary(day)
                    tally = again.tally if isinstance(again, DailySummary) else tally
                tallies[day] = tally
        return start, today, tallies

    # -- retention ---------------------------------------------------------------------------
    def prune(self) -> PruneReport:
        """Delete daily summaries, raw days and audit records older than ``retention_days``."""
        cutoff = self.clock().date() - timedelta(days=self.retention_days)
        old_summaries = self._older(DAILY_PREFIX, cutoff)
        old_raw = self._older(RAW_PREFIX, cutoff)
        old_audit = self._older(AUDIT_PREFIX, cutoff)
        self._delete(old_summaries + old_raw + old_audit)
        return PruneReport(cutoff, len(old_summaries), len(old_raw), len(old_audit))

    # -- plumbing ----------------------------------------------------------------------------
    def _older(self, prefix: str, cutoff: date) -> list[str]:
        keys = []
        for info in self.backend.list_objects(prefix):
            day = _day_of(info.key, prefix)
            if day is not None and day < cutoff:
                keys.append(info.key)
        return keys

    def _raw_days(self) -> set[date]:
        found = (_day_of(info.key, RAW_PREFIX) for info in self.backend.list_objects(RAW_PREFIX))
        return {day for day in found if day is not None}

    def _read_summary(self, day: date) -> DailySummary | Literal["unreadable"] | None:
        found = self.backend.read_doc(daily_key(day))
        if found is None:
            return None
        try:
            return DailySummary.model_validate_json(found[0])
        except ValidationError as exc:
            log.error("The usage summary %s is unreadable; its raw events are kept: %s", daily_key(day), exc)
            return "unreadable"

    def _fold_checked(self, keys: Sequence[str]) -> tuple[Tally, bool]:
        """The tally of the events at ``keys`` and whether every one was still there.

        Raw events are written once and never change, so each is read from storage once per
        process: today's summary then costs a read per *new* event, not per event of the day.
        """
        tally = Tally()
        complete = True
        with self._cache_lock:
            missing = [k for k in keys if k not in self._read_events]
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="abby-analytics") as pool:
            bodies = dict(zip(missing, pool.map(self._get, missing), strict=True))
        for key in keys:
            with self._cache_lock:
                event = self._read_events.get(key)
            if event is None:
                body = bodies.get(key)
                if body is None:
                    complete = False
                    continue
                try:
                    event = UsageEvent.model_validate_json(body)
                except ValidationError as exc:
                    log.warning("Skipped an unreadable usage event %s: %s", key, exc)
                    continue
                with self._cache_lock:
                    self._read_events[key] = event
                    while len(self._read_events) > _EVENTS_REMEMBERED:
                        self._read_events.pop(next(iter(self._read_events)))
            tally.add(event)
        return tally, complete

    def _get(self, key: str) -> bytes | None:
        try:
            return self.backend.get_object(key)
        except ImageNotFound:
            return None

    def _delete(self, keys: list[str]) -> None:
        if keys:
            self.backend.delete_objects(keys)
