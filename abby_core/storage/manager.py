"""StorageManager: the async facade over storage and quotas.

The flow reads like the story::

    reservation = await storage.reserve(user_id)            # before any paid API call
    try:
        image = await generator.text_to_image(prompt)
    except BaseException:
        await storage.release(reservation)                 # a failure costs nothing
        raise
    stored = await storage.save_image(reservation, image.data, content_type=image.content_type)

or, equivalently, ``async with storage.reservation(user_id) as r: ...``.

Every method is a coroutine; the blocking work runs on the manager's own worker threads,
so the event loop never waits on storage. Errors are :mod:`abby_core.errors` only. A method
checks its input at the door, runs one operation of the module that owns it, and returns:
the protocol that makes a failure (or a crash, or a cancellation) cost nothing lives in
:mod:`abby_core.storage.protocol`; the quota rules and input bounds in
:mod:`abby_core.storage.rules`; admin changes and credits in :mod:`abby_core.storage.accounts`;
cleanup, archiving by age, reconcile and stats in :mod:`abby_core.storage.housekeeping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from abby_core.config import QuotaTier, Settings, StorageSettings
from abby_core.errors import ReservationInvalid, StorageError
from abby_core.storage import keys, rules
from abby_core.storage.accounts import Accounts
from abby_core.storage.archive import Archiver
from abby_core.storage.backend import StorageBackend
from abby_core.storage.escrow import Escrow
from abby_core.storage.filesystem import FilesystemBackend
from abby_core.storage.housekeeping import Housekeeping
from abby_core.storage.ledger import Ledger
from abby_core.storage.models import (
    ArchivedImage,
    ArchiveReport,
    CleanupReport,
    GlobalStats,
    QuotaStatus,
    ReadyReport,
    ReconcileReport,
    Reservation,
    StoredImage,
    UserLimits,
)
from abby_core.storage.protocol import CLOCK_SKEW, QuotaProtocol
from abby_core.storage.restore import Restorer
from abby_core.storage.workers import Workers

__all__ = ["StorageManager"]

log = logging.getLogger("abby.storage")
# Escrow (STORAGE_ESCROW): how long a lease of the global budget lasts between renewals
# (at most half a hold's lifetime), and the largest slice, in estimated images.
LEASE_LIFETIME = timedelta(seconds=60)
LEASE_SLICE_IMAGES = 32


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StorageManager:
    """Images per user, with exact daily, per-user and global quotas.

    Build it with :meth:`from_settings`, or from the storage section over a backend::

        StorageManager(backend, settings.storage, clock)

    or, for a folder, with the section's field names over its defaults (the seed's names)::

        StorageManager(storage_root="shared", max_global_storage_mb=5000,
                       max_user_storage_mb=500, max_user_daily_gens=5)
    """

    def __init__(
        self,
        backend: StorageBackend | None = None,
        section: StorageSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        *,
        storage_root: str | Path | None = None,
        max_workers: int = 8,
        settle_seconds: float = 30.0,
        events_retention_days: int | None = None,
        **limits: Any,
    ) -> None:
        """``limits`` are :class:`StorageSettings` fields by name (``max_user_daily_gens=3``),
        over ``section`` or the section's defaults. They are not bounds-checked, so tests and
        benchmarks can use values no deployment may (a reservation that expires in 2 s); an
        unknown name is a :class:`TypeError`. ``storage_root`` is the folder when no
        ``backend`` is given (default: the section's ``root``)."""
        section = section if section is not None else StorageSettings()
        unknown = set(limits) - set(StorageSettings.model_fields)
        if unknown:
            raise TypeError(f"StorageManager() got unknown storage settings: {', '.join(sorted(unknown))}")
        section = section.model_copy(update=limits) if limits else section
        if backend is None:
            backend = FilesystemBackend(storage_root if storage_root is not None else section.root)
        self.section = section
        self.backend = backend
        self.clock = clock or _utcnow
        # A lease stops admitting a margin before it expires (by its owner's clock); another
        # process takes it for dead that margin plus CLOCK_BOUND after (by its own clock), or
        # once it has seen it unchanged for its lifetime and margin (by its monotonic clock).
        lease_lifetime = min(LEASE_LIFETIME, timedelta(seconds=section.reservation_ttl_seconds / 2))
        lease_margin = min(CLOCK_SKEW, lease_lifetime / 4)
        self.accounts = Accounts(
            backend,
            lambda: self.clock(),
            lease_margin=lease_margin + rules.CLOCK_BOUND,
            lease_silence=lease_lifetime + lease_margin,
        )
        self.global_limit_bytes = section.max_global_bytes
        self.cleanup_days = section.cleanup_days
        #: ``ANALYTICS_RETENTION_DAYS``: with it, ``ensure_ready`` asks for the ``events/``
        #: lifecycle backstop (that many days plus a margin); ``None`` leaves events alone.
        self.events_retention_days = events_retention_days
        self.reservation_ttl = section.reservation_ttl_seconds
        self.link_ttl = section.link_ttl_seconds
        self.premium_tiers = tuple(section.premium_tiers)
        self.escrow = (
            Escrow(
                self.accounts,
                global_limit=self.global_limit_bytes,
                lifetime=lease_lifetime,
                margin=lease_margin,
                max_slice=LEASE_SLICE_IMAGES * self.estimate_bytes,
            )
            if section.escrow
            else None
        )
        self.protocol = QuotaProtocol(
            self.accounts,
            global_limit=self.global_limit_bytes,
            reservation_ttl=self.reservation_ttl,
            link_ttl=self.link_ttl,
            settle_seconds=settle_seconds,
            escrow=self.escrow,
        )
        #: STORAGE_ARCHIVE: cleanup archives old images instead of deleting them.
        self.archive = section.archive
        self.archiver = Archiver(
            self.accounts,
            days=section.archive_days,
            limit_bytes=section.max_user_archive_bytes,
            quality=section.archive_quality,
            storage_class=section.archive_storage_class,
            link_ttl=self.link_ttl,
        )
        self.restorer = Restorer(self.archiver, self.protocol, reservation_ttl=self.reservation_ttl)
        self.housekeeping = Housekeeping(
            self.accounts,
            cleanup_days=self.cleanup_days,
            reservation_ttl=self.reservation_ttl,
            global_limit=self.global_limit_bytes,
            archiver=self.archiver,
            archive=self.archive,
            escrow=self.escrow,
            events_retention_days=events_retention_days,
        )
        #: Every coroutine runs its operation here; undos storage refused earlier are retried first.
        self.workers = Workers(max_workers, before=self.protocol.finish_unfinished)

    # -- what the adapters show (read-only) -------------------------------------------------
    @property
    def default_limits(self) -> UserLimits:
        """The limits of a member in no tier: ``MAX_USER_DAILY_GENS`` and ``MAX_USER_STORAGE_MB``."""
        return UserLimits(self.section.max_user_daily_gens, self.section.max_user_bytes)

    @property
    def quota_tiers(self) -> tuple[QuotaTier, ...]:
        """The role tiers (``QUOTA_TIERS``), as configured; empty when there are none."""
        return tuple(self.section.quota_tiers)

    @property
    def estimate_bytes(self) -> int:
        """What a reservation holds when no size is given (``IMAGE_GEN_SIZE_MB``), in bytes."""
        return self.section.image_gen_bytes

    @property
    def ledger(self) -> Ledger:
        """The compare-and-swap document store behind the quotas."""
        return self.accounts.ledger

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        backend: StorageBackend | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> StorageManager:
        """The manager the settings describe: the backend gets its section, the manager the storage one."""
        if backend is None:
            if settings.storage.backend == "s3":
                from abby_core.storage.s3 import S3Backend

                backend = S3Backend(settings.s3)
            else:
                backend = FilesystemBackend(settings.storage.root)
        return cls(backend, settings.storage, clock, events_retention_days=settings.analytics.retention_days)

    async def aclose(self) -> None:
        """Stop the workers and close connections. Safe to call twice."""
        if self.workers.closed:
            return
        await self.workers.aclose()
        loop = asyncio.get_running_loop()
        if self.escrow is not None:
            await loop.run_in_executor(None, self.escrow.close)  # gives the unused budget back
        self.backend.close()

    async def __aenter__(self) -> StorageManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def limits_for(self, role_ids: Iterable[int] = (), sku_ids: Iterable[int] = ()) -> UserLimits:
        """The most generous of the defaults, every tier whose role the member holds, and every
        premium tier whose subscription SKU they hold (``sku_ids``: their active entitlements)."""
        return rules.limits_for(self.default_limits, self.quota_tiers, role_ids, self.premium_tiers, sku_ids)

    # -- reserve / save / release ----------------------------------------------------------
    async def reserve(
        self,
        user_id: object,
        *,
        role_ids: Iterable[int] = (),
        size_bytes: int | None = None,
        sku_ids: Iterable[int] = (),
    ) -> Reservation:
        """Hold one generation and ``IMAGE_GEN_SIZE_MB`` (or ``size_bytes``) for ``user_id``, atomically.

        Checks, in order, a block, the daily generation count (resets at midnight UTC), the
        user's bytes and the global bytes; raises :class:`~abby_core.errors.UserBlocked`,
        :class:`~abby_core.errors.DailyLimitExceeded`, :class:`~abby_core.errors.UserStorageFull`
        or :class:`~abby_core.errors.GlobalStorageFull` (nothing held). ``size_bytes`` must
        be a whole number from 1 to the global limit (:class:`~abby_core.errors.InvalidInput`).
        Exact across threads and processes that share the backend. The hold expires after
        ``RESERVATION_TTL_SECONDS`` if it is neither saved nor released. ``role_ids`` select
        a quota tier, ``sku_ids`` (active subscriptions) a premium tier. Past the daily
        allowance, one of the member's credits pays, if they have one (spent at commit only).
        """
        uid = keys.check_user_id(user_id)
        size = rules.check_size(size_bytes, estimate=self.estimate_bytes, limit=self.global_limit_bytes)
        limits = self.limits_for(tuple(role_ids), tuple(sku_ids))
        return await self.workers.run(self.protocol.reserve, uid, limits, size, on_cancel=self.protocol.release)

    async def save_image(
        self, reservation: Reservation, data: bytes, *, content_type: str = "image/png"
    ) -> StoredImage:
        """Store the image for ``reservation`` and commit the quota with its real size.

        Written whole or not at all; on any failure, or if the caller is cancelled, nothing
        is charged and nothing is kept. An image larger than the estimate is accepted only
        if the larger size still fits the limits. Returns the record with its link
        (presigned URL or path).
        """
        if not isinstance(reservation, Reservation):
            raise ReservationInvalid("save_image needs the Reservation returned by reserve().")
        return await self.workers.run(
            self.protocol.store,
            reservation,
            data,
            content_type,
            on_cancel=lambda stored: self.protocol.discard(reservation, stored.key),
        )

    async def discard(self, reservation: Reservation, stored: StoredImage) -> None:
        """Take back a saved image whose success was never reported (the request was interrupted).

        The image is deleted and the generation no longer counts. Shielded from cancellation.
        """
        await asyncio.shield(self.workers.run(self.protocol.discard, reservation, stored.key))

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose generation failed. Releasing twice is a no-op.

        When storage cannot be reached this raises :class:`~abby_core.errors.StorageError`;
        the hold then ends by itself when it expires, with anything uploaded for it.
        """
        await self.workers.run(self.protocol.release, reservation)

    @contextlib.asynccontextmanager
    async def reservation(self, user_id: object, *, role_ids: Iterable[int] = ()) -> AsyncIterator[Reservation]:
        """``reserve`` on entry; ``release`` if the block raises before ``save_image`` succeeded."""
        res = await self.reserve(user_id, role_ids=role_ids)
        try:
            yield res
        except BaseException:
            try:
                await asyncio.shield(self.release(res))
            except StorageError as exc:
                log.warning("Could not release reservation %s now (%s); it ends when it expires.", res.id, exc)
            raise

    # -- reading -----------------------------------------------------------------------------
    async def get_quota_status(
        self,
        user_id: object,
        *,
        role_ids: Iterable[int] = (),
        allow_cached: bool = False,
        sku_ids: Iterable[int] = (),
    ) -> QuotaStatus:
        """Where ``user_id`` stands today; ``daily_used`` counts generations in flight too.

        Raises :class:`~abby_core.errors.StorageUnavailable` when storage cannot be read,
        unless ``allow_cached`` is true and this manager has just read or written the
        user's and the global ledger: then it answers from those copies. (Right after a
        save, so an image that was stored is never reported as a failure.)
        """
        uid = keys.check_user_id(user_id)
        limits = self.limits_for(tuple(role_ids), tuple(sku_ids))
        return await self.workers.run(self.protocol.status, uid, limits, allow_cached)

    async def precheck(
        self, user_id: object, *, role_ids: Iterable[int] = (), sku_ids: Iterable[int] = ()
    ) -> QuotaStatus:
        """Refuse now what a reservation would refuse, holding nothing; returns the status.

        Only a hint (the reservation still decides), for adapters that must answer before
        they start a long task. Raises the same errors as :meth:`reserve`.
        """
        state = await self.get_quota_status(user_id, role_ids=role_ids, sku_ids=sku_ids)
        rules.precheck(state, self.estimate_bytes)
        return state

    async def list_images(self, user_id: object, *, limit: int | None = None) -> list[StoredImage]:
        """``user_id``'s images, newest first, each with a fresh link. Lists only their prefix.

        Images of generations still in flight (or failed, about to be deleted) are not shown.
        """
        return await self.workers.run(self.protocol.gallery, keys.check_user_id(user_id), limit)

    async def get_image(self, user_id: object, key: str) -> bytes:
        """The bytes of one of ``user_id``'s own images (:class:`ImageNotFound` otherwise)."""
        full = keys.check_image_key(keys.check_user_id(user_id), key)
        return await self.workers.run(self.backend.get_object, full)

    async def delete_image(self, user_id: object, key: str) -> int:
        """Delete one of ``user_id``'s images and free its storage; returns the bytes freed.

        The generation still counts for the day. ``key`` may be the full key or the file
        name. Other users' keys, traversal and absolute paths raise
        :class:`~abby_core.errors.InvalidKey`; a missing image raises
        :class:`~abby_core.errors.ImageNotFound`.
        """
        return await self.workers.run(self.protocol.delete_image, keys.check_user_id(user_id), key)

    # -- housekeeping --------------------------------------------------------------------------
    async def cleanup_old_files(self, days: int | None = None, *, dry_run: bool = False) -> CleanupReport:
        """Delete images older than ``days`` (default ``STORAGE_CLEANUP_DAYS``) and free their quota.

        ``days`` is a whole number from 0 to 36500 (:class:`~abby_core.errors.InvalidInput`).
        Age is the object's LastModified in S3, the file's modification time on disk. An
        image younger than a hold's lifetime is never touched, whatever ``days`` says: it
        may belong to a generation still in flight. Also removes temporary files that
        interrupted writes left behind.
        """
        return await self.workers.run(self.housekeeping.cleanup, days, dry_run)

    async def reconcile(self) -> ReconcileReport:
        """Recompute every user's usage from the stored objects; report and fix drift.

        Run on start and daily (lifecycle deletions never tell the app). Safe while
        generations are running: images in flight are counted when they commit. Also drops
        expired holds (with their uploads) and temporary files of interrupted writes.
        """
        return await self.workers.run(self.housekeeping.reconcile)

    async def stats(self, *, top: int = 10) -> GlobalStats:
        """Server-wide usage and the users using the most storage.

        With escrow, usage includes the leases (``GlobalStats.leases``), and the members other
        processes served appear once those processes settle their leases (within a lease's
        lifetime).
        """
        return await self.workers.run(self.housekeeping.stats, top)

    async def ensure_ready(self, *, create: bool = True) -> ReadyReport:
        """Prepare the storage: folders, or bucket + privacy + lifecycle rules (S3).

        With STORAGE_ARCHIVE the ``archive/`` rule is added and the ``images/`` rule waits
        ``ARCHIVE_GRACE_DAYS`` longer, so the daily maintenance archives images first.
        """
        return await self.workers.run(self.housekeeping.ensure_ready, create)

    # -- admin overrides -------------------------------------------------------------------------
    async def set_blocked(self, user_id: object, blocked: bool) -> None:
        """Block (or unblock) a user from generating; their images stay."""
        await self.workers.run(self.accounts.set_blocked, keys.check_user_id(user_id), blocked)

    async def grant(self, user_id: object, extra: int) -> None:
        """Give ``user_id`` ``extra`` more generations today (until midnight UTC)."""
        rules.check_grant(extra)
        uid = keys.check_user_id(user_id)
        await self.workers.run(self.accounts.grant, uid, extra)

    # -- credits -----------------------------------------------------------------------------
    async def add_credits(self, user_id: object, credits: int, *, source: str) -> bool:
        """Give ``user_id`` ``credits`` once per ``source`` (an entitlement id, an admin grant's id).

        Credits are spent one a generation past the daily allowance, at commit (a failed
        generation spends none), and do not expire. Calling again with the same source
        changes nothing and returns ``False``; ``True`` the first time. A source refunded
        before it was added gives nothing (``False``).
        """
        rules.check_credits(credits)
        rules.check_source(source)
        uid = keys.check_user_id(user_id)
        return await self.workers.run(self.accounts.add_credits, uid, credits, source)

    async def refund_credits(self, user_id: object, *, source: str) -> int:
        """Take back the unspent credits of a refunded ``source``; returns how many it takes.

        Never more than the source gave, nor credits already spent. A credit promised to a
        generation in flight is counted and taken when that generation fails (if it succeeds,
        the credit was spent). A source not added yet leaves a tombstone: adding it later
        gives nothing. Idempotent: a second call returns the same number and removes nothing more.
        """
        rules.check_source(source)
        uid = keys.check_user_id(user_id)
        return await self.workers.run(self.accounts.refund_credits, uid, source)

    async def credit_refunded(self, user_id: object, *, source: str) -> bool:
        """Whether the refund of ``source`` is recorded in ``user_id``'s document (a refund that
        failed or was cut short is not: call :meth:`refund_credits` again)."""
        rules.check_source(source)
        uid = keys.check_user_id(user_id)
        return await self.workers.run(self.accounts.credit_refunded, uid, source)

    async def reset_daily(self, user_id: object) -> None:
        """Set ``user_id``'s generations used today back to zero (and drop today's grants)."""
        await self.workers.run(self.accounts.reset_daily, keys.check_user_id(user_id))

    # -- archive -------------------------------------------------------------------------------
    # STORAGE_ARCHIVE: abby_core.storage.archive and .restore hold the logic, docs/STORAGE_SYSTEM.md
    # ("Archive") the crash table. Archived images have their own limit (MAX_USER_ARCHIVE_MB)
    # and count against neither the member's nor the server's active storage.
    async def archive_old(self, days: int | None = None, *, dry_run: bool = False) -> ArchiveReport:
        """Archive images older than ``days`` (default ``STORAGE_CLEANUP_DAYS``), then prune the archive.

        Works whether or not STORAGE_ARCHIVE is on (cleanup archives only when it is). Like
        cleanup, an image younger than a hold's lifetime is never touched. An image whose
        member's archive is full (``MAX_USER_ARCHIVE_MB``) is deleted as cleanup would.
        ``dry_run`` only counts (``archived_bytes`` is then 0: nothing was encoded).
        """
        return await self.workers.run(self.housekeeping.archive_old, days, dry_run)

    async def list_archived(self, user_id: object, *, limit: int | None = None) -> list[ArchivedImage]:
        """``user_id``'s archived images, most recently archived first, each with a fresh link."""
        return await self.workers.run(self.archiver.list, keys.check_user_id(user_id), limit)

    async def archived_link(self, user_id: object, key: str) -> ArchivedImage:
        """One archived image with a fresh link (:class:`ArchivedImageNotFound` when there is none)."""
        return await self.workers.run(self.archiver.link, keys.check_user_id(user_id), key)

    async def get_archived(self, user_id: object, key: str) -> bytes:
        """The bytes of one of ``user_id``'s archived images."""
        return await self.workers.run(self.archiver.get, keys.check_user_id(user_id), key)

    async def delete_archived(self, user_id: object, key: str) -> int:
        """Delete one archived image for good; returns its size. Missing: :class:`ArchivedImageNotFound`."""
        return await self.workers.run(self.archiver.delete, keys.check_user_id(user_id), key)

    async def restore_archived(
        self, user_id: object, key: str, *, role_ids: Iterable[int] = (), sku_ids: Iterable[int] = ()
    ) -> StoredImage:
        """Bring an archived image back to the gallery (as archived: WebP, or the original bytes).

        Reserves its size like a generation would, against the member's storage limit (their
        tier's, from ``role_ids`` and ``sku_ids``) and the global limit, but uses none of the day's
        generations. Raises :class:`~abby_core.errors.UserStorageFull` or
        :class:`~abby_core.errors.GlobalStorageFull` when there is no room (it stays archived), and
        :class:`~abby_core.errors.ArchivedImageNotFound` when ``key`` is not archived (never, or
        restored or deleted since). An image whose restore, or archive, stopped half-way is finished.
        """
        uid = keys.check_user_id(user_id)
        return await self.workers.run(self.restorer.restore, uid, key, self.limits_for(tuple(role_ids), tuple(sku_ids)))
