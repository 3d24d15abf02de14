"""Interrupt one generation at every storage call in turn, and check what was reported is what is charged.

A :class:`CrashPoints` backend wraps a real one and numbers every call (``put_object``,
``read_doc``, ``write_doc``...). At call ``at`` it does one thing:

* ``raise``: the call fails before it reaches storage (connection refused, disk full);
* ``lose``: the call reaches storage and lands, then its answer is lost (a timeout);
* ``cancel``: the task running the generation is cancelled while the call runs;
* ``kill``: the process dies (SIGKILL) just before the call (a child process, see worker.py).

The invariant, checked by :func:`verdict` after each run:

* reported success: the image is stored, counted once, in the gallery, in the global total;
* reported failure or interruption: no count, no bytes, no image, no live hold, once the
  same process has made its next call (it retries what storage refused), and nothing at
  all once the holds' lifetime has passed and another process has touched the member;
* nothing reported (killed) or "outcome unknown": all or nothing, never half.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import pytest

from abby_core.errors import SaveOutcomeUnknown, StorageUnavailable
from abby_core.storage import StorageBackend, StorageManager
from abby_core.storage.accounts import Accounts
from abby_core.storage.documents import Snapshot
from abby_core.storage.keys import shard_of, user_prefix
from abby_core.storage.models import ObjectInfo, ReadyReport
from abby_core.storage.rules import PURGE_MARGIN
from abby_core.storage.usage_rules import global_usage, recorded_shard, shard_snapshot

__all__ = ["ACTIONS", "CrashPoints", "crash_child", "credit_verdict", "verdict"]

ACTIONS = ("raise", "lose", "cancel")
TTL = 60


class CrashPoints(StorageBackend):
    """A backend that passes every call through and interrupts call number ``at``."""

    def __init__(self, inner: StorageBackend, *, at: int = 0, action: str = "raise") -> None:
        self.inner = inner
        self.name = inner.name
        self.at = at
        self.action = action
        self.calls: list[str] = []
        self.on_cancel: Callable[[], None] | None = None
        self.write_errors_are_definite = inner.write_errors_are_definite and action != "lose"

    @property
    def location(self) -> str:
        return self.inner.location

    def _step(self, name: str, call: Callable[[], Any]) -> Any:
        self.calls.append(name)
        if len(self.calls) != self.at:
            return call()
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "raise":
            raise StorageUnavailable(f"Could not reach storage at {name} (crash point).")
        if self.action == "cancel":
            assert self.on_cancel is not None
            self.on_cancel()
            return call()
        call()  # "lose": it lands, then the answer is lost
        raise StorageUnavailable(f"No answer from storage at {name} (crash point).")

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        self._step("put_object", lambda: self.inner.put_object(key, data, content_type))

    def get_object(self, key: str) -> bytes:
        return bytes(self._step("get_object", lambda: self.inner.get_object(key)))

    def head_object(self, key: str) -> ObjectInfo | None:
        found: ObjectInfo | None = self._step("head_object", lambda: self.inner.head_object(key))
        return found

    def delete_objects(self, keys: Sequence[str]) -> None:
        self._step("delete_objects", lambda: self.inner.delete_objects(keys))

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        return iter(self._step("list_objects", lambda: list(self.inner.list_objects(prefix))))

    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        found: tuple[bytes, str] | None = self._step("read_doc", lambda: self.inner.read_doc(key))
        return found

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        return str(self._step("write_doc", lambda: self.inner.write_doc(key, body, etag=etag)))

    def delete_doc(self, key: str) -> None:
        self._step("delete_doc", lambda: self.inner.delete_doc(key))

    def link(self, key: str, *, content_type: str, ttl: int) -> tuple[str | None, str | None]:
        return self.inner.link(key, content_type=content_type, ttl=ttl)

    def ensure_ready(self, *, cleanup_days: int, create: bool = True) -> ReadyReport:
        return self.inner.ensure_ready(cleanup_days=cleanup_days, create=create)

    def sweep_partial_writes(self, older_than: datetime) -> int:
        return self.inner.sweep_partial_writes(older_than)


#: (backend, action) pairs of an in-process crash-point test over ``make_backend``: every mode on
#: the filesystem, and on SeaweedFS the lost answer (the mode only S3 has).
IN_PROCESS_MODES = [
    ("filesystem", "raise"),
    ("filesystem", "lose"),
    ("filesystem", "cancel"),
    pytest.param("seaweedfs", "lose", marks=pytest.mark.seaweedfs),
]


async def interrupted(crash: CrashPoints, run: Callable[[], Awaitable[object]]) -> object:
    """Run ``run`` (storage calls through ``crash``) as a task, so a cancel crash point can cancel
    it; returns what it returned or raised. Storage answers normally afterwards."""
    task = asyncio.ensure_future(run())
    crash.on_cancel = partial(asyncio.get_running_loop().call_soon_threadsafe, task.cancel)
    try:
        reported: object = await task
    except BaseException as exc:
        reported = exc
    crash.at = 0
    return reported


def counted_snapshot(accounts: Accounts, uid: str) -> Snapshot | None:
    """``uid``'s snapshot as the global document counts it: the one in their shard document,
    if the global document has that shard as it is stored (``None`` otherwise, or if none)."""
    shard = accounts.shard(shard_of(uid))
    recorded = recorded_shard(accounts.global_doc(), shard.shard) == shard_snapshot(shard)
    return shard.users.get(uid) if recorded else None


async def _state(backend: StorageBackend, manager: StorageManager, uid: str) -> dict[str, Any]:
    status = await manager.get_quota_status(uid)
    snap = await asyncio.to_thread(counted_snapshot, manager.accounts, uid)
    return {
        "images": {o.key: o.size for o in backend.list_objects(user_prefix(uid))},
        "gallery": len(await manager.list_images(uid)),
        "daily_used": status.daily_used,
        "user_bytes": status.user_bytes,
        "global_bytes": snap.bytes + sum(h.bytes for h in snap.holds.values()) if snap else 0,
        "in_flight": status.in_flight,
    }


async def crash_child(proc: subprocess.Popen[str]) -> object:
    """Wait for a child process set to die at a storage call (a worker's ``crash`` mode).

    What it reported: ``None`` when it was killed, ``"success"``, or the error as a RuntimeError.
    """
    out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    if proc.returncode == -signal.SIGKILL:
        return None
    assert proc.returncode == 0, err[-2000:]
    line = json.loads(out.strip().splitlines()[-1])
    return "success" if line["reported"] == "success" else RuntimeError(line["reported"])


async def _never_under_counted(backend: StorageBackend, clock: Any) -> list[str]:
    """At no moment is more stored than the global ledger counts (snapshots plus leases)."""
    glob = await asyncio.to_thread(Accounts(backend, clock).global_doc)
    stored = sum(o.size for o in backend.list_objects("images/"))
    if global_usage(glob) < stored:
        return [f"right after: the global ledger counts {global_usage(glob)} bytes, {stored} are stored"]
    return []


async def _settled_store(backend: StorageBackend, other: StorageManager, uid: str) -> list[str]:
    """Past the holds' lifetime: no hold left, and the whole store adds up (the global total is
    what is stored; no lease outlived its owner's use of it: given back, or taken back once dead)."""
    wrong: list[str] = []
    docs = backend.read_doc(f"ledger/users/{uid}.json")
    if docs is not None and b'"holds":{}' not in docs[0]:
        wrong.append("a hold is still in the user's ledger after its lifetime")
    glob = await asyncio.to_thread(other.accounts.global_doc)
    stored = sum(o.size for o in backend.list_objects("images/"))
    if glob.leases:
        wrong.append(f"leases of the global budget still held: {sorted(glob.leases)}")
    if global_usage(glob) != stored:
        wrong.append(f"global usage {global_usage(glob)} is not the {stored} bytes stored")
    return wrong


async def verdict(
    reported: object,
    backend: StorageBackend,
    uid: str,
    *,
    same: StorageManager | None,
    clock: Any,
) -> list[str]:
    """Everything wrong with the storage after one interrupted generation (empty: it held).

    ``reported`` is what the generation returned or raised (``None``: nothing, the process
    died). ``same`` is the manager that ran it (``None`` after a kill): it is asked first,
    then, past the holds' lifetime, a second manager on the same storage is.
    """
    wrong: list[str] = []
    success = reported is not None and not isinstance(reported, BaseException)
    unknown = reported is None or isinstance(reported, SaveOutcomeUnknown)

    started = clock().date()

    def judge(when: str, state: dict[str, Any], *, settled: bool) -> None:
        # Past midnight UTC the daily count has rightly started again.
        counted = 1 if clock().date() == started else 0
        charged = state["daily_used"] > 0 or state["user_bytes"] > 0 or bool(state["images"])
        whole = (
            state["daily_used"] == counted
            and len(state["images"]) == 1
            and state["user_bytes"] == sum(state["images"].values())
            and state["gallery"] == 1
            and state["in_flight"] == 0
        )
        kept = success or (unknown and charged and settled)
        if kept and not whole:
            wrong.append(f"{when}: reported {describe(reported)} but not charged exactly once: {state}")
        if not kept and (not unknown or settled) and (charged or state["in_flight"]):
            wrong.append(f"{when}: reported {describe(reported)} but something is charged or held: {state}")
        if settled and state["global_bytes"] != state["user_bytes"]:
            wrong.append(f"{when}: global usage {state['global_bytes']} is not the stored {state['user_bytes']}")

    if same is not None:  # the same process, storage answering again
        judge("right after", await _state(backend, same, uid), settled=False)
    wrong += await _never_under_counted(backend, clock)
    clock.advance(seconds=TTL + PURGE_MARGIN.total_seconds() + 1)
    other = StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1)
    try:
        await other.reconcile()  # the daily maintenance, from another process
        state = await _state(backend, other, uid)
        judge("after the holds' lifetime", state, settled=True)
        wrong += await _settled_store(backend, other, uid)
    finally:
        await other.aclose()
    return wrong


