"""Compare-and-swap updates of typed ledger documents stored in a backend.

Why it is exact: every change is a read-modify-write that only lands if the document is
still the version that was read (S3 ``If-Match``/``If-None-Match: *``; a file lock on the
filesystem). A writer that loses the race re-reads and decides again, so two processes
can never both spend the last generation. Each document carries a version counter, so
two writes never produce the same ETag.

Within one process, writers of the same document queue on a lock and reuse the last
version they wrote (no re-read when nothing else changed it); across processes the
conditional write is what decides. A refusal (a quota error raised by the change) is
never decided on a cached copy: it is re-read first.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from abby_core.errors import LedgerCorrupt, StorageError, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend

__all__ = ["Ledger", "UncertainWrite"]

log = logging.getLogger("abby.storage.ledger")

_MAX_ATTEMPTS = 60
_T = TypeVar("_T")
D = TypeVar("D", bound=BaseModel)


class UncertainWrite(StorageUnavailable):
    """A ledger write failed in a way that does not say whether it landed (the answer was lost).

    The caller finds out by reading the document again (see ``Accounts.settle``).
    """


def _body(doc: BaseModel) -> bytes:
    return doc.model_dump_json(by_alias=True).encode()


class Ledger:
    """Typed documents in ``backend``, each updated only with compare-and-swap."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Last version read or written: body, tag, and whether the body is this ledger's own
        # serialisation (written here), so an unchanged document serialises to it exactly.
        self._cache: dict[str, tuple[bytes, str, bool]] = {}
        self._seen: dict[str, bytes] = {}  # last version read or written, kept for display only
        self.conflicts = 0  # lost races, for benchmarks and tests

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    @staticmethod
    def _parse(key: str, model: type[D], body: bytes) -> D:
        try:
            return model.model_validate_json(body)
        except ValidationError:
            raise LedgerCorrupt(f"The quota ledger document {key} is unreadable.") from None

    def read(self, key: str, model: type[D]) -> tuple[D, str] | None:
        """A fresh copy of the document and its tag, or ``None`` when it does not exist.

        Raises :class:`LedgerCorrupt` when it exists but is not a valid ``model``.
        """
        found = self.backend.read_doc(key)
        if found is None:
            self._cache.pop(key, None)
            return None
        body, tag = found
        try:
            doc = self._parse(key, model, body)
        except LedgerCorrupt:
            self._cache.pop(key, None)
            raise
        self._cache[key] = (body, tag, False)
        self._seen[key] = body
        return doc, tag

    def update(self, key: str, model: type[D], mutate: Callable[[D], _T], *, create: Callable[[], D]) -> tuple[_T, D]:
        """Apply ``mutate`` until the write lands; return its result and the document as stored.

        ``mutate`` changes the document in place and returns a result; it may raise (e.g.
        :class:`~abby_core.errors.QuotaExceeded`) to refuse. It may run several times, so it
        must not have side effects. When it changes nothing, nothing is written, except
        that a document built by ``create`` (it did not exist) is always stored: callers may
        act on its version, which must then exist. A write that fails without saying
        whether it landed raises :class:`UncertainWrite`.
        """
        with self._lock(key):
            for attempt in range(_MAX_ATTEMPTS):
                cached = self._cache.get(key)
                fresh = cached is None
                created = False
                doc: D
                if cached is None:
                    found = self.read(key, model)
                    created = found is None
                    doc, tag = found if found is not None else (create(), None)
                else:
                    doc, tag = self._parse(key, model, cached[0]), cached[1]
                # What "unchanged" compares with: our own last write as it is, anything else
                # re-serialised (a document from another version may be laid out differently).
                before = cached[0] if cached is not None and cached[2] else _body(doc)
                try:
                    result = mutate(doc)
                except Exception:
                    if not fresh:
                        self._cache.pop(key, None)  # decide again on a fresh copy
                        continue
                    raise
                if not created and _body(doc) == before:
                    if not fresh:
                        self._cache.pop(key, None)  # "nothing to do" is decided on a fresh copy too
                        continue
                    return result, doc
                doc.version += 1  # type: ignore[attr-defined]
                body = _body(doc)
                try:
                    new_tag = self.backend.write_doc(key, body, etag=tag)
                except ConditionFailed:
                    self.conflicts += 1
                    self._cache.pop(key, None)
                    # Back off with jitter so competing processes stop colliding.
                    time.sleep(random.uniform(0, min(0.2, 0.002 * 2 ** min(attempt, 7))))
                    continue
                except StorageError as exc:
                    self._cache.pop(key, None)
                    if self.backend.write_errors_are_definite:
                        raise
                    raise UncertainWrite(str(exc)) from exc
                self._cache[key] = (body, new_tag, True)
                self._seen[key] = body
                return result, doc
        raise StorageUnavailable("The quota ledger is too busy (too many writers at once); nothing was changed.")

    def last_seen(self, key: str, model: type[D]) -> D | None:
        """The last version of ``key`` this ledger read or wrote, without I/O.

        For showing where a user stands when storage just went away; never for deciding.
        """
        found = self._seen.get(key)
        return self._parse(key, model, found) if found is not None else None

    def forget(self, key: str | None = None) -> None:
        """Drop cached copies (all, or one document's)."""
        if key is None:
            self._cache.clear()
            self._seen.clear()
        else:
            self._cache.pop(key, None)
            self._seen.pop(key, None)
