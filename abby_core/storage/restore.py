"""Restore: an archived image back in the gallery, held and committed like a generation.

The reverse of an archive (:mod:`abby_core.storage.archive`, whose module docstring tells the
states and the rule that settles an image found in both): a hold for the bytes (per-user and
global limits, no generation counted) → put the image back under ``images/`` → commit →
delete the archived copy → drop its entry. Every step writes the new state before it removes
the old one, so a crash or a storage failure at any step leaves the archived copy, the
restored image, or for a moment both; never neither.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import partial

from abby_core.errors import ArchivedImageNotFound, InvalidInput, StorageError, StorageUnavailable
from abby_core.storage import keys, rules
from abby_core.storage.archive import Archiver
from abby_core.storage.documents import Hold, UserLedger
from abby_core.storage.ledger import UncertainWrite
from abby_core.storage.links import stored_image
from abby_core.storage.models import StoredImage, UserLimits
from abby_core.storage.protocol import QuotaProtocol

__all__ = ["RESTORE_DAY", "Restorer"]

log = logging.getLogger("abby.storage.archive")

#: The day of a restore's hold. A hold counts a generation only on its own day (``rules``),
#: and this day is never a quota document's day, so a restore holds bytes but never uses
#: one of the member's generations.
RESTORE_DAY = date(2000, 1, 1)


class Restorer:
    """Restore the archived images of one backend, within the members' and the server's limits."""

    def __init__(
        self,
        archiver: Archiver,
        protocol: QuotaProtocol,
        *,
        reservation_ttl: int,
    ) -> None:
        self.archiver = archiver
        self.protocol = protocol
        self.accounts = archiver.accounts
        self.backend = archiver.backend
        self.ttl = reservation_ttl

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.accounts.clock

    @property
    def link_ttl(self) -> int:
        return self.archiver.link_ttl

    def restore(self, uid: keys.MemberId, key: str, limits: UserLimits) -> StoredImage:
        """Put an archived image back in the gallery, within the member's and the server's limits.

        Raises :class:`~abby_core.errors.UserStorageFull` or
        :class:`~abby_core.errors.GlobalStorageFull` when there is no room (nothing changes),
        :class:`~abby_core.errors.ArchivedImageNotFound` when there is no such archived image. Uses
        none of the member's daily generations.
        """
        full = keys.check_archived_key(uid, key)
        entry = self.archiver.document(uid).entries.get(full)
        if self.backend.head_object(full) is None:
            self.archiver.drop(uid, [full])
            raise ArchivedImageNotFound(key)
        stem = keys.restored_stem(full)
        target = f"{stem}.{full.rsplit('.', 1)[-1]}"
        active = self.accounts.user(uid)
        listed = self.accounts.catalogue(uid, active)  # every committed image, recent or catalogued
        stored = [k for k in keys.image_candidates(stem) if self.backend.head_object(k) is not None]
        present = [k for k in stored if k in listed]
        if present:  # already back (a restore, or an archive, stopped half-way): finish it
            self._forget_copy(uid, full)
            found = listed[present[0]]
            return self._stored(uid, present[0], found.size, found.created)
        # Listed but not stored: deleted by an archive (or a delete) that stopped before its
        # last step, forgetting it. The archived copy is the only copy: forget, then restore.
        self._forget_gone(uid, [k for k in keys.image_candidates(stem) if k in listed])
        if stored or any(h.stem == stem for h in active.holds.values()):
            raise InvalidInput("This image is already being restored. Try again in a few minutes.")
        data = self.backend.get_object(full)
        content_type = keys.content_type_of(full)
        rid = secrets.token_hex(8)
        self._hold(uid, rid, stem, len(data), limits)
        try:
            self.backend.put_object(target, data, content_type)
            now = self.clock()
            commit = partial(rules.commit, rid=rid, key=target, size=len(data), now=now, skew=self.protocol.skew)
            try:
                _, doc = self.accounts.update_user(uid, commit)
            except UncertainWrite:
                outcome, doc = self.accounts.update_user(uid, partial(rules.settle, rid=rid, key=target))
                if outcome is not rules.Settled.COMMITTED:
                    lost = "Storage failed while restoring the image; it is still archived."
                    raise StorageUnavailable(lost) from None
        except BaseException:
            self.protocol.void_quietly(uid, rid, stem)  # deletes the upload; the archived copy stays
            raise
        try:
            self.accounts.sync_global(uid, doc)
        except StorageError as exc:  # counted as a hold until refreshed: never less than the truth
            log.warning("Could not update the global ledger after restoring %s (%s).", target, exc)
        try:
            self._forget_copy(uid, full)
        except StorageError as exc:  # both states for now; the next tidy finishes it
            log.warning("Restored %s but could not remove its archived copy yet (%s).", target, exc)
        created = entry.created if entry is not None else now
        return self._stored(uid, target, len(data), created)

    def _stored(self, uid: keys.MemberId, key: str, size: int, created: datetime) -> StoredImage:
        """The restored image; a link storage refuses is left to the gallery to make later."""
        return stored_image(self.backend, key, owner=uid, size=size, created=created, ttl=self.link_ttl, may_fail=True)

    def _hold(self, uid: keys.MemberId, rid: str, stem: str, size: int, limits: UserLimits) -> None:
        now = self.clock()

        def hold(doc: UserLedger) -> UserLedger:
            rules.roll_day(doc, now)
            if any(h.stem == stem for h in doc.holds.values()):
                raise InvalidInput("This image is already being restored. Try again in a few minutes.")
            rules.check_room(
                blocked=False,  # a block stops generating; a member's own images stay theirs
                user_id=uid,
                daily_used=None,  # a restore is not a generation
                daily_limit=0,
                resets_at=rules.next_midnight(doc.day),
                user_used=rules.user_bytes(doc, now),
                user_limit=limits.storage_bytes,
                size=size,
            )
            doc.holds[rid] = Hold(bytes=size, expires=now + timedelta(seconds=self.ttl), day=RESTORE_DAY, stem=stem)
            return doc

        self.protocol.hold_globally(uid, rid, hold)

    def _forget_copy(self, uid: keys.MemberId, key: str) -> None:
        """The image is back in the gallery: the archived copy goes, then its entry."""
        self.backend.delete_objects([key])
        self.archiver.drop(uid, [key])

    def _forget_gone(self, uid: keys.MemberId, listed: list[str]) -> None:
        """Forget the originals ``listed`` in ``uid``'s quota document whose objects are gone."""
        if listed:
            log.warning("Images %s were deleted but still listed; forgetting them.", listed)
            self.accounts.forget_objects(uid, listed)
