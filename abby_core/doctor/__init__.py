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

The package: ``report.py`` (the :class:`Check` verdict and the names), ``storage.py`` (storage
to clock, over one probe object), ``clock.py``, ``providers.py`` (Stability, image servers),
``bot.py`` (the Discord token) and ``runner.py`` (:func:`run_checks`, every check in order).
"""

from abby_core.doctor.bot import discord_token_check
from abby_core.doctor.clock import MAX_CLOCK_SKEW
from abby_core.doctor.report import CHECK_NAMES, TITLES, Check, Status, config_failed
from abby_core.doctor.runner import run_checks

__all__ = [
    "CHECK_NAMES",
    "MAX_CLOCK_SKEW",
    "TITLES",
    "Check",
    "Status",
    "config_failed",
    "discord_token_check",
    "run_checks",
]
