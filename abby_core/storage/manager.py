"""StorageManager: where images go, and who may make another one.

The flow reads like the story::

    reservation = await storage.reserve(user_id)            # before any paid API call
    try:
        image = await generator.text_to_image(prompt)
    except Exception:
        await storage.release(reservation)                 # a failure costs nothing
        raise
    stored = await storage.save_image(reservation, image.data, content_type=image.content_type)

or, equivalently, ``async with storage.reservation(user_id) as r: ...``.

Every method is a coroutine; the blocking work (boto3, file I/O, the ledger's
compare-and-swap) runs on the manager's own worker threads, so the event loop never
waits on storage. Errors are :mod:`abby_core.errors` only.

A failed generation costs nothing: its image, its hold and (if the commit landed
before the answer was lost) its count are undone. When storage is unreachable the
undo cannot be written, so the manager remembers it and finishes it before its next
operation once storage answers again: after an outage, counts are right without a
restart and without waiting for holds to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from abby_core.config import MB, QuotaTier, Settings
from abby_core.errors import (
    ImageNotFound,
    InvalidImage,
    InvalidInput,
    InvalidUser,
    ReservationInvalid,
    StorageError,
    StorageUnavailable,
)
from abby_core.storage import keys, quota
from abby_core.storage.accounts import Accounts
from abby_core.storage.backend import StorageBackend
from abby_core.storage.filesystem import FilesystemBackend
from abby_core.storage.ledger import Ledger, NoChange
from abby_core.storage.models import (
    CleanupReport,
    GlobalStats,
    ObjectInfo,
    QuotaStatus,
    ReadyReport,
    ReconcileReport,
    Reservation,
    StoredImage,
    UserLimits,
)

__all__ = ["StorageManager"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")
Doc = dict[str, Any]
_CONTENT_TYPES = ("image/png", "image/jpeg", "image/webp")
# A hold with less time left than this is renewed before the image is written, so it
# cannot expire during the upload (S3 timeouts x attempts stay well below it).
_SAVE_MARGIN_SECONDS = 120
_SPENT_REMEMBERED = 10_000


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StorageManager:
    """Images per user, with exact daily, per-user and global quotas.

    Build it with :meth:`from_settings`, or with the seed's keyword names for a folder::

        StorageManager(storage_root="shared", max_global_storage_mb=5000,
                       max_user_storage_mb=500, max_user_daily_gens=5)
    """

    def __init__(
        self,
        backend: StorageBackend | None = None,
        *,
        storage_root: str | Path | None = None,
        max_global_storage_mb: float = 5000,
        max_user_storage_mb: float = 500,
        max_user_daily_gens: int = 5,
        cleanup_days: int = 7,
        image_gen_size_mb: float = 1.5,
        reservation_ttl_seconds: int = 900,
        presigned_url_ttl_seconds: int = 3600,
        quota_tiers: Sequence[QuotaTier] = (),
        clock: Callable[[], datetime] | None = None,
        max_workers: int = 8,
    ) -> None:
        if backend is None:
            backend = FilesystemBackend(storage_root if storage_root is not None else "shared")
        self.backend = backend
        self.clock = clock or _utcnow
        self.accounts = Accounts(backend, lambda: self.clock())
        self.global_limit_bytes = int(max_global_storage_mb * MB)
        self.default_limits = UserLimits(max_user_daily_gens, int(max_user_storage_mb * MB))
        self.cleanup_days = cleanup_days
        self.estimate_bytes = int(image_gen_size_mb * MB)
        self.reservation_ttl = reservation_ttl_seconds
        self.link_ttl = presigned_url_ttl_seconds
        self.quota_tiers = tuple(quota_tiers)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="abby-storage")
        self._closed = False
        self._spent: OrderedDict[str, None] = OrderedDict()  # reservations saved or released
        self._spent_lock = threading.Lock()

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
        """The manager the settings describe (``STORAGE_BACKEND`` picks the backend)."""
        s = settings.storage
        if backend is None:
            if s.backend == "s3":
                from abby_core.storage.s3 import S3Backend

                backend = S3Backend(settings.s3)
            else:
                backend = FilesystemBackend(s.root)
        return cls(
            backend,
            max_global_storage_mb=s.max_global_storage_mb,
            max_user_storage_mb=s.max_user_storage_mb,
            max_user_daily_gens=s.max_user_daily_gens,
            cleanup_days=s.cleanup_days,
            image_gen_size_mb=s.image_gen_size_mb,
            reservation_ttl_seconds=s.reservation_ttl_seconds,
            presigned_url_ttl_seconds=settings.s3.presigned_url_ttl_seconds,
            quota_tiers=settings.discord.quota_tiers,
            clock=clock,
        )

    # -- plumbing ------------------------------------------------------------------------
    async def _run(
        self, fn: Callable[..., _T], *args: Any, on_cancel: Callable[[_T], object] | None = None, **kwargs: Any
    ) -> _T:
        """Run ``fn`` on a worker thread.

        A worker cannot be interrupted, so when the caller is cancelled this waits for it
        to finish before the cancellation goes on (its effects are then known, and a
        release that follows cannot race it); ``on_cancel(result)`` undoes a result
        nobody will receive (a reservation).
        """
        if self._closed:
            raise StorageError("The storage manager is closed.")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, partial(self._call, fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                result = await future
                if on_cancel is not None:
                    await loop.run_in_executor(self._executor, on_cancel, result)
            raise

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self.accounts.owed:
            self.accounts.settle_owed()
        return fn(*args, **kwargs)

    async def aclose(self) -> None:
        """Stop the workers and close connections. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self.accounts.owed:  # last chance; otherwise the holds expire after RESERVATION_TTL_SECONDS
            await loop.run_in_executor(self._executor, self.accounts.settle_owed)
        await loop.run_in_executor(None, self._executor.shutdown)
        self.backend.close()

    async def __aenter__(self) -> StorageManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def limits_for(self, role_ids: Iterable[int] = ()) -> UserLimits:
        """The most generous of the defaults and every tier whose role the member holds."""
        roles = set(role_ids)
        limits = self.default_limits
        for tier in self.quota_tiers:
            if tier.role_id in roles:
                limits = UserLimits(
                    max(limits.daily_gens, tier.daily_gens),
                    max(limits.storage_bytes, int(tier.storage_mb * MB)),
                )
        return limits

    # -- reserve / save / release ----------------------------------------------------------
    def _hold(self, uid: str, rid: str, stem: str, size: int, limits: UserLimits, now: datetime) -> datetime:
        """Hold quota for ``rid`` in the user and global ledgers; on failure nothing stays held."""
        try:
            entry, user_doc = self.accounts.update_user(
                uid,
                partial(
                    quota.user_hold, rid=rid, size=size, stem=stem, limits=limits, now=now, ttl=self.reservation_ttl
                ),
            )
        except BaseException as exc:
            if getattr(exc, "maybe_written", False):  # the hold may have landed: take it back
                self.accounts.undo_or_owe(uid, rid, None, quota.day_of(now))
            raise
        try:
            self.accounts.update_global(
                partial(
                    quota.global_hold,
                    rid=rid,
                    user_id=uid,
                    size=int(entry["bytes"]),
                    limit=self.global_limit_bytes,
                    now=now,
                    ttl=self.reservation_ttl,
                    user_total=quota.user_bytes(user_doc, include_reserved=False),
                    user_version=int(user_doc["version"]),
                )
            )
        except BaseException:
            self.accounts.undo_or_owe(uid, rid, None, quota.day_of(now))
            raise
        return datetime.fromisoformat(str(entry["expires"]))

    def _reserve(self, user_id: object, role_ids: Iterable[int], size: int | None) -> Reservation:
        uid = keys.check_user_id(user_id)
        limits = self.limits_for(role_ids)
        rid = secrets.token_hex(8)  # 64 random bits: keys are not guessable
        now = self.clock()
        stem = keys.key_stem(uid, now, rid)
        nbytes = self.estimate_bytes if size is None else int(size)
        expires = self._hold(uid, rid, stem, nbytes, limits, now)
        return Reservation(rid, uid, nbytes, stem, quota.day_of(now), expires, limits)

    async def reserve(
        self, user_id: object, *, role_ids: Iterable[int] = (), size_bytes: int | None = None
    ) -> Reservation:
        """Hold one generation and ``IMAGE_GEN_SIZE_MB`` for ``user_id``, atomically.

        Checks, in order, the daily generation count (resets at midnight UTC), the user's
        bytes and the global bytes; raises :class:`~abby_core.errors.DailyLimitExceeded`,
        :class:`~abby_core.errors.UserStorageFull` or
        :class:`~abby_core.errors.GlobalStorageFull` (nothing held), or
        :class:`~abby_core.errors.UserBlocked`. Exact across threads and processes that
        share the backend. The hold expires after ``RESERVATION_TTL_SECONDS`` if it is
        neither saved nor released. ``role_ids`` select a quota tier.
        """
        return await self._run(self._reserve, user_id, tuple(role_ids), size_bytes, on_cancel=self._release)

    def _save(self, res: Reservation, data: bytes, content_type: str) -> StoredImage:
        if not isinstance(data, bytes | bytearray) or not data:
            raise InvalidImage("There is no image to save (the image data is empty).")
        if content_type not in _CONTENT_TYPES:
            raise InvalidImage(f"Images must be PNG, JPEG or WebP, not {content_type!r}.")
        size = len(data)
        self._spend(res)
        key: str | None = None
        try:
            now = self.clock()
            if size > res.bytes or res.expires_at - now < timedelta(seconds=_SAVE_MARGIN_SECONDS):
                # Hold again with the real size: grows the hold if the image is larger than
                # the estimate (checking the limits again), renews its expiry, or re-creates
                # it if it expired meanwhile. Nothing is written unless this succeeds.
                self._hold(res.user_id, res.id, res.key_stem, size, res.limits, now)
            key = keys.image_key(res.key_stem, content_type)
            self.backend.put_object(key, bytes(data), content_type)
            now = self.clock()
            _, user_doc = self.accounts.update_user(
                res.user_id, partial(quota.user_commit, rid=res.id, key=key, size=size, now=now)
            )
            self.accounts.sync_global(res.user_id, user_doc, rid=res.id)
            url, path = self.backend.link(key, content_type=content_type, ttl=self.link_ttl)
        except BaseException:
            # Leave nothing half-done: no object, no hold and no count for a failed save.
            self.accounts.undo_or_owe(res.user_id, res.id, key, res.day)
            raise
        return StoredImage(key, res.user_id, size, now, content_type, url, path)

    async def save_image(
        self, reservation: Reservation, data: bytes, *, content_type: str = "image/png"
    ) -> StoredImage:
        """Store the image for ``reservation`` and commit the quota with its real size.

        Written whole or not at all; on any failure the hold is released and nothing is
        charged. An image larger than the estimate is accepted only if the larger size
        still fits the limits. Returns the record with its link (presigned URL or path).
        """
        if not isinstance(reservation, Reservation):
            raise ReservationInvalid("save_image needs the Reservation returned by reserve().")
        return await self._run(self._save, reservation, data, content_type)

    def _spend(self, res: Reservation) -> None:
        """Mark ``res`` used; a reservation saves one image or is released, once."""
        with self._spent_lock:
            if res.id in self._spent:
                raise ReservationInvalid("This reservation was already used: reserve again for another image.")
            self._spent[res.id] = None
            while len(self._spent) > _SPENT_REMEMBERED:
                self._spent.popitem(last=False)

    def _release(self, res: Reservation) -> None:
        with self._spent_lock:
            self._spent[res.id] = None
        try:
            self.accounts.undo(res.user_id, res.id, None, res.day)
        except StorageError:
            self.accounts.owe(res.user_id, res.id, None, res.day)
            raise

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose generation failed. Releasing twice is a no-op.

        When storage cannot be reached this raises :class:`~abby_core.errors.StorageError`,
        and the manager still releases the hold before its next operation once storage answers.
        """
        await self._run(self._release, reservation)

    @contextlib.asynccontextmanager
    async def reservation(self, user_id: object, *, role_ids: Iterable[int] = ()) -> AsyncIterator[Reservation]:
        """``reserve`` on entry; ``release`` if the block raises before ``save_image`` succeeded."""
        res = await self.reserve(user_id, role_ids=role_ids)
        try:
            yield res
        except BaseException:
            with contextlib.suppress(StorageError):
                await asyncio.shield(self.release(res))
            raise

    # -- reading -----------------------------------------------------------------------------
    def _status(self, user_id: object, role_ids: Iterable[int], allow_cached: bool = False) -> QuotaStatus:
        uid = keys.check_user_id(user_id)
        limits = self.limits_for(role_ids)
        now = self.clock()
        try:
            user = self.accounts.user_doc(uid)
            glob = self.accounts.global_doc()
        except StorageUnavailable:
            cached_user = self.ledger.last_seen(keys.user_ledger_key(uid))
            cached_glob = self.ledger.last_seen(keys.GLOBAL_LEDGER_KEY)
            if not allow_cached or cached_user is None or cached_glob is None:
                raise
            user, glob = cached_user, cached_glob
        quota.purge_expired(user, now)
        quota.purge_expired(glob, now)
        quota.user_roll_day(user, now)
        return QuotaStatus(
            user_id=uid,
            daily_used=quota.daily_used(user, now),
            daily_limit=limits.daily_gens + int(user.get("bonus", 0)),
            resets_at=quota.next_midnight(now),
            user_bytes=quota.user_bytes(user),
            user_limit_bytes=limits.storage_bytes,
            global_bytes=quota.global_usage(glob),
            global_limit_bytes=self.global_limit_bytes,
            in_flight=len(user["reservations"]),
            blocked=bool(user.get("blocked")),
        )

    async def get_quota_status(
        self, user_id: object, *, role_ids: Iterable[int] = (), allow_cached: bool = False
    ) -> QuotaStatus:
        """Where ``user_id`` stands today; ``daily_used`` counts generations in flight too.

        Raises :class:`~abby_core.errors.StorageUnavailable` when storage cannot be read,
        unless ``allow_cached`` is true and this manager has just read or written the
        user's and the global ledger: then it answers from those copies. (Right after a
        save, so an image that was stored is never reported as a failure.)
        """
        return await self._run(self._status, user_id, tuple(role_ids), allow_cached)

    def _stored(self, obj: ObjectInfo) -> StoredImage:
        ext = obj.key.rsplit(".", 1)[-1]
        content_type = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}[ext]
        url, path = self.backend.link(obj.key, content_type=content_type, ttl=self.link_ttl)
        owner = keys.user_from_key(obj.key) or ""
        return StoredImage(obj.key, owner, obj.size, obj.last_modified, content_type, url, path)

    def _list(self, user_id: object, limit: int | None) -> list[StoredImage]:
        uid = keys.check_user_id(user_id)
        found = [o for o in self.backend.list_objects(keys.user_prefix(uid)) if keys.user_from_key(o.key) == uid]
        found.sort(key=lambda o: (o.last_modified, o.key), reverse=True)
        return [self._stored(o) for o in found[:limit]]

    async def list_images(self, user_id: object, *, limit: int | None = None) -> list[StoredImage]:
        """``user_id``'s images, newest first, each with a fresh link. Lists only their prefix."""
        return await self._run(self._list, user_id, limit)

    def _get(self, user_id: object, key: str) -> bytes:
        full = keys.check_image_key(keys.check_user_id(user_id), key)
        return self.backend.get_object(full)

    async def get_image(self, user_id: object, key: str) -> bytes:
        """The bytes of one of ``user_id``'s own images (:class:`ImageNotFound` otherwise)."""
        return await self._run(self._get, user_id, key)

    def _delete(self, user_id: object, key: str) -> int:
        uid = keys.check_user_id(user_id)
        full = keys.check_image_key(uid, key)
        info = self.backend.head_object(full)
        if info is None:
            raise ImageNotFound(key)
        # Object first, then the ledger: a reconcile running in between can only
        # see the object gone, never count it back.
        self.backend.delete_objects([full])
        self.accounts.forget_objects(uid, [full])
        return info.size

    async def delete_image(self, user_id: object, key: str) -> int:
        """Delete one of ``user_id``'s images and free its quota; returns the bytes freed.

        ``key`` may be the full key or the file name. Other users' keys, traversal and
        absolute paths raise :class:`~abby_core.errors.InvalidKey`; a missing image
        raises :class:`~abby_core.errors.ImageNotFound`.
        """
        return await self._run(self._delete, user_id, key)

    # -- housekeeping --------------------------------------------------------------------------
    def _cleanup(self, days: int | None, dry_run: bool) -> CleanupReport:
        days = self.cleanup_days if days is None else days
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise InvalidInput("The cleanup age must be a whole number of days, 0 or more.")
        cutoff = self.clock() - timedelta(days=days)
        old = [o for o in self.backend.list_objects(keys.USERS_PREFIX) if o.last_modified < cutoff]
        by_user: dict[str, list[str]] = defaultdict(list)
        for obj in old:
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                by_user[owner].append(obj.key)
        if not dry_run and old:
            self.backend.delete_objects([o.key for o in old])  # batches of 1000 on S3
            for uid, gone in by_user.items():
                self.accounts.forget_objects(uid, gone)
        if not dry_run:
            stale_temp = [o.key for o in self.backend.list_objects(keys.TEMP_PREFIX) if o.last_modified < cutoff]
            self.backend.delete_objects(stale_temp)
        return CleanupReport(len(old), sum(o.size for o in old), len(by_user), cutoff, dry_run)

    async def cleanup_old_files(self, days: int | None = None, *, dry_run: bool = False) -> CleanupReport:
        """Delete images older than ``days`` (default ``STORAGE_CLEANUP_DAYS``) and free their quota.

        Age is the object's LastModified in S3, the file's modification time on disk.
        Lifecycle rules do this server-side, late or (on some servers) never; this sweep
        does not depend on them. Returns how many objects and bytes were (or would be,
        with ``dry_run``) removed.
        """
        return await self._run(self._cleanup, days, dry_run)

    def _reconcile(self) -> ReconcileReport:
        started = self.clock()
        truth: dict[str, dict[str, ObjectInfo]] = defaultdict(dict)
        for obj in self.backend.list_objects(keys.USERS_PREFIX):
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                truth[owner][obj.key] = obj
        users = set(truth)
        for obj in self.backend.list_objects(keys.USERS_LEDGER_PREFIX):
            uid = obj.key[len(keys.USERS_LEDGER_PREFIX) :].removesuffix(".json")
            with contextlib.suppress(InvalidUser):
                users.add(keys.check_user_id(uid))
        drift: dict[str, tuple[int, int]] = {}
        totals: dict[str, tuple[int, int]] = {}
        for uid in sorted(users):
            before, after, version = self._reconcile_user(uid, truth.get(uid, {}), started)
            totals[uid] = (after, version)
            if before != after:
                drift[uid] = (before, after)
                log.warning("Reconcile: user %s ledger said %d bytes, storage holds %d.", uid, before, after)

        def rebuild_totals(doc: Doc) -> None:
            quota.purge_expired(doc, self.clock())
            for uid, (total, version) in totals.items():
                current = doc["users"].get(uid)
                if current is None or int(current[1]) <= version:
                    doc["users"][uid] = [total, version]

        self.accounts.update_global(rebuild_totals)
        objects = sum(len(v) for v in truth.values())
        size = sum(o.size for v in truth.values() for o in v.values())
        return ReconcileReport(len(users), objects, size, drift)

    def _reconcile_user(self, uid: str, found: dict[str, ObjectInfo], started: datetime) -> tuple[int, int, int]:
        """Make ``uid``'s ledger agree with the listing ``found`` (taken at ``started``).

        Saves and deletes keep running meanwhile, so the listing is only trusted where it
        cannot be stale: entries committed after it began are kept; images it shows that
        the ledger lacks are added only if they still exist; images of holds in flight
        are left to their save. Returns (bytes before, bytes after, document version).
        """
        known = self.accounts.user_doc(uid)
        candidates = [k for k in found if k not in known["objects"]]
        confirmed = {k for k in candidates if self.backend.head_object(k) is not None}

        def correct(doc: Doc) -> tuple[int, int]:
            quota.purge_expired(doc, self.clock())
            pending = tuple(r["stem"] for r in doc["reservations"].values()) or ("\0",)
            before = quota.user_bytes(doc, include_reserved=False)
            objects: dict[str, list[Any]] = {}
            for k, entry in doc["objects"].items():
                if k in found or datetime.fromisoformat(str(entry[1])) > started:
                    objects[k] = entry  # present, or committed after the listing began
            for k, o in found.items():
                if k not in objects and k in confirmed and not k.startswith(pending):
                    objects[k] = [o.size, o.last_modified.astimezone(UTC).isoformat()]
            after = sum(int(e[0]) for e in objects.values())
            if objects == doc["objects"]:
                raise NoChange((before, after))
            doc["objects"] = objects
            return before, after

        (before, after), doc = self.accounts.update_user(uid, correct)
        return before, after, int(doc["version"])

    async def reconcile(self) -> ReconcileReport:
        """Recompute every user's usage from the stored objects; report and fix drift.

        Run on start and daily (lifecycle deletions never tell the app). Safe while
        generations are running: images in flight are counted when they commit.
        """
        return await self._run(self._reconcile)

    def _stats(self, top: int) -> GlobalStats:
        glob = self.accounts.global_doc()
        quota.purge_expired(glob, self.clock())
        ranked = sorted(((u, int(v[0])) for u, v in glob["users"].items() if int(v[0]) > 0), key=lambda t: -t[1])
        return GlobalStats(
            global_bytes=quota.global_usage(glob),
            global_limit_bytes=self.global_limit_bytes,
            users=len(ranked),
            in_flight=len(glob["reservations"]),
            top_users=ranked[:top],
        )

    async def stats(self, *, top: int = 10) -> GlobalStats:
        """Server-wide usage and the users using the most storage."""
        return await self._run(self._stats, top)

    async def ensure_ready(self, *, create: bool = True) -> ReadyReport:
        """Prepare the storage: folders, or bucket + privacy + lifecycle rule (S3)."""
        return await self._run(self.backend.ensure_ready, cleanup_days=self.cleanup_days, create=create)

    # -- admin overrides -------------------------------------------------------------------------
    def _admin(self, user_id: object, change: Callable[[Doc], None]) -> None:
        uid = keys.check_user_id(user_id)
        now = self.clock()

        def mutate(doc: Doc) -> None:
            quota.user_roll_day(doc, now)
            change(doc)

        self.accounts.update_user(uid, mutate)

    async def set_blocked(self, user_id: object, blocked: bool) -> None:
        """Block (or unblock) a user from generating; their images stay."""
        await self._run(self._admin, user_id, lambda d: d.__setitem__("blocked", bool(blocked)))

    async def grant(self, user_id: object, extra: int) -> None:
        """Give ``user_id`` ``extra`` more generations today (until midnight UTC)."""
        if not isinstance(extra, int) or not 1 <= extra <= 1000:
            raise InvalidInput("The number of extra generations must be a whole number from 1 to 1000.")
        await self._run(self._admin, user_id, lambda d: d.__setitem__("bonus", int(d.get("bonus", 0)) + extra))

    async def reset_daily(self, user_id: object) -> None:
        """Set ``user_id``'s generations used today back to zero (and drop today's grants)."""

        def reset(doc: Doc) -> None:
            doc["count"], doc["bonus"] = 0, 0

        await self._run(self._admin, user_id, reset)
