"""The ledger at scale: what a generation writes does not grow with the community, and a store
of the layout before shards is upgraded in place, crash-safely.

Sizes, never times: the benchmark (``bench/bench_ledger_scale.py``) measures the cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest

from abby_core.storage import (
    FilesystemBackend,
    StorageBackend,
    StorageManager,
    catalogue_rules,
    keys,
    rules,
    usage_rules,
)
from abby_core.storage.documents import Entry, GlobalLedger, ShardLedger, Snapshot, UserLedger
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability import scenarios
from tests.reliability.crashpoints import IN_PROCESS_MODES, TTL, CrashPoints, describe, interrupted, verdict
from tests.storage.test_manager import png

MEMBERS = 10_000
# The bounds docs/STORAGE_SYSTEM.md states ("Ledger at scale"), with room for the holds in flight.
SNAPSHOT_BYTES = 80  # a member's snapshot in a shard: id, version, bytes
SHARD_SNAPSHOT_BYTES = 30  # a shard's totals in the global document: [version, bytes, members]
HOLD_BYTES = 130  # a hold in flight, in either document


def _crowd(manager: StorageManager, members: int) -> None:
    """``members`` members with images, recorded in their shards and the global document as
    generations would leave them (written in bulk: one write a shard)."""
    by_shard: dict[str, dict[str, Snapshot]] = {}
    for n in range(members):
        uid = keys.check_user_id(f"{900_000_000_000 + n}")
        by_shard.setdefault(keys.shard_of(uid), {})[uid] = Snapshot(version=3, bytes=1_000 + n)
    shards = manager.accounts.publish(by_shard)
    manager.accounts.update_global(lambda g: None, shards=shards)


class Sizes(CrashPoints):
    """Passes every call through and remembers the size of each document written, by kind."""

    def __init__(self, inner: StorageBackend) -> None:
        super().__init__(inner)
        self.written: dict[str, int] = {}

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        kind = key.split("/")[1]
        self.written[kind] = max(self.written.get(kind, 0), len(body))
        return super().write_doc(key, body, etag=etag)


@pytest.mark.parametrize("escrow", [False, True], ids=["global-writes", "escrow"])
async def test_what_a_generation_writes_does_not_grow_with_the_members(
    tmp_path: Path, clock: Clock, escrow: bool
) -> None:
    # Sizes are the same on every backend; the filesystem shows them fastest.
    sizes = Sizes(FilesystemBackend(tmp_path / "root"))
    manager = StorageManager(sizes, clock=clock, escrow=escrow)
    try:
        await asyncio.to_thread(_crowd, manager, MEMBERS)
        assert len(manager.accounts.global_doc().shards) == keys.SHARDS  # every shard has members
        sizes.written.clear()
        newcomer = "123456789012345678"
        await manager.save_image(await manager.reserve(newcomer), png())
        await manager.stats()  # with escrow, the settle that records the generation
    finally:
        await manager.aclose()
    per_shard = MEMBERS // keys.SHARDS + 1
    in_flight = 2 * HOLD_BYTES
    assert sizes.written["global.json"] <= keys.SHARDS * SHARD_SNAPSHOT_BYTES + in_flight + 400, sizes.written
    assert sizes.written["shards"] <= 2 * per_shard * SNAPSHOT_BYTES + in_flight, sizes.written
    assert sizes.written["users"] <= 1500, sizes.written  # the newcomer's own document
    # The member's usage is where the global document says, and the whole crowd is counted.
    glob = manager.accounts.global_doc()
    crowd = sum(1_000 + n for n in range(MEMBERS))
    assert usage_rules.global_usage(glob) == crowd + len(png())
    assert sum(members for _, _, members in glob.shards.values()) == MEMBERS + 1


def _to_the_layout_before_shards(backend: StorageBackend) -> GlobalLedger:
    """Rewrite the usage documents as the version before shards wrote them: one global
    document with a snapshot of every member, no shard documents."""
    found = backend.read_doc(keys.GLOBAL_LEDGER_KEY)
    assert found is not None
    glob = GlobalLedger.model_validate_json(found[0])
    users: dict[str, object] = {}
    for info in list(backend.list_objects(keys.SHARDS_LEDGER_PREFIX)):
        read = backend.read_doc(info.key)
        assert read is not None
        shard = ShardLedger.model_validate_json(read[0])
        users.update({uid: snap.model_dump(mode="json") for uid, snap in shard.users.items()})
        backend.delete_doc(info.key)
    leases = {lid: lease.model_dump(mode="json") for lid, lease in glob.leases.items()}
    body = json.dumps({"schema": 2, "version": glob.version + 1, "users": users, "leases": leases})
    backend.write_doc(keys.GLOBAL_LEDGER_KEY, body.encode(), etag=found[1])
    legacy = GlobalLedger.model_validate_json(body)
    assert legacy.users and not legacy.shards
    return legacy


async def _legacy_store(backend: StorageBackend, clock: Clock) -> int:
    """Two members with images, in the layout before shards; returns the bytes stored."""
    manager = StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock)
    try:
        stored = 0
        for n, uid in enumerate(["700000000000000001", "700000000000000002"]):
            stored += (await manager.save_image(await manager.reserve(uid), png(color=(n, 1, 2)))).size
    finally:
        await manager.aclose()
    await asyncio.to_thread(_to_the_layout_before_shards, backend)
    return stored


async def test_a_store_of_the_layout_before_shards_is_read_and_upgraded(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    backend = make_backend()
    stored = await _legacy_store(backend, clock)
    manager = StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock)
    try:
        status = await manager.get_quota_status("700000000000000001")  # read as it is
        assert status.global_bytes == stored
        stats = await manager.stats()  # the top members, from the old layout
        assert (stats.users, stats.global_bytes) == (2, stored)
        image = await manager.save_image(await manager.reserve("700000000000000003"), png())
        glob = manager.accounts.global_doc()
        assert not glob.users, "the first global write moves the members into their shards"
        assert usage_rules.global_usage(glob) == stored + image.size
        assert (await manager.stats()).users == 3
    finally:
        await manager.aclose()
    audit = scenarios.audit(backend)
    assert not audit.global_mismatch() and not audit.shards_behind, (audit.global_mismatch(), audit.shards_behind)


@pytest.mark.parametrize(("backend_kind", "action"), IN_PROCESS_MODES, indirect=["backend_kind"])
async def test_the_upgrade_interrupted_at_every_storage_call(
    make_backend: Callable[..., StorageBackend], action: str
) -> None:
    """The first generation on a store of the old layout moves it: interrupted at every call,
    what was reported is what is charged, and the store ends up moved and adding up."""
    probe = CrashPoints(make_backend())
    await _legacy_store(probe.inner, Clock(day_safe_now()))
    probe.calls.clear()
    clean = StorageManager(probe, reservation_ttl_seconds=TTL, clock=Clock(day_safe_now()), settle_seconds=1)
    try:
        provider = scenarios.FixedProvider([scenarios.noise_png(40)], delay=0)
        await scenarios.service_with(clean, provider).imagine("700000000000000009", "counting")
    finally:
        await clean.aclose()
    calls = list(probe.calls)
    assert calls.count("write_doc") >= 5, calls  # the shards, the global document, the member's
    failures: dict[str, list[str]] = {}
    outcomes: set[str] = set()
    for at in range(1, len(calls) + 1):
        backend = make_backend()
        clock = Clock(day_safe_now())
        await _legacy_store(backend, clock)
        crash = CrashPoints(backend, at=at, action=action)
        manager = StorageManager(crash, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1)
        uid = "700000000000000009"
        service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
        reported = await interrupted(crash, partial(service.imagine, uid, f"upgrade, crash at {at}"))
        outcomes.add(describe(reported))
        try:
            wrong = await verdict(reported, backend, uid, same=manager, clock=clock)
        finally:
            await manager.aclose()
        after = StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock)
        try:
            await after.save_image(await after.reserve("700000000000000001"), png(color=(9, 9, 9)))
            if after.accounts.global_doc().users:
                wrong.append("the next generation did not finish moving the members into their shards")
        finally:
            await after.aclose()
        audit = scenarios.audit(backend)
        if audit.global_mismatch() or audit.shards_behind:
            wrong.append(f"the store does not add up: {audit.global_mismatch()} {audit.shards_behind}")
        if wrong:
            failures[f"call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    if action == "cancel":  # every call is made (a fresh store each time), so every run is cancelled
        assert outcomes == {"CancelledError"}, outcomes
    else:  # the points reach both sides of the commit
        assert len(outcomes) >= 2, outcomes


async def test_what_a_generation_writes_does_not_grow_with_the_members_history(tmp_path: Path, clock: Clock) -> None:
    """A member with 5,000 images (a document of the layout before the catalogue): their first
    commit moves the older images into the catalogue; from then on a generation rewrites a
    document of the recent images and a line a month."""
    sizes = Sizes(FilesystemBackend(tmp_path / "root"))
    manager = StorageManager(sizes, clock=clock)
    uid = keys.check_user_id("123456789012345678")
    history = 5_000
    start = clock() - timedelta(days=history // 10)  # ten images a day, for 500 days

    def backlog(doc: UserLedger) -> None:
        for n in range(history):
            made = start + timedelta(hours=2.4 * n)
            doc.objects[f"{keys.user_prefix(uid)}{made:%Y%m%dT%H%M%SZ}-{n:08x}.png"] = Entry(size=1000, created=made)

    try:
        await asyncio.to_thread(manager.accounts.update_user, uid, backlog)
        await manager.save_image(await manager.reserve(uid), png())  # the first commit moves them
        doc = manager.accounts.user(uid)
        assert len(doc.objects) <= catalogue_rules.FOLD_AT, len(doc.objects)
        assert sum(s.count for s in doc.segments.values()) + len(doc.objects) == history + 1
        assert rules.user_bytes(doc) == history * 1000 + len(png())
        sizes.written.clear()
        await manager.save_image(await manager.reserve(uid), png(color=(1, 1, 1)))
    finally:
        await manager.aclose()
    months = len(doc.segments)
    bound = (catalogue_rules.FOLD_AT + 2) * 140 + months * 60 + 1000
    assert sizes.written["users"] <= bound, (sizes.written, bound)
    assert "catalogue" not in sizes.written  # a generation does not touch the catalogue between moves
