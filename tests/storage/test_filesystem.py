"""Filesystem specifics: atomic writes under faults, path safety, Windows-style roots."""

from __future__ import annotations

import errno
import os
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
    ["../escape.png", "images/../../x", "/etc/passwd", "images\\users\\1\\a.png", "C:/Windows/x", "images//x", ""],
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
