"""Images in a plain folder (``STORAGE_ROOT``, e.g. ``shared/`` on the Windows server).

Writes are atomic: a temporary file in the target folder, flushed, then ``os.replace``;
a crash or a full disk leaves the old state, never a partial file. Documents are
compare-and-swapped under a cross-process, cross-platform lock (``filelock``), so
several bot processes can share one root. ``pathlib`` throughout so Windows paths work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from abby_core.errors import ImageNotFound, InvalidKey, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import IMAGES_PREFIX, LEDGER_PREFIX, LOGS_PREFIX, TEMP_PREFIX
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

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root.resolve())

    # -- path safety: the one function every key goes through --------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or "\\" in key
            or ":" in key
            or any(p in ("", ".", "..") for p in parts[:-1])
            or parts[-1] in (".", "..")
        ):
            raise InvalidKey(f"{key[:80]!r} is not a valid storage key.")
        path = self.root.joinpath(*[p for p in parts if p])
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

    def get_object(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ImageNotFound(key) from None
        except OSError as exc:
            raise _explain(exc, "read the image") from exc

    def head_object(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _explain(exc, "read the image") from exc
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete_objects(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink(missing_ok=True)
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
                    yield ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
        except OSError as exc:
            raise _explain(exc, "list the stored images") from exc

    # -- documents -----------------------------------------------------------------
    @staticmethod
    def _tag(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        try:
            body = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _explain(exc, "read the quota ledger") from exc
        return body, self._tag(body)

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
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _explain(exc, "delete a ledger document") from exc

    # -- links and set-up ------------------------------------------------------------
    def link(self, key: str, *, content_type: str, ttl: int) -> tuple[str | None, str | None]:
        return None, str(self._path(key).resolve())

    def ensure_ready(self, *, cleanup_days: int, create: bool = True) -> ReadyReport:
        created = not self.root.exists()
        try:
            for prefix in (IMAGES_PREFIX + "users/", LEDGER_PREFIX, TEMP_PREFIX, LOGS_PREFIX):
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
        return ReadyReport(
            backend=self.name,
            location=self.location,
            created=created,
            private=None,
            lifecycle_days=None,
            conditional_writes=True,
            notes=[f"Images older than {cleanup_days} days are removed by cleanup (no lifecycle rules here)."],
        )
