"""``abby cleanup`` and ``abby storage init|stats|reconcile`` on the filesystem backend."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.cli.conftest import USER, Invoke, one_json

OTHER = "223456789012345678"


def _make(abby: Invoke, user: str) -> dict[str, object]:
    result = abby("imagine", "a tree", "--user", user, "--provider", "offline", "--json")
    assert result.exit_code == 0, result.output
    return one_json(result)


def _age(path: str, days: float) -> None:
    then = time.time() - days * 86_400
    os.utime(path, (then, then))


def test_storage_init_filesystem(abby: Invoke, tmp_path: Path) -> None:
    result = abby("storage", "init", "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert obj["backend"] == "filesystem" and obj["created"] is True
    assert obj["conditional_writes"] is True and obj["location"] == str((tmp_path / "shared").resolve())
    assert (tmp_path / "shared" / "images" / "users").is_dir() and (tmp_path / "shared" / "ledger").is_dir()
    text = abby("storage", "init")
    assert text.exit_code == 0 and "conditional writes honoured" in text.stdout


def test_cleanup_dry_run_then_real(abby: Invoke) -> None:
    old = _make(abby, USER)
    new = _make(abby, OTHER)
    _age(str(old["path"]), 10)
    dry = abby("cleanup", "--dry-run", "--json")
    assert dry.exit_code == 0
    report = one_json(dry)
    assert (report["dry_run"], report["days"], report["objects"], report["users"]) == (True, 7, 1, 1)
    assert report["bytes"] == old["size"] and Path(str(old["path"])).exists()
    real = one_json(abby("cleanup", "--json"))
    assert real["objects"] == 1 and real["dry_run"] is False
    assert not Path(str(old["path"])).exists() and Path(str(new["path"])).exists()
    assert one_json(abby("quota", USER, "--json"))["user_bytes"] == 0
    young = abby("cleanup", "--days", "0", "--json")  # a fresh image may still be in flight: kept
    assert one_json(young)["objects"] == 0 and Path(str(new["path"])).exists()
    _age(str(new["path"]), 1)
    everything = abby("cleanup", "--days", "0")
    assert everything.exit_code == 0 and "Deleted 1 image(s)" in everything.stdout
    assert not Path(str(new["path"])).exists()


def test_cleanup_rejects_negative_days(abby: Invoke) -> None:
    result = abby("cleanup", "--days", "-1", "--json")
    assert result.exit_code == 2 and one_json(result)["error"]["code"] == "usage_error"


def test_stats(abby: Invoke) -> None:
    a, b, c = _make(abby, USER), _make(abby, USER), _make(abby, OTHER)
    result = abby("storage", "stats", "--json")
    assert result.exit_code == 0
    obj = one_json(result)
    total = sum(int(x["size"]) for x in (a, b, c))  # type: ignore[call-overload]
    assert obj["global_bytes"] == total and obj["users"] == 2 and obj["in_flight"] == 0
    assert obj["top_users"][0] == {"user_id": USER, "bytes": int(a["size"]) + int(b["size"])}  # type: ignore[call-overload]
    assert len(one_json(abby("storage", "stats", "--top", "1", "--json"))["top_users"]) == 1
    text = abby("storage", "stats")
    assert "2 user(s)" in text.stdout and USER in text.stdout


def test_reconcile_reports_drift(abby: Invoke) -> None:
    made = _make(abby, USER)
    _make(abby, OTHER)
    clean = one_json(abby("storage", "reconcile", "--json"))
    assert clean["drift"] == [] and clean["users"] == 2 and clean["objects"] == 2
    Path(str(made["path"])).unlink()  # e.g. a lifecycle rule or an operator removed it
    result = abby("storage", "reconcile", "--json")
    assert result.exit_code == 0
    obj = one_json(result)
    assert obj["drift"] == [
        {"user_id": USER, "ledger_bytes": made["size"], "actual_bytes": 0, "difference": -int(made["size"])}  # type: ignore[call-overload]
    ]
    assert obj["drift_bytes"] == -int(made["size"])  # type: ignore[call-overload]
    assert one_json(abby("quota", USER, "--json"))["user_bytes"] == 0
    text = abby("storage", "reconcile")
    assert "No drift" in text.stdout


def test_stats_list_the_leases_of_bot_processes(abby: Invoke) -> None:
    import asyncio

    from abby_core.storage import FilesystemBackend, StorageManager

    bot = StorageManager(FilesystemBackend("shared"), escrow=True)  # a bot process with STORAGE_ESCROW on

    async def make() -> None:
        res = await bot.reserve(USER, size_bytes=1000)
        await bot.save_image(res, b"\x89PNG\r\n\x1a\n" + b"x" * 992)

    try:
        asyncio.run(make())
        assert bot.escrow is not None
        lease = bot.escrow.view()
        obj = one_json(abby("storage", "stats", "--json"))
        [shown] = obj["leases"]
        assert (shown["lease_id"], shown["bytes"], shown["owner"]) == (lease.lease_id, lease.granted, bot.escrow.owner)
        assert obj["global_bytes"] >= lease.granted
        text = abby("storage", "stats").stdout
        assert "Leases of the global budget" in text and "leased by bot processes" in text
    finally:
        asyncio.run(bot.aclose())
    assert one_json(abby("storage", "stats", "--json"))["leases"] == []
