"""Archive and restore interrupted at every storage call in turn (raise, lost answer, cancel, kill),
on the filesystem and on a real S3 server: an image is never in neither state.

After each interrupted run: every image is active (``images/``) or archived (``archive/``), or
both. Then another process runs the daily maintenance (archive, reconcile) past the holds'
lifetime: every image is in exactly one state, recorded where it is (quota document or
archive document), and the quota, global and archive documents agree with storage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from abby_core.storage import StorageBackend, StorageManager, keys
from abby_core.storage.documents import ArchiveLedger
from abby_core.storage.rules import PURGE_MARGIN
from tests.reliability import scenarios
from tests.reliability.crashpoints import ACTIONS, TTL, CrashPoints, crash_child, describe
from tests.storage.conftest import Clock

AGE = timedelta(days=8)  # past STORAGE_CLEANUP_DAYS (7)


def _manager(backend: StorageBackend, clock: Clock) -> StorageManager:
    return StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1, archive=True)


async def _images(backend: StorageBackend, uid: str, count: int) -> list[str]:
    """``count`` committed images for ``uid``; returns their stems."""
    manager = _manager(backend, Clock(datetime.now(UTC)))
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


async def _settled(
    backend: StorageBackend, uid: str, stems: list[str], clock: Clock
) -> tuple[list[str], dict[str, str]]:
    """Another process's daily maintenance past the holds' lifetime; then every check.

    Returns what is wrong and where each image ended (``active`` or ``archived``).
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
            if active == archived:
                wrong.append(f"{stem}: {'in both states' if active else 'LOST: in neither state'}")
            ended[stem] = "active" if active else "archived"
        if {k: e.size for k, e in user.objects.items()} != listed:
            wrong.append(f"quota document {sorted(user.objects)} is not the images {sorted(listed)}")
        if user.holds:
            wrong.append(f"holds left: {user.holds}")
        if {k: e.size for k, e in archive.entries.items()} != copies:
            wrong.append(f"archive document {sorted(archive.entries)} is not the copies {sorted(copies)}")
        status = await other.get_quota_status(uid)
        if status.daily_used != 0:
            wrong.append(f"archive or restore used a generation: {status.daily_used}")
        snap = other.accounts.global_doc().users.get(uid)
        if (snap.bytes if snap else 0) != sum(listed.values()):
            wrong.append(f"global snapshot {snap} is not the {sum(listed.values())} bytes stored")
        return wrong, ended
    finally:
        await other.aclose()


async def _interrupt(
    crash: CrashPoints, run: Callable[[StorageManager], Awaitable[object]], clock: Clock
) -> tuple[object, StorageManager]:
    manager = _manager(crash, clock)
    task = asyncio.create_task(run(manager))
    crash.on_cancel = partial(asyncio.get_running_loop().call_soon_threadsafe, task.cancel)
    try:
        reported: object = await task
    except BaseException as exc:
        reported = exc
    crash.at = 0
    return reported, manager


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


@pytest.mark.parametrize("action", ACTIONS)
async def test_archive_interrupted_at_every_call(backend: StorageBackend, action: str) -> None:
    clock = Clock(datetime.now(UTC) + AGE)
    await _images(backend, scenarios.user(5999), 2)
    calls = await _calls(backend, lambda m: m.archive_old(), clock)
    assert len(calls) >= 12, calls  # list, read, put, record, delete... for two images
    failures: dict[str, list[str]] = {}
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(6000 + at)
        stems = await _images(backend, uid, 2)
        clock = Clock(datetime.now(UTC) + AGE)
        crash = CrashPoints(backend, at=at, action=action)
        reported, manager = await _interrupt(crash, lambda m: m.archive_old(), clock)
        await manager.aclose()
        wrong = [f"right after: {s} in neither state" for s in stems if _where(backend, uid, s) == (False, False)]
        # The next daily run archives what is left, then reconcile.
        again = _manager(backend, clock)
        try:
            await again.archive_old()
        finally:
            await again.aclose()
        more, ended = await _settled(backend, uid, stems, clock)
        wrong += more
        if set(ended.values()) != {"archived"}:
            wrong.append(f"not every image archived by the next run: {ended}")
        if wrong:
            failures[f"call {at} ({calls[at - 1]}), reported {describe(reported)}"] = wrong
    assert failures == {}


