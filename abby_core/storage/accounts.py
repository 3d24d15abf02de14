"""The quota ledger documents of one backend: read, update, rebuild, repair and undo.

:class:`~abby_core.storage.manager.StorageManager` tells the quota story; this module
keeps its books. Every method is synchronous and runs on the manager's worker threads.

- A missing user document is rebuilt from the user's images (and today's count from the
  key timestamps); a missing global document from a listing plus the live holds in the
  user documents. An unreadable one is repaired the same way and logged. Usage is never
  read as zero because a document is gone.
- :meth:`Accounts.undo` makes a failed generation cost nothing. When storage cannot be
  reached it is remembered (:meth:`Accounts.owe`) and finished before the manager's next
  operation, so counts are right after an outage without a restart.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from abby_core.errors import InvalidUser, LedgerCorrupt, StorageError
from abby_core.storage import keys, quota
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.ledger import Ledger, NoChange

__all__ = ["Accounts"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")
Doc = dict[str, Any]


def _rebuilt_version() -> int:
    # Larger than any counter a live document reached, so the global document accepts
    # the totals of a rebuilt user document (it keeps only newer versions).
    return int(time.time() * 1000)


class Accounts:
    """The user and global ledger documents in ``backend``, with repair and undo."""

    def __init__(self, backend: StorageBackend, clock: Callable[[], datetime]) -> None:
        self.backend = backend
        self.clock = clock
        self.ledger = Ledger(
            backend, check=lambda key, doc: quota.well_formed(doc, is_global=key == keys.GLOBAL_LEDGER_KEY)
        )
        # Undos that storage refused (reservation id -> user, image key, day); see undo().
        self.owed: dict[str, tuple[str, str | None, str]] = {}
        self._owed_lock = threading.Lock()

    def rebuild_user_doc(self, uid: str) -> Doc:
        """A user document from the objects themselves (first use, or lost/corrupt ledger)."""
        now = self.clock()
        doc = quota.new_user_doc(uid, now)
        today = now.strftime("%Y%m%d")
        for obj in self.backend.list_objects(keys.user_prefix(uid)):
            if keys.user_from_key(obj.key) == uid:
                doc["objects"][obj.key] = [obj.size, obj.last_modified.astimezone(UTC).isoformat()]
                if obj.key.rsplit("/", 1)[-1].startswith(today):
                    doc["count"] += 1
        if doc["objects"]:
            log.warning(
                "Quota ledger for user %s was missing: rebuilt from %d stored image(s).", uid, len(doc["objects"])
            )
        # Above any version the global document knows for this user, so it accepts this
        # document's totals whatever the clocks of the processes that wrote them.
        doc["version"] = max(self._known_version(uid) + 1, _rebuilt_version())
        return doc

    def _known_version(self, uid: str) -> int:
        try:
            found = self.ledger.read(keys.GLOBAL_LEDGER_KEY)
        except LedgerCorrupt:
            return 0
        entry = found[0]["users"].get(uid) if found else None
        return int(entry[1]) if entry else 0

    def rebuild_global_doc(self) -> Doc:
        """The global document from the objects (totals) and the user ledgers (holds)."""
        doc = quota.new_global_doc()
        now = self.clock()
        totals: dict[str, int] = defaultdict(int)
        for obj in self.backend.list_objects(keys.USERS_PREFIX):
            owner = keys.user_from_key(obj.key)
            if owner is not None:
                totals[owner] += obj.size
        for uid, total in totals.items():
            doc["users"][uid] = [total, 0]  # any later user-ledger version replaces it
        for obj in self.backend.list_objects(keys.USERS_LEDGER_PREFIX):
            try:
                uid = keys.check_user_id(obj.key[len(keys.USERS_LEDGER_PREFIX) :].removesuffix(".json"))
                user = self.read_user(uid)
            except (LedgerCorrupt, InvalidUser):
                continue  # a corrupt user ledger is repaired on its owner's next request
            if user is None:
                continue
            for rid, r in user["reservations"].items():
                if datetime.fromisoformat(r["expires"]) > now:
                    doc["reservations"][rid] = {"user": uid, "bytes": r["bytes"], "expires": r["expires"]}
        if totals:
            log.warning("Global quota ledger was missing: rebuilt from %d user(s)' stored images.", len(totals))
        doc["version"] = _rebuilt_version()
        return doc

    def repair(self, key: str, build: Callable[[], Doc]) -> None:
        """Replace an unreadable document with one rebuilt from the objects."""
        log.error("Quota ledger document %s is corrupt: rebuilding it from the stored objects.", key)
        raw = self.backend.read_doc(key)
        doc = build()
        doc["schema"] = 1
        body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        with contextlib.suppress(ConditionFailed):  # someone else repaired it first
            self.backend.write_doc(key, body, etag=raw[1] if raw else None)
        self.ledger.forget(key)

    def update(self, key: str, mutate: Callable[[Doc], _T], build: Callable[[], Doc]) -> tuple[_T, Doc]:
        try:
            return self.ledger.update(key, mutate, create=build)
        except LedgerCorrupt:
            self.repair(key, build)
            return self.ledger.update(key, mutate, create=build)

    def update_user(self, uid: str, mutate: Callable[[Doc], _T]) -> tuple[_T, Doc]:
        return self.update(keys.user_ledger_key(uid), mutate, partial(self.rebuild_user_doc, uid))

    def update_global(self, mutate: Callable[[Doc], _T]) -> tuple[_T, Doc]:
        return self.update(keys.GLOBAL_LEDGER_KEY, mutate, self.rebuild_global_doc)

    def read_user(self, uid: str) -> Doc | None:
        found = self.ledger.read(keys.user_ledger_key(uid))
        return found[0] if found else None

    def read_or_repair(self, key: str, build: Callable[[], Doc]) -> Doc:
        try:
            found = self.ledger.read(key)
        except LedgerCorrupt:
            self.repair(key, build)
            found = self.ledger.read(key)
        return found[0] if found else build()

    def user_doc(self, uid: str) -> Doc:
        """A fresh copy of ``uid``'s document (rebuilt, not stored, when it is missing)."""
        return self.read_or_repair(keys.user_ledger_key(uid), partial(self.rebuild_user_doc, uid))

    def global_doc(self) -> Doc:
        """A fresh copy of the global document (rebuilt, not stored, when it is missing)."""
        return self.read_or_repair(keys.GLOBAL_LEDGER_KEY, self.rebuild_global_doc)

    def sync_global(self, uid: str, user_doc: Doc, rid: str | None = None) -> None:
        """Record ``uid``'s committed bytes (as of ``user_doc``, a stored version) globally."""
        total = quota.user_bytes(user_doc, include_reserved=False)
        self.update_global(
            partial(quota.global_set_user, user_id=uid, total=total, version=int(user_doc["version"]), rid=rid)
        )

    def forget_objects(self, uid: str, gone: list[str]) -> None:
        """Drop images that no longer exist from ``uid``'s ledger and the global total."""

        def drop(doc: Doc) -> bool:
            removed = [k for k in gone if doc["objects"].pop(k, None) is not None]
            if not removed:
                raise NoChange(False)
            return True

        changed, user_doc = self.update_user(uid, drop)
        if changed:
            self.sync_global(uid, user_doc)

    # -- undoing a failed generation -------------------------------------------------------
    def undo(self, uid: str, rid: str, key: str | None, day: str) -> None:
        """Make generation ``rid`` cost nothing: delete ``key``, drop its hold and its commit.

        Idempotent, so it is safe after a write whose answer was lost (it may or may not
        have landed) and safe to repeat until it succeeds.
        """
        if key is not None:
            self.backend.delete_objects([key])  # first: a reconcile in between never counts it back

        def undo(doc: Doc) -> bool:
            held = doc["reservations"].pop(rid, None)
            committed = doc["objects"].pop(key, None) if key is not None else None
            if committed is not None and doc.get("day") == day:
                doc["count"] = max(0, int(doc["count"]) - 1)  # this commit counted it today
            if held is None and committed is None:
                raise NoChange(False)
            return True

        changed, user_doc = self.update_user(uid, undo)
        if changed:
            self.sync_global(uid, user_doc, rid=rid)
        else:  # nothing of it in the user's ledger: only a global hold may be left
            self.update_global(partial(quota.global_release, rid=rid))

    def owe(self, uid: str, rid: str, key: str | None, day: str) -> None:
        with self._owed_lock:
            known = self.owed.get(rid)
            # A later release of the same generation knows no image key: keep the one we had.
            self.owed[rid] = (uid, key or (known[1] if known else None), day)

    def undo_or_owe(self, uid: str, rid: str, key: str | None, day: str) -> None:
        try:
            self.undo(uid, rid, key, day)
        except StorageError:
            self.owe(uid, rid, key, day)
            log.warning("Storage unavailable: generation %s of user %s will be undone once it answers.", rid, uid)

    def settle_owed(self) -> None:
        """Finish the undos storage refused earlier; stop at the first that still fails."""
        with self._owed_lock:
            owed = list(self.owed.items())
        for rid, (uid, key, day) in owed:
            try:
                self.undo(uid, rid, key, day)
            except StorageError:
                return
            with self._owed_lock:
                self.owed.pop(rid, None)
            log.info("Storage answers again: undid failed generation %s of user %s.", rid, uid)
