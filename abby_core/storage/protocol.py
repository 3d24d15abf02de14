"""The accounting protocol: reserve → upload → commit, and what undoes each step.

Synchronous; :class:`~abby_core.storage.manager.StorageManager` runs it on worker threads.
The steps, and why a crash at any of them costs nothing (docs/STORAGE_SYSTEM.md has the
long form):

1. **Hold** (user document, compare-and-swap): one generation and the estimated bytes,
   with an expiry and the key stem the image will have. Durable: if the process dies
   from here on, the hold is the record of what to undo.
2. **Global hold** (global document): the user document's new snapshot, refused when
   the global limit would be passed. Refused or failed: the hold is voided (step 6).
3. **Upload** the image under the stem (whole or not at all).
4. **Commit** (user document): the hold becomes the stored image and counts. This single
   conditional write is the commit point: before it the generation failed, after it it
   succeeded. A commit whose answer was lost is *settled*: the next write to the user
   document either finds it committed or voids the hold, and conditional writes make that
   decision final (a late copy of the commit can no longer land).
5. **Global snapshot** (best effort): if it fails, the global document keeps counting the
   hold (never less than the truth) until it is refreshed from the user document.
6. **Void** (failure, interruption): the hold is marked void, its uploads are deleted,
   then the hold is dropped. A hold its owner never voided (a killed process) is treated
   the same once it has expired. An interrupted generation that had already committed is
   taken back the same way: the commit is undone and a void hold marks its upload.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from abby_core.errors import (
    ImageNotFound,
    InvalidImage,
    ReservationInvalid,
    SaveOutcomeUnknown,
    StorageError,
    StorageUnavailable,
)
from abby_core.storage import keys, rules, usage_rules
from abby_core.storage.accounts import Accounts
from abby_core.storage.documents import Hold, UserLedger
from abby_core.storage.escrow import Escrow
from abby_core.storage.ledger import UncertainWrite
from abby_core.storage.links import stored_image
from abby_core.storage.models import QuotaStatus, Reservation, StoredImage, UserLimits

__all__ = ["QuotaProtocol"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")

# A hold with less time left than this is renewed before the image is uploaded, so it
# cannot expire during the upload (capped at half a hold's lifetime).
SAVE_MARGIN = timedelta(seconds=120)
# An owner commits only with this much of its hold to spare (capped at a quarter of a hold's
# lifetime), time for the commit's write to land: another process counts the hold, by its own
# clock, until PURGE_MARGIN (rules.CLOCK_BOUND) after expiry, which covers the clocks' difference.
CLOCK_SKEW = timedelta(seconds=60)
# How many used (saved or released) reservations a process remembers, to refuse a second use.
_SPENT_REMEMBERED = 10_000


class QuotaProtocol:
    """The quota protocol (reserve → upload → commit, and the undo of each) over :class:`Accounts`, the books."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        global_limit: int,
        reservation_ttl: int,
        link_ttl: int,
        settle_seconds: float = 30.0,
        escrow: Escrow | None = None,
    ) -> None:
        self.accounts = accounts
        #: With escrow, holds are admitted from this process's lease of the global budget
        #: instead of a global write each (step 2), and commits reach the global document
        #: when the lease is settled (step 5).
        self.escrow = escrow
        self.backend = accounts.backend
        self.clock: Callable[[], datetime] = accounts.clock
        self.global_limit = global_limit
        self.ttl = reservation_ttl
        self.link_ttl = link_ttl
        self.settle_seconds = settle_seconds
        self._spent: OrderedDict[str, None] = OrderedDict()  # reservations saved or released
        self._spent_lock = threading.Lock()
        # Voids storage refused: retried before this process's next operation, so after an
        # outage the hold goes at once; if the process dies, the hold's expiry still ends it.
        self._unfinished: dict[str, tuple[keys.MemberId, str | None]] = {}
        self._unsynced: set[keys.MemberId] = set()  # users whose commit the global document has not seen
        self._unmirrored: set[keys.MemberId] = set()  # users whose member record may count other credits spent
        self._undiscarded: dict[str, tuple[Reservation, str]] = {}  # interrupted commits to take back
        self._unfinished_lock = threading.Lock()
        self.skew = min(CLOCK_SKEW, timedelta(seconds=reservation_ttl / 4))
        self.save_margin = min(SAVE_MARGIN, timedelta(seconds=reservation_ttl / 2))

    # -- steps 1 and 2 ---------------------------------------------------------------------
    def reserve(self, uid: keys.MemberId, limits: UserLimits, size: int) -> Reservation:
        rid = secrets.token_hex(8)  # 64 random bits: keys are not guessable
        now = self.clock()
        stem = keys.key_stem(uid, now, rid)
        held = self._hold(uid, rid, stem, size, limits, renew=False)
        return Reservation(rid, uid, held.bytes, stem, held.day.isoformat(), held.expires, limits, held.credit)

    def _hold(
        self, uid: keys.MemberId, rid: str, stem: str, size: int, limits: UserLimits, *, renew: bool, grow: int = 0
    ) -> Hold:
        """Step 1 (and, without escrow, step 2); ``renew``: grow a live hold by ``grow`` bytes and renew it."""
        step = partial(
            rules.hold,
            rid=rid,
            size=size,
            stem=stem,
            limits=limits,
            now=self.clock(),
            ttl=self.ttl,
            skew=self.skew,
            renew=renew,
        )
        if self.escrow is not None:
            return self._hold_in_escrow(uid, rid, step, renew=renew, charge=grow if renew else size)
        return self.hold_globally(uid, rid, step, renew=renew)

    def hold_globally(
        self, uid: keys.MemberId, rid: str, step: Callable[[UserLedger], _T], *, renew: bool = False
    ) -> _T:
        """Steps 1 and 2 with a write of the global document: ``step`` holds ``rid`` in the user
        document, then the global document records it or refuses it; a new hold that failed
        either step is voided (it may have landed)."""
        try:
            held, doc = self.accounts.update_user(uid, step)
        except UncertainWrite:
            if not renew:
                self.void_quietly(uid, rid)  # the hold may have landed
            raise
        try:
            self.accounts.hold_global(uid, doc, rid, self.global_limit)
        except BaseException:
            if not renew:
                self.void_quietly(uid, rid)
            raise
        return held

    def _hold_in_escrow(
        self, uid: keys.MemberId, rid: str, step: Callable[[UserLedger], Hold], *, renew: bool, charge: int
    ) -> Hold:
        assert self.escrow is not None
        token = self.escrow.charge(charge)  # from the lease, before the hold can exist anywhere
        try:
            held, doc = self.accounts.update_user(uid, step)
        except UncertainWrite:
            self.escrow.uncertain(token, uid)
            if not renew:
                self.void_quietly(uid, rid)
            raise
        except BaseException:
            self.escrow.refund(token)
            raise
        self.escrow.landed(token, uid, doc)
        return held

    # -- steps 3 to 5 ----------------------------------------------------------------------
    def store(self, res: Reservation, data: bytes, content_type: str) -> StoredImage:
        """:meth:`save` the image of ``res`` (once: a reservation saves one image or is released)
        and return it with a link; a link storage refused is left to the gallery to make later."""
        if not isinstance(data, bytes | bytearray) or not data:
            raise InvalidImage("There is no image to save (the image data is empty).")
        if content_type not in keys.CONTENT_TYPES:
            raise InvalidImage(f"Images must be PNG, JPEG or WebP, not {content_type!r}.")
        self._spend(res)
        key, _ = self.save(res, bytes(data), content_type)
        try:
            url, path = self.backend.link(key, content_type=content_type, ttl=self.link_ttl)
        except StorageError:
            url, path = None, None  # the image is stored and charged; the gallery links it later
            log.warning("Could not make a link for %s; it is stored.", key)
        return StoredImage(key, res.user_id, len(data), self.clock(), content_type, url, path)

    def _spend(self, res: Reservation) -> None:
        """Mark ``res`` used; a reservation saves one image or is released, once."""
        with self._spent_lock:
            if res.id in self._spent:
                raise ReservationInvalid("This reservation was already used: reserve again for another image.")
            self._spent[res.id] = None
            while len(self._spent) > _SPENT_REMEMBERED:
                self._spent.popitem(last=False)

    def save(self, res: Reservation, data: bytes, content_type: str) -> tuple[str, UserLedger]:
        """Upload and commit; on any failure the generation is voided and the error raised."""
        key = keys.image_key(res.key_stem, content_type)
        try:
            if len(data) > res.bytes or res.expires_at - self.clock() < self.save_margin:
                # Grow the hold to the real size (checking the limits again) or renew it.
                grow = max(0, len(data) - res.bytes)
                self._hold(res.user_id, res.id, res.key_stem, len(data), res.limits, renew=True, grow=grow)
            self.backend.put_object(key, data, content_type)
            commit = partial(rules.commit, rid=res.id, key=key, size=len(data), now=self.clock(), skew=self.skew)
            try:
                _, doc = self.accounts.update_user(res.user_id, commit)
            except UncertainWrite:
                doc = self._settle(res, key)
        except BaseException:
            self.void_quietly(res.user_id, res.id, res.key_stem)
            raise
        self._sync_quietly(res.user_id, doc)
        if res.credit:
            self._mirror_credits(res.user_id, doc)
        return key, self._fold_quietly(res.user_id, doc)

    def _fold_quietly(self, uid: keys.MemberId, doc: UserLedger) -> UserLedger:
        """Move the member's older images into their catalogue (best effort: the next commit
        tries again, and until then they are counted where they are)."""
        try:
            return self.accounts.fold(uid, doc)
        except StorageError as exc:
            log.warning("Could not move older images of user %s into their catalogue yet (%s).", uid, exc)
            return doc

    def _mirror_credits(self, uid: keys.MemberId, doc: UserLedger) -> None:
        """Copy the credit book of ``doc`` into the member record (what a rebuild starts from).

        When storage refuses, the copy is retried before this process's next operation (and
        reconcile checks every record against its document).
        """
        try:
            self.accounts.copy_credits(uid, doc)
        except StorageError as exc:
            self._unmirrored_later(uid, exc)

    def _copy_credits(self, uid: keys.MemberId) -> None:
        """The member record's credit book set to the document's, now or before the next operation."""
        try:
            self.accounts.copy_credits(uid)
        except StorageError as exc:
            self._unmirrored_later(uid, exc)

    def _unmirrored_later(self, uid: keys.MemberId, exc: StorageError) -> None:
        with self._unfinished_lock:
            self._unmirrored.add(uid)
        log.warning("Could not copy the credits spent by user %s into the member record yet (%s).", uid, exc)

    def _settle(self, res: Reservation, key: str) -> UserLedger:
        """Find out whether a commit whose answer was lost landed; if not, make sure it never does.

        Retries while storage does not answer, for ``settle_seconds``; after that the outcome
        is unknown and the error says so (the hold decides later: the image either stays
        committed or is deleted with its hold).
        """
        deadline = time.monotonic() + self.settle_seconds
        delay = 0.2
        while True:
            try:
                outcome, doc = self.accounts.update_user(res.user_id, partial(rules.settle, rid=res.id, key=key))
            except StorageError:
                if time.monotonic() + delay > deadline:
                    raise SaveOutcomeUnknown(
                        "Storage stopped answering while the image was being saved, so it is not known whether "
                        "it was kept. If it was, it is in the gallery and counts; if not, nothing was charged."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if outcome is rules.Settled.COMMITTED:
                return doc
            raise StorageUnavailable("Storage failed while saving the image; it was not kept and nothing was charged.")

    def _sync_quietly(self, uid: keys.MemberId, doc: UserLedger) -> None:
        if self.escrow is not None:
            self.escrow.served(uid, doc)
            return
        try:
            self.accounts.sync_global(uid, doc)
        except StorageError as exc:
            # The global document keeps counting the hold until it is refreshed from the
            # user document: never less than the truth.
            with self._unfinished_lock:
                self._unsynced.add(uid)
            log.warning("Could not update the global ledger after a commit for user %s (%s).", uid, exc)

    # -- step 6 -----------------------------------------------------------------------------
    def void(self, uid: keys.MemberId, rid: str, stem: str | None = None) -> None:
        """Void hold ``rid``, delete its uploads and drop it. A committed generation stays.

        ``stem``: where the generation uploads, for when its hold is already gone (dropped
        by another process after it expired) and an upload may have landed since.
        """
        _, doc = self.accounts.update_user(uid, partial(rules.settle, rid=rid, key=None))
        if rid in doc.holds:
            _, doc = self.accounts.update_user(uid, lambda d: None)  # deletes the uploads, then drops it
        elif stem is not None and not any(k.startswith(stem + ".") for k in doc.objects):
            self.accounts.delete_uploads([stem])
        self._sync(uid, doc)

    def void_quietly(self, uid: keys.MemberId, rid: str, stem: str | None = None) -> None:
        """:meth:`void`, logging a failure: the hold then ends at its expiry, with its uploads."""
        try:
            self.void(uid, rid, stem)
        except StorageError as exc:
            with self._unfinished_lock:
                self._unfinished[rid] = (uid, stem)
            log.warning(
                "Storage unavailable: the hold of failed generation %s (user %s) ends when it expires (%s).",
                rid,
                uid,
                exc,
            )

    def release(self, res: Reservation) -> None:
        """Give back a reservation whose generation failed (no-op once saved or released)."""
        with self._spent_lock:
            self._spent[res.id] = None
        try:
            self.void(res.user_id, res.id, res.key_stem)
        except StorageError:
            with self._unfinished_lock:
                self._unfinished[res.id] = (res.user_id, res.key_stem)
            raise

    def finish_unfinished(self) -> None:
        """Retry the voids and global updates storage refused earlier; stop at the first failure."""
        with self._unfinished_lock:
            pending = list(self._unfinished.items())
            unsynced = list(self._unsynced)
            undiscarded = list(self._undiscarded.items())
            unmirrored = list(self._unmirrored)
        for rid, (res, key) in undiscarded:
            try:
                self._discard(res, key)
            except StorageError:
                return
            with self._unfinished_lock:
                self._undiscarded.pop(rid, None)
        for uid in unsynced:
            try:
                self.accounts.sync_global(uid, self.accounts.user(uid))
            except StorageError:
                return
            with self._unfinished_lock:
                self._unsynced.discard(uid)
        for uid in unmirrored:
            try:
                self.accounts.copy_credits(uid)
            except StorageError:
                return
            with self._unfinished_lock:
                self._unmirrored.discard(uid)
        for rid, (uid, stem) in pending:
            try:
                self.void(uid, rid, stem)
            except StorageError:
                return
            with self._unfinished_lock:
                self._unfinished.pop(rid, None)
            log.info("Storage answers again: gave back the hold of failed generation %s (user %s).", rid, uid)

    def discard(self, res: Reservation, key: str) -> None:
        """Take back a committed generation whose success was never reported (interrupted).

        When storage refuses, it is retried before this process's next operation.
        """
        try:
            self._discard(res, key)
        except StorageError:
            with self._unfinished_lock:
                self._undiscarded[res.id] = (res, key)
            raise

    def _discard(self, res: Reservation, key: str) -> None:
        day = datetime.fromisoformat(res.day).date()
        now = self.clock()

        def undo(doc: UserLedger) -> None:
            size = doc.objects[key].size if key in doc.objects else 0
            if rules.uncommit(doc, key=key, day=day, rid=res.id, credit=res.credit):
                # A void hold marks the upload for deletion, whatever happens next; it keeps
                # the image's bytes counted until the image is gone.
                doc.holds[res.id] = Hold(bytes=size, expires=now, day=day, stem=res.key_stem, void=True)

        self.accounts.update_user(res.user_id, undo)
        _, doc = self.accounts.update_user(res.user_id, lambda d: None)
        self._sync(res.user_id, doc)
        if res.credit:
            # The commit's copy raised the record's count; the credit given back lowers it again.
            self._copy_credits(res.user_id)

    def _sync(self, uid: keys.MemberId, doc: UserLedger) -> None:
        """Tell the global document about ``doc`` now, or (escrow) at the lease's next settle."""
        if self.escrow is not None:
            self.escrow.served(uid, doc)
        else:
            self.accounts.sync_global(uid, doc)

    # -- what the member sees and deletes ---------------------------------------------------
    def status(self, uid: keys.MemberId, limits: UserLimits, allow_cached: bool = False) -> QuotaStatus:
        """Where ``uid`` stands today; with ``allow_cached``, from the last documents this
        process read or wrote when storage cannot be read (:class:`StorageUnavailable` otherwise)."""
        try:
            user = self.accounts.user(uid)
            glob = self.accounts.global_doc()
        except StorageUnavailable:
            cached_user, cached_glob = self.accounts.cached_user(uid), self.accounts.cached_global()
            if not allow_cached or cached_user is None or cached_glob is None:
                raise
            user, glob = cached_user, cached_glob
        return rules.status(
            user,
            limits=limits,
            now=self.clock(),
            # This process's unused lease is room it can still admit from.
            global_bytes=usage_rules.global_usage(glob) - (self.escrow.free if self.escrow is not None else 0),
            global_limit=self.global_limit,
        )

    def gallery(self, uid: keys.MemberId, limit: int | None) -> list[StoredImage]:
        """``uid``'s committed images, newest first, each with a fresh link (uploads of holds are not shown)."""
        found = [o for o in self.backend.list_objects(keys.user_prefix(uid)) if keys.user_from_key(o.key) == uid]
        held = tuple(h.stem + "." for h in self.accounts.user(uid).holds.values()) or ("\0",)
        found = [o for o in found if not o.key.startswith(held)]  # uploads not (yet) committed
        found.sort(key=lambda o: (o.last_modified, o.key), reverse=True)
        return [
            stored_image(self.backend, o.key, owner=uid, size=o.size, created=o.last_modified, ttl=self.link_ttl)
            for o in found[:limit]
        ]

    def delete_image(self, uid: keys.MemberId, key: str) -> int:
        """Delete one of ``uid``'s images (``key``: the full key or the file name); returns its size."""
        full = keys.check_image_key(uid, key)
        info = self.backend.head_object(full)
        if info is None:
            raise ImageNotFound(key)
        # The deletion is recorded first (a rebuilt ledger still counts today's image), then
        # the object goes, then the ledger: a reconcile in between only sees it gone.
        self.accounts.record_deletions(uid, [full])
        self.backend.delete_objects([full])
        self.accounts.forget_objects(uid, [full])
        return info.size
