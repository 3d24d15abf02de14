"""Archive and restore interrupted at every storage call in turn (raise, lost answer, cancel, kill):
an image is never in neither state, not even after whatever comes next.

After each interrupted run: every image is active (``images/``) or archived (``archive/``), or
both. Then what a member or the maintenance would do next runs on that state (a follow-up:
restore, delete, the next archive run, cleanup, reconcile), each on its own copy of it, and
the check runs again. Last, another process runs reconcile past the holds' lifetime: every
image is in exactly one state, recorded where it is (quota document or archive document),
and the quota, global and archive documents agree with storage.

The follow-ups need a copy of the interrupted state, so they run on the filesystem (a folder
is copied in a moment); the protocol they exercise is the same over every backend. SeaweedFS
adds its conditional writes and listings under a lost answer: its runs are ``lose`` only,
with the follow-up the daily maintenance would run anyway.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from abby_core.errors import AbbyError, ImageNotFound, InvalidInput
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager, keys
from abby_core.storage.documents import ArchiveLedger
from abby_core.storage.rules import PURGE_MARGIN
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability import scenarios
from tests.reliability.crashpoints import (
    ACTIONS,
    TTL,
    CrashPoints,
    counted_snapshot,
    crash_child,
    describe,
    interrupted,
)

AGE = timedelta(days=8)  # past STORAGE_CLEANUP_DAYS (7)
#: Every action on the filesystem; on SeaweedFS the lost answer only.
CASES = [("filesystem", action) for action in ACTIONS] + [
    pytest.param("seaweedfs", "lose", marks=pytest.mark.seaweedfs, id="seaweedfs-lose")
]


def _manager(backend: StorageBackend, clock: Clock) -> StorageManager:
    return StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1, archive=True)


async def _images(backend: StorageBackend, uid: str, count: int) -> list[str]:
    """``count`` committed images for ``uid``; returns their stems."""
    manager = _manager(backend, Clock(day_safe_now()))
    try:
        stems = []
        for n in range(count):
            res = await manager.reserve(uid)
            await manager.save_image(res, scenarios.noise_png(48, seed=f"{uid}-{n}"))
            stems.append(res.key_stem)
        return stems
    finally:
        await manager.aclose()


async def _archived(backend: StorageBackend, uid: str, clock: Clock) -> list[str]:
    """One image for ``uid``, archived; returns its archived key."""
    await _images(backend, uid, 1)
    manager = _manager(backend, clock)
    try:
        await manager.archive_old()
        return [a.key for a in await manager.list_archived(uid)]
    finally:
        await manager.aclose()


def _where(backend: StorageBackend, uid: str, stem: str) -> tuple[bool, bool]:
    """(active, archived): whether the image of ``stem`` is in ``images/`` and in ``archive/``."""
    name = stem.rsplit("/", 1)[1] + "."
    active = any(o.key.rsplit("/", 1)[1].startswith(name) for o in backend.list_objects(keys.user_prefix(uid)))
    archived = any(o.key.rsplit("/", 1)[1].startswith(name) for o in backend.list_objects(keys.archive_prefix(uid)))
    return active, archived


# -- what comes next: a member's move, or the maintenance ------------------------------------
# Each returns what the member was told per stem: "restored" or "deleted".


async def _restore_all(manager: StorageManager, uid: str, stems: list[str]) -> dict[str, str]:
    """The member restores every image their archive shows."""
    told: dict[str, str] = {}
    for image in await manager.list_archived(uid):
        try:
            await manager.restore_archived(uid, image.name)
        except (ImageNotFound, InvalidInput):  # gone meanwhile, or a restore's hold is still live
            continue
        told[keys.restored_stem(image.key)] = "restored"
    return told


async def _delete_first(manager: StorageManager, uid: str, stems: list[str]) -> dict[str, str]:
    """The member deletes the first image where they see it, the archive before the gallery.

    An archive may still list a copy a restore deleted (it stopped before dropping the
    entry): that delete answers ImageNotFound and drops the entry; the image is in the gallery.
    """
    for image in await manager.list_archived(uid):
        if keys.restored_stem(image.key) == stems[0]:
            try:
                await manager.delete_archived(uid, image.name)
            except ImageNotFound:
                return {}
            return {stems[0]: "deleted"}
    for stored in await manager.list_images(uid):
        if stored.key.rsplit(".", 1)[0] == stems[0]:
            await manager.delete_image(uid, stored.name)
            return {stems[0]: "deleted"}
    return {}


async def _maintenance(
    run: Callable[[StorageManager], Awaitable[object]], manager: StorageManager, uid: str, stems: list[str]
) -> dict[str, str]:
    await run(manager)
    return {}


FOLLOW_UPS: dict[str, Callable[[StorageManager, str, list[str]], Awaitable[dict[str, str]]]] = {
    "restore": _restore_all,
    "delete": _delete_first,
    "archive": partial(_maintenance, lambda m: m.archive_old()),
    "cleanup": partial(_maintenance, lambda m: m.cleanup_old_files()),
    "reconcile": partial(_maintenance, lambda m: m.reconcile()),
}
MOVES_IMAGES = {"archive", "cleanup"}  # a follow-up that archives every image old enough


async def _follow_up(
    backend: StorageBackend, name: str, uid: str, stems: list[str], clock: Clock
) -> tuple[list[str], dict[str, str]]:
    """Run follow-up ``name`` on the interrupted state; what is wrong right after, and what it told."""
    manager = _manager(backend, clock)
    try:
        told = await FOLLOW_UPS[name](manager, uid, stems)
    except AbbyError as exc:
        return [f"{name}: {type(exc).__name__}: {exc}"], {}
    finally:
        await manager.aclose()
    wrong = []
    for stem in stems:
        active, archived = _where(backend, uid, stem)
        if told.get(stem) == "restored" and not active:
            wrong.append(f"after {name}: {stem} reported restored but is not in the gallery")
        if told.get(stem) != "deleted" and not (active or archived):
            wrong.append(f"after {name}: LOST: {stem} is in neither state")
    return wrong, told


async def _settled(
    backend: StorageBackend, uid: str, stems: list[str], clock: Clock, deleted: set[str]
) -> tuple[list[str], dict[str, str]]:
    """Another process's reconcile past the holds' lifetime; then every check.

    Returns what is wrong and where each image ended (``active``, ``archived`` or, deleted
    by the member, ``gone``).
    """
    wrong: list[str] = []
    # Past the holds' lifetime and the purge margin, with room for the real seconds a child
    # process took (its clock runs, this test's is moved by hand).
    clock.advance(seconds=TTL + PURGE_MARGIN.total_seconds() + 60)
    other = _manager(backend, clock)
    try:
        await other.reconcile()
        user = other.accounts.user(uid)
        raw = backend.read_doc(keys.archive_ledger_key(uid))
        archive = ArchiveLedger.model_validate_json(raw[0]) if raw else ArchiveLedger(user_id=uid)
        listed = {o.key: o.size for o in backend.list_objects(keys.user_prefix(uid))}
        copies = {o.key: o.size for o in backend.list_objects(keys.archive_prefix(uid))}
        ended: dict[str, str] = {}
        for stem in stems:
            active, archived = _where(backend, uid, stem)
            if active and archived:
                wrong.append(f"{stem}: in both states")
            elif not (active or archived) and stem not in deleted:
                wrong.append(f"{stem}: LOST: in neither state")
            ended[stem] = "active" if active else "archived" if archived else "gone"
        if {k: e.size for k, e in user.objects.items()} != listed:
            wrong.append(f"quota document {sorted(user.objects)} is not the images {sorted(listed)}")
        if user.holds:
            wrong.append(f"holds left: {user.holds}")
        if {k: e.size for k, e in archive.entries.items()} != copies:
            wrong.append(f"archive document {sorted(archive.entries)} is not the copies {sorted(copies)}")
        status = await other.get_quota_status(uid)
        if status.daily_used != 0:
            wrong.append(f"archive or restore used a generation: {status.daily_used}")
        snap = counted_snapshot(other.accounts, uid)
        if (snap.bytes if snap else 0) != sum(listed.values()):
            wrong.append(f"global snapshot {snap} is not the {sum(listed.values())} bytes stored")
        return wrong, ended
    finally:
        await other.aclose()


def _expected(mode: str, follow: str, reported: object, told: dict[str, str], ended: dict[str, str]) -> list[str]:
    """What the interrupted run and the follow-up promised about where each image ends."""
    wrong = []
    for stem, where in ended.items():
        if told.get(stem) == "restored" and where != "active":
            wrong.append(f"{stem} reported restored but ended {where}")
        if mode == "archive" and follow in MOVES_IMAGES and told.get(stem) != "deleted" and where != "archived":
            wrong.append(f"{stem} not archived by the next run: it ended {where}")
    if mode == "restore" and follow == "reconcile":  # nothing moved it since: as the restore reported
        [where] = ended.values()
        if describe(reported) == "success" and where != "active":
            wrong.append("restore reported success but the image is still archived")
        if describe(reported) not in ("success", "CancelledError", "nothing (killed)") and where != "archived":
            wrong.append(f"restore reported {describe(reported)} but the image is back in the gallery")
    return wrong


async def _what_comes_next(
    backend: StorageBackend, mode: str, reported: object, uid: str, stems: list[str], clock: Clock
) -> dict[str, list[str]]:
    """Every follow-up on its own copy of the interrupted state (filesystem), or on SeaweedFS
    the one the daily maintenance runs; what is wrong after each, by follow-up."""
    right_after = [f"right after: LOST: {s} in neither state" for s in stems if not any(_where(backend, uid, s))]
    if isinstance(backend, FilesystemBackend):
        states: dict[str, StorageBackend] = {}
        for follow in FOLLOW_UPS:
            root = backend.root.with_name(f"{backend.root.name}-{follow}")
            shutil.copytree(backend.root, root)  # copy2: the images' times are kept
            states[follow] = FilesystemBackend(root)
    else:
        states = {"archive" if mode == "archive" else "reconcile": backend}
    failures: dict[str, list[str]] = {}
    for follow, state in states.items():
        own = Clock(clock())
        wrong, told = await _follow_up(state, follow, uid, stems, own)
        deleted = {s for s, what in told.items() if what == "deleted"}
        more, ended = await _settled(state, uid, stems, own, deleted)
        wrong = right_after + wrong + more + _expected(mode, follow, reported, told, ended)
        if wrong:
            failures[follow] = wrong
    return failures


def _fresh(backend: StorageBackend, tmp_path: Path, at: int) -> StorageBackend:
    """The backend for the run interrupted at call ``at``: its own folder on the filesystem."""
    if not isinstance(backend, FilesystemBackend):
        return backend  # one bucket, a member per run
    made = FilesystemBackend(tmp_path / f"at-{at}")
    made.ensure_ready(cleanup_days=7)
    return made


async def _interrupt(crash: CrashPoints, run: Callable[[StorageManager], Awaitable[object]], clock: Clock) -> object:
    manager = _manager(crash, clock)
    reported = await interrupted(crash, partial(run, manager))
    await manager.aclose()
    return reported


async def _calls(
    backend: StorageBackend, run: Callable[[StorageManager], Awaitable[object]], clock: Clock
) -> list[str]:
    probe = CrashPoints(backend)
    manager = _manager(probe, clock)
    try:
        await run(manager)
    finally:
        await manager.aclose()
    return probe.calls


@pytest.mark.parametrize(("backend_name", "action"), CASES)
async def test_archive_interrupted_at_every_call(backend: StorageBackend, action: str, tmp_path: Path) -> None:
    clock = Clock(datetime.now(UTC) + AGE)
    await _images(backend, scenarios.user(5999), 2)
    calls = await _calls(backend, lambda m: m.archive_old(), clock)
    assert len(calls) >= 12, calls  # list, read, put, record, delete... for two images
    failures: dict[str, dict[str, list[str]]] = {}
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(6000 + at)
        state = _fresh(backend, tmp_path, at)
        stems = await _images(state, uid, 2)
        clock = Clock(datetime.now(UTC) + AGE)
        reported = await _interrupt(CrashPoints(state, at=at, action=action), lambda m: m.archive_old(), clock)
        wrong = await _what_comes_next(state, "archive", reported, uid, stems, clock)
        if wrong:
            failures[f"call {at} ({calls[at - 1]}), reported {describe(reported)}"] = wrong
    assert failures == {}


@pytest.mark.parametrize(("backend_name", "action"), CASES)
async def test_restore_interrupted_at_every_call(backend: StorageBackend, action: str, tmp_path: Path) -> None:
    clock = Clock(datetime.now(UTC) + AGE)
    [probe_key] = await _archived(backend, scenarios.user(4999), clock)
    clock.advance(seconds=30)
    calls = await _calls(backend, lambda m: m.restore_archived(scenarios.user(4999), probe_key), clock)
    assert len(calls) >= 10, calls  # reads, hold, global hold, put, commit, delete copy, entry
    failures: dict[str, dict[str, list[str]]] = {}
    outcomes: set[str] = set()
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(5000 + at)
        state = _fresh(backend, tmp_path, at)
        clock = Clock(datetime.now(UTC) + AGE)
        [key] = await _archived(state, uid, clock)
        clock.advance(seconds=30)
        crash = CrashPoints(state, at=at, action=action)
        reported = await _interrupt(crash, lambda m, u=uid, k=key: m.restore_archived(u, k), clock)
        outcomes.add(describe(reported))
        wrong = await _what_comes_next(state, "restore", reported, uid, [keys.restored_stem(key)], clock)
        if wrong:
            failures[f"call {at} ({calls[at - 1]}), reported {describe(reported)}"] = wrong
    assert failures == {}
    if action == "raise":
        assert outcomes >= {"success", "StorageUnavailable"}, outcomes  # both sides of the commit


def _spawn(config: dict[str, Any]) -> Any:
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.archive_worker", json.dumps(config)],
        cwd=scenarios.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["filesystem"])
@pytest.mark.parametrize("mode", ["archive", "restore"])
async def test_archive_and_restore_killed_at_every_call(
    backend: StorageBackend, config: dict[str, Any], mode: str, tmp_path: Path
) -> None:
    """Killed (SIGKILL) at every call, in a child process; the follow-ups as above."""
    clock = Clock(datetime.now(UTC) + AGE)
    probe_user = scenarios.user(3999 if mode == "archive" else 2999)
    if mode == "archive":
        await _images(backend, probe_user, 2)
        calls = await _calls(backend, lambda m: m.archive_old(), clock)
    else:
        [probe_key] = await _archived(backend, probe_user, clock)
        calls = await _calls(backend, lambda m: m.restore_archived(probe_user, probe_key), clock)
    failures: dict[str, dict[str, list[str]]] = {}
    killed = 0
    for at in range(1, len(calls) + 1):
        uid = scenarios.user((4000 if mode == "archive" else 3000) + at)
        state = _fresh(backend, tmp_path, at)
        clock = Clock(datetime.now(UTC) + AGE)
        if mode == "archive":
            stems = await _images(state, uid, 2)
            key = ""
        else:
            [key] = await _archived(state, uid, clock)
            stems = [keys.restored_stem(key)]
            clock.advance(seconds=30)  # the child's clock too (offset below)
        child = dict(
            config,
            root=str(state.root),
            mode=mode,
            user=uid,
            key=key,
            at=at,  # type: ignore[attr-defined]
            offset=AGE.total_seconds() + 30,
        )
        reported = await crash_child(_spawn(child))
        killed += reported is None
        wrong = await _what_comes_next(state, mode, reported, uid, stems, clock)
        if wrong:
            failures[f"killed at call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    assert killed >= len(calls) // 2, (killed, len(calls))
