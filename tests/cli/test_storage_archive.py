"""``abby storage archive``, ``abby storage archived`` and the archive in ``abby storage stats``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cli.conftest import USER, Invoke, one_json


def _old_image(abby: Invoke) -> dict[str, object]:
    made = one_json(abby("imagine", "a tree", "--user", USER, "--provider", "offline", "--json"))
    then = time.time() - 10 * 86_400
    os.utime(str(made["path"]), (then, then))
    return made


def test_archive_dry_run_then_real_then_listed(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_ARCHIVE", "on")
    made = _old_image(abby)
    dry = one_json(abby("storage", "archive", "--dry-run", "--json"))
    assert (dry["dry_run"], dry["archived"], dry["original_bytes"]) == (True, 1, made["size"])
    assert Path(str(made["path"])).exists()
    text = abby("storage", "archive")
    assert text.exit_code == 0, text.output
    assert "Archived images older than 7 days" in text.stdout and "saved" in text.stdout
    assert not Path(str(made["path"])).exists()
    listed = one_json(abby("storage", "archived", USER, "--json"))
    assert listed["count"] == 1
    [entry] = listed["archived"]
    assert entry["original_key"] == made["key"] and entry["size"] < made["size"]
    assert Path(entry["path"]).is_file()
    stats = one_json(abby("storage", "stats", "--json"))
    assert stats["archive"]["objects"] == 1 and stats["archive"]["bytes"] == entry["size"]
    assert stats["global_bytes"] == 0
    assert "Archive: 1 image(s)" in abby("storage", "stats").stdout
    assert one_json(abby("storage", "archive", "--json"))["archived"] == 0


def test_cleanup_archives_when_archiving_is_on(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_ARCHIVE", "true")
    made = _old_image(abby)
    report = one_json(abby("cleanup", "--json"))
    assert report["objects"] == 1 and not Path(str(made["path"])).exists()
    assert one_json(abby("storage", "archived", "--user", USER, "--json"))["count"] == 1


def test_archive_rejects_bad_days(abby: Invoke) -> None:
    result = abby("storage", "archive", "--days", "-3", "--json")
    assert result.exit_code == 2 and one_json(result)["error"]["code"] == "usage_error"