def describe(result: object) -> str:
    if result is None:
        return "nothing (killed)"
    if isinstance(result, BaseException):
        return f"{type(result).__name__}"
    return "success"


# -- a generation paid with a credit ------------------------------------------------------------


async def _credit_state(backend: StorageBackend, manager: StorageManager, uid: str) -> dict[str, Any]:
    state = await _state(backend, manager, uid)  # first: the manager's retries run before any read
    status = await manager.get_quota_status(uid)
    doc = await asyncio.to_thread(manager.accounts.user, uid)
    record = await asyncio.to_thread(manager.accounts.member, uid)
    state.update(credits=status.credits, spent=doc.credits_spent, recorded=record.credits_spent)
    return state


async def credit_verdict(
    reported: object,
    backend: StorageBackend,
    uid: str,
    *,
    same: StorageManager | None,
    clock: Any,
    before: dict[str, int],
    credits: int,
) -> tuple[list[str], list[str], bool]:
    """:func:`verdict` for a generation paid with a credit, by a member who had used the day's
    allowance (one generation, whose image is ``before``) and held ``credits`` credits.

    Kept: one credit spent, one new image, stored, counted and in the gallery once. Not kept:
    no credit spent (none promised either), nothing new stored, counted or held. Returns what
    is wrong with that, what is wrong with the member record's copy of the credits spent
    (past the holds' lifetime it is never behind the user document, and a user document
    rebuilt from it has the same balance), and whether the generation was kept in the end.
    """
    wrong: list[str] = []
    record: list[str] = []
    success = reported is not None and not isinstance(reported, BaseException)
    unknown = reported is None or isinstance(reported, SaveOutcomeUnknown)
    started = clock().date()
    old = sum(before.values())

    def judge(when: str, state: dict[str, Any], *, settled: bool) -> bool:
        # Every image of ``before`` was made today; past midnight UTC the daily count has rightly restarted.
        used = len(before) if clock().date() == started else 0
        new = set(state["images"]) - set(before)
        charged = bool(new) or state["spent"] > 0 or state["user_bytes"] > old or state["daily_used"] > used
        kept = success or (unknown and charged and settled)
        nothing = (
            state["images"] == before
            and state["user_bytes"] == old
            and state["gallery"] == len(before)
            and state["daily_used"] == used
            and state["in_flight"] == 0
            and (state["credits"], state["spent"]) == (credits, 0)
        )
        whole = (
            len(new) == 1
            and set(before) <= set(state["images"])
            and len(state["images"]) == len(before) + 1
            and state["user_bytes"] == sum(state["images"].values())
            and state["gallery"] == len(before) + 1
            and state["daily_used"] == (used + 1 if used else 0)
            and state["in_flight"] == 0
            and (state["credits"], state["spent"]) == (credits - 1, 1)
        )
        if kept and not whole:
            wrong.append(f"{when}: reported {describe(reported)} but not one credit and one image: {state}")
        if not kept and (not unknown or settled) and not nothing:
            wrong.append(f"{when}: reported {describe(reported)} but a credit or an image is charged or held: {state}")
        if settled and state["global_bytes"] != state["user_bytes"]:
            wrong.append(f"{when}: global usage {state['global_bytes']} is not the stored {state['user_bytes']}")
        return kept

    if same is not None:  # the same process, storage answering again
        judge("right after", await _credit_state(backend, same, uid), settled=False)
    wrong += await _never_under_counted(backend, clock)
    clock.advance(seconds=TTL + PURGE_MARGIN.total_seconds() + 1)
    other = StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1)
    try:
        await other.reconcile()  # the daily maintenance, from another process
        state = await _credit_state(backend, other, uid)
        kept = judge("after the holds' lifetime", state, settled=True)
        wrong += await _settled_store(backend, other, uid)
        # What a rebuild of a lost user document starts from: behind, a rebuild gives a spent
        # credit back; ahead, it takes an unspent one from the member.
        if state["recorded"] != state["spent"]:
            side = "behind" if state["recorded"] < state["spent"] else "ahead of"
            record.append(
                f"the member record's credits spent ({state['recorded']}) is {side} the user document's "
                f"({state['spent']})"
            )
        backend.delete_doc(f"ledger/users/{uid}.json")
        other.ledger.forget()
        rebuilt = await _credit_state(backend, other, uid)
        if (rebuilt["credits"], rebuilt["daily_used"], rebuilt["user_bytes"]) != (
            state["credits"],
            state["daily_used"],
            state["user_bytes"],
        ):
            record.append(f"the rebuilt user document differs: {rebuilt} instead of {state}")
    finally:
        await other.aclose()
    return wrong, record, kept
