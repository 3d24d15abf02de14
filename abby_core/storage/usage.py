"""The usage books: how many bytes every member, every shard and the server hold.

:class:`Usage` keeps the documents that count storage across members (the user documents
themselves are :class:`~abby_core.storage.accounts.Accounts`'s, which builds on this class).
Every method is synchronous and runs on the manager's worker threads.

- Usage is counted in two levels: each member's snapshot in the document of their shard
  (``ledger/shards/{k}.json``, ``keys.SHARDS`` of them), each shard's snapshot in the global
  document (``ledger/global.json``), beside the processes' leases of the budget. A change
  reaches its shard first, then the global document; at both levels an older snapshot never
  replaces a newer one, so whoever applies a snapshot later includes every change that
  landed before it. Neither document grows with the number of members the way one list of
  every member would: a shard holds about members / ``SHARDS`` snapshots, the global
  document one per shard.
- Every global update first refreshes the snapshots of users whose holds expired, from
  their own documents (which also drops those holds), so a process that died between a
  commit and the global update costs nothing for longer than a hold's lifetime.
- A missing shard or global document is rebuilt from the user documents (and the images of
  users without one); an unreadable one is repaired the same way and logged. A shard the
  global document never recorded starts empty (no member of it was counted yet). Usage is
  never read as zero because a document is gone.
- A global document of the layout before shards (one snapshot per member) is moved into
  the shard documents by the first global update: shards first, then the global document
  in one write, so an interrupted move is finished by the next.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from pydantic import BaseModel

from abby_core.errors import InvalidUser, LedgerCorrupt, StorageUnavailable
from abby_core.storage import keys, liveness, rules, usage_rules
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.documents import GlobalLedger, Lease, ShardLedger, ShardSnapshot, Snapshot, UserLedger
from abby_core.storage.ledger import Ledger
from abby_core.storage.liveness import Sighting

__all__ = ["Usage"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")
D = TypeVar("D", bound=BaseModel)
# How many times one global update may stop to move snapshots of the layout before shards.
_MOVE_ROUNDS = 20
# How many users with expired holds one global update refreshes (the rest wait for the next).
_REFRESH_PER_UPDATE = 8
# How many shard documents one publish writes at once.
_PUBLISH_AT_ONCE = 16
_SHARD_NAMES = frozenset(f"{n:02x}" for n in range(keys.SHARDS))


class _Legacy(Exception):
    """The global document has member snapshots of the layout before shards to move first."""

    def __init__(self, doc: GlobalLedger) -> None:
        super().__init__(f"{len(doc.users)} member snapshot(s) to move into shards")
        self.doc = doc


def _version(lease: Lease) -> str:
    """What changes each time a lease's owner settles it (a new expiry)."""
    return f"{lease.expires.isoformat()}/{lease.bytes}"


def rebuilt_version(known: int) -> int:
    """The version of a rebuilt document: larger than any counter a live one reached, so the
    document above it accepts its snapshot (it keeps only newer versions)."""
    return max(known + 1, int(time.time() * 1000))


