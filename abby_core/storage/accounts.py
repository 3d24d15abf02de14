"""The quota ledger documents of one backend: read, update, rebuild and repair.

:mod:`abby_core.storage.protocol` tells the quota story; this module keeps its books.
Every method is synchronous and runs on the manager's worker threads.

- Dropping a hold is always done in the same order: first the images its generation may
  have uploaded are deleted, then the hold leaves the user document. A crash in between
  leaves a hold that the next writer drops again; never an image nobody knows about.
- Every global update first refreshes the snapshots of users whose holds expired, from
  their own documents (which also drops those holds), so a process that died between a
  commit and the global update costs nothing for longer than a hold's lifetime.
- A missing user document is rebuilt from the user's images and their member record
  (blocks, grants, resets, today's deletions); a missing global document from the user
  documents. An unreadable one is repaired the same way and logged. Usage is never read
  as zero because a document is gone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from pydantic import BaseModel

from abby_core.errors import InvalidUser, LedgerCorrupt, StorageUnavailable
from abby_core.storage import credit_rules, keys, liveness, rules
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.documents import Entry, GlobalLedger, Lease, MemberRecord, Snapshot, UserLedger
from abby_core.storage.ledger import Ledger
from abby_core.storage.liveness import Sighting

__all__ = ["Accounts"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")
D = TypeVar("D", bound=BaseModel)
# How many times one user update may stop to delete the uploads of holds that expired meanwhile.
_DROP_ROUNDS = 20


class _Doomed(Exception):
    """A user update found holds to drop whose uploads must be deleted first (``stems``: hold → stem)."""

    def __init__(self, stems: dict[str, str]) -> None:
        super().__init__(f"{len(stems)} hold(s) to drop")
        self.stems = stems


# How many users with expired holds one global update refreshes (the rest wait for the next).
_REFRESH_PER_UPDATE = 8


def _version(lease: Lease) -> str:
    """What changes each time a lease's owner settles it (a new expiry)."""
    return f"{lease.expires.isoformat()}/{lease.bytes}"


def _rebuilt_version(known: int) -> int:
    # Larger than any counter a live document reached, so the global document accepts
    # the snapshot of a rebuilt user document (it keeps only newer versions).
    return max(known + 1, int(time.time() * 1000))


