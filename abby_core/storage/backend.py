"""The small interface every storage backend implements, and nothing else.

Backends are synchronous and thread-safe; :class:`~abby_core.storage.manager.StorageManager`
runs them in its own worker threads so the event loop never blocks on storage I/O.
Each backend translates its foreign errors (botocore, ``OSError``) into
:mod:`abby_core.errors` at its own edge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime

from abby_core.storage.models import ObjectInfo, ReadyReport

__all__ = ["ARCHIVE_GRACE_DAYS", "EVENTS_EXPIRY_MARGIN_DAYS", "ConditionFailed", "StorageBackend"]

#: Days the ``events/`` lifecycle backstop waits beyond ``ANALYTICS_RETENTION_DAYS``, so the
#: bot's daily prune and compaction always run first; the same margin as ``minio/init.sh``.
EVENTS_EXPIRY_MARGIN_DAYS = 7
#: With STORAGE_ARCHIVE, the lifecycle rules of ``images/`` and ``archive/`` wait this many days
#: longer than STORAGE_CLEANUP_DAYS and ARCHIVE_DAYS, so the daily maintenance archives (and
#: prunes) first; the same margin as ``minio/init.sh``.
ARCHIVE_GRACE_DAYS = 2


class ConditionFailed(Exception):
    """A conditional document write lost a race (HTTP 412/409). Internal to storage."""


class StorageBackend(ABC):
    """Objects (images) plus small documents written with compare-and-swap (the ledger)."""

    name: str = "backend"
    #: Whether a failed write is known not to have happened. A server's answer can be lost
    #: after it applied the write (S3), so the ledger then re-reads to find out; a local
    #: atomic write either replaced the file or did not.
    write_errors_are_definite: bool = False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the data lives, for humans (a folder, or ``s3://bucket at endpoint``)."""

    @abstractmethod
    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` at ``key`` whole or not at all (never a partial object)."""

    @abstractmethod
    def get_object(self, key: str) -> bytes:
        """Return the bytes at ``key``; raise :class:`~abby_core.errors.ImageNotFound` if missing."""

    @abstractmethod
    def head_object(self, key: str) -> ObjectInfo | None:
        """Size and age of ``key``, or ``None`` when it does not exist."""

    @abstractmethod
    def delete_objects(self, keys: Sequence[str]) -> None:
        """Delete every key; a key that does not exist is not an error.

        Any number of keys may be given (S3 backends split them into batches of 1,000).
        """

    @abstractmethod
    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in no promised order.

        ``prefix`` is a plain string prefix, not a folder: ``images/users/1/2026`` matches
        ``images/users/1/20260101T...png``. Nothing matching is an empty iterator.
        """

    @abstractmethod
    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        """A document's bytes and its version tag (ETag), or ``None`` when missing."""

    @abstractmethod
    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        """Write a document only if it is still at version ``etag`` (``None``: only if missing).

        Returns the new version tag. Raises :class:`ConditionFailed` when another writer
        got there first; the caller re-reads and tries again. A tag that was never
        returned by this backend (stale, made up, empty) or a tag given for a document
        that does not exist is a :class:`ConditionFailed` too, and leaves the stored
        document as it was.
        """

    @abstractmethod
    def delete_doc(self, key: str) -> None:
        """Delete a document; missing is a no-op."""

    def sweep_partial_writes(self, older_than: datetime) -> int:
        """Remove what interrupted writes left behind before ``older_than``; return how many.

        A write killed mid-way (SIGKILL, power loss) can leave debris that no key names:
        a folder's temporary files, an S3 server's incomplete multipart uploads. Finished
        objects and documents are never touched, and neither is debris newer than
        ``older_than``, which may belong to a write still in progress: pass a time well
        in the past (an hour ago, say). ``older_than`` must be timezone-aware.

        The default, for backends whose writes cannot leave debris, removes nothing and
        returns 0.
        """
        return 0

    @abstractmethod
    def link(self, key: str, *, content_type: str, ttl: int) -> tuple[str | None, str | None]:
        """``(url, path)`` for a stored image: a presigned URL, or a local file path."""

    @abstractmethod
    def ensure_ready(
        self,
        *,
        cleanup_days: int,
        create: bool = True,
        events_days: int | None = None,
        archive_days: int | None = None,
    ) -> ReadyReport:
        """Make the storage usable (folders; bucket, privacy, lifecycle) and say what was done.

        ``events_days``: where the storage has lifecycle rules, usage events under
        ``events/`` expire after that many days, a backstop for the daily prune;
        ``None`` leaves any such rule as it is. ``archive_days`` does the same for archived
        images under ``archive/`` (STORAGE_ARCHIVE).
        """

    def check_conditional_writes(self) -> bool:
        """Whether the server refuses a write whose precondition fails (needed for exact quotas)."""
        import uuid

        key = f"ledger/probe-{uuid.uuid4().hex}.json"
        try:
            tag = self.write_doc(key, b'{"probe": 1}', etag=None)
            try:
                self.write_doc(key, b'{"probe": 2}', etag=None)
                return False
            except ConditionFailed:
                pass
            try:
                self.write_doc(key, b'{"probe": 3}', etag=tag + "x")
                return False
            except ConditionFailed:
                pass
            self.write_doc(key, b'{"probe": 4}', etag=tag)
            return True
        finally:
            self.delete_doc(key)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend may not be used afterwards."""
