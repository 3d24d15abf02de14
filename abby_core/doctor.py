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
    clock               S3: local UTC is within a minute of the server's ``Date`` header (so
                        any two hosts that pass are within ``CLOCK_BOUND``, 2 minutes)
    stability           the Stability key is accepted (``get_balance``), when Stability is used; skipped as
                        "not configured yet" when neither IMAGE_PROVIDER nor the key is set (a fresh install)
    image_server        each local GPU server (ComfyUI, AUTOMATIC1111) answers and has what is configured
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
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

import httpx

from abby_core.config import A1111Settings, ApiSettings, ProviderName, Settings, redact_url
from abby_core.errors import (
    AbbyError,
    ConfigError,
    GenerationTimeout,
    GenerationUnavailable,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    ProviderUnreachable,
)
from abby_core.generation import ImageGenerator
from abby_core.generation.automatic1111 import Automatic1111Provider, WebUIReport
from abby_core.generation.comfyui import ComfyUIProvider, ServerReport, WorkflowIssue
from abby_core.generation.generator import build_provider
from abby_core.storage import StorageManager
from abby_core.storage.backend import StorageBackend
from abby_core.storage.filesystem import FilesystemBackend
from abby_core.storage.rules import CLOCK_BOUND

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
#: Half the bound the shared ledger is safe for: two hosts that pass are within ``CLOCK_BOUND``.
MAX_CLOCK_SKEW = CLOCK_BOUND / 2
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
    "image_server": "Image server",
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


def _providers(api: ApiSettings) -> str:
    """``IMAGE_PROVIDER=x`` (and the fallback), for a skip's detail."""
    shown = f"IMAGE_PROVIDER={api.provider}"
    return shown + (f", IMAGE_PROVIDER_FALLBACK={api.fallback}" if api.fallback else "")


async def _stability_check(settings: Settings, generator: ImageGenerator) -> Check:
    api = settings.api
    if api.provider == "offline" and api.fallback != "stability":
        return _skip("stability", "IMAGE_PROVIDER=offline: no key needed, images are local previews")
    if "stability" not in (api.provider, api.fallback):
        return _skip("stability", f"{_providers(api)}: Stability is not used, so no key is needed")
    if api.provider == "stability" and not generator.configured and "provider" not in api.model_fields_set:
        # A fresh install: Stability is only the default. Nothing is broken, something is still to set.
        return _skip(
            "stability",
            "not configured yet: set STABILITY_API_KEY (Stability AI), or IMAGE_PROVIDER=comfyui, automatic1111 "
            "or offline; until then, images need --provider offline",
        )
    if api.provider == "stability":
        fix = "Set STABILITY_API_KEY, or IMAGE_PROVIDER=offline to try Abby without a provider."
        return await _key_check(api, generator.configured, generator.get_balance, "image generation", fix)
    # Stability is only the fallback: the generator's balance would be the first provider's.
    fallback = build_provider("stability", api)
    try:
        fix = "Set STABILITY_API_KEY, or unset IMAGE_PROVIDER_FALLBACK."
        return await _key_check(api, fallback.configured, fallback.get_balance, "the Stability fallback", fix)
    finally:
        await fallback.aclose()


async def _key_check(
    api: ApiSettings, configured: bool, balance: Callable[[], Awaitable[float | None]], what: str, missing_fix: str
) -> Check:
    if not configured:
        return _fail("stability", f"STABILITY_API_KEY is not set: {what} is disabled", missing_fix)
    try:
        credits = await balance()
    except (ProviderAuthError, ProviderOutOfCredits) as exc:
        return _fail("stability", exc.message, "Check STABILITY_API_KEY and the account at platform.stability.ai.")
    except GenerationUnavailable as exc:
        return _fail("stability", exc.message, f"Check that {api.stability_api_host} is reachable.")
    except AbbyError as exc:
        return _fail("stability", exc.message)
    shown = f" ({credits:g} credits left)" if credits is not None else ""
    return _ok("stability", f"the key is accepted{shown}")


# -- image servers ------------------------------------------------------------------------

