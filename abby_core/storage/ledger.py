"""The quota ledger: small JSON documents in the backend itself, updated with compare-and-swap.

Two kinds of document (both outside ``images/``, so lifecycle never expires them)::

    ledger/users/{id}.json   {"schema", "version", "user_id", "day", "count", "bonus",
                              "blocked", "objects": {key: [size, created]},
                              "reservations": {rid: {"bytes", "expires", "day", "stem"}}}
    ledger/global.json       {"schema", "version",
                              "users": {id: [bytes, user_doc_version]},
                              "reservations": {rid: {"user", "bytes", "expires"}}}

Why it is exact: every change is a read-modify-write that only lands if the document is
still the version that was read (S3 ``If-Match``/``If-None-Match: *``; a file lock on the
filesystem). A writer that loses the race re-reads and decides again, so two processes
can never both spend the last generation. Each document carries a version counter, so
two writes never produce the same ETag. The global document stores each user's total
*with the user document's version*, and only a newer version replaces it, so totals
written out of order by two processes never go backwards.

Within one process, writers of the same document queue on a lock and reuse the last
version they wrote (no re-read when nothing else changed it); across processes the
conditional write is what decides. A decision to *refuse* is never taken on a cached
copy: it is re-read first.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from abby_core.errors import LedgerCorrupt, StorageError, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend

__all__ = ["Ledger", "NoChange"]

log = logging.getLogger("abby.storage.ledger")

SCHEMA = 1
_MAX_ATTEMPTS = 60
_T = TypeVar("_T")
Doc = dict[str, Any]


class NoChange(Exception):
    """Raised by a mutation that decided not to write; carries its result."""

    def __init__(self, result: Any = None) -> None:
        super().__init__()
        self.result = result


class Ledger:
    """Compare-and-swap updates of JSON documents stored in a backend."""

    def __init__(self, backend: StorageBackend, *, check: Callable[[str, Doc], bool] | None = None) -> None:
        self.backend = backend
        self._check = check  # whether a parsed document has the shape its readers need
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._cache: dict[str, tuple[Doc, str]] = {}
        self._seen: dict[str, Doc] = {}  # last version read or written, kept for display only
        self.conflicts = 0  # lost races, for benchmarks and tests

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def read(self, key: str) -> tuple[Doc, str] | None:
        """A fresh copy of the document and its tag, or ``None`` when it does not exist.

        Raises :class:`LedgerCorrupt` when it exists but is not a ledger document.
        """
        found = self.backend.read_doc(key)
        if found is None:
            self._cache.pop(key, None)
            return None
        body, tag = found
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if (
            not isinstance(doc, dict)
            or doc.get("schema") != SCHEMA
            or not isinstance(doc.get("version"), int)
            or (self._check is not None and not self._check(key, doc))
        ):
            self._cache.pop(key, None)
            raise LedgerCorrupt(f"The quota ledger document {key} is unreadable.")
        self._cache[key] = (doc, tag)
        self._seen[key] = doc
        return copy.deepcopy(doc), tag

    def update(
        self,
        key: str,
        mutate: Callable[[Doc], _T],
        *,
        create: Callable[[], Doc],
    ) -> tuple[_T, Doc]:
        """Apply ``mutate`` to the document until the write lands; return its result and the doc.

        ``mutate`` changes the document in place and returns a result; it may raise (e.g.
        :class:`~abby_core.errors.QuotaExceeded`) to refuse, or :class:`NoChange` to skip
        the write. It may run several times, so it must not have side effects. ``create``
        builds the document when it does not exist yet (and it is then stored, even on
        :class:`NoChange`). A :class:`~abby_core.errors.StorageError` raised by the write
        itself carries ``maybe_written = True``: the change may have landed.
        """
        with self._lock(key):
            for attempt in range(_MAX_ATTEMPTS):
                cached = self._cache.get(key)
                fresh = cached is None
                created = False
                if cached is None:
                    found = self.read(key)
                    created = found is None
                    doc, tag = (found[0], found[1]) if found is not None else (create(), None)
                else:
                    doc, tag = copy.deepcopy(cached[0]), cached[1]
                before = doc.get("version", 0)
                try:
                    result = mutate(doc)
                except NoChange as skip:
                    if not fresh:
                        self._cache.pop(key, None)  # decide again on a fresh copy
                        continue
                    if not created:
                        return skip.result, doc
                    # A document built from the objects is stored even when nothing else
                    # changed: callers may act on its version, which must then exist.
                    result = skip.result
                except Exception:
                    if not fresh:
                        self._cache.pop(key, None)
                        continue
                    raise
                doc["schema"] = SCHEMA
                doc["version"] = int(before) + 1
                body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
                try:
                    new_tag = self.backend.write_doc(key, body, etag=tag)
                except StorageError as exc:
                    # The request may have reached the server before it failed.
                    exc.maybe_written = True  # type: ignore[attr-defined]
                    raise
                except ConditionFailed:
                    self.conflicts += 1
                    self._cache.pop(key, None)
                    # Back off with jitter so competing processes stop colliding.
                    time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))
                    continue
                self._cache[key] = (doc, new_tag)
                self._seen[key] = doc
                return result, copy.deepcopy(doc)
        raise StorageUnavailable("The quota ledger is too busy right now; please try again in a moment.")

    def last_seen(self, key: str) -> Doc | None:
        """A copy of the last version of ``key`` this ledger read or wrote, without I/O.

        For showing where a user stands when storage just went away; never for deciding.
        """
        found = self._seen.get(key)
        return copy.deepcopy(found) if found is not None else None

    def forget(self, key: str | None = None) -> None:
        """Drop cached copies (all, or one document's)."""
        if key is None:
            self._cache.clear()
            self._seen.clear()
        else:
            self._cache.pop(key, None)
            self._seen.pop(key, None)
