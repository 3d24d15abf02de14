"""The bot: resources handed in, cogs loaded in ``setup_hook``, errors to one translator.

::

    storage = StorageManager.from_settings(settings)
    generator = ImageGenerator.from_settings(settings.api)
    bot = AbbyBot(settings, storage=storage, generator=generator,
                  service=ImageService.from_settings(settings, storage, generator))

:func:`run_bot` does exactly that, runs until stopped and closes what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from prometheus_client import start_http_server

from abby_core.admission import Admission
from abby_core.analytics import AuditEvent
from abby_core.config import Settings
from abby_core.errors import AbbyError, NotConfigured
from abby_core.generation import ImageGenerator
from abby_core.metrics import Metrics
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager
from abby_discord.buttons import GalleryButton, ResultButton
from abby_discord.cogs import EXTENSIONS, STORE_EXTENSION
from abby_discord.errors import report
from abby_discord.logs import setup_logging

__all__ = ["AbbyBot", "AbbyTree", "run_bot"]

log = logging.getLogger("abby.discord")

DAY = 24 * 60 * 60.0
_STARTUP_CHECK_TIMEOUT = 60.0
_MAINTENANCE_TIMEOUT = 30 * 60.0
_METRICS_STATS_TIMEOUT = 30.0


class AbbyTree(app_commands.CommandTree["AbbyBot"]):
    """Every command error goes to the one translator, privately."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        await report(interaction, error)


