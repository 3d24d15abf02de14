"""Filesystem specifics: atomic writes under faults, path safety, Windows-style roots."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from abby_core.errors import InvalidKey, StorageUnavailable
from abby_core.storage import FilesystemBackend, StorageManager
from tests.storage.test_manager import ALICE, png


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission was denied")],
)
async def test_failed_image_write_leaves_nothing_and_charges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    manager = StorageManager(storage_root=tmp_path)
    await manager.save_image(await manager.reserve(ALICE), png())  # ledger exists, one image
    before = _all_files(tmp_path)
    status_before = await manager.get_quota_status(ALICE)
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the image write (ledger writes after it succeed)
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    reservation = await manager.reserve(ALICE)
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageUnavailable) as refused:
        await manager.save_image(reservation, png(color=(1, 1, 1)))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert reason in str(refused.value) and "STORAGE_ROOT" in str(refused.value)
    assert not any(".tmp-" in name for name in _all_files(tmp_path))
    assert [f for f in _all_files(tmp_path) if f.startswith("images")] == [
        f for f in before if f.startswith("images")
    ]
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (
        status_before.daily_used,
        status_before.user_bytes,
        0,
    )
    await manager.aclose()


async def test_unwritable_ledger_refuses_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = StorageManager(storage_root=tmp_path)

    def broken(*_: object, **__: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("abby_core.storage.filesystem.tempfile.mkstemp", broken)
    with pytest.raises(StorageUnavailable, match="read-only"):
        await manager.reserve(ALICE)
    monkeypatch.undo()
    assert list(manager.backend.list_objects("images/")) == []
    assert (await manager.get_quota_status(ALICE)).daily_used == 0
    await manager.aclose()


def test_storage_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.write_text("oops")
    with pytest.raises(StorageUnavailable, match="STORAGE_ROOT"):
        FilesystemBackend(root).ensure_ready(cleanup_days=7)


@pytest.mark.parametrize(
    "key",
    [
        "../escape.png",
        "images/../../x",
        "/etc/passwd",
        "images\\users\\1\\a.png",
        "C:/Windows/x",
        "images//x",
        "",
        "images/x/",
        # Names the backend keeps for itself: temporary files and lock files.
        "images/users/1/.tmp-abc123",
        "images/.tmp-x/a.png",
        "ledger/global.json.lock",
    ],
)
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    backend = FilesystemBackend(tmp_path / "root")
    with pytest.raises(InvalidKey):
        backend.put_object(key, b"x", "image/png")
    assert not (tmp_path / "escape.png").exists()


async def test_root_with_spaces_and_unicode(tmp_path: Path) -> None:
    manager = StorageManager(storage_root=tmp_path / "Abby Data" / "dossier partagé")
    stored = await manager.save_image(await manager.reserve(ALICE), png())
    assert stored.path is not None and Path(stored.path).is_file()
    assert Path(stored.path).parts[-4:-1] == ("images", "users", ALICE)
    await manager.aclose()


def test_ensure_ready_creates_the_documented_folders(tmp_path: Path) -> None:
    report = FilesystemBackend(tmp_path / "shared").ensure_ready(cleanup_days=7)
    assert report.created
    for folder in ("images/users", "ledger", "temp", "logs"):
        assert (tmp_path / "shared" / folder).is_dir()


def test_ensure_ready_notes_that_the_daily_maintenance_prunes_events(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path / "shared")
    plain = backend.ensure_ready(cleanup_days=7)
    assert not any("events/" in note for note in plain.notes)
    report = backend.ensure_ready(cleanup_days=7, events_days=97)
    assert report.lifecycle_days is None
    assert any("events/" in note and "daily maintenance" in note for note in report.notes)
    assert not (tmp_path / "shared" / "events").exists()  # no lifecycle, nothing written for it


async def test_manager_from_settings_passes_the_events_retention(tmp_path: Path) -> None:
    from abby_core.config import load_settings

    settings = load_settings(
        env_file=None, STORAGE_BACKEND="filesystem", STORAGE_ROOT=str(tmp_path), ANALYTICS_RETENTION_DAYS=30
    )
    manager = StorageManager.from_settings(settings)
    try:
        assert manager.events_retention_days == 30
        report = await manager.ensure_ready()
        assert any("events/" in note for note in report.notes)
    finally:
        await manager.aclose()
    # Built by hand, without the keyword: events are left alone, as before.
    plain = StorageManager(storage_root=tmp_path)
    try:
        assert plain.events_retention_days is None
        assert not any("events/" in note for note in (await plain.ensure_ready()).notes)
    finally:
        await plain.aclose()


REPO = Path(__file__).resolve().parents[2]
_KEY = "images/users/1/20260101T000000Z-0123abcd.png"
# A writer that stops inside ``_atomic_write`` (data written, not yet fsynced/renamed)
# until the test kills it with SIGKILL, as a crash or an OOM kill would.
_STUCK_WRITER = f"""
import os, sys, time
from abby_core.storage.filesystem import FilesystemBackend