_LOCAL: dict[ProviderName, str] = {"comfyui": "ComfyUI", "automatic1111": "AUTOMATIC1111"}
_UNREACHABLE_FIX = {
    "comfyui": "Check COMFYUI_URL. On another machine, ComfyUI must be started with --listen "
    "and its port (8188 by default) let through the firewall.",
    "automatic1111": "Check A1111_URL. On another machine, the web UI must be started with --listen --api "
    "and its port (7860 by default) let through the firewall.",
}
_WEBUI_SETTINGS = {"model": "A1111_MODEL", "sampler": "A1111_SAMPLER", "upscaler": "A1111_UPSCALER"}
_WEBUI_FIX = {
    "model": "Set A1111_MODEL to a checkpoint the server lists (or empty for its current one), "
    "or put the checkpoint in the web UI's models/Stable-diffusion folder.",
    "sampler": "Set A1111_SAMPLER to a sampler the server lists, or leave it empty for the default.",
    "upscaler": "Set A1111_UPSCALER to an upscaler the server lists, or put the model in the web UI's "
    "models/ESRGAN (or RealESRGAN) folder.",
}


def _names(names: tuple[str, ...], limit: int = 8) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _comfyui_verdict(report: ServerReport, url: str) -> Check:
    where = f"ComfyUI {report.version} at {url}" if report.version else f"ComfyUI at {url}"
    if report.device:
        # "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync": the allocator says nothing to an operator
        device = report.device.split(" : ")[0]
        memory = "RAM" if report.on_cpu else "VRAM"  # on a CPU, ComfyUI's "vram" is the machine's RAM
        vram = f", {report.vram_total / 1024**3:.0f} GB {memory}" if report.vram_total else ""
        where += f" ({device}{vram})"
    if not report.issues:
        kinds = _and(list(report.workflows)) if report.workflows else "no"
        return _ok("image_server", f"{where}: every node and model of the {kinds} workflows is installed")
    problems = [_issue_text(issue) for issue in report.issues[:3]]
    if len(report.issues) > 3:
        problems.append(f"and {len(report.issues) - 3} more")
    return _fail("image_server", f"{where}: " + "; ".join(problems), _issue_fixes(report.issues))


def _issue_text(issue: WorkflowIssue) -> str:
    node = f"the {issue.kind} workflow ({issue.workflow}) node {issue.node_id}"
    if issue.input_name is None:
        return f"{node} uses {issue.class_type}, which is not installed"
    return (
        f"{node} ({issue.class_type}) loads {issue.input_name} {issue.value!r}, which the server does "
        f"not have (it has: {_names(issue.choices)})"
    )


def _issue_fixes(issues: tuple[WorkflowIssue, ...]) -> str:
    """One fix per missing node class or file (the first three), naming the workflow files that use it."""
    used_by: dict[tuple[str, str | None, bool], list[str]] = {}  # (class or file, folder, is a node) -> kinds
    for issue in issues:
        node = issue.input_name is None
        kinds = used_by.setdefault((issue.class_type if node else issue.value or "", issue.folder, node), [])
        if issue.kind not in kinds:
            kinds.append(issue.kind)
    fixes: list[str] = []
    for (missing, folder, node), kinds in list(used_by.items())[:3]:
        files = ", ".join(f"{kind}.json" for kind in kinds)
        workflow = f"the workflow{'s' if len(kinds) > 1 else ''} (COMFYUI_WORKFLOWS/{files})"
        if node:
            fixes.append(
                f"Install the custom node that provides {missing} (e.g. with ComfyUI-Manager) and restart "
                f"ComfyUI, or point {workflow} at installed nodes."
            )
        else:
            where = f"ComfyUI's {folder} folder" if folder else "the matching folder under ComfyUI's models/"
            fixes.append(f"Put {missing} in {where}, or point {workflow} at an installed one.")
    return " ".join(fixes)


def _webui_verdict(report: WebUIReport, url: str, a1111: A1111Settings) -> Check:
    where = f"AUTOMATIC1111 at {url}"
    if report.unknown:
        problems = [
            f"{_WEBUI_SETTINGS[u.setting]} {u.wanted!r} is not on the server (it has: {_names(u.available)})"
            for u in report.unknown
        ]
        return _fail(
            "image_server", f"{where}: " + "; ".join(problems), " ".join(_WEBUI_FIX[u.setting] for u in report.unknown)
        )
    lists = f"{len(report.models)} checkpoints, {len(report.samplers)} samplers and {len(report.upscalers)} upscalers"
    configured = [
        f"{_WEBUI_SETTINGS[k]} {v!r}"
        for k, v in (("model", a1111.model), ("sampler", a1111.sampler), ("upscaler", a1111.upscaler))
        if v
    ]
    found = f"; {_and(configured)} {'is' if len(configured) == 1 else 'are'} among them" if configured else ""
    return _ok("image_server", f"{where}: the API answers with {lists}{found}")


