"""Every check, in report order, over one set of settings and resources: :func:`run_checks`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from abby_core.config import Settings
from abby_core.doctor.bot import discord_token_check
from abby_core.doctor.providers import image_server_check, stability_check
from abby_core.doctor.report import Check, ok
from abby_core.doctor.storage import StorageChecks
from abby_core.generation import ImageGenerator
from abby_core.storage import StorageManager
from abby_core.storage.backend import StorageBackend

__all__ = ["run_checks"]

_HTTP_TIMEOUT = 10.0


def _config_check(settings: Settings, backend: StorageBackend) -> Check:
    provider = settings.api.provider
    return ok("config", f"storage {backend.name} at {backend.location}; provider {provider}")


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
        checks = [_config_check(settings, storage.backend)]
        now = clock or (lambda: datetime.now(UTC))
        checks += await StorageChecks(settings, storage.backend, client, now).run()
        checks.append(await stability_check(settings, generator))
        checks.append(await image_server_check(settings.api))
        checks.append(discord_token_check(settings))
        return checks
    finally:
        if own:
            await client.aclose()