def stuck(fd):
    print("writing", flush=True)
    time.sleep(600)

os.fsync = stuck
FilesystemBackend(sys.argv[1]).put_object({_KEY!r}, b"x" * 100_000, "image/png")
"""


def _age(path: Path, hours: float) -> None:
    when = time.time() - hours * 3600
    os.utime(path, (when, when), follow_symlinks=False)


def test_a_writer_killed_mid_write_leaves_debris_that_the_sweep_removes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = FilesystemBackend(root)
    backend.ensure_ready(cleanup_days=7)
    child = subprocess.Popen(
        [sys.executable, "-c", _STUCK_WRITER, str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"writing\n", child.stderr.read() if child.stderr else line
    finally:
        child.kill()  # SIGKILL: no finally clause in the writer runs
        child.wait(timeout=30)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()

    (debris,) = (root / "images/users/1").glob(".tmp-*")
    assert debris.stat().st_size == 100_000
    assert backend.head_object(_KEY) is None
    assert list(backend.list_objects("images/")) == []

    # The sweep cannot tell a fresh temporary file from a live writer's: it waits.
    assert backend.sweep_partial_writes(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert debris.exists()
    _age(debris, 2)
    assert backend.sweep_partial_writes(datetime.now(UTC) - timedelta(hours=1)) == 1
    assert not debris.exists()
    assert list(backend.list_objects("images/")) == []


def test_sweep_removes_old_temporary_files_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "root"
    backend = FilesystemBackend(root)
    backend.ensure_ready(cleanup_days=7)
    backend.put_object(_KEY, b"image", "image/png")
    backend.write_doc("ledger/global.json", b"{}", etag=None)  # leaves ledger/global.json.lock
    old_tmp = [root / ".tmp-rootlevel", root / "images/users/1/.tmp-aaaa1111", root / "ledger/.tmp-bbbb2222"]
    fresh_tmp = root / "images/users/2/.tmp-cccc3333"
    fresh_tmp.parent.mkdir(parents=True)
    outside = tmp_path / ".tmp-outside-the-root"
    kept = [
        root / _KEY,
        root / "ledger/global.json",
        root / "ledger/global.json.lock",
        root / "images/users/1/notes.tmp-1",  # ".tmp-" not at the start
        root / "images/users/1/tmp-no-dot",
        root / "images/.tmp-folder/inside.png",  # a folder so named: its files are not debris
        outside,
    ]
    for path in [*old_tmp, fresh_tmp, *kept[3:]]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left behind")
    link = root / "images/.tmp-link-to-outside"
    link.symlink_to(outside)
    for path in [*old_tmp, *kept, link]:
        _age(path, 48)

    assert backend.sweep_partial_writes(datetime.now(UTC) - timedelta(hours=1)) == len(old_tmp)
    assert [p for p in old_tmp if p.exists()] == []
    assert fresh_tmp.exists()
    assert [p for p in kept if not p.exists()] == []
    assert link.is_symlink() and outside.read_bytes() == b"left behind"
    assert backend.get_object(_KEY) == b"image"
    assert backend.read_doc("ledger/global.json") is not None


def test_sweep_of_a_missing_root_removes_nothing(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path / "not-created-yet")
    assert backend.sweep_partial_writes(datetime.now(UTC)) == 0
    assert not (tmp_path / "not-created-yet").exists()