class AbbyBot(commands.AutoShardedBot):
    """Abby in Discord. Owns no resources: storage, generator and service are handed in and closed by the caller.

    Runs the shards ``settings.discord`` names (``SHARD_COUNT`` / ``SHARD_IDS``), all of them by
    default; several processes on one storage can split the shards between them. Only the
    :attr:`primary` process syncs application commands and runs maintenance, so they do not race.
    When the server sells quota (``PREMIUM_TIERS`` / ``CREDIT_PACKS``) the store cog is loaded
    too; its sweep of unfinished pack purchases also runs on the primary only.

    ``maintenance_delay`` is how long after start the first cleanup + reconcile runs,
    ``maintenance_interval`` the time between runs (a day). Maintenance errors are logged
    and never stop the bot.

    With ``METRICS_PORT`` set, ``setup_hook`` serves ``service.metrics`` (made if the service has
    none) at ``settings.metrics.url`` and refreshes the storage gauges every ``metrics_interval``
    seconds; the server stops with :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        storage: StorageManager,
        generator: ImageGenerator,
        service: ImageService,
        maintenance_delay: float = 60.0,
        maintenance_interval: float = DAY,
        metrics_interval: float = 60.0,
    ) -> None:
        # discord.py takes no shard_ids at all for "every shard" (None is refused by its types).
        only: dict[str, Any] = {"shard_ids": list(settings.discord.shard_ids)} if settings.discord.shard_ids else {}
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            tree_cls=AbbyTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            shard_count=settings.discord.shard_count,
            **only,
        )
        self.settings = settings
        self.storage = storage
        self.generator = generator
        self.service = service
        # One generation at a time per member (across every process on this storage), the queue.
        self.admission = Admission.from_settings(settings, service)
        self.limiter = self.admission.limiter
        self.maintenance_delay = maintenance_delay
        self.maintenance_interval = maintenance_interval
        self.maintenance_runs = 0
        self.metrics_interval = metrics_interval
        self._metrics_server: WSGIServer | None = None
        self._storage_down = False
        self._background: list[asyncio.Task[None]] = []

    @property
    def primary(self) -> bool:
        """Whether this process syncs commands and runs maintenance: it runs shard 0 (or every shard)."""
        shard_ids = self.settings.discord.shard_ids
        return not shard_ids or 0 in shard_ids

    async def setup_hook(self) -> None:
        if self.settings.metrics.enabled:
            self._start_metrics()  # first: a port in use stops the start before anything else
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.settings.discord.sells:  # owners who sell nothing get no store listeners at all
            await self.load_extension(STORE_EXTENSION)
        self.add_dynamic_items(ResultButton, GalleryButton)
        self._log_shards()
        if self.primary:
            await self._sync_commands()
        if not self.generator.configured:
            log.warning("Image generation is not configured (no STABILITY_API_KEY): image commands will say so.")
        self._background.append(asyncio.create_task(self._check_storage(), name="abby-storage-check"))
        if self.primary:
            self._background.append(asyncio.create_task(self._maintenance(), name="abby-maintenance"))
        if self._metrics_server is not None:
            self._background.append(asyncio.create_task(self._metrics_loop(), name="abby-metrics"))

    def _start_metrics(self) -> None:
        """Serve the metrics from a daemon thread; :class:`NotConfigured` naming METRICS_PORT if it cannot."""
        section = self.settings.metrics
        assert section.port is not None
        if self.service.metrics is None:
            self.service.metrics = Metrics()
        metrics = self.service.metrics
        limiter = self.limiter
        metrics.track_queue(waiting=lambda: limiter.waiting, running=lambda: limiter.active)
        try:
            self._metrics_server, _ = start_http_server(section.port, addr=section.host, registry=metrics.registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "that port is already in use by another program: choose another METRICS_PORT"
            else:
                why = f"{exc.strerror or exc}: check METRICS_PORT and METRICS_HOST"
            raise NotConfigured(
                f"Cannot serve metrics on {section.host}:{section.port}: {why}, or leave METRICS_PORT empty.",
                setting="METRICS_PORT",
            ) from None
        log.info("Prometheus metrics at %s", section.url)

    async def refresh_metrics(self) -> None:
        """Read storage usage into the storage gauges now; a failure sets ``abby_storage_up`` to 0 (logged once)."""
        metrics = self.service.metrics
        if metrics is None:
            return
        try:
            stats = await asyncio.wait_for(self.storage.stats(top=0), _METRICS_STATS_TIMEOUT)
        except Exception as exc:
            metrics.set_storage(None)
            if not self._storage_down:  # once per outage, not every minute
                self._storage_down = True
                if isinstance(exc, AbbyError | TimeoutError):
                    reason = exc.message if isinstance(exc, AbbyError) else "it did not answer in time"
                    log.warning("Metrics: storage cannot be read (abby_storage_up is 0 until it can): %s", reason)
                else:
                    log.exception("Metrics: unexpected error while reading storage (abby_storage_up is 0).")
            return
        metrics.set_storage(stats)
        if self._storage_down:
            log.info("Metrics: storage can be read again.")
        self._storage_down = False

    async def _metrics_loop(self) -> None:
        while not self.is_closed():
            await self.refresh_metrics()
            await asyncio.sleep(self.metrics_interval)

    def _log_shards(self) -> None:
        count, shard_ids = self.settings.discord.shard_count, self.settings.discord.shard_ids
        if count is None:
            log.info("Running every shard in this process (Discord picks how many).")
        elif not shard_ids:
            log.info("Running all %d shard(s) in this process.", count)
        else:
            role = (
                "syncs commands and runs maintenance"
                if self.primary
                else "leaves command sync and maintenance to shard 0's process"
            )
            listed = ", ".join(str(i) for i in shard_ids)
            log.info("Running shard(s) %s of %d in this process; it %s.", listed, count, role)

    async def _sync_commands(self) -> None:
        guild_id = self.settings.discord.guild_id
        if guild_id is None:
            synced = await self.tree.sync()
            log.info("Synced %d application command(s) globally (may take up to an hour to appear).", len(synced))
            return
        guild = discord.Object(guild_id)
        self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        log.info("Synced %d application command(s) to server %s.", len(synced), guild_id)

    async def _check_storage(self) -> None:
        """Say at start whether storage works; the bot runs either way and commands report it on use."""
        create = self.settings.storage.backend == "filesystem"
        try:
            ready = await asyncio.wait_for(self.storage.ensure_ready(create=create), _STARTUP_CHECK_TIMEOUT)
        except AbbyError as exc:
            log.error("Storage is not usable: %s Image commands will fail until this is fixed.", exc.message)
        except TimeoutError:
            log.error("Storage did not answer within %.0f s at start.", _STARTUP_CHECK_TIMEOUT)
        except Exception:
            log.exception("Unexpected error while checking storage at start.")
        else:
            log.info("Storage ready: %s at %s.", ready.backend, ready.location)

    async def run_maintenance(self) -> None:
        """Cleanup of old images, then reconcile of the quota ledger. Logs, never raises."""
        try:
            cleaned = await asyncio.wait_for(self.storage.cleanup_old_files(), _MAINTENANCE_TIMEOUT)
            log.info("Maintenance cleanup: removed %d image(s), %d bytes.", cleaned.objects, cleaned.bytes)
            events = self.service.events
            if events is not None:  # the dashboard's storage page shows the last run; never fails
                now = self.storage.clock()
                days = self.settings.storage.cleanup_days
                await events.arecord_audit(AuditEvent.of_cleanup(cleaned, actor="maintenance", time=now, days=days))
            fixed = await asyncio.wait_for(self.storage.reconcile(), _MAINTENANCE_TIMEOUT)
            log.info(
                "Maintenance reconcile: %d user(s), %d image(s), drift for %d user(s).",
                fixed.users, fixed.objects, len(fixed.drift),
            )
            if events is not None:
                now = self.storage.clock()
                await events.arecord_audit(AuditEvent.of_reconcile(fixed, actor="maintenance", time=now))
                compacted = await asyncio.wait_for(asyncio.to_thread(events.compact_finished), _MAINTENANCE_TIMEOUT)
                pruned = await asyncio.wait_for(asyncio.to_thread(events.prune), _MAINTENANCE_TIMEOUT)
                log.info("Maintenance analytics: %d day(s) compacted; %s.", len(compacted), pruned)
        except AbbyError as exc:
            log.error("Maintenance failed: %s", exc.message)
        except TimeoutError:
            log.error("Maintenance did not finish within %.0f s.", _MAINTENANCE_TIMEOUT)
        except Exception:
            log.exception("Unexpected error during maintenance.")
        finally:
            self.maintenance_runs += 1

    async def _maintenance(self) -> None:
        await asyncio.sleep(self.maintenance_delay)
        while not self.is_closed():
            await self.run_maintenance()
            await asyncio.sleep(self.maintenance_interval)

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        self._background.clear()
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # waits for the serving thread's loop to stop
            server.server_close()
        await super().close()


def run_bot(settings: Settings) -> None:
    """Run the bot until it is stopped (Ctrl+C or a service stop). Blocking.

    Raises :class:`~abby_core.errors.NotConfigured` without ``DISCORD_TOKEN``, when Discord
    refuses the token, when Discord cannot be reached, or when ``METRICS_PORT`` is set and
    cannot be listened on (in use, say). Starts
    without a Stability key (image commands then say generation is not configured) and
    with broken storage (the problem is logged at start and reported on use).
    """
    token = settings.discord.token
    if token is None or not token.get_secret_value().strip():
        raise NotConfigured(
            "DISCORD_TOKEN is not set: create a bot in the Discord Developer Portal and put its token "
            "in .env (see docs/DISCORD.md)."
        )
    setup_logging(settings)
    try:
        asyncio.run(_run(settings, token.get_secret_value().strip()))
    except discord.LoginFailure:
        raise NotConfigured(
            "Discord refused DISCORD_TOKEN: copy the bot token again from the Developer Portal "
            "(Bot → Reset Token) into .env."
        ) from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise NotConfigured(
            f"Could not reach Discord ({type(exc).__name__}): check this machine's network and DNS."
        ) from None


async def _run(settings: Settings, token: str) -> None:
    storage = StorageManager.from_settings(settings)
    generator = ImageGenerator.from_settings(settings.api)
    try:
        service = ImageService.from_settings(settings, storage, generator)
        bot = AbbyBot(settings, storage=storage, generator=generator, service=service)
        async with bot:
            await bot.start(token)
    finally:
        await generator.aclose()
        await storage.aclose()
