"""``abby storage archive``, ``archived`` and ``restore``, and the archive in ``abby storage stats``."""

from __future__ import annotations

import json
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


def test_restore_brings_an_archived_image_back(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_ARCHIVE", "on")
    made = _old_image(abby)
    assert one_json(abby("storage", "archive", "--json"))["archived"] == 1
    [entry] = one_json(abby("storage", "archived", USER, "--json"))["archived"]
    restored = one_json(abby("storage", "restore", USER, entry["name"], "--json"))
    image = restored["restored"]
    assert (restored["user_id"], image["size"]) == (USER, entry["size"])
    assert image["key"].startswith(f"images/users/{USER}/") and Path(image["path"]).is_file()
    assert restored["quota"]["user_bytes"] == entry["size"] and restored["quota"]["daily_used"] == 1
    assert one_json(abby("storage", "archived", USER, "--json"))["count"] == 0
    assert [i["key"] for i in one_json(abby("gallery", USER, "--json"))["images"]] == [image["key"]]
    assert not Path(entry["path"]).exists() and made["key"] != image["key"]  # a WebP copy came back

    # Restored already, or never archived: the key the operator typed, and where to look.
    again = abby("storage", "restore", "--user", USER, entry["name"], "--json")
    error = one_json(again)["error"]
    assert again.exit_code == 1 and error["code"] == "image_not_found"
    assert entry["name"] in error["message"] and "abby storage archived" in error["message"]
    assert error == _documented_error(entry["name"])
    text = abby("storage", "restore", USER, entry["name"])
    assert text.exit_code == 1 and "no archived image" in text.stderr and entry["name"] in text.stderr


def _documented_error(name: str) -> dict[str, object]:
    """The error docs/CLI.md shows for a key that is not archived, for the image ``name``."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "CLI.md").read_text(encoding="utf-8")
    section = doc.split("### `abby storage restore USER KEY`", 1)[1]
    shown = next(line for line in section.splitlines() if line.startswith('{"ok": false'))
    documented: dict[str, object] = json.loads(shown)["error"]
    return json.loads(json.dumps(documented).replace("20250301T081500Z-3f2a9c4e1b7d6a05.webp", name))


def test_restore_says_what_was_wrong_with_the_key(abby: Invoke) -> None:
    gallery_key = f"images/users/{USER}/20261125T101010Z-ab12cd34ab12cd34.png"
    wrong = abby("storage", "restore", USER, gallery_key, "--json")
    error = one_json(wrong)["error"]
    assert wrong.exit_code == 1 and error["code"] == "invalid_key" and gallery_key in error["message"]
    missing = abby("storage", "restore", "--user", USER, "--json")
    assert missing.exit_code == 2 and "abby storage restore USER KEY" in one_json(missing)["error"]["message"]
    bad_user = abby("storage", "restore", "not-a-user", "x.webp", "--json")
    assert bad_user.exit_code == 1 and one_json(bad_user)["error"]["code"] == "invalid_user"
