"""``abby stats``: the usage summary as one JSON object, and as tables with a bar chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.analytics import EventLog, UsageEvent
from abby_core.storage import FilesystemBackend
from tests.cli.conftest import USER, Invoke, one_json
from tests.storage.conftest import Clock

OTHER = "223456789012345678"


def _seed(root: Path) -> None:
    """Two days ago (compacted): 3 images; today: 1 image, one refusal, one failure."""
    backend = FilesystemBackend(root)
    past = Clock(datetime.now(UTC) - timedelta(days=2))
    old = EventLog(backend, clock=past)
    for user in (USER, USER, OTHER):
        old.record(UsageEvent(time=past(), user_id=user, kind="imagine", provider="stability", outcome="ok",
                              bytes_stored=1_000_000, latency_seconds=4.0, credits=3.0))
    log = EventLog(backend)
    assert log.compact((datetime.now(UTC) - timedelta(days=2)).date()).status == "compacted"
    now = datetime.now(UTC)
    log.record(UsageEvent(time=now, user_id=OTHER, kind="upscale", provider="stability", outcome="ok",
                          bytes_stored=2_000_000, latency_seconds=8.0, credits=0.5))
    log.record(UsageEvent(time=now, user_id=USER, kind="imagine", provider="stability", outcome="daily_limit"))
    log.record(UsageEvent(time=now, user_id=USER, kind="imagine", provider="comfyui",
                          outcome="generation_timeout", latency_seconds=120.0))


def test_stats_json(abby: Invoke, tmp_path: Path) -> None:
    _seed(tmp_path / "shared")
    result = abby("stats", "--days", "7", "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert obj["days"] == 7 and len(obj["per_day"]) == 7
    assert [d["images"] for d in obj["per_day"]][-3:] == [3, 0, 1]
    assert (obj["images"], obj["refusals_total"], obj["failures"], obj["bytes"]) == (4, 1, 1, 5_000_000)
    assert obj["refusals"] == {"daily_limit": 1} and obj["credits"] == 9.5
    assert obj["top_members"][0] == {"user_id": USER, "events": 4, "images": 2, "refusals": 1, "bytes": 2_000_000}
    assert obj["providers"]["comfyui"]["failure_rate"] == 1.0 and obj["providers"]["stability"]["failure_rate"] == 0
    assert obj["providers"]["comfyui"]["latency"] == {"p50": 120.0, "p90": 120.0, "p99": 120.0}
    assert set(obj["latency"]) == {"p50", "p90", "p99"} and obj["failure_rate"] == 0.2
    storage = obj["storage"]
    assert storage["global_limit_bytes"] == 5_000_000_000 and storage["global_bytes"] == 0
    assert obj["bytes_per_day"] == 5_000_000 / 3
    assert storage["days_until_full"] == 3000.0 and storage["full_on"] is not None


def test_stats_text_has_chart_and_tables(abby: Invoke, tmp_path: Path) -> None:
    _seed(tmp_path / "shared")
    result = abby("stats", "--days", "3")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "Images per day" in text and "█" * 20 in text  # the busiest day fills the bar
    assert "█" * 21 not in text and "…" not in text  # 80 columns: the bar fits, nothing cut
    assert "daily_limit" in text and USER in text and "comfyui" in text and "100.0%" in text
    assert "Credits spent: 9.5" in text and "full in about 3000 days" in text


def test_stats_with_no_events(abby: Invoke) -> None:
    obj = one_json(abby("stats", "--json"))
    assert obj["days"] == 30 and obj["images"] == 0 and obj["storage"]["days_until_full"] is None
    assert "no projection" in abby("stats").stdout


def test_stats_rejects_zero_days(abby: Invoke) -> None:
    result = abby("stats", "--days", "0", "--json")
    assert result.exit_code == 2 and one_json(result)["error"]["code"] == "usage_error"


def test_stats_on_a_quiet_server_with_a_huge_limit(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """One image against 1,000,000 MB over 90 days: no date within 10 years, said so (no OverflowError)."""
    monkeypatch.setenv("IMAGE_PROVIDER", "offline")
    monkeypatch.setenv("MAX_GLOBAL_STORAGE_MB", "1000000")
    assert abby("imagine", "a lighthouse", "--user", USER).exit_code == 0
    obj = one_json(abby("stats", "--days", "90", "--json"))
    storage = obj["storage"]
    assert storage["days_until_full"] is None and storage["full_on"] is None
    assert storage["not_full_within_days"] == 3650
    text = abby("stats", "--days", "90")
    assert text.exit_code == 0, text.output
    assert "not full within 10 years at this rate" in text.stdout
