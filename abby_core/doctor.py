"""Health checks for an Abby installation: what ``abby doctor`` runs, one verdict each.

Each check returns a :class:`Check` with a status (``ok``, ``fail`` or ``skip``), a one-line
detail and, when it failed, the fix. Checks never raise: an error becomes a failed check
whose detail is the error's own (secret-free) message. Nothing here prints, and no detail
ever contains a key, a token or a secret; the Discord token is judged by its shape only.

The checks, in order (``Check.name``)::

    config              the settings loaded (see :func:`config_failed` when they did not)
    storage             a probe object can be written, read back and deleted
    privacy             S3: an anonymous GET of the probe is refused
    lifecycle           S3: our expiry rule is installed with STORAGE_CLEANUP_DAYS
    conditional_writes  the server refuses a write whose precondition fails (exact quotas)
    presigned_link      S3: a presigned link to the probe, fetched at the public endpoint, works
    clock               S3: local UTC is within 5 minutes of the server's ``Date`` header
    stability           the Stability key is accepted (``get_balance``)
    discord_token       DISCORD_TOKEN has the shape of a bot token
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

import httpx

from abby_core.config import Settings
from abby_core.errors import (
    AbbyError,
    ConfigError,
    GenerationUnavailable,
    ProviderAuthError,
    ProviderOutOfCredits,
)
from abby_core.generation import ImageGenerator
from abby_core.storage import StorageManager
from abby_core.storage.backend import StorageBackend
from abby_core.storage.filesystem import FilesystemBackend

__all__ = [
    "CHECK_NAMES",
    "MAX_CLOCK_SKEW",
    "Check",
    "Status",
    "config_failed",
    "discord_token_check",
    "run_checks",
]

Status = Literal["ok", "fail", "skip"]
MAX_CLOCK_SKEW = timedelta(minutes=5)
_HTTP_TIMEOUT = 10.0
_PROBE_BODY = b"abby doctor probe: safe to delete\n"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}")

TITLES: dict[str, str] = {
    "config": "Configuration",
    "storage": "Storage reachable",
    "privacy": "Bucket private",
    "lifecycle": "Lifecycle rule",
    "conditional_writes": "Conditional writes",
    "presigned_link": "Presigned links",
    "clock": "Clock",
    "stability": "Stability API key",
    "discord_token": "Discord token",
}
CHECK_NAMES: tuple[str, ...] = tuple(TITLES)


@dataclass(frozen=True)
class Check:
    """One verdict. ``fix`` says what to do when ``status`` is ``fail``."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "title": self.title, "status": self.status, "detail": self.detail, "fix": self.fix}


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, "fail", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def config_failed(error: ConfigError) -> list[Check]:
    """The report when the settings did not load: the config check fails, the rest are skipped."""
    problems = "; ".join(error.problems) if error.problems else error.message
    first = _fail("config", problems, "Fix the variables named above in .env or the environment.")
    return [first, *(_skip(name, "needs a valid configuration") for name in CHECK_NAMES[1:])]


def discord_token_check(settings: Settings) -> Check:
    """DISCORD_TOKEN's shape: three base64url parts separated by dots. Never shows the token."""
    token = settings.discord.token
    if token is None:
        return _skip("discord_token", "DISCORD_TOKEN is not set; 'abby run' needs it to start the bot")
    if _TOKEN.fullmatch(token.get_secret_value().strip()):
        return _ok("discord_token", "DISCORD_TOKEN looks like a bot token (Discord verifies it at 'abby run')")
    return _fail(
        "discord_token",
        "DISCORD_TOKEN does not look like a bot token (three base64url parts separated by dots)",
        "Copy the token again from the Discord developer portal (Bot > Reset Token).",
    )


async def _stability_check(settings: Settings, generator: ImageGenerator) -> Check:
    if settings.api.provider == "offline":
        return _skip("stability", "IMAGE_PROVIDER=offline: no key needed, images are local previews")
    if not generator.configured:
        return _fail(
            "stability",
            "STABILITY_API_KEY is not set: image generation is disabled",
            "Set STABILITY_API_KEY, or IMAGE_PROVIDER=offline to try Abby without a provider.",
        )
    try:
        credits = await generator.get_balance()
    except (ProviderAuthError, ProviderOutOfCredits) as exc:
        return _fail("stability", exc.message, "Check STABILITY_API_KEY and the account at platform.stability.ai.")
    except GenerationUnavailable as exc:
        return _fail("stability", exc.message, f"Check that {settings.api.stability_api_host} is reachable.")
    except AbbyError as exc:
        return _fail("stability", exc.message)
    shown = f" ({credits:g} credits left)" if credits is not None else ""
    return _ok("stability", f"the key is accepted{shown}")


def _config_check(settings: Settings, backend: StorageBackend) -> Check:
    provider = settings.api.provider
    return _ok("config", f"storage {backend.name} at {backend.location}; provider {provider}")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(path.anchor)