class Usage(ABC):
    """The shard and global documents in ``backend``, with repair, and the leases' liveness."""

    def __init__(
        self,
        backend: StorageBackend,
        clock: Callable[[], datetime],
        *,
        lease_margin: timedelta = rules.PURGE_MARGIN,
        lease_silence: timedelta | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.ledger = Ledger(backend)
        #: How long past its expiry (by this process's clock) a lease of the global budget is
        #: taken for dead: its owner's margin plus ``CLOCK_BOUND``, as the owner's clock wrote it.
        self.lease_margin = lease_margin
        #: How long a lease may stay unchanged, as this process saw it across its own global
        #: writes (its monotonic clock), before its owner is taken for dead whatever the
        #: clocks say: the owner's lifetime plus margin (``None``: only the expiry decides).
        self.lease_silence = lease_silence
        self.monotonic = monotonic
        self._lease_sightings: dict[str, Sighting] = {}
        #: This process's own leases (escrow registers its own): never judged by their silence.
        self.own_leases: set[str] = set()
        self._sightings_lock = threading.Lock()
        self.recovered_leases = 0  # dead leases dropped by this process, for tests and stats

    @abstractmethod
    def user(self, uid: keys.MemberId) -> UserLedger:
        """A fresh copy of ``uid``'s document."""

    @abstractmethod
    def update_user(self, uid: keys.MemberId, mutate: Callable[[UserLedger], _T]) -> tuple[_T, UserLedger]:
        """Change ``uid``'s document."""

    def _read_or_repair(self, key: str, model: type[D], build: Callable[[], D]) -> D:
        try:
            found = self.ledger.read(key, model)
        except LedgerCorrupt:
            self._repair(key, build)
            found = self.ledger.read(key, model)
        return found[0] if found else build()

    def _repair(self, key: str, build: Callable[[], BaseModel]) -> None:
        """Replace an unreadable document with one rebuilt from the objects."""
        log.error("Quota ledger document %s is corrupt: rebuilding it.", key)
        raw = self.backend.read_doc(key)
        body = build().model_dump_json(by_alias=True).encode()
        with contextlib.suppress(ConditionFailed):  # someone else repaired it first
            self.backend.write_doc(key, body, etag=raw[1] if raw else None)
        self.ledger.forget(key)

    def _update(self, key: str, model: type[D], mutate: Callable[[D], _T], build: Callable[[], D]) -> tuple[_T, D]:
        try:
            return self.ledger.update(key, model, mutate, create=build)
        except LedgerCorrupt:
            self._repair(key, build)
            return self.ledger.update(key, model, mutate, create=build)

    def users_with_documents(self) -> set[keys.MemberId]:
        users: set[keys.MemberId] = set()
        for obj in self.backend.list_objects(keys.USERS_LEDGER_PREFIX):
            try:
                users.add(keys.check_user_id(obj.key[len(keys.USERS_LEDGER_PREFIX) :].removesuffix(".json")))
            except InvalidUser:
                continue
        return users

    def global_doc(self) -> GlobalLedger:
        """A fresh copy of the global document (rebuilt, not stored, when it is missing)."""
        return self._read_or_repair(keys.GLOBAL_LEDGER_KEY, GlobalLedger, self.rebuild_global)

    def cached_global(self) -> GlobalLedger | None:
        return self.ledger.last_seen(keys.GLOBAL_LEDGER_KEY, GlobalLedger)

    def shard(self, shard: str) -> ShardLedger:
        """A fresh copy of a shard document (rebuilt, not stored, when it is missing)."""
        return self._read_or_repair(keys.shard_key(shard), ShardLedger, lambda: self._new_shard(shard))

    def shards(self) -> dict[str, ShardLedger]:
        """Every shard document there is."""
        found: dict[str, ShardLedger] = {}
        for obj in self.backend.list_objects(keys.SHARDS_LEDGER_PREFIX):
            shard = obj.key[len(keys.SHARDS_LEDGER_PREFIX) :].removesuffix(".json")
            if shard in _SHARD_NAMES:
                found[shard] = self.shard(shard)
        return found

    def known_version(self, uid: keys.MemberId) -> int:
        """The highest version of ``uid``'s document its shard (or a global document of the
        layout before shards) has a snapshot of."""
        known = 0
        with contextlib.suppress(LedgerCorrupt):
            found = self.ledger.read(keys.shard_key(keys.shard_of(uid)), ShardLedger)
            snap = found[0].users.get(uid) if found else None
            known = snap.version if snap else 0
        cached = self.cached_global()
        if cached is not None and not cached.users:
            return known  # moved into shards already, and a move is never undone: no need to read it
        with contextlib.suppress(LedgerCorrupt):
            legacy = self.ledger.read(keys.GLOBAL_LEDGER_KEY, GlobalLedger)
            snap = legacy[0].users.get(uid) if legacy else None
            known = max(known, snap.version if snap else 0)
        return known

    def _user_snapshots(self, shard: str | None = None) -> dict[keys.MemberId, Snapshot]:
        """A snapshot of every user document (of one ``shard``), and of the images of users
        without one: what a rebuild of the usage starts from (it reads everything)."""
        found: dict[keys.MemberId, Snapshot] = {}
        for obj in self.backend.list_objects(keys.USERS_PREFIX):
            owner = keys.user_from_key(obj.key)
            if owner is not None and (shard is None or keys.shard_of(owner) == shard):
                # Version 0: any snapshot of the member's document replaces it.
                total = found.get(owner, Snapshot(version=0, bytes=0)).bytes + obj.size
                found[owner] = Snapshot(version=0, bytes=total)
        for uid in sorted(self.users_with_documents()):
            if shard is not None and keys.shard_of(uid) != shard:
                continue
            try:
                read = self.ledger.read(keys.user_ledger_key(uid), UserLedger)
            except LedgerCorrupt:
                continue  # repaired on its owner's next request; its images are counted above
            if read is not None:
                found[uid] = usage_rules.snapshot(read[0], self.clock())
        return found

    def _new_shard(self, shard: str) -> ShardLedger:
        """The document of a shard that has none: empty if the global document never recorded
        it (no member of it was counted yet), else rebuilt (it was lost)."""
        try:
            found = self.ledger.read(keys.GLOBAL_LEDGER_KEY, GlobalLedger)
        except LedgerCorrupt:
            return self.rebuild_shard(shard)
        seen = found[0].shards.get(shard) if found else None
        if seen is None:
            return ShardLedger(shard=shard, users={})
        return self.rebuild_shard(shard, known=seen[0])

    def rebuild_shard(self, shard: str, *, known: int = 0) -> ShardLedger:
        """A shard document from its members' documents and images (damage); ``known``: the
        version of it the global document has."""
        doc = ShardLedger(shard=shard, users={})
        for uid, snap in self._user_snapshots(shard).items():
            usage_rules.apply_snapshot(doc, uid, snap)
        log.warning("Quota ledger shard %s was missing: rebuilt from %d user(s).", shard, len(doc.users))
        # Above the version the global document knows, so it accepts this shard's snapshot.
        doc.version = rebuilt_version(known)
        return doc

    def rebuild_global(self) -> GlobalLedger:
        """The global document from every user document (and the images of users without one),
        through their shard documents, which are brought up to date first."""
        doc = GlobalLedger(shards={})
        by_shard: dict[str, dict[str, Snapshot]] = {}
        found = self._user_snapshots()
        for uid, snap in found.items():
            by_shard.setdefault(keys.shard_of(uid), {})[uid] = snap
        for shard, written in self.publish(by_shard).items():
            usage_rules.apply_shard(doc, shard, written)
        for shard, stored in self.shards().items():
            usage_rules.apply_shard(doc, shard, usage_rules.shard_snapshot(stored))
        if any(snap.bytes for snap in found.values()):  # not a new store
            log.warning("Global quota ledger was missing: rebuilt from %d shard(s).", len(doc.shards))
        doc.version = rebuilt_version(0)
        return doc

    def update_shard(self, shard: str, mutate: Callable[[ShardLedger], _T]) -> tuple[_T, ShardLedger]:
        return self._update(keys.shard_key(shard), ShardLedger, mutate, lambda: self._new_shard(shard))

    def publish(self, snaps: dict[str, dict[str, Snapshot]]) -> dict[str, ShardSnapshot]:
        """Record user snapshots (by shard, then member) in their shard documents; returns the
        snapshot of each shard document as written, for the global document."""
        if len(snaps) <= 1:
            return dict(self._publish_one(shard, found) for shard, found in snaps.items())
        # Shards are independent documents: written side by side, so recording the members a
        # process served (an escrow settle) costs about one write, not one a shard. The global
        # document is written only after all of them, by the caller.
        with ThreadPoolExecutor(max_workers=min(_PUBLISH_AT_ONCE, len(snaps))) as pool:
            return dict(pool.map(lambda item: self._publish_one(*item), sorted(snaps.items())))

    def _publish_one(self, shard: str, found: dict[str, Snapshot]) -> tuple[str, ShardSnapshot]:
        def apply(doc: ShardLedger) -> None:
            for uid, snap in found.items():
                usage_rules.apply_snapshot(doc, uid, snap)

        _, doc = self.update_shard(shard, apply)
        return shard, usage_rules.shard_snapshot(doc)

    def publish_users(self, docs: Mapping[keys.MemberId, UserLedger]) -> dict[str, ShardSnapshot]:
        """:meth:`publish` the snapshots of stored versions of user documents."""
        now = self.clock()
        by_shard: dict[str, dict[str, Snapshot]] = {}
        for uid, doc in docs.items():
            by_shard.setdefault(keys.shard_of(uid), {})[uid] = usage_rules.snapshot(doc, now)
        return self.publish(by_shard)

    def sync_global(self, uid: keys.MemberId, doc: UserLedger) -> None:
        """Record ``doc`` (a stored version of ``uid``'s document) in its shard, then the shard
        in the global document."""
        self.update_global(lambda g: None, shards=self.publish_users({uid: doc}))

    def hold_global(self, uid: keys.MemberId, doc: UserLedger, rid: str, limit: int) -> None:
        """Record ``doc``, which holds ``rid``, up to the global document, refusing the hold
        (:class:`~abby_core.errors.GlobalStorageFull`) if it would pass ``limit``."""
        shard = keys.shard_of(uid)
        snap = self.publish_users({uid: doc})[shard]
        self.update_global(partial(usage_rules.global_hold, shard=shard, snap=snap, rid=rid, limit=limit))

    def update_global(
        self, mutate: Callable[[GlobalLedger], _T], *, shards: dict[str, ShardSnapshot] | None = None
    ) -> tuple[_T, GlobalLedger]:
        """Change the global document, after refreshing the snapshots of users whose holds
        expired; ``shards``: shard snapshots to record in the same write."""
        fresh: dict[str, ShardSnapshot] = dict(shards or {})
        current = self.cached_global() or self.global_doc()
        moved: set[str] = set()
        for _ in range(_MOVE_ROUNDS):
            if set(current.users) - moved:
                fresh.update(self._move_legacy(current))
                moved |= set(current.users)
            try:
                return self._update_global(current, fresh, moved, mutate)
            except _Legacy as found:
                current = found.doc
        raise StorageUnavailable("The quota ledger is too busy (too many writers at once); nothing was changed.")

    def _update_global(
        self,
        current: GlobalLedger,
        fresh: dict[str, ShardSnapshot],
        moved: set[str],
        mutate: Callable[[GlobalLedger], _T],
    ) -> tuple[_T, GlobalLedger]:
        deadline = self.clock() - rules.PURGE_MARGIN
        stale = usage_rules.stale_holders(current, deadline)[:_REFRESH_PER_UPDATE]
        if stale:
            # Ids read from a document: checked like any other.
            docs = {uid: self.update_user(uid, lambda d: None)[1] for uid in map(keys.check_user_id, stale)}
            fresh.update(self.publish_users(docs))
        scanned_at = self.clock()
        silent = self._silent_leases()
        recovering = bool(usage_rules.dead_leases(current, scanned_at, self.lease_margin) or silent)
        if recovering:
            fresh.update(self._every_snapshot())
        dropped: list[str] = []

        def change(doc: GlobalLedger) -> _T:
            if set(doc.users) - moved:
                raise _Legacy(doc)  # members of the layout before shards, not moved yet
            doc.users = {}
            for shard, snap in fresh.items():
                usage_rules.apply_shard(doc, shard, snap)
            dropped.clear()
            if recovering:
                # Dead before the scan began: every hold their owners admitted is in a user
                # document read since, so the snapshots now cover what the leases did.
                dead = set(usage_rules.dead_leases(doc, scanned_at, self.lease_margin))
                dead.update(lid for lid, lease in doc.leases.items() if silent.get(lid) == _version(lease))
                for lid in sorted(dead):
                    dropped.append(f"{lid} ({doc.leases.pop(lid).owner})")
            return mutate(doc)

        result = self._update(keys.GLOBAL_LEDGER_KEY, GlobalLedger, change, self.rebuild_global)
        self._see_leases(result[1])
        if dropped:
            self.recovered_leases += len(dropped)
            log.warning("Took back %d expired lease(s) of the global storage budget: %s.", len(dropped), dropped)
        return result

    def _move_legacy(self, glob: GlobalLedger) -> dict[str, ShardSnapshot]:
        """Copy the member snapshots of a global document of the layout before shards into
        their shard documents (the global document drops them in its next write)."""
        by_shard: dict[str, dict[str, Snapshot]] = {}
        for uid, snap in glob.users.items():
            by_shard.setdefault(keys.shard_of(keys.check_user_id(uid)), {})[uid] = snap
        log.info("Moving the usage of %d member(s) into %d shard document(s).", len(glob.users), len(by_shard))
        return self.publish(by_shard)

    def _every_snapshot(self) -> dict[str, ShardSnapshot]:
        """Every user document, read now, recorded in its shard (to take over from a lease
        whose owner died); returns the shard snapshots."""
        docs: dict[keys.MemberId, UserLedger] = {}
        for uid in sorted(self.users_with_documents()):
            try:
                read = self.ledger.read(keys.user_ledger_key(uid), UserLedger)
            except LedgerCorrupt:
                read = None
            docs[uid] = read[0] if read is not None else self.user(uid)
        return self.publish_users(docs)

    def _see_leases(self, written: GlobalLedger) -> None:
        """Remember the leases of a global document this process just wrote (so it was current)."""
        if self.lease_silence is None:
            return
        now = self.monotonic()
        with self._sightings_lock:
            known = self._lease_sightings
            self._lease_sightings = {
                lid: liveness.observe(known.get(lid), _version(lease), now) for lid, lease in written.leases.items()
            }

    def _silent_leases(self) -> dict[str, str]:
        """The leases (and their versions) this process has seen unchanged for over ``lease_silence``."""
        if self.lease_silence is None:
            return {}
        now, silence = self.monotonic(), self.lease_silence.total_seconds()
        with self._sightings_lock:
            sightings = self._lease_sightings.items()
            return {
                lid: s.version
                for lid, s in sightings
                if lid not in self.own_leases and liveness.abandoned(s, now, silence)
            }