async def _image_server(name: ProviderName, api: ApiSettings) -> Check:
    """One local server's verdict: its provider's ``inspect()``, each error with its fix."""
    label = _LOCAL[name]
    url = redact_url(api.comfyui.url if name == "comfyui" else api.a1111.url)
    try:
        provider = build_provider(name, api)
    except ConfigError as exc:
        return _fail("image_server", f"{label}: {exc.message}", "Fix the setting or workflow file named above.")
    try:
        if isinstance(provider, ComfyUIProvider):
            return _comfyui_verdict(await provider.inspect(), url)
        assert isinstance(provider, Automatic1111Provider)
        return _webui_verdict(await provider.inspect(), url, api.a1111)
    except ProviderUnreachable:
        return _fail("image_server", f"{label}: the image server at {url} is not reachable", _UNREACHABLE_FIX[name])
    except ProviderAuthError as exc:
        status = f" (HTTP {exc.status})" if exc.status else ""
        if name == "comfyui":
            return _fail(
                "image_server",
                f"{label} at {url} refused the request{status}",
                "Check COMFYUI_AUTH_HEADER and COMFYUI_AUTH_HEADER_NAME (the header a proxy in front of "
                "ComfyUI requires).",
            )
        asked = "refused A1111_USERNAME/A1111_PASSWORD" if api.a1111.username else "requires a user name and password"
        return _fail(
            "image_server",
            f"{label} at {url} {asked}{status}",
            "Check A1111_USERNAME/A1111_PASSWORD: they must match the web UI's --api-auth user:password.",
        )
    except (ConfigError, ProviderRejected) as exc:
        if isinstance(exc, ConfigError) or exc.status == 404:
            if name == "comfyui":
                return _fail(
                    "image_server",
                    f"{label}: {url} does not answer as ComfyUI (HTTP 404)",
                    "Check that COMFYUI_URL is ComfyUI's address, as in http://gpu-box:8188.",
                )
            return _fail(
                "image_server",
                f"{label}: {url} does not answer as the web UI API (HTTP 404)",
                "Start the web UI with --api (add it to COMMANDLINE_ARGS), and check A1111_URL.",
            )
        return _fail("image_server", f"{label} at {url}: {exc.message}")
    except GenerationTimeout:
        return _fail(
            "image_server",
            f"{label} at {url} did not answer in time",
            "Check that the server is not stuck or still starting, then try again.",
        )
    except AbbyError as exc:
        return _fail("image_server", f"{label} at {url}: {exc.message}")
    finally:
        await provider.aclose()


async def _image_server_check(api: ApiSettings) -> Check:
    local = [name for name in (api.provider, api.fallback) if name in _LOCAL]
    if not local:
        return _skip("image_server", f"{_providers(api)}: no local image server (ComfyUI, AUTOMATIC1111) to check")
    verdicts = [await _image_server(name, api) for name in local]
    if len(verdicts) == 1:
        return verdicts[0]
    failed = [v for v in verdicts if v.status == "fail"]
    fix = " ".join(v.fix for v in failed if v.fix) or None
    return Check("image_server", "fail" if failed else "ok", "; ".join(v.detail for v in verdicts), fix)


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
        if self.settings.storage.archive:  # the maintenance archives first (StorageManager.ensure_ready)
            from abby_core.storage.backend import ARCHIVE_GRACE_DAYS

            wanted += ARCHIVE_GRACE_DAYS
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
                f"this machine is {seconds:.0f} s {direction} the storage server",
                "Synchronise the clock (NTP): bot processes sharing the storage must agree within 2 minutes, "
                "and signed requests and presigned links fail beyond 15 minutes.",
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
        checks.append(await _image_server_check(self.settings.api))
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
