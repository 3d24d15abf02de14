"""The usage event log over every backend: record, summarise, compact (twice, concurrently, after a crash), prune."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from abby_core.analytics import EventLog, UsageEvent
from abby_core.analytics.log import DAILY_PREFIX, RAW_PREFIX, daily_key
from abby_core.analytics.models import Tally, UsageSummary
from abby_core.analytics.outlook import OUTLOOK_HORIZON_DAYS, outlook
from abby_core.errors import InvalidUser, StorageUnavailable
from abby_core.storage import GlobalStats, StorageBackend
from tests.storage import conftest as storage_fixtures
from tests.storage.conftest import Clock

# The storage suite's backend fixtures, parametrized over filesystem, moto and SeaweedFS.
backend_kind = storage_fixtures.backend_kind
make_backend = storage_fixtures.make_backend
moto_env = storage_fixtures.moto_env

Make = Callable[..., StorageBackend]
ALICE, BOB = "111111111111111111", "222222222222222222"
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def event(clock: Clock, outcome: str = "ok", **extra: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "time": clock(), "user_id": ALICE, "kind": "imagine", "provider": "stability", "outcome": outcome,
        "bytes_stored": 1000 if outcome == "ok" else 0, "latency_seconds": 2.0,
        "credits": 3.0 if outcome == "ok" else None,
    }
    values.update(extra)
    return UsageEvent(**values)


def keys(backend: StorageBackend, prefix: str) -> list[str]:
    return sorted(info.key for info in backend.list_objects(prefix))


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def backend(make_backend: Make) -> StorageBackend:
    return make_backend()


class FlakyDelete:
    """A backend whose ``delete_objects`` fails a given number of times (a crash after the summary)."""

    def __init__(self, inner: StorageBackend, failures: int = 1) -> None:
        self.inner, self.failures = inner, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete_objects(self, keys: Sequence[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("simulated crash before the deletion")
        self.inner.delete_objects(keys)


def test_record_writes_one_object_per_event_without_prompt(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock)
    assert log.record(event(clock, prompt="a secret lighthouse"))
    assert log.record(event(clock, user_id=BOB, guild_id="333333333333333333"))
    found = keys(backend, RAW_PREFIX)
    assert len(found) == 2 and all(k.startswith("events/raw/2026-11-25/20261125T120000") for k in found)
    bodies = [json.loads(backend.get_object(k)) for k in found]
    assert all("prompt" not in body for body in bodies)
    assert {body["user_id"] for body in bodies} == {ALICE, BOB}


def test_prompts_are_stored_only_when_enabled(backend: StorageBackend, clock: Clock) -> None:
    EventLog(backend, clock=clock, store_prompts=True).record(event(clock, prompt="a lighthouse"))
    (key,) = keys(backend, RAW_PREFIX)
    assert json.loads(backend.get_object(key))["prompt"] == "a lighthouse"


def test_summary_of_todays_raw_events(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock)
    for seconds in (1.0, 2.0, 3.0, 4.0, 10.0):
        log.record(event(clock, latency_seconds=seconds))
    log.record(event(clock, user_id=BOB))
    log.record(event(clock, "daily_limit", latency_seconds=None, user_id=BOB))
    log.record(event(clock, "generation_timeout", provider="comfyui", latency_seconds=60.0))
    summary = log.summary(days=7)
    assert (summary.start.isoformat(), summary.end.isoformat(), summary.days) == ("2026-11-19", "2026-11-25", 7)
    assert (summary.events, summary.images, summary.refusals_total, summary.failures) == (8, 6, 1, 1)
    assert summary.per_day[-1].images == 6 and summary.per_day[0].images == 0
    assert summary.refusals == {"daily_limit": 1}
    assert [(m.user_id, m.images) for m in summary.top_members] == [(ALICE, 5), (BOB, 1)]
    assert summary.bytes == 6000 and summary.credits == 18.0 and summary.bytes_per_day == 6000
    stability, comfy = summary.providers["stability"], summary.providers["comfyui"]
    assert (stability.ok, stability.failures, stability.refusals, stability.failure_rate) == (6, 0, 1, 0.0)
    assert comfy.failure_rate == 1.0 and comfy.latency is not None and comfy.latency.p50 == 60.0
    assert stability.latency is not None
    assert stability.latency.p50 == pytest.approx(2.0, rel=0.11) and stability.latency.p99 == 10.0
    assert summary.failure_rate == pytest.approx(1 / 7)


def test_member_days_reads_compacted_days_and_todays_raw_events(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock)
    for outcome in ("ok", "ok", "daily_limit", "generation_timeout"):
        log.record(event(clock, outcome))
    log.record(event(clock, user_id=BOB))
    first = clock().date()
    clock.advance(days=2)
    assert log.compact(first).status == "compacted"
    log.record(event(clock))
    log.record(event(clock, "content_filtered", user_id=BOB))

    alice = log.member_days(ALICE, days=7)
    assert [d.day for d in alice] == [clock().date() - timedelta(days=n) for n in range(6, -1, -1)]
    counts = {d.day: (d.events, d.images, d.refusals, d.failures, d.bytes) for d in alice if d.events}
    assert counts == {first: (4, 2, 1, 1, 2000), clock().date(): (1, 1, 0, 0, 1000)}
    assert [d.images for d in log.member_days(int(BOB), days=3)] == [1, 0, 0]
    assert log.member_days(BOB, days=1)[0].refusals == 1
    assert all(d.events == 0 for d in log.member_days("333333333333333333", days=7))
    with pytest.raises(InvalidUser):
        log.member_days("../1")
    with pytest.raises(ValueError):
        log.member_days(ALICE, days=0)


def test_compaction_of_a_finished_day_while_today_keeps_recording(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock)
    for i in range(6):
        log.record(event(clock, user_id=ALICE if i % 2 else BOB))
    log.record(event(clock, "content_filtered"))
    yesterday = clock().date()
    clock.advance(hours=12, minutes=5)  # 00:05 the next day: still settling
    assert log.compact(yesterday).status == "not_finished"
    assert len(keys(backend, RAW_PREFIX)) == 7
    clock.advance(minutes=15)

    stop = threading.Event()
    recorded: list[bool] = []

    def keep_recording() -> None:
        while not stop.is_set() and len(recorded) < 200:
            recorded.append(log.record(event(clock, user_id=BOB)))

    writers = [threading.Thread(target=keep_recording) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        report = log.compact(yesterday)
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert (report.status, report.events, report.deleted) == ("compacted", 7, 7)
    assert all(recorded) and recorded
    assert keys(backend, f"{RAW_PREFIX}{yesterday}/") == []
    assert len(keys(backend, f"{RAW_PREFIX}{clock().date()}/")) == len(recorded)
    assert keys(backend, DAILY_PREFIX) == [daily_key(yesterday)]

    summary = log.summary(days=2)
    assert [d.images for d in summary.per_day] == [6, len(recorded)]
    assert summary.refusals == {"content_filtered": 1}

    again = log.compact(yesterday)  # twice: the summary stands, nothing counted again
    assert (again.status, again.deleted) == ("already_compacted", 0)
    assert log.summary(days=2).per_day[0].images == 6


def test_compaction_crash_before_deletion_never_double_counts(make_backend: Make, clock: Clock) -> None:
    inner = make_backend()
    flaky = FlakyDelete(inner)
    log = EventLog(flaky, clock=clock)  # type: ignore[arg-type]
    for _ in range(4):
        log.record(event(clock))
    day = clock().date()
    clock.advance(days=1)
    with pytest.raises(StorageUnavailable):
        log.compact(day)
    assert inner.read_doc(daily_key(day)) is not None and len(keys(inner, RAW_PREFIX)) == 4
    assert log.summary(days=2).per_day[0].images == 4  # the summary wins over the leftovers
    report = log.compact(day)
    assert (report.status, report.events, report.deleted) == ("already_compacted", 4, 4)
    assert keys(inner, RAW_PREFIX) == []
    stored = json.loads(inner.read_doc(daily_key(day))[0])  # type: ignore[index]
    assert stored["tally"]["images"] == 4 and stored["day"] == day.isoformat()
    assert stored["tally"]["providers"]["stability"]["percentiles"]["p50"] == pytest.approx(2.0, rel=0.11)
    assert log.summary(days=2).per_day[0].images == 4


def test_compact_finished_and_empty_days(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock)
    log.record(event(clock))
    clock.advance(days=1)
    log.record(event(clock))
    clock.advance(days=1)
    log.record(event(clock))  # today: left alone
    reports = log.compact_finished()
    assert [(r.day.isoformat(), r.status, r.events) for r in reports] == [
        ("2026-11-25", "compacted", 1), ("2026-11-26", "compacted", 1)
    ]
    assert log.compact(clock().date() - timedelta(days=5)).status == "empty"
    assert len(keys(backend, RAW_PREFIX)) == 1 and log.summary(days=3).images == 3


def test_prune_removes_days_past_retention(backend: StorageBackend, clock: Clock) -> None:
    log = EventLog(backend, clock=clock, retention_days=10)
    log.record(event(clock))
    old = clock().date()
    clock.advance(days=1)
    log.record(event(clock))  # a raw day never compacted
    clock.advance(days=1)
    log.compact(old)
    clock.advance(days=9)  # keeps 2026-11-26 onwards
    log.record(event(clock))
    report = log.prune()
    assert (report.summaries, report.raw_objects) == (1, 0)
    assert keys(backend, DAILY_PREFIX) == [] and len(keys(backend, RAW_PREFIX)) == 2
    clock.advance(days=1)
    assert log.prune().raw_objects == 1
    assert len(keys(backend, RAW_PREFIX)) == 1


class Broken:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(name)

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        raise StorageUnavailable("the storage server is down")


def test_record_never_raises(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog(Broken(), clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="abby.analytics"):
        assert log.record(event(clock)) is False
    assert "not recorded" in caplog.text and "the storage server is down" in caplog.text


def test_record_survives_unexpected_errors(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    class Weird(Broken):
        def put_object(self, key: str, data: bytes, content_type: str) -> None:
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="abby.analytics"):
        assert EventLog(Weird(), clock=clock).record(event(clock)) is False  # type: ignore[arg-type]
    assert "boom" in caplog.text


def test_events_refuse_bad_ids_and_outcomes(clock: Clock) -> None:
    from pydantic import ValidationError

    for bad in ({"user_id": "../1"}, {"outcome": "Not A Code"}, {"kind": "other"}, {"time": datetime(2026, 1, 1)}):
        with pytest.raises(ValidationError):
            event(clock, **bad)


# -- rules over tallies and the storage outlook (pure: no backend) -------------------------


def test_not_configured_is_a_refusal_not_a_provider_failure(clock: Clock) -> None:
    """Nothing reached a provider when no key was set: the configuration refused, the provider did not fail."""
    tally = Tally()
    tally.add(event(clock))
    for _ in range(2):
        tally.add(event(clock, "not_configured", latency_seconds=None))
    summary = UsageSummary.build(clock().date(), clock().date(), {clock().date(): tally})
    stability = summary.providers["stability"]
    assert (stability.ok, stability.failures, stability.refusals) == (1, 0, 2)
    assert stability.failure_rate == 0 and summary.failure_rate == 0 and summary.failures == 0
    assert summary.refusals == {"not_configured": 2}


@pytest.mark.parametrize(
    ("limit", "days_until_full", "beyond"),
    [
        (5_000, 4.0, None),  # 4,000 bytes left at 1,000 a day
        (3_651_000, 3650.0, None),  # exactly the horizon is still a date
        (3_652_000, None, OUTLOOK_HORIZON_DAYS),
        (1_000_000_000_000, None, OUTLOOK_HORIZON_DAYS),  # 1,000,000 MB: a date would overflow
    ],
)
def test_outlook_gives_a_date_only_within_ten_years(
    clock: Clock, limit: int, days_until_full: float | None, beyond: int | None
) -> None:
    tally = Tally()
    tally.add(event(clock))  # 1,000 bytes today: 1,000 bytes a day
    today = clock().date()
    summary = UsageSummary.build(today - timedelta(days=89), today, {today: tally})
    usage = GlobalStats(global_bytes=1_000, global_limit_bytes=limit, users=1, in_flight=0, top_users=[])
    view = outlook(summary, usage, today)
    assert view.days_until_full == days_until_full
    assert view.not_full_within_days == beyond
    assert (view.full_on is None) == (days_until_full is None)
    if days_until_full is not None:
        assert view.full_on == today + timedelta(days=math.ceil(days_until_full))
    assert view.as_dict()["not_full_within_days"] == beyond
