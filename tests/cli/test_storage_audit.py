"""``abby cleanup`` and ``abby storage reconcile`` leave an audit record the dashboard shows."""

from __future__ import annotations

from pathlib import Path

from abby_core.analytics import EventLog
from abby_core.storage import FilesystemBackend
from tests.cli.conftest import Invoke, one_json


def _audit(tmp_path: Path) -> EventLog:
    return EventLog(FilesystemBackend(tmp_path / "shared"))


def test_cleanup_and_reconcile_are_recorded(abby: Invoke, tmp_path: Path) -> None:
    assert one_json(abby("storage", "init", "--json"))["ok"]
    assert one_json(abby("cleanup", "--dry-run", "--json"))["ok"]
    assert _audit(tmp_path).audit_events() == []  # a dry run changes nothing, so it is not recorded
    assert one_json(abby("cleanup", "--json"))["ok"]
    assert one_json(abby("storage", "reconcile", "--json"))["ok"]
    log = _audit(tmp_path)
    cleanup, reconcile = log.latest_audit("cleanup"), log.latest_audit("reconcile")
    assert cleanup is not None and cleanup.actor == "cli" and cleanup.details["days"] == 7
    assert reconcile is not None and reconcile.actor == "cli" and reconcile.details["drift_users"] == 0
