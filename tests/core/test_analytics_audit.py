"""Audit records: written once, read newest first, filtered, pruned; recording never raises."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from abby_core.analytics import AuditEvent, EventLog
from abby_core.analytics.log import AUDIT_PREFIX, RAW_PREFIX
from abby_core.errors import StorageUnavailable
from abby_core.storage import CleanupReport, FilesystemBackend, ReconcileReport
from tests.storage.conftest import Clock

ALICE = "111111111111111111"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> EventLog:
    backend = FilesystemBackend(tmp_path)
    backend.ensure_ready(cleanup_days=7)
    return EventLog(backend, clock=clock, retention_days=30)


def test_records_are_read_newest_first_and_filtered(log: EventLog, clock: Clock) -> None:
    for action, target in (("grant", ALICE), ("block", ALICE), ("cleanup", None), ("reset", "222222222222222222")):
        assert log.record_audit(AuditEvent(time=clock(), actor="token", action=action, target=target))
        clock.advance(seconds=1)
    assert [e.action for e in log.audit_events()] == ["reset", "cleanup", "block", "grant"]
    assert [e.action for e in log.audit_events(2)] == ["reset", "cleanup"]
    assert [e.action for e in log.audit_events(target=ALICE)] == ["block", "grant"]
    latest = log.latest_audit("cleanup")
    assert latest is not None and latest.target is None and log.latest_audit("reconcile") is None
    keys = [info.key for info in log.backend.list_objects(AUDIT_PREFIX)]
    assert len(keys) == 4 and all(k.startswith("events/audit/2026-11-25/") for k in keys)
    assert list(log.backend.list_objects(RAW_PREFIX)) == []  # not usage events: summaries never see them


def test_reports_become_records(clock: Clock) -> None:
    cleaned = AuditEvent.of_cleanup(CleanupReport(3, 3000, 2, clock(), partial_files=1), actor="cli", time=clock(),
                                    days=7)
    assert cleaned.details == {"objects": 3, "bytes": 3000, "users": 2, "partial_files": 1, "days": 7}
    fixed = AuditEvent.of_reconcile(ReconcileReport(2, 5, 9000, drift={ALICE: (100, 40)}), actor="maintenance",
                                    time=clock())
    assert fixed.details["drift_users"] == 1 and fixed.details["drift_bytes"] == -60


@pytest.mark.parametrize("actor", ["", "root", "0123", "12a", "x" * 30])
def test_actors_are_ids_or_known_names(clock: Clock, actor: str) -> None:
    with pytest.raises(ValidationError):
        AuditEvent(time=clock(), actor=actor, action="grant")


def test_recording_never_raises(log: EventLog, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def put_object(self, *args: Any) -> None:
            raise StorageUnavailable("disk on fire")

    log.backend = Broken()  # type: ignore[assignment]
    assert log.record_audit(AuditEvent(time=clock(), actor="cli", action="reconcile")) is False
    assert "Audit record not written" in caplog.text


def test_prune_removes_old_records(log: EventLog, clock: Clock) -> None:
    log.record_audit(AuditEvent(time=clock(), actor="cli", action="cleanup"))
    clock.advance(days=40)
    log.record_audit(AuditEvent(time=clock(), actor="cli", action="reconcile"))
    report = log.prune()
    assert report.audit_records == 1 and [e.action for e in log.audit_events()] == ["reconcile"]
    assert report.cutoff == clock().date() - timedelta(days=30)
