"""The storage checks over one backend: reachable, private, lifecycle, conditional writes, links, clock.

They share a probe object (written by the first, deleted by :meth:`StorageChecks.run` at the end)
and the first ``Date`` header a storage server sent, which the clock check compares with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx

from abby_core.config import Settings
from abby_core.doctor.clock import clock_verdict, server_date
from abby_core.doctor.report import Check, fail, ok, skip
from abby_core.errors import AbbyError
from abby_core.storage.backend import StorageBackend
from abby_core.storage.filesystem import FilesystemBackend

__all__ = ["StorageChecks"]

_PROBE_BODY = b"abby doctor probe: safe to delete\n"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(path.anchor)


class StorageChecks:
    """The storage checks over one backend and HTTP client (for anonymous and presigned fetches)."""

    def __init__(
        self,
        settings: Settings,
        backend: StorageBackend,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.http = http
        self.clock = clock
        self.probe_key: str | None = None
        self.server_date: datetime | None = None

    # -- storage ----------------------------------------------------------------------
    async def storage_check(self) -> Check:
        backend = self.backend
        if isinstance(backend, FilesystemBackend) and not backend.root.exists():
            parent = _nearest_existing(backend.root)
            if parent.is_dir() and os.access(parent, os.W_OK):
                return ok(
                    "storage",
                    f"{backend.location} does not exist yet; it is created on first use, or now by 'abby storage init'",
                )
            return fail(
                "storage",
                f"{backend.location} does not exist and {parent} is not a writable folder",
                "Set STORAGE_ROOT to a folder Abby may write to.",
            )
        prefix = "temp/" if isinstance(backend, FilesystemBackend) else "images/"
        key = f"{prefix}doctor-probe-{uuid.uuid4().hex}.txt"
        try:
            # A listing first: some servers (SeaweedFS) create a missing bucket on the first PUT,
            # and the doctor must report a missing bucket, not quietly make one.
            await asyncio.to_thread(lambda: list(backend.list_objects(key)))
            await asyncio.to_thread(backend.put_object, key, _PROBE_BODY, "text/plain")
            self.probe_key = key
            data = await asyncio.to_thread(backend.get_object, key)
        except AbbyError as exc:
            return fail("storage", exc.message, "Check the storage settings, then run 'abby storage init'.")
        if data != _PROBE_BODY:
            return fail("storage", "a probe object was written but read back different bytes")
        return ok("storage", f"wrote and read back a probe object at {backend.location}")

    async def delete_probe(self) -> None:
        if self.probe_key is not None:
            key, self.probe_key = self.probe_key, None
            # Left behind, it lives under images/ (S3) or temp/: the lifecycle rule or cleanup removes it.
            with contextlib.suppress(AbbyError):
                await asyncio.to_thread(self.backend.delete_objects, [key])

    def _object_url(self, key: str) -> str:
        s3 = self.settings.s3
        endpoint = s3.endpoint_url or f"https://s3.{s3.region}.amazonaws.com"
        return f"{endpoint}/{s3.bucket}/{key}"

    async def privacy_check(self) -> Check:
        assert self.probe_key is not None
        try:
            response = await self.http.get(self._object_url(self.probe_key))
        except httpx.HTTPError as exc:
            return fail("privacy", f"could not reach the storage server anonymously ({type(exc).__name__})")
        self._note_date(response)
        if response.status_code == 200 and response.content == _PROBE_BODY:
            return fail(
                "privacy",
                "anyone can read the images: an anonymous GET of a probe object succeeded",
                "Remove any public bucket policy or ACL, then run 'abby storage init'.",
            )
        return ok("privacy", f"an anonymous GET of a probe object was refused (HTTP {response.status_code})")

    async def lifecycle_check(self) -> Check:
        from abby_core.storage.s3 import S3Backend

        assert isinstance(self.backend, S3Backend)
        try:
            days = await asyncio.to_thread(self.backend.lifecycle_days)
        except AbbyError as exc:
            return fail("lifecycle", exc.message)
        wanted = self.settings.storage.cleanup_days
        if self.settings.storage.archive:  # the maintenance archives first (StorageManager.ensure_ready)
            from abby_core.storage.backend import ARCHIVE_GRACE_DAYS

            wanted += ARCHIVE_GRACE_DAYS
        if days is None:
            return fail("lifecycle", "no expiry rule for images is installed", "Run 'abby storage init'.")
        if days != wanted:
            return fail(
                "lifecycle",
                f"images expire after {days} days, but STORAGE_CLEANUP_DAYS is {wanted}",
                "Run 'abby storage init' to update the rule.",
            )
        return ok("lifecycle", f"images expire after {days} days")

    async def conditional_check(self) -> Check:
        try:
            honoured = await asyncio.to_thread(self.backend.check_conditional_writes)
        except AbbyError as exc:
            return fail("conditional_writes", exc.message)
        if not honoured:
            return fail(
                "conditional_writes",
                "the server ignores If-Match / If-None-Match: quotas are not exact with several processes",
                "Use a server that supports conditional writes (MinIO, AWS S3, recent SeaweedFS), or run one bot.",
            )
        how = "file locks" if isinstance(self.backend, FilesystemBackend) else "the server"
        return ok("conditional_writes", f"honoured by {how}: quotas are exact")

    async def presigned_check(self) -> Check:
        assert self.probe_key is not None
        public = self.settings.s3.public_endpoint_url or self.settings.s3.endpoint_url or "AWS S3"
        try:
            url, _ = await asyncio.to_thread(
                lambda: self.backend.link(self.probe_key or "", content_type="text/plain", ttl=120)
            )
        except AbbyError as exc:
            return fail("presigned_link", exc.message)
        fix = (
            "Set S3_PUBLIC_ENDPOINT_URL to the address users' browsers reach (and check that this machine "
            "can reach it too), and check the clock."
        )
        if url is None:
            return fail("presigned_link", "the storage gave no link")
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            return fail("presigned_link", f"a presigned link at {public} could not be fetched ({reason})", fix)
        self._note_date(response)
        if response.status_code != 200 or response.content != _PROBE_BODY:
            return fail("presigned_link", f"a presigned link at {public} answered HTTP {response.status_code}", fix)
        return ok("presigned_link", f"a presigned link at {public} returned the probe")

    # -- clock ------------------------------------------------------------------------
    def _note_date(self, response: httpx.Response) -> None:
        if self.server_date is None:
            self.server_date = server_date(response)

    async def clock_check(self) -> Check:
        if self.server_date is None:
            with contextlib.suppress(httpx.HTTPError):
                self._note_date(await self.http.get(self._object_url("")))
        return clock_verdict(self.server_date, self.clock())

    # -- all --------------------------------------------------------------------------
    async def run(self) -> list[Check]:
        """``storage`` to ``clock``, in report order; the probe object is deleted before returning."""
        checks: list[Check] = []
        is_s3 = not isinstance(self.backend, FilesystemBackend)
        try:
            storage = await self.storage_check()
            checks.append(storage)
            reachable = storage.status == "ok"
            probe = self.probe_key is not None
            # name -> (check, skip detail) for the filesystem backend
            steps: list[tuple[str, Callable[[], Awaitable[Check]], bool, str]] = [
                ("privacy", self.privacy_check, is_s3 and probe, "no public access (mind the folder's permissions)"),
                ("lifecycle", self.lifecycle_check, is_s3, "no lifecycle rules; 'abby cleanup' removes old images"),
                ("conditional_writes", self.conditional_check, is_s3 or probe, "file locks, checked once it exists"),
                ("presigned_link", self.presigned_check, is_s3 and probe, "images are local files, no links"),
                ("clock", self.clock_check, is_s3, "no server clock to compare with"),
            ]
            for name, check, applies, fs_detail in steps:
                if not reachable:
                    checks.append(skip(name, "skipped: storage is not reachable"))
                elif applies:
                    checks.append(await check())
                else:
                    checks.append(skip(name, f"filesystem storage: {fs_detail}"))
        finally:
            await self.delete_probe()
        return checks

