"""The CLI against a real S3 server (SeaweedFS): init, doctor, presigned links, failures."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import USER, Invoke, one_json
from tests.fixtures.fake_stability import FakeStability

pytestmark = pytest.mark.seaweedfs

VALID_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_init_then_doctor_all_green(
    abby: Invoke, s3_env: str, stability: FakeStability, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", VALID_TOKEN)
    init = abby("storage", "init", "--json")
    assert init.exit_code == 0, init.output
    report = one_json(init)
    assert report["backend"] == "s3" and report["created"] is True and report["private"] is True
    assert report["lifecycle_days"] == 7 and report["conditional_writes"] is True

    doctor = abby("doctor", "--json")
    obj = one_json(doctor)
    statuses = {c["name"]: c["status"] for c in obj["checks"]}
    assert doctor.exit_code == 0, obj
    assert statuses == {
        "config": "ok", "storage": "ok", "privacy": "ok", "lifecycle": "ok", "conditional_writes": "ok",
        "presigned_link": "ok", "clock": "ok", "stability": "ok", "image_server": "skip", "discord_token": "ok",
    }
    assert all({"name", "status", "detail"} <= set(c) for c in obj["checks"])
    text = abby("doctor")
    assert text.exit_code == 0 and "✘" not in text.stdout and text.stdout.count("✔") == 9
    assert "All checks passed" in text.stdout
    # The probes were removed.
    gallery = one_json(abby("storage", "stats", "--json"))
    assert gallery["global_bytes"] == 0


def test_imagine_gives_a_presigned_url(abby: Invoke, s3_env: str, tmp_path: Path) -> None:
    assert abby("storage", "init").exit_code == 0
    result = abby("imagine", "a harbour", "--user", USER, "--provider", "offline", "--out", "copy.png", "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert "path" not in obj and obj["url"].startswith("http://127.0.0.1:")
    fetched = httpx.get(obj["url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == (tmp_path / "copy.png").read_bytes()
    assert len(fetched.content) == obj["size"]
    listed = one_json(abby("gallery", USER, "--json"))
    assert listed["images"][0]["key"] == obj["key"] and listed["images"][0]["url"].startswith("http")
    assert not (tmp_path / "shared").exists()


def test_doctor_red_on_missing_bucket(abby: Invoke, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_PROVIDER", "offline")
    result = abby("doctor", "--json")
    assert result.exit_code == 1
    obj = one_json(result)
    checks = {c["name"]: c for c in obj["checks"]}
    assert checks["storage"]["status"] == "fail" and "does not exist" in checks["storage"]["detail"]
    assert "abby storage init" in checks["storage"]["detail"] + (checks["storage"]["fix"] or "")
    assert checks["lifecycle"]["status"] == "skip" and checks["stability"]["status"] == "skip"
    assert obj["error"]["code"] == "checks_failed"
    text = abby("doctor")
    assert text.exit_code == 1 and "✘ Storage reachable" in text.stdout and "fix:" in text.stdout


def test_doctor_red_on_wrong_secret(abby: Invoke, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert abby("storage", "init").exit_code == 0
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "wrong-secret-value-0000")
    result = abby("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in one_json(result)["checks"]}
    assert checks["storage"]["status"] == "fail" and "refused access" in checks["storage"]["detail"]
    assert "wrong-secret-value" not in result.stdout + result.stderr


def test_doctor_red_without_lifecycle_rule(abby: Invoke, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert abby("storage", "init").exit_code == 0
    monkeypatch.setenv("STORAGE_CLEANUP_DAYS", "30")
    checks = {c["name"]: c for c in one_json(abby("doctor", "--json"))["checks"]}
    assert checks["lifecycle"]["status"] == "fail" and "30" in checks["lifecycle"]["detail"]


def test_unreachable_s3(abby: Invoke, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("S3_TIMEOUT_SECONDS", "2")
    for args in (("quota", USER), ("imagine", "a cat", "--user", USER, "--provider", "offline"), ("storage", "stats")):
        result = abby(*args, "--json")
        assert result.exit_code == 3, result.output
        error = one_json(result)["error"]
        assert error["code"] == "storage_unavailable" and "could not be reached" in error["message"]
    doctor = abby("doctor", "--json")
    assert doctor.exit_code == 1
    assert {c["name"]: c["status"] for c in one_json(doctor)["checks"]}["storage"] == "fail"


def test_s3_cleanup_and_reconcile(abby: Invoke, s3_env: str) -> None:
    assert abby("storage", "init").exit_code == 0
    made = one_json(abby("imagine", "a boat", "--user", USER, "--provider", "offline", "--json"))
    assert one_json(abby("storage", "reconcile", "--json"))["drift"] == []
    # --days 0 never takes an image younger than a hold's lifetime: it may still be in flight.
    dry = one_json(abby("cleanup", "--days", "0", "--dry-run", "--json"))
    assert dry["objects"] == 0 and dry["bytes"] == 0
    done = one_json(abby("cleanup", "--days", "0", "--json"))
    assert done["objects"] == 0
    assert one_json(abby("quota", USER, "--json"))["user_bytes"] == made["size"]
