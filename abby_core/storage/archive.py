"""The archive (``STORAGE_ARCHIVE``): old images shrunk and kept instead of deleted, and restored.

Synchronous, like :mod:`abby_core.storage.housekeeping`; the manager runs it on its workers.

An image is in one of two states: *active* (``images/users/{id}/…``, in the member's quota
document) or *archived* (``archive/users/{id}/…``, in the member's archive document
``ledger/archive/{id}.json``). Every move writes the new state before it removes the old
one, so a crash or a storage failure at any step leaves the original, the archived copy, or
for a moment both; never neither. Both at once is resolved by the next archive run or
reconcile, by one rule (:meth:`Archiver.tidy_user`): the state written last wins, judged by
the times the two documents recorded. A copy is only ever deleted because the other one is
*stored*, looked at in storage: a quota document lists an original from its commit until
after its object is deleted (so the global total never counts less than is stored), and an
archive stopped between the two leaves it listed but gone.

Archive, per image:

1. read the original and shrink it (WebP at ``ARCHIVE_QUALITY``, long side at most
   ``ARCHIVE_MAX_SIDE``), or, with ``S3_ARCHIVE_STORAGE_CLASS``, copy it server-side in that class;
2. put the archived copy (atomic);
3. record it in the archive document (compare-and-swap; refused when the member's archive
   would pass ``MAX_USER_ARCHIVE_MB``: the copy is deleted and the image is deleted as before);
4. record the deletion in the member record, 5. delete the original, 6. drop it from the
   member's quota document (what cleanup does).

Restore, the reverse, is :mod:`abby_core.storage.restore`. Prune, delete and the tidy
(reconcile) of the archive are here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from abby_core.errors import (
    ArchivedImageNotFound,
    InvalidImage,
    InvalidInput,
    LedgerCorrupt,
    StorageError,
)
from abby_core.images import CONTENT_TYPES, sniff_format
from abby_core.storage import keys, links
from abby_core.storage.accounts import Accounts
from abby_core.storage.backend import ConditionFailed
from abby_core.storage.documents import ArchiveEntry, ArchiveLedger
from abby_core.storage.models import ArchivedImage, ArchiveReport, ArchiveStats, ObjectInfo

__all__ = ["ARCHIVE_MAX_SIDE", "Archiver", "shrink"]

log = logging.getLogger("abby.storage.archive")
_T = TypeVar("_T")

#: The long side of an archived copy, in pixels (docs/BENCHMARKS.md, "Archive", measures it).
ARCHIVE_MAX_SIDE = 1024


def shrink(data: bytes, *, quality: int, max_side: int = ARCHIVE_MAX_SIDE) -> tuple[bytes, str]:
    """``data`` as a smaller WebP (aspect kept, long side at most ``max_side``) and its content type.

    When the WebP would not be smaller, or ``data`` cannot be decoded, ``data`` is kept as it
    is (an image is never lost because it could not be shrunk).
    """
    try:
        fmt = sniff_format(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt.upper()]) as opened:
                opened.seek(0)
                has_alpha = opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info
                img = opened.convert("RGBA" if has_alpha else "RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="WEBP", quality=quality, method=4)
    except (
        InvalidImage,
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        log.warning("An image could not be shrunk for the archive (%s); it is archived as it is.", exc)
        return data, _content_type(data)
    out = buf.getvalue()
    if len(out) >= len(data):
        return data, _content_type(data)
    return out, CONTENT_TYPES["webp"]


def _content_type(data: bytes) -> str:
    try:
        return CONTENT_TYPES[sniff_format(data)]
    except InvalidImage:
        return CONTENT_TYPES["png"]


class Archiver:
    """Archive, prune and tidy the archived images of one backend, and keep their documents."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        days: int,
        limit_bytes: int,
        quality: int,
        storage_class: str | None = None,
        link_ttl: int,
        max_side: int = ARCHIVE_MAX_SIDE,
    ) -> None:
        self.accounts = accounts
        self.backend = accounts.backend
        self.days = days
        self.limit_bytes = limit_bytes
        self.quality = quality
        self.storage_class = storage_class
        self.link_ttl = link_ttl
        self.max_side = max_side

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.accounts.clock

    # -- the archive document ----------------------------------------------------------------
    def rebuild(self, uid: keys.MemberId) -> ArchiveLedger:
        """A member's archive document from the ``archive/`` listing."""
        doc = ArchiveLedger(user_id=uid)
        for obj in self.backend.list_objects(keys.archive_prefix(uid)):
            if keys.user_from_archived_key(obj.key) == uid:
                doc.entries[obj.key] = self._found_entry(obj)
        doc.version = max(1, int(time.time() * 1000))
        return doc

    def _found_entry(self, obj: ObjectInfo) -> ArchiveEntry:
        stem = keys.restored_stem(obj.key)
        return ArchiveEntry(
            size=obj.size,
            original=f"{stem}.{obj.key.rsplit('.', 1)[-1]}",
            created=keys.time_of_key(obj.key) or obj.last_modified,
            archived=obj.last_modified,
        )

    def document(self, uid: keys.MemberId) -> ArchiveLedger:
        """A fresh copy of ``uid``'s archive document (rebuilt, not stored, when missing or unreadable)."""
        key = keys.archive_ledger_key(uid)
        try:
            found = self.accounts.ledger.read(key, ArchiveLedger)
        except LedgerCorrupt:
            log.error("Archive document %s is unreadable: rebuilding it from the archive.", key)
            self._repair(uid)
            found = self.accounts.ledger.read(key, ArchiveLedger)
        return found[0] if found else self.rebuild(uid)

    def _repair(self, uid: keys.MemberId) -> None:
        key = keys.archive_ledger_key(uid)
        raw = self.backend.read_doc(key)
        body = self.rebuild(uid).model_dump_json(by_alias=True).encode()
        with contextlib.suppress(ConditionFailed):  # repaired by someone else first
            self.backend.write_doc(key, body, etag=raw[1] if raw else None)
        self.accounts.ledger.forget(key)

    def update(self, uid: keys.MemberId, mutate: Callable[[ArchiveLedger], _T]) -> tuple[_T, ArchiveLedger]:
        """Change ``uid``'s archive document with compare-and-swap (repaired first if unreadable)."""
        key = keys.archive_ledger_key(uid)
        try:
            return self.accounts.ledger.update(key, ArchiveLedger, mutate, create=lambda: self.rebuild(uid))
        except LedgerCorrupt:
            self._repair(uid)
            return self.accounts.ledger.update(key, ArchiveLedger, mutate, create=lambda: self.rebuild(uid))

    def _record(self, uid: keys.MemberId, key: str, entry: ArchiveEntry) -> bool:
        """Add ``entry`` unless the member's archive would pass its limit (then ``False``)."""

        def add(doc: ArchiveLedger) -> bool:
            others = sum(e.size for k, e in doc.entries.items() if k != key)
            if others + entry.size > self.limit_bytes:
                doc.entries.pop(key, None)  # a rebuilt document may list the copy already
                return False
            if doc.entries.get(key) != entry:
                doc.entries[key] = entry
            return True

        added, _ = self.update(uid, add)
        return added

    def drop(self, uid: keys.MemberId, gone: list[str]) -> None:
        """Drop the entries ``gone`` from ``uid``'s archive document."""
        if gone:
            self.update(uid, lambda doc: [doc.entries.pop(k, None) for k in gone])

    # -- archive ----------------------------------------------------------------------------
    def run(self, cutoff: datetime, *, dry_run: bool) -> ArchiveReport:
        """Archive every image last modified before ``cutoff``, then prune the archive."""
        started = time.perf_counter()
        old = [o for o in self.backend.list_objects(keys.USERS_PREFIX) if o.last_modified < cutoff]
        by_user: dict[keys.MemberId, list[ObjectInfo]] = defaultdict(list)
        for obj in old:
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                by_user[owner].append(obj)
        if dry_run:
            count = sum(len(v) for v in by_user.values())
            size = sum(o.size for v in by_user.values() for o in v)
            return ArchiveReport(count, size, 0, 0, 0, len(by_user), cutoff, dry_run=True)
        totals: dict[str, int] = defaultdict(int)
        for uid, objs in sorted(by_user.items()):
            for name, value in self._archive_user(uid, objs).items():
                totals[name] += value
        pruned, pruned_bytes = self.prune()
        return ArchiveReport(
            archived=totals["archived"],
            original_bytes=totals["original_bytes"],
            archived_bytes=totals["archived_bytes"],
            deleted=totals["deleted"],
            deleted_bytes=totals["deleted_bytes"],
            users=len(by_user),
            cutoff=cutoff,
            failed=totals["failed"],
            pruned=pruned,
            pruned_bytes=pruned_bytes,
            seconds=time.perf_counter() - started,
        )

    def _archive_user(self, uid: keys.MemberId, objs: list[ObjectInfo]) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        copies = {
            keys.restored_stem(o.key): o
            for o in self.backend.list_objects(keys.archive_prefix(uid))
            if keys.user_from_archived_key(o.key) == uid
        }
        recorded = self.document(uid).entries
        archived: list[str] = []
        dropped: list[str] = []
        for obj in sorted(objs, key=lambda o: (o.last_modified, o.key)):
            stem = obj.key.rsplit(".", 1)[0]
            try:
                copy = copies.get(stem)
                if copy is not None and copy.key in recorded:
                    kept = True  # archived by a run that stopped before deleting the original
                    size = recorded[copy.key].size
                else:
                    size, kept = self._archive_one(uid, obj, copy)
            except StorageError as exc:
                counts["failed"] += 1
                log.warning("Could not archive %s now (%s); it stays where it is.", obj.key, exc)
                continue
            if kept:
                archived.append(obj.key)
                counts["archived"] += 1
                counts["original_bytes"] += obj.size
                counts["archived_bytes"] += size
            else:
                dropped.append(obj.key)
                counts["deleted"] += 1
                counts["deleted_bytes"] += obj.size
        gone = archived + dropped
        if gone:
            # The archived copies are recorded: now the originals go, the way cleanup deletes.
            self.accounts.record_deletions(uid, gone)
            self.backend.delete_objects(gone)
            self.accounts.forget_objects(uid, gone)
        return counts

    def _archive_one(self, uid: keys.MemberId, obj: ObjectInfo, copy: ObjectInfo | None) -> tuple[int, bool]:
        """Put and record the archived copy of ``obj``; ``(size, False)`` when the archive is full."""
        now = self.clock()
        storage_class: str | None = None
        if copy is not None:
            target, size = copy.key, copy.size  # put by a run that stopped before recording it
        elif self.storage_class is not None:
            target = keys.archived_key(obj.key, keys.content_type_of(obj.key))
            size, storage_class = obj.size, self.storage_class
            if size > self.limit_bytes - self.document(uid).bytes:
                return size, False
            self.backend.copy_object(obj.key, target, storage_class=storage_class)  # type: ignore[attr-defined]
        else:
            data, content_type = shrink(self.backend.get_object(obj.key), quality=self.quality, max_side=self.max_side)
            size = len(data)
            target = keys.archived_key(obj.key, content_type)
            if size > self.limit_bytes - self.document(uid).bytes:
                return size, False  # full: nothing put, the image is deleted as before
            self.backend.put_object(target, data, content_type)
        entry = ArchiveEntry(
            size=size,
            original=obj.key,
            created=keys.time_of_key(obj.key) or obj.last_modified,
            archived=now,
            storage_class=storage_class,
        )
        if self._record(uid, target, entry):
            return size, True
        self.backend.delete_objects([target])  # filled meanwhile: the copy goes, then the original
        return size, False

    # -- prune, delete ------------------------------------------------------------------------
    def prune(self) -> tuple[int, int]:
        """Delete archived images older than ``ARCHIVE_DAYS``; returns (count, bytes)."""
        cutoff = self.clock() - timedelta(days=self.days)
        by_user: dict[keys.MemberId, list[ObjectInfo]] = defaultdict(list)
        for obj in self.backend.list_objects(keys.ARCHIVE_USERS_PREFIX):
            owner = keys.user_from_archived_key(obj.key)
            if owner is not None and obj.last_modified < cutoff:
                by_user[owner].append(obj)
        # The copies first, then the entries: a crash in between leaves entries without a copy,
        # which the next tidy drops.
        self.backend.delete_objects([o.key for objs in by_user.values() for o in objs])
        for uid, objs in by_user.items():
            self.drop(uid, [o.key for o in objs])
        return sum(len(v) for v in by_user.values()), sum(o.size for v in by_user.values() for o in v)

    def delete(self, uid: keys.MemberId, key: str) -> int:
        """Delete one archived image for good; returns its size."""
        full = keys.check_archived_key(uid, key)
        info = self.backend.head_object(full)
        if info is None:
            self.drop(uid, [full])
            raise ArchivedImageNotFound(key)
        self.backend.delete_objects([full])
        self.drop(uid, [full])
        return info.size

    # -- reading --------------------------------------------------------------------------------
    def list(self, uid: keys.MemberId, limit: int | None) -> list[ArchivedImage]:
        doc = self.document(uid)
        ordered = sorted(doc.entries.items(), key=lambda item: (item[1].archived, item[0]), reverse=True)
        return [self._image(uid, k, e) for k, e in ordered[:limit]]

    def _image(self, uid: keys.MemberId, key: str, entry: ArchiveEntry) -> ArchivedImage:
        url, path = links.link(self.backend, key, ttl=self.link_ttl, may_fail=True)
        return ArchivedImage(
            key, uid, entry.size, entry.original, entry.created, entry.archived, keys.content_type_of(key), url, path
        )

    def get(self, uid: keys.MemberId, key: str) -> bytes:
        return self.backend.get_object(keys.check_archived_key(uid, key))

    def link(self, uid: keys.MemberId, key: str) -> ArchivedImage:
        full = keys.check_archived_key(uid, key)
        entry = self.document(uid).entries.get(full)
        if entry is None:
            raise ArchivedImageNotFound(key)
        return self._image(uid, full, entry)

    def stats(self, top: int) -> ArchiveStats:
        per_user: dict[str, int] = defaultdict(int)
        objects = 0
        for obj in self.backend.list_objects(keys.ARCHIVE_USERS_PREFIX):
            owner = keys.user_from_archived_key(obj.key)
            if owner is not None:
                per_user[owner] += obj.size
                objects += 1
        ranked = sorted(per_user.items(), key=lambda t: -t[1])
        return ArchiveStats(objects, sum(per_user.values()), len(per_user), ranked[:top])

    # -- tidy (reconcile) -------------------------------------------------------------------
    def tidy_user(self, uid: keys.MemberId, found: dict[str, ObjectInfo], started: datetime) -> tuple[int, int]:
        """Make ``uid``'s archive document agree with the listing ``found`` (taken at ``started``).

        An image in both states is settled first: if the gallery's copy was committed after
        the archived copy was recorded, a restore stopped half-way (the archived copy goes);
        otherwise an archive did (the original goes). Then entries whose copy is gone are
        dropped and copies nobody recorded are adopted. Returns (bytes before, bytes after).
        """
        doc = self.document(uid)
        active = self.accounts.catalogue(uid)  # every committed image, recent or catalogued
        # Copies nobody recorded (an archive stopped between its put and its record) are
        # adopted below, and settled here first: only an archive puts a copy, so the archive is
        # the state written last (storage's clock, which dated the copy, is not compared).
        confirmed = {k for k in found if k not in doc.entries and self.backend.head_object(k) is not None}
        entries = doc.entries | {k: self._found_entry(found[k]) for k in confirmed}
        originals: list[str] = []
        for akey, entry in entries.items():
            if akey not in found:
                continue
            stem = keys.restored_stem(akey)
            both = [k for k in keys.image_candidates(stem) if k in active]
            if not both:
                continue
            if akey not in confirmed and active[both[0]].created > entry.archived:
                if self.backend.head_object(both[0]) is None:
                    continue  # listed but gone: the archived copy is the only copy, it stays
                self.backend.delete_objects([akey])  # restored; the entry goes below
                found.pop(akey)
            elif self.backend.head_object(akey) is not None:
                originals += both
        if originals:
            self.accounts.record_deletions(uid, originals)
            self.backend.delete_objects(originals)
            self.accounts.forget_objects(uid, originals)

        def correct(current: ArchiveLedger) -> tuple[int, int]:
            before = current.bytes
            kept = {k: e for k, e in current.entries.items() if k in found or e.archived > started}
            for k, obj in found.items():
                if k not in kept and k in confirmed:
                    kept[k] = self._found_entry(obj)
            current.entries = kept
            return before, current.bytes

        result, _ = self.update(uid, correct)
        return result

    def tidy(self) -> tuple[int, int, dict[str, tuple[int, int]]]:
        """Tidy every member's archive; returns (objects, bytes, drift by member)."""
        started = self.clock()
        truth: dict[keys.MemberId, dict[str, ObjectInfo]] = defaultdict(dict)
        for obj in self.backend.list_objects(keys.ARCHIVE_USERS_PREFIX):
            owner = keys.user_from_archived_key(obj.key)
            if owner is not None:
                truth[owner][obj.key] = obj
        users = set(truth) | self._users_with_documents()
        drift: dict[str, tuple[int, int]] = {}
        objects = size = 0
        for uid in sorted(users):
            found = dict(truth.get(uid, {}))
            before, after = self.tidy_user(uid, found, started)
            objects += len(found)
            size += sum(o.size for o in found.values())
            if before != after:
                drift[uid] = (before, after)
                log.warning("Reconcile: archive of user %s said %d bytes, storage holds %d.", uid, before, after)
        return objects, size, drift

    def _users_with_documents(self) -> set[keys.MemberId]:
        users: set[keys.MemberId] = set()
        for obj in self.backend.list_objects(keys.ARCHIVE_LEDGER_PREFIX):
            name = obj.key[len(keys.ARCHIVE_LEDGER_PREFIX) :].removesuffix(".json")
            with contextlib.suppress(InvalidInput):
                users.add(keys.check_user_id(name))
        return users