@pytest.mark.parametrize("action", ACTIONS)
async def test_restore_interrupted_at_every_call(backend: StorageBackend, action: str) -> None:
    clock = Clock(datetime.now(UTC) + AGE)
    [probe_key] = await _archived(backend, scenarios.user(4999), clock)
    clock.advance(seconds=30)
    calls = await _calls(backend, lambda m: m.restore_archived(scenarios.user(4999), probe_key), clock)
    assert len(calls) >= 10, calls  # reads, hold, global hold, put, commit, delete copy, entry
    failures: dict[str, list[str]] = {}
    outcomes: set[str] = set()
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(5000 + at)
        clock = Clock(datetime.now(UTC) + AGE)
        [key] = await _archived(backend, uid, clock)
        stem = keys.restored_stem(key)
        clock.advance(seconds=30)
        crash = CrashPoints(backend, at=at, action=action)
        reported, manager = await _interrupt(crash, lambda m, u=uid, k=key: m.restore_archived(u, k), clock)
        outcomes.add(describe(reported))
        wrong = [] if _where(backend, uid, stem) != (False, False) else ["right after: in neither state"]
        await manager.aclose()
        more, ended = await _settled(backend, uid, [stem], clock)
        wrong += more
        if describe(reported) == "success" and ended[stem] != "active":
            wrong.append("restore reported success but the image is still archived")
        if describe(reported) not in ("success", "CancelledError") and ended[stem] != "archived":
            wrong.append(f"restore reported {describe(reported)} but the image is back in the gallery")
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
        cwd=scenarios.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["archive", "restore"])
async def test_archive_and_restore_killed_at_every_call(
    backend: StorageBackend, config: dict[str, Any], mode: str
) -> None:
    clock = Clock(datetime.now(UTC) + AGE)
    probe_user = scenarios.user(3999 if mode == "archive" else 2999)
    if mode == "archive":
        await _images(backend, probe_user, 2)
        calls = await _calls(backend, lambda m: m.archive_old(), clock)
    else:
        [probe_key] = await _archived(backend, probe_user, clock)
        calls = await _calls(backend, lambda m: m.restore_archived(probe_user, probe_key), clock)
    failures: dict[str, list[str]] = {}
    killed = 0
    for at in range(1, len(calls) + 1):
        uid = scenarios.user((4000 if mode == "archive" else 3000) + at)
        clock = Clock(datetime.now(UTC) + AGE)
        if mode == "archive":
            stems = await _images(backend, uid, 2)
            key = ""
        else:
            [key] = await _archived(backend, uid, clock)
            stems = [keys.restored_stem(key)]
            clock.advance(seconds=30)  # the child's clock too (offset below)
        reported = await crash_child(
            _spawn(dict(config, mode=mode, user=uid, key=key, at=at, offset=AGE.total_seconds() + 30))
        )
        killed += reported is None
        wrong = [f"right after: {s} in neither state" for s in stems if _where(backend, uid, s) == (False, False)]
        if mode == "archive":
            again = _manager(backend, clock)
            try:
                await again.archive_old()
            finally:
                await again.aclose()
        more, ended = await _settled(backend, uid, stems, clock)
        wrong += more
        if mode == "archive" and set(ended.values()) != {"archived"}:
            wrong.append(f"not every image archived by the next run: {ended}")
        if mode == "restore" and reported == "success" and ended[stems[0]] != "active":
            wrong.append("restore reported success but the image is still archived")
        if wrong:
            failures[f"killed at call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    assert killed >= len(calls) // 2, (killed, len(calls))
