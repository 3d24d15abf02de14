"""Abby's configuration: read once, at the entry point, from the environment and ``.env``.

Variable names are flat and fixed (``STORAGE_ROOT``, ``MAX_USER_DAILY_GENS``, ...);
the code sees them grouped in sections::

    settings = load_settings()
    settings.storage.max_user_daily_gens
    settings.s3.bucket
    settings.api.stability_api_key      # SecretStr | None
    settings.discord.token              # SecretStr | None

Each variable is declared once, as a field of its section with the variable's name as
its alias (its default, bounds and the description an error repeats are on that field);
:class:`Settings` hands each section the variables it declares. :data:`VARIABLES` lists
them all. Library code never reads the environment: entry points call :func:`load_settings`
and hand each component its own section. Bad values fail here, at start-up, with one
:class:`~abby_core.errors.ConfigError` that names every bad variable and what it allows.

The package, one module per job::

    _fields.py      how a variable is declared (``var``, ``Section``) and the list parsers
    _urls.py        URL and host checks, ``redact_url``
    tiers.py        QUOTA_TIERS, PREMIUM_TIERS, CREDIT_PACKS entries
    storage.py      StorageSettings, S3Settings
    providers.py    ApiSettings and its ComfyUISettings, A1111Settings
    moderation.py   ModerationSettings
    monitoring.py   AnalyticsSettings, MetricsSettings
    bot.py          DiscordSettings
    dashboard.py    DashboardSettings
    settings.py     Settings (the sections composed), VARIABLES, load_settings, describe_settings
"""

from abby_core.config._fields import MB
from abby_core.config._urls import redact_url
from abby_core.config.bot import DiscordSettings
from abby_core.config.dashboard import DASHBOARD_SECRET_KEY_MIN, DASHBOARD_TOKEN_MIN, DashboardSettings
from abby_core.config.moderation import ModerationSettings
from abby_core.config.monitoring import AnalyticsSettings, MetricsSettings
from abby_core.config.providers import A1111Settings, ApiSettings, ComfyUISettings, ProviderName
from abby_core.config.settings import VARIABLES, Settings, describe_settings, load_settings
from abby_core.config.storage import ARCHIVE_STORAGE_CLASSES, S3Settings, StorageSettings
from abby_core.config.tiers import CreditPack, PremiumTier, QuotaTier

__all__ = [
    "ARCHIVE_STORAGE_CLASSES",
    "DASHBOARD_SECRET_KEY_MIN",
    "DASHBOARD_TOKEN_MIN",
    "MB",
    "VARIABLES",
    "A1111Settings",
    "AnalyticsSettings",
    "ApiSettings",
    "ComfyUISettings",
    "CreditPack",
    "DashboardSettings",
    "DiscordSettings",
    "MetricsSettings",
    "ModerationSettings",
    "PremiumTier",
    "ProviderName",
    "QuotaTier",
    "S3Settings",
    "Settings",
    "StorageSettings",
    "describe_settings",
    "load_settings",
    "redact_url",
]
