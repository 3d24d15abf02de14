"""Housekeeping: cleanup of old images, reconcile (the auditor), and usage statistics.

Synchronous, like :mod:`abby_core.storage.protocol`; the manager runs it on its workers.
Both cleanup and reconcile also sweep what killed writers left behind (temporary files of
atomic writes) and drop expired holds with their uploads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from abby_core.errors import InvalidInput
from abby_core.storage import catalogue_rules, keys, rules, usage_rules
from abby_core.storage.accounts import Accounts
from abby_core.storage.archive import Archiver
from abby_core.storage.backend import ARCHIVE_GRACE_DAYS, EVENTS_EXPIRY_MARGIN_DAYS
from abby_core.storage.documents import CatalogueSegment, Entry, UserLedger
from abby_core.storage.escrow import Escrow
from abby_core.storage.models import (
    ArchiveReport,
    CleanupReport,
    GlobalStats,
    LeaseInfo,
    ObjectInfo,
    ReadyReport,
    ReconcileReport,
)

__all__ = ["MAX_CLEANUP_DAYS", "Housekeeping"]

log = logging.getLogger("abby.storage")
MAX_CLEANUP_DAYS = 36_500


class Housekeeping:
    def __init__(
        self,
        accounts: Accounts,
        *,
        cleanup_days: int,
        reservation_ttl: int,
        global_limit: int,
        archiver: Archiver | None = None,
        archive: bool = False,
        escrow: Escrow | None = None,
        events_retention_days: int | None = None,
    ) -> None:
        self.accounts = accounts
        #: Stats settle this process's lease first (with escrow, STORAGE_ESCROW).
        self.escrow = escrow
        #: ``ANALYTICS_RETENTION_DAYS``: with it, :meth:`ensure_ready` asks for the ``events/``
        #: lifecycle backstop (that many days plus a margin); ``None`` leaves events alone.
        self.events_retention_days = events_retention_days
        #: Reconcile and stats cover the archive (images archived earlier stay, even once
        #: STORAGE_ARCHIVE is off); with ``archive`` (STORAGE_ARCHIVE) cleanup archives old
        #: images instead of deleting them.
        self.archiver = archiver
        self.archive = archive and archiver is not None
        self.backend = accounts.backend
        self.cleanup_days = cleanup_days
        self.ttl = reservation_ttl
        self.global_limit = global_limit

    def _young(self) -> datetime:
        """Anything newer than this may belong to a generation still in flight."""
        return self.accounts.clock() - timedelta(seconds=self.ttl) - rules.PURGE_MARGIN

    def _sweep_partial(self) -> int:
        swept = self.backend.sweep_partial_writes(self._young())
        if swept:
            log.warning("Removed %d partial file(s) left by interrupted writes.", swept)
        return swept

    # -- cleanup --------------------------------------------------------------------------
    def cleanup(self, days: int | None, dry_run: bool) -> CleanupReport:
        days = self.cleanup_days if days is None else days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_CLEANUP_DAYS:
            raise InvalidInput(f"The cleanup age must be a whole number of days from 0 to {MAX_CLEANUP_DAYS}.")
        now = self.accounts.clock()
        # Never an image younger than a hold's lifetime: it may not be committed yet.
        cutoff = min(now - timedelta(days=days), self._young())
        if self.archive:
            return self._cleanup_by_archiving(cutoff, dry_run)
        old = [o for o in self.backend.list_objects(keys.USERS_PREFIX) if o.last_modified < cutoff]
        by_user: dict[keys.MemberId, list[str]] = defaultdict(list)
        for obj in old:
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                by_user[owner].append(obj.key)
        partial = 0
        if not dry_run:
            for uid, gone in by_user.items():
                self.accounts.record_deletions(uid, gone)  # first: a rebuild still counts them today
            self.backend.delete_objects([k for gone in by_user.values() for k in gone])  # batches of 1000
            for uid, gone in by_user.items():
                self.accounts.forget_objects(uid, gone)
            stale_temp = [o.key for o in self.backend.list_objects(keys.TEMP_PREFIX) if o.last_modified < cutoff]
            self.backend.delete_objects(stale_temp)
            partial = self._sweep_partial()
        removed = [o for o in old if keys.user_from_key(o.key) is not None]
        return CleanupReport(len(removed), sum(o.size for o in removed), len(by_user), cutoff, dry_run, partial)

    def _cleanup_by_archiving(self, cutoff: datetime, dry_run: bool) -> CleanupReport:
        """Cleanup with STORAGE_ARCHIVE: old images are archived (or deleted when a member's
        archive is full), old archived images pruned, then temporary files swept as usual."""
        assert self.archiver is not None
        report = self.archiver.run(cutoff, dry_run=dry_run)
        partial = 0
        if not dry_run:
            stale_temp = [o.key for o in self.backend.list_objects(keys.TEMP_PREFIX) if o.last_modified < cutoff]
            self.backend.delete_objects(stale_temp)
            partial = self._sweep_partial()
        moved = report.archived + report.deleted
        return CleanupReport(
            moved, report.original_bytes + report.deleted_bytes, report.users, cutoff, dry_run, partial, report
        )

    # -- archive ---------------------------------------------------------------------------
    def archive_old(self, days: int | None, dry_run: bool) -> ArchiveReport:
        """Archive images older than ``days`` (default: the cleanup age), then prune the archive."""
        assert self.archiver is not None
        days = self.cleanup_days if days is None else days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36_500:
            raise InvalidInput("The archive age must be a whole number of days from 0 to 36500.")
        # Never an image younger than a hold's lifetime: it may not be committed yet.
        young = self._young()
        cutoff = min(self.accounts.clock() - timedelta(days=days), young)
        return self.archiver.run(cutoff, dry_run=dry_run)

    # -- preparing the storage ----------------------------------------------------------------
    def ensure_ready(self, create: bool) -> ReadyReport:
        """The backend's folders, or bucket, privacy and lifecycle rules, for these ages.

        With ``archive`` the ``archive/`` rule is added and the ``images/`` rule waits
        ``ARCHIVE_GRACE_DAYS`` longer, so the daily maintenance archives images first.
        """
        events = self.events_retention_days
        if self.archive:
            assert self.archiver is not None
            return self.backend.ensure_ready(
                cleanup_days=self.cleanup_days + ARCHIVE_GRACE_DAYS,
                create=create,
                events_days=None if events is None else events + EVENTS_EXPIRY_MARGIN_DAYS,
                archive_days=self.archiver.days + ARCHIVE_GRACE_DAYS,
            )
        if events is None:
            # Not passed at all, so backends written before events_days keep working.
            return self.backend.ensure_ready(cleanup_days=self.cleanup_days, create=create)
        return self.backend.ensure_ready(
            cleanup_days=self.cleanup_days, create=create, events_days=events + EVENTS_EXPIRY_MARGIN_DAYS
        )

    # -- reconcile ------------------------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        started = self.accounts.clock()
        truth: dict[keys.MemberId, dict[str, ObjectInfo]] = defaultdict(dict)
        for obj in self.backend.list_objects(keys.USERS_PREFIX):
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                truth[owner][obj.key] = obj
        users = set(truth) | self.accounts.users_with_documents()
        drift: dict[str, tuple[int, int]] = {}
        for uid in sorted(users):
            before, after = self._reconcile_user(uid, truth.get(uid, {}), started)
            if before != after:
                drift[uid] = (before, after)
                log.warning("Reconcile: user %s ledger said %d bytes, storage holds %d.", uid, before, after)
        partial = self._sweep_partial()
        objects = sum(len(v) for v in truth.values())
        size = sum(o.size for v in truth.values() for o in v.values())
        if self.archiver is None:
            return ReconcileReport(len(users), objects, size, drift, partial)
        # After the images: an image in both states is settled against fresh quota documents.
        archived, archived_bytes, archive_drift = self.archiver.tidy()
        return ReconcileReport(len(users), objects, size, drift, partial, archived, archived_bytes, archive_drift)

    def _reconcile_user(self, uid: keys.MemberId, found: dict[str, ObjectInfo], started: datetime) -> tuple[int, int]:
        """Make ``uid``'s ledger agree with the listing ``found`` (taken at ``started``).

        Saves and deletes keep running meanwhile, so the listing is only trusted where it
        cannot be stale: entries committed after it began are kept; images it shows that
        the ledger lacks are adopted only if they still exist and belong to no hold (a
        generation in flight, or a failed one whose upload is about to be deleted).
        """
        known = self.accounts.user(uid)
        # The catalogue segments: every one there is (an interrupted fold's too), each taken
        # off the images the listing shows gone (they are older than the listing).
        segments = self._segments(uid, known)
        cataloged = {k for seg in segments for k in seg.entries}
        gone = sorted(k for k in cataloged if k not in found and k not in known.objects)
        if gone:
            fresh = {seg.month: seg for seg in self.accounts.drop_from_segments(uid, gone)}
            segments = [fresh.get(seg.month, seg) for seg in segments]
            cataloged -= set(gone)
        candidates = [k for k in found if k not in known.objects and k not in cataloged]
        confirmed = {k for k in candidates if self.backend.head_object(k) is not None}
        # Holds seen before the write: one past its purge margin is dropped by that very write,
        # its upload deleted first, so its stem must not be adopted from the older listing.
        seen = {h.stem + "." for h in known.holds.values()}

        def correct(doc: UserLedger) -> tuple[int, int]:
            stems = tuple(seen | {h.stem + "." for h in doc.holds.values()}) or ("\0",)
            before = rules.user_bytes(doc)
            objects: dict[str, Entry] = {}
            for k, entry in doc.objects.items():
                if k in found or entry.created > started:
                    objects[k] = entry  # present, or committed after the listing began
            for k, o in found.items():
                if k not in objects and k in confirmed and not k.startswith(stems):
                    objects[k] = Entry(size=o.size, created=o.last_modified)
            doc.objects = objects
            for seg in segments:
                catalogue_rules.apply_segment(doc, seg)
            return before, rules.user_bytes(doc)

        (before, after), doc = self.accounts.update_user(uid, correct)
        self.accounts.sync_global(uid, doc)
        # A copy of the credits spent that failed or was cut short: the record is what a
        # rebuilt document starts from, so it must count what the ledger spent.
        if (doc.credits_spent or doc.credit_log) and self.accounts.copy_credits(uid, doc):
            log.warning("Reconcile: the member record of user %s now has the credit book of its ledger.", uid)
        return before, after

    def _segments(self, uid: keys.MemberId, doc: UserLedger) -> list[CatalogueSegment]:
        months = set(doc.segments)
        for obj in self.backend.list_objects(keys.catalogue_prefix(uid)):
            months.add(obj.key.rsplit("/", 1)[-1].removesuffix(".json"))
        found = [self.accounts.segment(uid, month) for month in sorted(months)]
        return [seg for seg in found if seg is not None]

    # -- stats ----------------------------------------------------------------------------
    def stats(self, top: int) -> GlobalStats:
        if self.escrow is not None:
            self.escrow.settle()  # this process's members first; other processes' at their next settle
        glob = self.accounts.global_doc()
        # The members' snapshots are in the shard documents: one read a shard, whatever the community's size.
        members = {uid: snap.bytes for shard in self.accounts.shards().values() for uid, snap in shard.users.items()}
        members.update({uid: snap.bytes for uid, snap in glob.users.items()})  # a global document not moved yet
        ranked = sorted(((u, b) for u, b in members.items() if b > 0), key=lambda t: -t[1])
        return GlobalStats(
            global_bytes=usage_rules.global_usage(glob),
            global_limit_bytes=self.global_limit,
            users=len(ranked),
            in_flight=len(glob.holds) + sum(len(s.holds) for s in glob.users.values()),
            top_users=ranked[:top],
            leases=[
                LeaseInfo(lid, lease.owner, lease.bytes, lease.expires)
                for lid, lease in sorted(glob.leases.items(), key=lambda item: item[1].expires)
            ],
            archive=self.archiver.stats(top) if self.archiver is not None else None,
        )
