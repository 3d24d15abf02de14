"""The usage rules: how member documents add up to shard and global usage, and the global
limit over them. Pure functions, pinned by table tests like the quota rules.

A member's snapshot (their committed bytes and holds, with the version of their document)
is recorded in their shard document; a shard's snapshot in the global document, beside the
processes' leases of the budget (escrow). At both levels an older snapshot never replaces a
newer one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from abby_core.errors import GlobalStorageFull
from abby_core.storage.documents import (
    GlobalLedger,
    ShardHold,
    ShardLedger,
    ShardSnapshot,
    Snapshot,
    SnapshotHold,
    UserLedger,
)
from abby_core.storage.rules import PURGE_MARGIN, user_bytes

__all__ = [
    "apply_shard",
    "apply_snapshot",
    "dead_leases",
    "global_hold",
    "global_usage",
    "lease_slice",
    "recorded_shard",
    "shard_snapshot",
    "snapshot",
    "snapshot_usage",
    "stale_holders",
]


def snapshot(doc: UserLedger, now: datetime) -> Snapshot:
    """What the global ledger keeps of a user document: committed bytes and the holds not yet dropped.

    A hold that expired (or was voided) can no longer commit, but the image its generation
    uploaded may still be in storage until the hold is dropped (uploads first; an expired hold
    ``PURGE_MARGIN`` after its expiry), so it counts until then: stored bytes never exceed
    what the global ledger counts.
    """
    holds = {
        rid: SnapshotHold(bytes=h.bytes, expires=h.expires)
        for rid, h in doc.holds.items()
        if h.expires + PURGE_MARGIN > now
    }
    return Snapshot(version=doc.version, bytes=user_bytes(doc), holds=holds)


def shard_snapshot(doc: ShardLedger) -> ShardSnapshot:
    """What the global ledger keeps of a shard document: its members' bytes and holds, in sum."""
    return ShardSnapshot(
        version=doc.version,
        bytes=sum(s.bytes for s in doc.users.values()),
        members=sum(1 for s in doc.users.values() if s.bytes > 0),
        holds={
            rid: ShardHold(shard=doc.shard, user=uid, bytes=h.bytes, expires=h.expires)
            for uid, s in doc.users.items()
            for rid, h in s.holds.items()
        },
    )


def recorded_shard(doc: GlobalLedger, shard: str) -> ShardSnapshot | None:
    """The snapshot of ``shard`` the global document records (``None``: none yet)."""
    totals = doc.shards.get(shard)
    if totals is None:
        return None
    holds = {rid: h for rid, h in doc.holds.items() if h.shard == shard}
    return ShardSnapshot(version=totals[0], bytes=totals[1], members=totals[2], holds=holds)


def snapshot_usage(doc: GlobalLedger) -> int:
    """Committed bytes plus every hold a snapshot still has (expired or not: only the user
    document drops a hold, so a hold counted here may still commit)."""
    shards = sum(t[1] for t in doc.shards.values()) + sum(h.bytes for h in doc.holds.values())
    # A document of the layout before shards, not moved yet (``GlobalLedger.users``).
    legacy = sum(s.bytes + sum(h.bytes for h in s.holds.values()) for s in doc.users.values())
    return shards + legacy


def global_usage(doc: GlobalLedger) -> int:
    """What the global limit is checked against: the snapshots, plus every lease of the
    budget (whatever a process admitted from its lease is in a snapshot or in its lease)."""
    return snapshot_usage(doc) + sum(lease.bytes for lease in doc.leases.values())


def lease_slice(doc: GlobalLedger, *, lease_id: str, covered: int, need: int, want: int, limit: int) -> int | None:
    """How many free bytes lease ``lease_id`` gets on top of ``covered`` (admitted, still in flight).

    At least ``need`` (``None`` when even that does not fit), at most ``want``, and never more
    than a fair share of what is left: the rest divided among the other leases, this one
    and one newcomer, so slices shrink as the budget runs out.
    """
    others = [lease for lid, lease in doc.leases.items() if lid != lease_id]
    available = limit - snapshot_usage(doc) - sum(lease.bytes for lease in others) - covered
    if available < need:
        return None
    share = available // (len(others) + 2)
    return min(available, max(need, min(want, share)))


def dead_leases(doc: GlobalLedger, now: datetime, margin: timedelta) -> list[str]:
    """Leases whose owner stopped renewing them: past their expiry plus ``margin``."""
    return [lid for lid, lease in doc.leases.items() if lease.expires + margin <= now]


def stale_holders(doc: GlobalLedger, deadline: datetime) -> list[str]:
    """Members with a hold that expired before ``deadline``: their documents drop it, their
    snapshots then stop counting it."""
    found = {h.user for h in doc.holds.values() if h.expires <= deadline}
    found.update(uid for uid, s in doc.users.items() if any(h.expires <= deadline for h in s.holds.values()))
    return sorted(found)


def apply_snapshot(doc: ShardLedger, user_id: str, snap: Snapshot) -> None:
    """Record a user document's snapshot; an older version never replaces a newer one."""
    current = doc.users.get(user_id)
    if current is None or current.version < snap.version:
        doc.users[user_id] = snap


def apply_shard(doc: GlobalLedger, shard: str, snap: ShardSnapshot) -> None:
    """Record a shard document's snapshot; an older version never replaces a newer one."""
    current = doc.shards.get(shard)
    if current is None or current[0] < snap.version:
        doc.shards[shard] = (snap.version, snap.bytes, snap.members)
        holds = {rid: h for rid, h in doc.holds.items() if h.shard != shard}
        doc.holds = holds | snap.holds


def global_hold(doc: GlobalLedger, *, shard: str, snap: ShardSnapshot, rid: str, limit: int) -> None:
    """Record the shard snapshot that holds ``rid``, refusing it if the global limit would be passed."""
    apply_shard(doc, shard, snap)
    used = global_usage(doc)
    if rid in doc.holds and used > limit:
        mine = doc.holds[rid].bytes
        raise GlobalStorageFull(used=used - mine, limit=limit)