class _Doctor:
    """The checks over one storage manager, generator and HTTP client."""

    def __init__(
        self,
        settings: Settings,
        storage: StorageManager,
        generator: ImageGenerator,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.backend = storage.backend
        self.generator = generator
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
                return _ok(
                    "storage",
                    f"{backend.location} does not exist yet; it is created on first use, or now by 'abby storage init'",
                )
            return _fail(
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
            return _fail("storage", exc.message, "Check the storage settings, then run 'abby storage init'.")
        if data != _PROBE_BODY:
            return _fail("storage", "a probe object was written but read back different bytes")
        return _ok("storage", f"wrote and read back a probe object at {backend.location}")

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
            return _fail("privacy", f"could not reach the storage server anonymously ({type(exc).__name__})")
        self._note_date(response)
        if response.status_code == 200 and response.content == _PROBE_BODY:
            return _fail(
                "privacy",
                "anyone can read the images: an anonymous GET of a probe object succeeded",
                "Remove any public bucket policy or ACL, then run 'abby storage init'.",
            )
        return _ok("privacy", f"an anonymous GET of a probe object was refused (HTTP {response.status_code})")

    async def lifecycle_check(self) -> Check:
        from abby_core.storage.s3 import S3Backend

        assert isinstance(self.backend, S3Backend)
        try:
            days = await asyncio.to_thread(self.backend.lifecycle_days)
        except AbbyError as exc:
            return _fail("lifecycle", exc.message)
        wanted = self.settings.storage.cleanup_days
        if days is None:
            return _fail("lifecycle", "no expiry rule for images is installed", "Run 'abby storage init'.")
        if days != wanted:
            return _fail(
                "lifecycle",
                f"images expire after {days} days, but STORAGE_CLEANUP_DAYS is {wanted}",
                "Run 'abby storage init' to update the rule.",
            )
        return _ok("lifecycle", f"images expire after {days} days")

    async def conditional_check(self) -> Check:
        try:
            honoured = await asyncio.to_thread(self.backend.check_conditional_writes)
        except AbbyError as exc:
            return _fail("conditional_writes", exc.message)
        if not honoured:
            return _fail(
                "conditional_writes",
                "the server ignores If-Match / If-None-Match: quotas are not exact with several processes",
                "Use a server that supports conditional writes (MinIO, AWS S3, recent SeaweedFS), or run one bot.",
            )
        how = "file locks" if isinstance(self.backend, FilesystemBackend) else "the server"
        return _ok("conditional_writes", f"honoured by {how}: quotas are exact")

    async def presigned_check(self) -> Check:
        assert self.probe_key is not None
        public = self.settings.s3.public_endpoint_url or self.settings.s3.endpoint_url or "AWS S3"
        try:
            url, _ = await asyncio.to_thread(
                lambda: self.backend.link(self.probe_key or "", content_type="text/plain", ttl=120)
            )
        except AbbyError as exc:
            return _fail("presigned_link", exc.message)
        fix = (
            "Set S3_PUBLIC_ENDPOINT_URL to the address users' browsers reach (and check that this machine "
            "can reach it too), and check the clock."
        )
        if url is None:
            return _fail("presigned_link", "the storage gave no link")
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            return _fail("presigned_link", f"a presigned link at {public} could not be fetched ({reason})", fix)
        self._note_date(response)
        if response.status_code != 200 or response.content != _PROBE_BODY:
            return _fail("presigned_link", f"a presigned link at {public} answered HTTP {response.status_code}", fix)
        return _ok("presigned_link", f"a presigned link at {public} returned the probe")

    # -- clock ------------------------------------------------------------------------
    def _note_date(self, response: httpx.Response) -> None:
        header = response.headers.get("date")
        if header and self.server_date is None:
            with contextlib.suppress(TypeError, ValueError):
                self.server_date = parsedate_to_datetime(header).astimezone(UTC)

    async def clock_check(self) -> Check:
        if self.server_date is None:
            with contextlib.suppress(httpx.HTTPError):
                self._note_date(await self.http.get(self._object_url("")))
        if self.server_date is None:
            return _skip("clock", "the storage server sent no Date header to compare with")
        skew = self.clock() - self.server_date
        seconds = abs(skew.total_seconds())
        if abs(skew) > MAX_CLOCK_SKEW:
            direction = "ahead of" if skew.total_seconds() > 0 else "behind"
            return _fail(
                "clock",
                f"this machine is {seconds / 60:.0f} minutes {direction} the storage server",
                "Synchronise the clock (NTP): signed requests and presigned links fail beyond 15 minutes.",
            )
        return _ok("clock", f"within {max(seconds, 1):.0f} s of the storage server")

    # -- all --------------------------------------------------------------------------
    async def run(self) -> list[Check]:
        checks = [_config_check(self.settings, self.backend)]
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
                    checks.append(_skip(name, "skipped: storage is not reachable"))
                elif applies:
                    checks.append(await check())
                else:
                    checks.append(_skip(name, f"filesystem storage: {fs_detail}"))
        finally:
            await self.delete_probe()
        checks.append(await _stability_check(self.settings, self.generator))
        checks.append(discord_token_check(self.settings))
        return checks


async def run_checks(
    settings: Settings,
    storage: StorageManager,
    generator: ImageGenerator,
    *,
    http: httpx.AsyncClient | None = None,
    clock: Callable[[], datetime] | None = None,
) -> list[Check]:
    """Run every check against these settings and resources; never raises an :class:`AbbyError`.

    Probes are written under ``images/`` (S3: so the privacy check covers where images
    live) or ``temp/`` (filesystem) and deleted afterwards. A filesystem root that does not
    exist yet is not created. ``http`` (for anonymous and presigned fetches) is made and
    closed here when not given.
    """
    own = http is None
    client = http or httpx.AsyncClient(timeout=_HTTP_TIMEOUT, follow_redirects=False)
    try:
        return await _Doctor(settings, storage, generator, client, clock or (lambda: datetime.now(UTC))).run()
    finally:
        if own:
            await client.aclose()
