"""Images in a plain folder (``STORAGE_ROOT``, e.g. ``shared/`` on the Windows server).

Writes are atomic: a temporary file in the target folder, flushed, then ``os.replace``;
a crash or a full disk leaves the old state, never a partial file (a writer killed
outright leaves its ``.tmp-*`` file behind, which :meth:`FilesystemBackend.sweep_partial_writes`
removes later). Documents are
compare-and-swapped under a cross-process, cross-platform lock (``filelock``), so
several bot processes can share one root. ``pathlib`` throughout so Windows paths work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from abby_core.errors import ImageNotFound, InvalidKey, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import ARCHIVE_USERS_PREFIX, IMAGES_PREFIX, LEDGER_PREFIX, LOGS_PREFIX, TEMP_PREFIX
from abby_core.storage.models import ObjectInfo, ReadyReport

__all__ = ["FilesystemBackend"]

_TMP_PREFIX = ".tmp-"
_LOCK_SUFFIX = ".lock"
_LOCK_TIMEOUT = 10.0


def _explain(exc: OSError, what: str) -> StorageUnavailable:
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EROFS: "the storage folder is read-only",
        errno.EACCES: "permission was denied",
        errno.EPERM: "permission was denied",
        errno.ENOENT: "the storage folder does not exist",
        errno.ENOTDIR: "a part of the storage path is not a folder",
        errno.EDQUOT: "the disk quota is exceeded",
    }
    reason = reasons.get(exc.errno or 0, f"the system reported error {exc.errno}")
    return StorageUnavailable(f"Could not {what}: {reason}. Check STORAGE_ROOT and its permissions.")


class FilesystemBackend(StorageBackend):
    """A folder; keys map to relative paths below it."""

    name = "filesystem"
    write_errors_are_definite = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root.resolve())

    # -- path safety: the one function every key goes through --------------------
    def _path(self, key: str) -> Path:
        """The path of ``key`` below the root, or :class:`InvalidKey`.

        Refused: empty, absolute (``/x``, ``C:/x``), backslashes, empty, ``.`` or ``..``
        segments (``a//b``, ``a/``), anything resolving outside the root (a symlink out),
        and names this backend keeps for itself (``.tmp-*`` temporary files, ``*.lock``
        lock files), so a stored object is never hidden from listings or swept as debris.
        """
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or ":" in key
            or any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) or p.endswith(_LOCK_SUFFIX) for p in parts)
        ):
            raise InvalidKey(f"{key[:80]!r} is not a valid storage key.")
        path = self.root.joinpath(*parts)
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise InvalidKey(f"{key[:80]!r} is not a valid storage key.")
        return path

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- objects -------------------------------------------------------------------
    def _atomic_write(self, path: Path, data: bytes, what: str) -> None:
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            self._replace(tmp, path)
            tmp = None
        except OSError as exc:
            raise _explain(exc, what) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    @staticmethod
    def _replace(src: str, dst: Path) -> None:
        # On Windows, replacing a file another process has open fails for a moment.
        for attempt in range(20):
            try:
                os.replace(src, dst)
                return
            except PermissionError:
                if os.name != "nt" or attempt == 19:
                    raise
                time.sleep(0.05)

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        self._atomic_write(self._path(key), data, "save the image")

    @staticmethod
    def _read(path: Path) -> bytes | None:
        """The file's bytes, or ``None`` when there is no file (a folder is not an object)."""
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        except PermissionError:
            if path.is_dir():  # Windows reports reading a folder as "permission denied"
                return None
            raise

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            if path.is_dir():  # a folder is not an object: nothing to delete
                return
            raise

    def get_object(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = self._read(path)
        except OSError as exc:
            raise _explain(exc, "read the image") from exc
        if data is None:
            raise ImageNotFound(key)
        return data

    def head_object(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _explain(exc, "read the image") from exc
        if not stat.S_ISREG(st.st_mode):  # a folder is a prefix, not an object
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete_objects(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._unlink(self._path(key))
            except OSError as exc:
                raise _explain(exc, "delete the image") from exc

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        try:
            if not base.is_dir():
                return
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.startswith(_TMP_PREFIX) or name.endswith(_LOCK_SUFFIX):
                        continue
                    path = Path(dirpath, name)
                    key = self._key(path)
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = path.stat()
                    except FileNotFoundError:  # deleted while we walked
                        continue
                    # Every write is a new file (atomic replace): its inode tells rewrites apart.
                    version = f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), version)
        except OSError as exc:
            raise _explain(exc, "list the stored images") from exc

    # -- documents -----------------------------------------------------------------
    @staticmethod
    def _tag(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        try:
            body = self._read(path)
        except OSError as exc:
            raise _explain(exc, "read the quota ledger") from exc
        return None if body is None else (body, self._tag(body))

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + _LOCK_SUFFIX, timeout=_LOCK_TIMEOUT)
            with lock:
                try:
                    current: str | None = self._tag(path.read_bytes())
                except FileNotFoundError:
                    current = None
                if current != etag:
                    raise ConditionFailed(key)
                self._atomic_write(path, body, "update the quota ledger")
        except Timeout as exc:
            raise StorageUnavailable(
                "The quota ledger is locked by another process for too long; try again shortly."
            ) from exc
        except OSError as exc:
            raise _explain(exc, "update the quota ledger") from exc
        return self._tag(body)

    def delete_doc(self, key: str) -> None:
        path = self._path(key)
        try:
            self._unlink(path)
        except OSError as exc:
            raise _explain(exc, "delete a ledger document") from exc

    def sweep_partial_writes(self, older_than: datetime) -> int:
        """Delete the temporary files of atomic writes that never finished; return how many.

        A writer killed between ``mkstemp`` and ``os.replace`` (SIGKILL, power loss) leaves
        a ``.tmp-*`` file beside its target for ever. Removed here: regular files named
        ``.tmp-*`` anywhere under the root whose modification time is before
        ``older_than`` (timezone-aware; a live writer touches its file as it writes, so an
        hour ago is safe). Never touched: any other file (no key may take a ``.tmp-``
        name), lock files, symlinks, and anything outside the root (links are not
        followed). A missing root sweeps nothing; a file that vanishes meanwhile (its
        write finished) is not counted.
        """
        if older_than.tzinfo is None:
            raise ValueError("older_than must be timezone-aware")
        cutoff = older_than.timestamp()
        removed = 0
        try:
            if not self.root.is_dir():
                return 0
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    if not name.startswith(_TMP_PREFIX):
                        continue
                    path = Path(dirpath, name)
                    try:
                        st = path.lstat()
                        if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                            continue
                        path.unlink()
                    except FileNotFoundError:  # the write finished, or another sweep got it
                        continue
                    removed += 1
        except OSError as exc:
            raise _explain(exc, "remove unfinished writes") from exc
        return removed

    # -- links and set-up ------------------------------------------------------------
    def link(self, key: str, *, content_type: str, ttl: int) -> tuple[str | None, str | None]:
        return None, str(self._path(key).resolve())

    def ensure_ready(
        self,
        *,
        cleanup_days: int,
        create: bool = True,
        events_days: int | None = None,
        archive_days: int | None = None,
    ) -> ReadyReport:
        created = not self.root.exists()
        try:
            folders = [IMAGES_PREFIX + "users/", LEDGER_PREFIX, TEMP_PREFIX, LOGS_PREFIX]
            for prefix in folders + ([ARCHIVE_USERS_PREFIX] if archive_days is not None else []):
                folder = self._path(prefix.rstrip("/"))
                if create:
                    folder.mkdir(parents=True, exist_ok=True)
                elif not folder.is_dir():
                    raise StorageUnavailable(f"The storage folder {folder} does not exist.")
            probe = self._path(TEMP_PREFIX + ".write-probe")
            self._atomic_write(probe, b"ok", "write to the storage folder")
            probe.unlink()
        except OSError as exc:
            raise _explain(exc, f"prepare the storage folder {self.root}") from exc
        notes = [f"Images older than {cleanup_days} days are removed by cleanup (no lifecycle rules here)."]
        if events_days is not None:
            notes.append("Usage events under events/ are pruned by the daily maintenance (no lifecycle rules here).")
        if archive_days is not None:
            notes.append("Archived images under archive/ are pruned by the daily maintenance (no lifecycle rules).")
        return ReadyReport(
            backend=self.name,
            location=self.location,
            created=created,
            private=None,
            lifecycle_days=None,
            conditional_writes=True,
            notes=notes,
        )
