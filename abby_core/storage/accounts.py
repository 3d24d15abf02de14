"""The quota ledger documents of one backend: read, update, rebuild and repair.

:mod:`abby_core.storage.protocol` tells the quota story; this module keeps its books.
Every method is synchronous and runs on the manager's worker threads.

- Dropping a hold is always done in the same order: first the images its generation may
  have uploaded are deleted, then the hold leaves the user document. A crash in between
  leaves a hold that the next writer drops again; never an image nobody knows about.
- A missing user document is rebuilt from the user's images and their member record
  (blocks, grants, resets, today's deletions); an unreadable one is repaired the same way
  and logged. Usage is never read as zero because a document is gone.
- What counts storage across members (shards, the global document, leases) is the
  :class:`~abby_core.storage.usage.Usage` this class builds on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import TypeVar

from pydantic import BaseModel

from abby_core.errors import LedgerCorrupt, StorageUnavailable
from abby_core.storage import catalogue_rules, credit_rules, keys, rules
from abby_core.storage.documents import (
    CatalogueSegment,
    Entry,
    MemberRecord,
    UserLedger,
)
from abby_core.storage.usage import Usage, rebuilt_version

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


class Accounts(Usage):
    """The user and member documents in ``backend``, with repair, over the usage books."""

    # -- reading ------------------------------------------------------------------------
    def user(self, uid: keys.MemberId) -> UserLedger:
        """A fresh copy of ``uid``'s document (rebuilt, not stored, when it is missing)."""
        return self._read_or_repair(keys.user_ledger_key(uid), UserLedger, lambda: self.rebuild_user(uid))

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
        doc.version = rebuilt_version(self.known_version(uid))
        return doc

    # -- updating -------------------------------------------------------------------------
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
        """Drop images that no longer exist from ``uid``'s ledger and the global snapshot: from
        the member's document first, then from their catalogue segments (a segment that an
        interrupted fold wrote is looked in too), whose new totals the document then records."""

        def drop(doc: UserLedger) -> bool:
            return bool([k for k in gone if doc.objects.pop(k, None) is not None])

        changed, doc = self.update_user(uid, drop)
        segments = self.drop_from_segments(uid, gone)
        if segments:
            _, doc = self.update_user(uid, partial(self._apply_segments, segments=segments))
        if changed or segments:
            self.sync_global(uid, doc)

    # -- the catalogue ----------------------------------------------------------------------
    def segment(self, uid: keys.MemberId, month: str) -> CatalogueSegment | None:
        found = self.ledger.read(keys.segment_key(uid, month), CatalogueSegment)
        return found[0] if found else None

    def catalogue(self, uid: keys.MemberId, doc: UserLedger | None = None) -> dict[str, Entry]:
        """Every committed image of ``uid``: the recent ones in ``doc`` (read now by default),
        and the catalogue segments it records."""
        doc = self.user(uid) if doc is None else doc
        found: dict[str, Entry] = {}
        for month in sorted(doc.segments):
            seg = self.segment(uid, month)
            if seg is not None:
                found.update(seg.entries)
        found.update(doc.objects)
        return found

    def update_segment(
        self, uid: keys.MemberId, month: str, mutate: Callable[[CatalogueSegment], _T]
    ) -> tuple[_T, CatalogueSegment]:
        def create() -> CatalogueSegment:
            return CatalogueSegment(user_id=uid, month=month)

        return self._update(keys.segment_key(uid, month), CatalogueSegment, mutate, create)

    def drop_from_segments(self, uid: keys.MemberId, gone: list[str]) -> list[CatalogueSegment]:
        """Take ``gone`` out of the segments of their months that exist; returns those changed."""
        by_month: dict[str, set[str]] = {}
        for key in gone:
            by_month.setdefault(keys.month_of_key(key), set()).add(key)
        changed: list[CatalogueSegment] = []
        for month, found in sorted(by_month.items()):
            seg = self.segment(uid, month)
            if seg is None or not found & set(seg.entries):
                continue

            def drop(s: CatalogueSegment, found: set[str] = found) -> None:
                for key in found:
                    s.entries.pop(key, None)

            changed.append(self.update_segment(uid, month, drop)[1])
        return changed

    @staticmethod
    def _apply_segments(doc: UserLedger, *, segments: list[CatalogueSegment]) -> None:
        for seg in segments:
            catalogue_rules.apply_segment(doc, seg)

    def fold(self, uid: keys.MemberId, doc: UserLedger) -> UserLedger:
        """Move the older images of ``doc`` (a stored version) into their catalogue segments,
        if it lists more than ``FOLD_AT``: the segments first, then the member's document
        records them and drops the images in one write (an interruption in between leaves
        the images counted once, by the document, and the next fold finishes the move)."""
        plan = catalogue_rules.fold_plan(doc, self.clock())
        if not plan:
            return doc
        segments = []
        for month, entries in sorted(plan.items()):

            def add(s: CatalogueSegment, entries: dict[str, Entry] = entries) -> None:
                s.entries.update(entries)

            segments.append(self.update_segment(uid, month, add)[1])
        # An image deleted after the plan was made may have been added back by ``add`` (its
        # deletion looked in the segment before): the storage says which are gone.
        listed = self.user(uid).objects
        deleted = [k for e in plan.values() for k in e if k not in listed and self.backend.head_object(k) is None]
        if deleted:
            fresh = {s.month: s for s in self.drop_from_segments(uid, deleted)}
            segments = [fresh.get(s.month, s) for s in segments]
        return self.update_user(uid, partial(self._apply_segments, segments=segments))[1]