class Accounts:
    """The user, global and member documents in ``backend``, with repair."""

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

    # -- reading ------------------------------------------------------------------------
    def _read_or_repair(self, key: str, model: type[D], build: Callable[[], D]) -> D:
        try:
            found = self.ledger.read(key, model)
        except LedgerCorrupt:
            self._repair(key, build)
            found = self.ledger.read(key, model)
        return found[0] if found else build()

    def user(self, uid: keys.MemberId) -> UserLedger:
        """A fresh copy of ``uid``'s document (rebuilt, not stored, when it is missing)."""
        return self._read_or_repair(keys.user_ledger_key(uid), UserLedger, lambda: self.rebuild_user(uid))

    def global_doc(self) -> GlobalLedger:
        """A fresh copy of the global document (rebuilt, not stored, when it is missing)."""
        return self._read_or_repair(keys.GLOBAL_LEDGER_KEY, GlobalLedger, self.rebuild_global)

    def member(self, uid: keys.MemberId) -> MemberRecord:
        """``uid``'s member record (an empty one when there is none, or it is unreadable)."""
        try:
            found = self.ledger.read(keys.member_key(uid), MemberRecord)
        except LedgerCorrupt:
            log.error("Member record of user %s is unreadable: using an empty one.", uid)
            found = None
        return found[0] if found else MemberRecord(user_id=uid)

    def cached_user(self, uid: keys.MemberId) -> UserLedger | None:
        return self.ledger.last_seen(keys.user_ledger_key(uid), UserLedger)

    def cached_global(self) -> GlobalLedger | None:
        return self.ledger.last_seen(keys.GLOBAL_LEDGER_KEY, GlobalLedger)

    # -- rebuilding -----------------------------------------------------------------------
    def rebuild_user(self, uid: keys.MemberId) -> UserLedger:
        """A user document from the images and the member record (first use, or damage).

        Today's count is every image reserved today that exists or that the member record
        says was deleted, after the last daily reset; blocks and grants come from the record.
        """
        now = self.clock()
        today = rules.day_of(now)
        record = self.member(uid)
        doc = UserLedger(user_id=uid, day=today, blocked=record.blocked, bonus=record.grants.get(today, 0))
        doc.credits, doc.credits_spent = record.credits, record.credits_spent
        doc.credit_log = credit_rules.credit_log_of(record)
        reset = record.resets.get(today)
        made_today: set[str] = {k for k, day in record.deleted.items() if day == today}
        for obj in self.backend.list_objects(keys.user_prefix(uid)):
            if keys.user_from_key(obj.key) != uid:
                continue
            doc.objects[obj.key] = Entry(size=obj.size, created=obj.last_modified)
            if keys.day_of_key(obj.key) == today:
                made_today.add(obj.key)
        if reset is not None:
            made_today = {k for k in made_today if (keys.time_of_key(k) or reset) > reset}
        doc.count = len(made_today)
        if doc.objects or record.version:
            log.warning(
                "Quota ledger for user %s was missing: rebuilt from %d stored image(s) and the member record.",
                uid,
                len(doc.objects),
            )
        # Above any version the global document knows for this user, so it accepts this
        # document's snapshot whatever the clocks of the processes that wrote them.
        doc.version = _rebuilt_version(self._known_version(uid))
        return doc

    def _known_version(self, uid: keys.MemberId) -> int:
        try:
            found = self.ledger.read(keys.GLOBAL_LEDGER_KEY, GlobalLedger)
        except LedgerCorrupt:
            return 0
        snap = found[0].users.get(uid) if found else None
        return snap.version if snap else 0

    def users_with_documents(self) -> set[keys.MemberId]:
        users: set[keys.MemberId] = set()
        for obj in self.backend.list_objects(keys.USERS_LEDGER_PREFIX):
            try:
                users.add(keys.check_user_id(obj.key[len(keys.USERS_LEDGER_PREFIX) :].removesuffix(".json")))
            except InvalidUser:
                continue
        return users

    def rebuild_global(self) -> GlobalLedger:
        """The global document from every user document (and the images of users without one)."""
        doc = GlobalLedger(users={})
        totals: dict[str, int] = {}
        for obj in self.backend.list_objects(keys.USERS_PREFIX):
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                totals[owner] = totals.get(owner, 0) + obj.size
        for uid, total in totals.items():
            doc.users[uid] = Snapshot(version=0, bytes=total)  # any user-document snapshot replaces it
        for uid in self.users_with_documents():
            try:
                found = self.ledger.read(keys.user_ledger_key(uid), UserLedger)
            except LedgerCorrupt:
                continue  # repaired on its owner's next request; its images are counted above
            if found is not None:
                rules.apply_snapshot(doc, uid, rules.snapshot(found[0], self.clock()))
        if totals:
            log.warning("Global quota ledger was missing: rebuilt from %d user(s).", len(doc.users))
        doc.version = _rebuilt_version(0)
        return doc

    def _repair(self, key: str, build: Callable[[], BaseModel]) -> None:
        """Replace an unreadable document with one rebuilt from the objects."""
        log.error("Quota ledger document %s is corrupt: rebuilding it.", key)
        raw = self.backend.read_doc(key)
        body = build().model_dump_json(by_alias=True).encode()
        with contextlib.suppress(ConditionFailed):  # someone else repaired it first
            self.backend.write_doc(key, body, etag=raw[1] if raw else None)
        self.ledger.forget(key)

    # -- updating -------------------------------------------------------------------------
    def _update(self, key: str, model: type[D], mutate: Callable[[D], _T], build: Callable[[], D]) -> tuple[_T, D]:
        try:
            return self.ledger.update(key, model, mutate, create=build)
        except LedgerCorrupt:
            self._repair(key, build)
            return self.ledger.update(key, model, mutate, create=build)

    def delete_uploads(self, stems: list[str]) -> None:
        """Delete whatever images generations reserved under ``stems`` may have uploaded."""
        if stems:
            self.backend.delete_objects([k for stem in stems for k in keys.image_candidates(stem)])

    def update_user(self, uid: keys.MemberId, mutate: Callable[[UserLedger], _T]) -> tuple[_T, UserLedger]:
        """Change ``uid``'s document; void and expired holds are dropped on the way, uploads first.

        The change itself finds the holds to drop, on the version it writes: when there are
        some whose uploads were not deleted yet, it stops, they are deleted, and it runs again.
        """
        key = keys.user_ledger_key(uid)
        deleted: dict[str, str] = {}  # hold → the stem whose uploads are gone

        def change(doc: UserLedger) -> _T:
            expired = {rid: doc.holds[rid].stem for rid in rules.expired_holds(doc, self.clock())}
            pending = {rid: stem for rid, stem in expired.items() if deleted.get(rid) != stem}
            if pending:
                raise _Doomed(pending)
            for rid in expired:
                rules.drop_hold(doc, rid)
            return mutate(doc)

        for _ in range(_DROP_ROUNDS):
            try:
                return self._update(key, UserLedger, change, lambda: self.rebuild_user(uid))
            except _Doomed as found:
                self.delete_uploads(sorted(found.stems.values()))
                deleted.update(found.stems)
        raise StorageUnavailable("The quota ledger is too busy (too many writers at once); nothing was changed.")

    def update_global(self, mutate: Callable[[GlobalLedger], _T]) -> tuple[_T, GlobalLedger]:
        """Change the global document, after refreshing the snapshots of users whose holds expired."""
        current = self.cached_global() or self.global_doc()
        deadline = self.clock() - rules.PURGE_MARGIN
        stale = [uid for uid, s in current.users.items() if any(h.expires <= deadline for h in s.holds.values())]
        fresh: dict[str, Snapshot] = {}
        for uid in stale[:_REFRESH_PER_UPDATE]:
            _, doc = self.update_user(keys.check_user_id(uid), lambda d: None)  # an id read from a document
            fresh[uid] = rules.snapshot(doc, self.clock())
        scanned_at = self.clock()
        silent = self._silent_leases()
        recovering = bool(rules.dead_leases(current, scanned_at, self.lease_margin) or silent)
        if recovering:
            fresh.update(self._every_snapshot())
        dropped: list[str] = []

        def change(doc: GlobalLedger) -> _T:
            for uid, snap in fresh.items():
                rules.apply_snapshot(doc, uid, snap)
            dropped.clear()
            if recovering:
                # Dead before the scan began: every hold their owners admitted is in a user
                # document read since, so the snapshots now cover what the leases did.
                dead = set(rules.dead_leases(doc, scanned_at, self.lease_margin))
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

    def _every_snapshot(self) -> dict[str, Snapshot]:
        """A snapshot of every user document (to take over from a lease whose owner died)."""
        found: dict[str, Snapshot] = {}
        for uid in sorted(self.users_with_documents()):
            try:
                read = self.ledger.read(keys.user_ledger_key(uid), UserLedger)
            except LedgerCorrupt:
                read = None
            doc = read[0] if read is not None else self.user(uid)
            found[uid] = rules.snapshot(doc, self.clock())
        return found

    def sync_global(self, uid: keys.MemberId, doc: UserLedger) -> None:
        """Record ``doc`` (a stored version of ``uid``'s document) in the global document."""
        snap = rules.snapshot(doc, self.clock())
        self.update_global(lambda g: rules.apply_snapshot(g, uid, snap))

    def update_member(self, uid: keys.MemberId, mutate: Callable[[MemberRecord], _T]) -> tuple[_T, MemberRecord]:
        def change(record: MemberRecord) -> _T:
            horizon = rules.day_of(self.clock()) - timedelta(days=1)
            record.deleted = {k: d for k, d in record.deleted.items() if d >= horizon}
            record.grants = {d: n for d, n in record.grants.items() if d >= horizon}
            record.resets = {d: t for d, t in record.resets.items() if d >= horizon}
            return mutate(record)

        return self._update(keys.member_key(uid), MemberRecord, change, lambda: MemberRecord(user_id=uid))

    def copy_credits(self, uid: keys.MemberId, doc: UserLedger | None = None) -> bool:
        """Make the member record's credit book what ``uid``'s document says (``doc``: a version
        the caller has just written or read; by default the document is read now).

        The record is what a rebuilt document starts from: credits spent behind the document
        would give spent credits back, ahead would take unspent ones. A copy of an older
        version than the record's changes nothing. Returns whether the record changed.
        """
        mirrored = self.user(uid) if doc is None else doc
        return self.update_member(uid, lambda r: credit_rules.mirror_credits(r, mirrored))[0]

    # -- admin changes ----------------------------------------------------------------------
    def change_member(
        self,
        uid: keys.MemberId,
        record: Callable[[MemberRecord], None],
        mirror: Callable[[UserLedger, MemberRecord], None],
    ) -> None:
        """Change the member record (what survives damage) first, then copy it into the hot document.

        The copy is set from the record, not changed by the same amount: a hot document rebuilt
        from the record (it did not exist yet) already has the change.
        """
        _, stored = self.update_member(uid, record)
        now = self.clock()

        def change(doc: UserLedger) -> None:
            rules.roll_day(doc, now)
            mirror(doc, stored)

        self.update_user(uid, change)

    def set_blocked(self, uid: keys.MemberId, blocked: bool) -> None:
        """Block (or unblock) ``uid`` from generating; their images stay."""

        def record(r: MemberRecord) -> None:
            r.blocked = bool(blocked)

        def mirror(doc: UserLedger, r: MemberRecord) -> None:
            doc.blocked = r.blocked

        self.change_member(uid, record, mirror)

    def grant(self, uid: keys.MemberId, extra: int) -> None:
        """Give ``uid`` ``extra`` more generations today (until midnight UTC)."""
        day = rules.day_of(self.clock())

        def record(r: MemberRecord) -> None:
            r.grants[day] = r.grants.get(day, 0) + extra

        def mirror(doc: UserLedger, r: MemberRecord) -> None:
            if doc.day == day:
                doc.bonus = r.grants.get(day, 0)

        self.change_member(uid, record, mirror)

    def reset_daily(self, uid: keys.MemberId) -> None:
        """Set ``uid``'s generations used today back to zero (and drop today's grants)."""
        now = self.clock()
        day = rules.day_of(now)

        def record(r: MemberRecord) -> None:
            r.grants[day] = 0
            r.resets[day] = now

        def mirror(doc: UserLedger, r: MemberRecord) -> None:
            doc.count, doc.bonus = 0, 0

        self.change_member(uid, record, mirror)

    # -- credits --------------------------------------------------------------------------
    def add_credits(self, uid: keys.MemberId, credits: int, source: str) -> bool:
        """Give ``uid`` ``credits`` once per ``source``: the member record first (what a rebuild
        starts from), then the member's document. Each step applies a source once, so a retry
        after a crash between them completes it; a source refunded first adds nothing."""

        def record(r: MemberRecord) -> bool | None:
            if source in r.credit_refunds:
                return None  # a tombstone: the refund came first
            if source in r.credit_sources:
                return False
            r.credit_sources[source] = credits
            return True

        new, _ = self.update_member(uid, record)
        if new is None:
            return False
        self.update_user(uid, partial(credit_rules.add_credits, source=source, credits=credits))
        return new

    def refund_credits(self, uid: keys.MemberId, source: str) -> int:
        """Refund ``source`` once: a tombstone in the member record first (an add that comes
        later, or is still on its way, then adds nothing), then the member's document, then
        the record's copy of what the refund took back. Returns :func:`credit_rules.refund_taken`."""

        def tombstone(r: MemberRecord) -> int:
            r.credit_refunds.setdefault(source, 0)
            return r.credit_sources.get(source, 0)

        given, _ = self.update_member(uid, tombstone)
        taken, doc = self.update_user(
            uid, partial(credit_rules.refund_credits, source=source, credits=given, now=self.clock())
        )
        self.copy_credits(uid, doc)
        return taken

    def credit_refunded(self, uid: keys.MemberId, source: str) -> bool:
        """Whether the member's document has the refund of ``source``."""
        entry = self.user(uid).credit_log.get(source)
        return entry is not None and entry.refunded

    def record_deletions(self, uid: keys.MemberId, gone: list[str]) -> None:
        """Remember images of today and yesterday that were deleted, for a rebuild's count."""
        horizon = rules.day_of(self.clock()) - timedelta(days=1)
        recent = {k: d for k in gone if (d := keys.day_of_key(k)) is not None and d >= horizon}
        if recent:
            self.update_member(uid, lambda r: r.deleted.update(recent))

    def forget_objects(self, uid: keys.MemberId, gone: list[str]) -> None:
        """Drop images that no longer exist from ``uid``'s ledger and the global snapshot."""

        def drop(doc: UserLedger) -> bool:
            return bool([k for k in gone if doc.objects.pop(k, None) is not None])

        changed, doc = self.update_user(uid, drop)
        if changed:
            self.sync_global(uid, doc)
