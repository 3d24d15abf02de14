"""Abby's configuration: read once, at the entry point, from the environment and ``.env``.

Variable names are flat and fixed (``STORAGE_ROOT``, ``MAX_USER_DAILY_GENS``, ...);
the code sees them grouped in sections::

    settings = load_settings()
    settings.storage.max_user_daily_gens
    settings.s3.bucket
    settings.api.stability_api_key      # SecretStr | None
    settings.discord.token              # SecretStr | None

Library code never reads the environment: entry points call :func:`load_settings`
and hand each component its own section. Bad values fail here, at start-up, with one
:class:`~abby_core.errors.ConfigError` that names every bad variable and what it allows.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from abby_core.errors import ConfigError

__all__ = [
    "ARCHIVE_STORAGE_CLASSES",
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

MB = 1_000_000
#: S3 storage classes an archived copy may use (S3_ARCHIVE_STORAGE_CLASS): those read at once.
ARCHIVE_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True)


class PremiumTier(_Section):
    """Limits for members subscribed to a Discord SKU of the app (``PREMIUM_TIERS``)."""

    sku_id: int
    daily_gens: int
    storage_mb: float


class CreditPack(_Section):
    """A consumable Discord SKU that gives the member credits (``CREDIT_PACKS``)."""

    sku_id: int
    credits: int


class QuotaTier(_Section):
    """Limits for members holding a Discord role (``QUOTA_TIERS``)."""

    role_id: int
    daily_gens: int
    storage_mb: float


class StorageSettings(_Section):
    """Where images live and how much of it each user may use."""

    backend: Literal["filesystem", "s3"]
    root: Path
    max_global_storage_mb: float
    max_user_storage_mb: float
    max_user_daily_gens: int
    cleanup_days: int
    image_gen_size_mb: float
    reservation_ttl_seconds: int
    quota_tiers: tuple[QuotaTier, ...] = ()
    premium_tiers: tuple[PremiumTier, ...] = ()  # PREMIUM_TIERS: subscription SKU → limits
    link_ttl_seconds: int = 3600  # PRESIGNED_URL_TTL_SECONDS: how long a link to an image works
    escrow: bool = False  # STORAGE_ESCROW: each process leases slices of the global budget
    # -- archive (STORAGE_ARCHIVE): old images are shrunk and kept instead of deleted --
    archive: bool = False  # STORAGE_ARCHIVE
    archive_days: int = 90  # ARCHIVE_DAYS: how long an archived image is kept
    max_user_archive_mb: float = 200  # MAX_USER_ARCHIVE_MB: each member's archive, at archived size
    archive_quality: int = 60  # ARCHIVE_QUALITY: WebP quality of archived copies
    archive_storage_class: str | None = None  # S3_ARCHIVE_STORAGE_CLASS: keep the original bytes in this class

    @property
    def max_user_archive_bytes(self) -> int:
        return int(self.max_user_archive_mb * MB)

    @property
    def max_global_bytes(self) -> int:
        return int(self.max_global_storage_mb * MB)

    @property
    def max_user_bytes(self) -> int:
        return int(self.max_user_storage_mb * MB)

    @property
    def image_gen_bytes(self) -> int:
        return int(self.image_gen_size_mb * MB)


class S3Settings(_Section):
    """The S3-compatible bucket (MinIO, AWS S3, SeaweedFS)."""

    endpoint_url: str | None
    public_endpoint_url: str | None
    bucket: str
    access_key_id: str | None
    secret_access_key: SecretStr | None
    region: str
    presigned_url_ttl_seconds: int
    timeout_seconds: float
    max_attempts: int


ProviderName = Literal["stability", "comfyui", "automatic1111", "offline"]


class ComfyUISettings(_Section):
    """A ComfyUI server (``COMFYUI_*``)."""

    url: str | None
    auth_header: SecretStr | None
    auth_header_name: str
    workflows: Path | None
    timeout_seconds: float


class A1111Settings(_Section):
    """An AUTOMATIC1111 / Forge / SD.Next web UI started with ``--api`` (``A1111_*``)."""

    url: str | None
    username: str | None
    password: SecretStr | None
    model: str | None
    sampler: str | None
    steps: int
    upscaler: str
    timeout_seconds: float


class ModerationSettings(_Section):
    """Content controls that work the same for every provider."""

    blocklist: tuple[str, ...]
    blocklist_file: Path | None
    channel_ids: tuple[int, ...]
    age_restricted_only: bool


class AnalyticsSettings(_Section):
    """Usage events (``ANALYTICS_*``)."""

    store_prompts: bool
    retention_days: int


class MetricsSettings(_Section):
    """The Prometheus ``/metrics`` endpoint (``METRICS_*``); off while ``port`` is None."""

    port: int | None
    host: str

    @property
    def enabled(self) -> bool:
        return self.port is not None

    @property
    def url(self) -> str:
        """Where Prometheus scrapes, e.g. ``http://127.0.0.1:9108/metrics`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


class DashboardSettings(_Section):
    """The web dashboard (``abby dashboard``): where it listens, how admins sign in.

    Sign-in with Discord needs ``client_id``, ``client_secret`` and ``guild_id``; the token
    form needs ``token``. :meth:`check_sign_in` says which is missing. ``bot_token`` (the
    bot's ``DISCORD_TOKEN``) lets the dashboard look members' names up; ``secret_key`` None
    means a random key is made at start (sessions then end when the dashboard restarts).
    """

    host: str
    port: int
    public_url: str
    token: SecretStr | None
    secret_key: SecretStr | None
    client_id: str | None
    client_secret: SecretStr | None
    oauth_url: str
    api_url: str
    guild_id: int | None
    admin_role_ids: tuple[int, ...]
    bot_token: SecretStr | None

    @property
    def oauth_enabled(self) -> bool:
        return self.client_id is not None and self.client_secret is not None and self.guild_id is not None

    @property
    def token_enabled(self) -> bool:
        return self.token is not None

    @property
    def redirect_uri(self) -> str:
        """The OAuth2 redirect URL to register in the Discord application: ``{public_url}/auth/callback``."""
        return f"{self.public_url}/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry ``Secure`` when browsers reach the dashboard over https."""
        return self.public_url.lower().startswith("https://")

    def check_sign_in(self) -> None:
        """Raise :class:`ConfigError` unless at least one sign-in method is fully configured.

        Sign-in with Discord half configured (a client id without its secret, or without
        ``DISCORD_GUILD_ID``) is refused too, naming what is missing.
        """
        oauth = {
            "DISCORD_CLIENT_ID": self.client_id,
            "DISCORD_CLIENT_SECRET": self.client_secret,
            "DISCORD_GUILD_ID": self.guild_id,
        }
        missing = [name for name, value in oauth.items() if value is None]
        if self.client_id is not None or self.client_secret is not None:
            if missing:
                problem = f"Sign-in with Discord is half configured: set {', '.join(missing)} as well"
                raise ConfigError(f"Invalid configuration:\n  - {problem}", problems=[problem])
            return
        if self.token is None:
            problem = (
                "The dashboard has no way to sign in: set DISCORD_CLIENT_ID, DISCORD_CLIENT_SECRET and "
                "DISCORD_GUILD_ID (sign-in with Discord), or DASHBOARD_TOKEN (a shared token of 16 characters or more)"
            )
            raise ConfigError(f"Invalid configuration:\n  - {problem}", problems=[problem])


class ApiSettings(_Section):
    """The image provider and how results are stored."""

    provider: ProviderName
    fallback: ProviderName | None
    comfyui: ComfyUISettings
    a1111: A1111Settings
    stability_api_key: SecretStr | None
    stability_api_host: str
    stability_model: str
    timeout_seconds: float
    max_retries: int
    store_format: Literal["png", "webp"]
    store_quality: int
    store_lossless: bool


class DiscordSettings(_Section):
    """The bot's Discord side.

    ``shard_count`` None lets Discord pick it and runs every shard in this process; ``shard_ids``
    empty runs every shard of ``shard_count`` here, otherwise only those (each below ``shard_count``).
    """

    token: SecretStr | None
    guild_id: int | None
    admin_role_ids: tuple[int, ...]
    delivery: Literal["attach", "link", "both"]
    max_concurrent_generations: int
    log_level: str
    shard_count: int | None
    shard_ids: tuple[int, ...]
    # "shared": MAX_CONCURRENT_GENERATIONS and the queue are those of every process on the storage.
    generation_queue: Literal["local", "shared"] = "local"
    # What the server sells through Discord's store (nothing configured: no store anywhere).
    premium_tiers: tuple[PremiumTier, ...] = ()
    credit_packs: tuple[CreditPack, ...] = ()

    @property
    def sells(self) -> bool:
        return bool(self.premium_tiers or self.credit_packs)


_URL_FIELDS = (
    "s3_endpoint_url", "s3_public_endpoint_url", "stability_api_host", "comfyui_url", "a1111_url",
    "dashboard_public_url", "discord_oauth_url", "discord_api_url",
)
DASHBOARD_TOKEN_MIN = 16
DASHBOARD_SECRET_KEY_MIN = 32
# A DNS name: labels of letters, digits and hyphens (botocore refuses anything else).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def redact_url(url: str | None) -> str:
    """``url`` with any credentials in it replaced: ``http://user:pw@host`` -> ``http://***@host``.

    Safe for any text, valid URL or not (it is used in error messages about bad URLs);
    ``None`` gives ``""``. Only the part before the first ``/``, ``?`` or ``#`` after the
    scheme is looked at, and everything up to its last ``@`` is hidden.
    """
    if not url:
        return ""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if "@" in authority:
        rest = "***@" + authority.rpartition("@")[2] + rest[end:]
    return f"{scheme}{sep}{rest}"


def _check_host(host: str) -> None:
    if host.startswith("["):
        address = host[1:-1] if host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(address.replace("%25", "%"))
        except ValueError:
            raise ValueError(f"{host[:45]!r} is not a valid IPv6 address") from None
        return
    if not host.isascii():
        try:
            hint = f": write it as {host.encode('idna').decode('ascii')[:60]!r}"
        except UnicodeError:
            hint = ""
        raise ValueError(f"its host name has letters outside ASCII{hint}")
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"its host {host[:45]!r} is not a valid host name (letters, digits, hyphens and dots) "
            "or IP address"
        )


def _check_http_url(value: str) -> str:
    """``value`` stripped of spaces around it and of a trailing ``/``, or ``ValueError`` saying why not.

    An http(s) URL with a host: a DNS name, an IPv4 address or a bracketed IPv6
    address, an optional port from 1 to 65535, no spaces or control characters
    and only valid ``%XX`` escapes. Credentials (``user:pw@``) are allowed but never
    repeated in the message.
    """
    value = value.strip().rstrip("/")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValueError("it contains a space or a control character")
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if _BAD_ESCAPE.search(value):
        raise ValueError("it has a % that is not followed by two hexadecimal digits")
    authority = re.split(r"[/?#]", value.split("://", 1)[1], maxsplit=1)[0]
    hostport = authority.rpartition("@")[2]
    if hostport.count("[") != hostport.count("]") or hostport.count("[") > 1:
        raise ValueError("its IPv6 address brackets [ ] do not match")
    if hostport.startswith("["):
        host, rest = hostport[: hostport.index("]") + 1], hostport[hostport.index("]") + 1 :]
    elif hostport.count(":") > 1:
        raise ValueError("an IPv6 address must be in brackets, as in http://[::1]:9000")
    else:
        host, colon, port = hostport.partition(":")
        rest = colon + port
    if not host:
        raise ValueError("it has no host name (as in http://minio:9000)")
    if rest and not rest.startswith(":"):
        raise ValueError("it has text after the IPv6 address's closing bracket")
    _check_host(host)
    port_text = rest[1:]
    if rest == ":":
        raise ValueError("it has a ':' after the host but no port number")
    if rest and not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"its port {port_text[:10]!r} is not a number from 1 to 65535")
    try:  # the parser the HTTP clients use must agree
        parts = urlsplit(value)
        understood = parts.hostname is not None and (parts.port is not None) == bool(rest)
    except ValueError:
        understood = False
    if not understood:
        raise ValueError("it is not a valid URL")
    return value


def _csv_ints(value: Any) -> Any:
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", ",").split(",")]
        return [p for p in parts if p]
    return value


def _entries(
    value: Any, fields: tuple[tuple[str, type[int] | type[float]], ...], check: Callable[[dict[str, Any]], str | None]
) -> Any:
    """``A:B:C`` entries separated by commas, as dicts of ``fields``; ``check`` says what is wrong with one."""
    if not isinstance(value, str):
        return value
    shape = ":".join(name.upper() for name, _ in fields)
    found = []
    for entry in _csv_ints(value):
        parts = entry.split(":")
        if len(parts) != len(fields):
            raise ValueError(f"entry {entry!r} is not {shape}")
        try:
            item = {name: kind(part) for (name, kind), part in zip(fields, parts, strict=True)}
        except ValueError:
            raise ValueError(f"entry {entry!r} has a part that is not a number") from None
        problem = check(item)
        if problem is not None:
            raise ValueError(f"entry {entry!r} {problem}")
        found.append(item)
    return found


class Settings(BaseSettings):
    """Every variable Abby reads. Build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        frozen=True,
    )

    # -- storage -----------------------------------------------------------------
    storage_backend: Literal["filesystem", "s3"] = Field(
        "filesystem", alias="STORAGE_BACKEND", description="'filesystem' or 's3'"
    )
    storage_root: Path = Field(Path("shared"), alias="STORAGE_ROOT", description="a folder path")
    max_global_storage_mb: float = Field(
        5000, alias="MAX_GLOBAL_STORAGE_MB", gt=0, le=100_000_000,
        description="a number of megabytes above 0 and at most 100000000",
    )
    max_user_storage_mb: float = Field(
        500, alias="MAX_USER_STORAGE_MB", gt=0, le=100_000_000,
        description="a number of megabytes above 0 and at most 100000000",
    )
    max_user_daily_gens: int = Field(
        5, alias="MAX_USER_DAILY_GENS", ge=1, le=100_000,
        description="a whole number from 1 to 100000 (to stop generation, block users instead)",
    )
    storage_cleanup_days: int = Field(
        7, alias="STORAGE_CLEANUP_DAYS", ge=1, le=3650, description="a whole number of days from 1 to 3650"
    )
    image_gen_size_mb: float = Field(
        1.5, alias="IMAGE_GEN_SIZE_MB", gt=0, le=100,
        description="a number of megabytes above 0 and at most 100",
    )
    reservation_ttl_seconds: int = Field(
        900, alias="RESERVATION_TTL_SECONDS", ge=30, le=86_400,
        description="a whole number of seconds from 30 to 86400",
    )
    storage_escrow: bool = Field(
        False, alias="STORAGE_ESCROW",
        description="true or false (true: each bot process leases slices of the global storage budget)",
    )
    storage_archive: bool = Field(
        False, alias="STORAGE_ARCHIVE",
        description="on or off (or true/false): on keeps old images in a smaller archive instead of deleting them",
    )
    archive_days: int = Field(
        90, alias="ARCHIVE_DAYS", ge=1, le=3650,
        description="a whole number of days from 1 to 3650 (how long archived images are kept)",
    )
    max_user_archive_mb: float = Field(
        200, alias="MAX_USER_ARCHIVE_MB", gt=0, le=100_000_000,
        description="a number of megabytes above 0 and at most 100000000 (each member's archive)",
    )
    archive_quality: int = Field(
        60, alias="ARCHIVE_QUALITY", ge=1, le=100, description="a whole number from 1 to 100 (WebP quality)"
    )
    s3_archive_storage_class: str | None = Field(
        None, alias="S3_ARCHIVE_STORAGE_CLASS",
        description="empty, or an S3 storage class that is read at once: " + ", ".join(ARCHIVE_STORAGE_CLASSES),
    )

    # -- S3 ----------------------------------------------------------------------
    s3_endpoint_url: str | None = Field(
        None, alias="S3_ENDPOINT_URL", description="an http(s) URL, or empty for AWS"
    )
    s3_public_endpoint_url: str | None = Field(
        None, alias="S3_PUBLIC_ENDPOINT_URL", description="an http(s) URL that users' browsers reach, or empty"
    )
    s3_bucket: str = Field(
        "abby-images", alias="S3_BUCKET", min_length=3, max_length=63,
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="a bucket name: 3-63 lowercase letters, digits, dots and hyphens",
    )
    s3_access_key_id: str | None = Field(None, alias="S3_ACCESS_KEY_ID", description="an access key id")
    s3_secret_access_key: SecretStr | None = Field(
        None, alias="S3_SECRET_ACCESS_KEY", description="a secret access key"
    )
    s3_region: str = Field(
        "us-east-1", alias="S3_REGION", pattern=r"^[a-z0-9][a-z0-9-]{0,40}$",
        description="a region name such as us-east-1 (lowercase letters, digits, hyphens)",
    )
    presigned_url_ttl_seconds: int = Field(
        3600, alias="PRESIGNED_URL_TTL_SECONDS", ge=1, le=604_800,
        description="a whole number of seconds from 1 to 604800 (7 days, the SigV4 maximum)",
    )
    s3_timeout_seconds: float = Field(
        10, alias="S3_TIMEOUT_SECONDS", gt=0, le=300, description="seconds above 0 and at most 300"
    )
    s3_max_attempts: int = Field(
        3, alias="S3_MAX_ATTEMPTS", ge=1, le=10, description="a whole number from 1 to 10"
    )

    # -- image provider ----------------------------------------------------------
    image_provider: ProviderName = Field(
        "stability", alias="IMAGE_PROVIDER", description="'stability', 'comfyui', 'automatic1111' or 'offline'"
    )
    image_provider_fallback: ProviderName | None = Field(
        None, alias="IMAGE_PROVIDER_FALLBACK",
        description="empty, or a second provider used when the first cannot be reached",
    )
    comfyui_url: str | None = Field(None, alias="COMFYUI_URL", description="an http(s) URL such as http://127.0.0.1:8188")
    comfyui_auth_header: SecretStr | None = Field(
        None, alias="COMFYUI_AUTH_HEADER", description="the value of a header a reverse proxy requires, or empty"
    )
    comfyui_auth_header_name: str = Field(
        "Authorization", alias="COMFYUI_AUTH_HEADER_NAME", pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="a header name such as Authorization",
    )
    comfyui_workflows: Path | None = Field(
        None, alias="COMFYUI_WORKFLOWS",
        description="a folder with txt2img.json, img2img.json and/or upscale.json, or empty for the bundled ones",
    )
    comfyui_timeout_seconds: float = Field(
        300, alias="COMFYUI_TIMEOUT_SECONDS", gt=0, le=3600, description="seconds above 0 and at most 3600"
    )
    a1111_url: str | None = Field(None, alias="A1111_URL", description="an http(s) URL such as http://127.0.0.1:7860")
    a1111_username: str | None = Field(None, alias="A1111_USERNAME", description="the --api-auth user, or empty")
    a1111_password: SecretStr | None = Field(None, alias="A1111_PASSWORD", description="the --api-auth password")
    a1111_model: str | None = Field(
        None, alias="A1111_MODEL", description="a checkpoint name, or empty for the server's"
    )
    a1111_sampler: str | None = Field(None, alias="A1111_SAMPLER", description="a sampler name, or empty")
    a1111_steps: int = Field(25, alias="A1111_STEPS", ge=1, le=150, description="a whole number from 1 to 150")
    a1111_upscaler: str = Field("R-ESRGAN 4x+", alias="A1111_UPSCALER", description="an upscaler name")
    a1111_timeout_seconds: float = Field(
        300, alias="A1111_TIMEOUT_SECONDS", gt=0, le=3600, description="seconds above 0 and at most 3600"
    )

    # -- analytics ---------------------------------------------------------------
    analytics_store_prompts: bool = Field(
        False, alias="ANALYTICS_STORE_PROMPTS", description="true or false (prompts are not recorded by default)"
    )
    analytics_retention_days: int = Field(
        90, alias="ANALYTICS_RETENTION_DAYS", ge=1, le=3650, description="a whole number of days from 1 to 3650"
    )

    # -- metrics -----------------------------------------------------------------
    metrics_port: int | None = Field(
        None, alias="METRICS_PORT", ge=1, le=65535,
        description="a port number from 1 to 65535, or empty for no metrics endpoint",
    )
    metrics_host: str = Field(
        "127.0.0.1", alias="METRICS_HOST",
        description="the address the metrics endpoint listens on: an IP address or host name",
    )

    # -- dashboard ---------------------------------------------------------------
    dashboard_host: str = Field(
        "127.0.0.1", alias="DASHBOARD_HOST",
        description="the address the dashboard listens on: an IP address or host name",
    )
    dashboard_port: int = Field(
        8765, alias="DASHBOARD_PORT", ge=1, le=65535, description="a port number from 1 to 65535"
    )
    dashboard_public_url: str | None = Field(
        None, alias="DASHBOARD_PUBLIC_URL",
        description="the http(s) URL browsers use to reach the dashboard, such as https://abby.example.org, "
        "or empty for http://DASHBOARD_HOST:DASHBOARD_PORT",
    )
    dashboard_token: SecretStr | None = Field(
        None, alias="DASHBOARD_TOKEN",
        description=f"a token of {DASHBOARD_TOKEN_MIN} characters or more (generate one: openssl rand -hex 24), "
        "or empty",
    )
    dashboard_secret_key: SecretStr | None = Field(
        None, alias="DASHBOARD_SECRET_KEY",
        description=f"a key of {DASHBOARD_SECRET_KEY_MIN} characters or more (generate one: openssl rand -hex 32), "
        "or empty for a new key at each start",
    )
    discord_client_id: str | None = Field(
        None, alias="DISCORD_CLIENT_ID", pattern=r"^[0-9]{1,20}$",
        description="the Discord application's client id, digits only",
    )
    discord_client_secret: SecretStr | None = Field(
        None, alias="DISCORD_CLIENT_SECRET", description="the Discord application's client secret"
    )
    discord_oauth_url: str = Field(
        "https://discord.com", alias="DISCORD_OAUTH_URL", description="an http(s) URL"
    )
    discord_api_url: str = Field(
        "https://discord.com/api/v10", alias="DISCORD_API_URL", description="an http(s) URL"
    )

    # -- content controls --------------------------------------------------------
    prompt_blocklist: Annotated[tuple[str, ...], NoDecode] = Field(
        (), alias="PROMPT_BLOCKLIST",
        description="words or re:patterns separated by commas (or newlines)",
    )
    prompt_blocklist_file: Path | None = Field(
        None, alias="PROMPT_BLOCKLIST_FILE", description="a text file with one word or re:pattern per line"
    )
    image_channel_ids: Annotated[tuple[int, ...], NoDecode] = Field(
        (), alias="IMAGE_CHANNEL_IDS", description="channel ids separated by commas, or empty for every channel"
    )
    image_age_restricted_only: bool = Field(
        False, alias="IMAGE_AGE_RESTRICTED_ONLY", description="true or false"
    )
    stability_api_key: SecretStr | None = Field(
        None, alias="STABILITY_API_KEY", description="a Stability AI API key"
    )
    stability_api_host: str = Field(
        "https://api.stability.ai", alias="STABILITY_API_HOST", description="an http(s) URL"
    )
    stability_model: str = Field(
        "core", alias="STABILITY_MODEL",
        pattern=r"^(core|ultra|sd3\.5-large|sd3\.5-large-turbo|sd3\.5-medium)$",
        description="one of core, ultra, sd3.5-large, sd3.5-large-turbo, sd3.5-medium",
    )
    stability_timeout_seconds: float = Field(
        60, alias="STABILITY_TIMEOUT_SECONDS", gt=0, le=600, description="seconds above 0 and at most 600"
    )
    stability_max_retries: int = Field(
        3, alias="STABILITY_MAX_RETRIES", ge=0, le=10, description="a whole number from 0 to 10"
    )
    image_store_format: Literal["png", "webp"] = Field(
        "png", alias="IMAGE_STORE_FORMAT", description="'png' or 'webp'"
    )
    image_store_quality: int = Field(
        90, alias="IMAGE_STORE_QUALITY", ge=1, le=100, description="a whole number from 1 to 100"
    )
    image_store_lossless: bool = Field(
        False, alias="IMAGE_STORE_LOSSLESS", description="true or false"
    )

    # -- Discord -----------------------------------------------------------------
    discord_token: SecretStr | None = Field(None, alias="DISCORD_TOKEN", description="a bot token")
    discord_guild_id: int | None = Field(
        None, alias="DISCORD_GUILD_ID", ge=1, description="a server (guild) id, digits only"
    )
    admin_role_ids: Annotated[tuple[int, ...], NoDecode] = Field(
        (), alias="ADMIN_ROLE_IDS", description="role ids separated by commas"
    )
    quota_tiers: Annotated[tuple[QuotaTier, ...], NoDecode] = Field(
        (), alias="QUOTA_TIERS",
        description="entries ROLE_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 123:20:2000",
    )
    premium_tiers: Annotated[tuple[PremiumTier, ...], NoDecode] = Field(
        (), alias="PREMIUM_TIERS",
        description="entries SKU_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 1234:50:5000",
    )
    credit_packs: Annotated[tuple[CreditPack, ...], NoDecode] = Field(
        (), alias="CREDIT_PACKS",
        description="entries SKU_ID:CREDITS separated by commas, e.g. 5678:20",
    )
    image_delivery: Literal["attach", "link", "both"] = Field(
        "both", alias="IMAGE_DELIVERY", description="'attach', 'link' or 'both'"
    )
    max_concurrent_generations: int = Field(
        4, alias="MAX_CONCURRENT_GENERATIONS", ge=1, le=256, description="a whole number from 1 to 256"
    )
    generation_queue: Literal["local", "shared"] = Field(
        "local", alias="GENERATION_QUEUE",
        description="'local' (each bot process has its own queue) or 'shared' (one queue for every process)",
    )
    log_level: str = Field(
        "INFO", alias="LOG_LEVEL", pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL",
    )
    shard_count: int | None = Field(
        None, alias="SHARD_COUNT", ge=1, le=1000, description="a whole number from 1 to 1000"
    )
    shard_ids: Annotated[tuple[Annotated[int, Field(ge=0)], ...], NoDecode] = Field(
        (), alias="SHARD_IDS", description="shard ids (0, 1, ...) separated by commas"
    )

    @field_validator(
        "s3_endpoint_url", "s3_public_endpoint_url", "s3_access_key_id", "s3_secret_access_key",
        "stability_api_key", "discord_token", "discord_guild_id", "shard_count",
        "image_provider_fallback", "comfyui_url", "comfyui_auth_header", "comfyui_workflows",
        "a1111_url", "a1111_username", "a1111_password", "a1111_model", "a1111_sampler", "prompt_blocklist_file",
        "metrics_port", "dashboard_public_url", "dashboard_token", "dashboard_secret_key", "discord_client_id",
        "discord_client_secret", mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("stability_api_key")
    @classmethod
    def _header_safe_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[\x21-\x7e]{1,512}", value.get_secret_value().strip()):
            raise ValueError("it has characters an API key cannot have (spaces, quotes, non-ASCII)")
        return value

    @field_validator(*_URL_FIELDS)
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("dashboard_port", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault
        return value

    @field_validator("dashboard_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if len(text) < DASHBOARD_TOKEN_MIN:
            raise ValueError(f"it is only {len(text)} characters long")
        if not re.fullmatch(r"[\x21-\x7e]+", text):
            raise ValueError("it has a space or a character outside ASCII")
        return SecretStr(text)

    @field_validator("dashboard_secret_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < DASHBOARD_SECRET_KEY_MIN:
            raise ValueError(f"it is shorter than {DASHBOARD_SECRET_KEY_MIN} characters")
        return value

    @field_validator("dashboard_public_url")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).path not in ("", "/"):
            raise ValueError("give the origin only (scheme, host and port), without a path: "
                             "the dashboard is served at the root of its address")
        if value is not None and (urlsplit(value).query or urlsplit(value).fragment or "@" in urlsplit(value).netloc):
            raise ValueError("give the origin only (scheme, host and port), without user, query or fragment")
        return value

    @field_validator("metrics_host", "dashboard_host")
    @classmethod
    def _listen_host(cls, value: str) -> str:
        value = value.strip().removeprefix("[").removesuffix("]")
        if not value:
            raise ValueError("it is empty (127.0.0.1 listens on this machine only, 0.0.0.0 on every interface)")
        try:
            ipaddress.ip_address(value)
        except ValueError:
            _check_host(value)
        return value

    @field_validator("admin_role_ids", "image_channel_ids", "shard_ids", mode="before")
    @classmethod
    def _parse_role_ids(cls, value: Any) -> Any:
        return _csv_ints(value)

    @field_validator("prompt_blocklist", mode="before")
    @classmethod
    def _parse_blocklist(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())
        return value

    @field_validator("quota_tiers", mode="before")
    @classmethod
    def _parse_tiers(cls, value: Any) -> Any:
        def check(tier: dict[str, Any]) -> str | None:
            if tier["role_id"] < 1 or tier["daily_gens"] < 1 or not 0 < tier["storage_mb"] <= 100_000_000:
                return "must have a role id, daily gens and storage above 0"
            return "allows more than 100000 generations a day" if tier["daily_gens"] > 100_000 else None

        return _entries(value, (("role_id", int), ("daily_gens", int), ("storage_mb", float)), check)

    @field_validator("premium_tiers", mode="before")
    @classmethod
    def _parse_premium(cls, value: Any) -> Any:
        def check(tier: dict[str, Any]) -> str | None:
            daily_ok = 1 <= tier["daily_gens"] <= 100_000
            if tier["sku_id"] < 1 or not daily_ok or not 0 < tier["storage_mb"] <= 100_000_000:
                return "needs a SKU id, 1 to 100000 daily gens and storage above 0"
            return None

        return _entries(value, (("sku_id", int), ("daily_gens", int), ("storage_mb", float)), check)

    @field_validator("credit_packs", mode="before")
    @classmethod
    def _parse_packs(cls, value: Any) -> Any:
        def check(pack: dict[str, Any]) -> str | None:
            from abby_core.storage.rules import MAX_CREDITS  # the rule's home; it imports this module

            if pack["sku_id"] < 1 or not 1 <= pack["credits"] <= MAX_CREDITS:
                return f"needs a SKU id and 1 to {MAX_CREDITS} credits"
            return None

        return _entries(value, (("sku_id", int), ("credits", int)), check)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("s3_archive_storage_class", mode="before")
    @classmethod
    def _storage_class(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        if not name:
            return None
        if name in ("GLACIER", "DEEP_ARCHIVE"):
            raise ValueError(
                f"{name} objects cannot be read without a restore request that takes hours; "
                "use GLACIER_IR (Glacier Instant Retrieval) or STANDARD_IA"
            )
        if name not in ARCHIVE_STORAGE_CLASSES:
            raise ValueError(f"{name!r} is not one of {', '.join(ARCHIVE_STORAGE_CLASSES)}")
        return name

    @model_validator(mode="after")
    def _archive_consistent(self) -> Settings:
        if self.s3_archive_storage_class is not None and self.storage_backend != "s3":
            raise ValueError(
                "S3_ARCHIVE_STORAGE_CLASS only applies with STORAGE_BACKEND=s3; leave it empty for a folder"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        smallest = min(self.max_user_storage_mb, self.max_global_storage_mb)
        if self.image_gen_size_mb > smallest:
            raise ValueError(
                f"IMAGE_GEN_SIZE_MB ({self.image_gen_size_mb}) must not be larger than "
                f"MAX_USER_STORAGE_MB or MAX_GLOBAL_STORAGE_MB ({smallest})"
            )
        chosen = ((self.image_provider, "IMAGE_PROVIDER"), (self.image_provider_fallback, "IMAGE_PROVIDER_FALLBACK"))
        for name, role in chosen:
            if name == "comfyui" and not self.comfyui_url:
                raise ValueError(f"{role}=comfyui needs COMFYUI_URL (for example http://127.0.0.1:8188)")
            if name == "automatic1111" and not self.a1111_url:
                raise ValueError(f"{role}=automatic1111 needs A1111_URL (for example http://127.0.0.1:7860)")
        if self.image_provider_fallback is not None and self.image_provider_fallback == self.image_provider:
            raise ValueError("IMAGE_PROVIDER_FALLBACK must name another provider than IMAGE_PROVIDER")
        if (self.a1111_username is None) != (self.a1111_password is None):
            raise ValueError("A1111_USERNAME and A1111_PASSWORD must be set together (as in --api-auth user:password)")
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the number of shards all processes share)")
        if self.shard_count is not None and any(i >= self.shard_count for i in self.shard_ids):
            last = self.shard_count - 1
            raise ValueError(f"SHARD_IDS must each be below SHARD_COUNT ({self.shard_count}): from 0 to {last}")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("SHARD_IDS names a shard twice")
        tier_skus = [t.sku_id for t in self.premium_tiers]
        pack_skus = [p.sku_id for p in self.credit_packs]
        if len(set(tier_skus)) != len(tier_skus) or len(set(pack_skus)) != len(pack_skus):
            raise ValueError("PREMIUM_TIERS or CREDIT_PACKS names a SKU twice")
        if set(tier_skus) & set(pack_skus):
            raise ValueError("a SKU is in both PREMIUM_TIERS (subscriptions) and CREDIT_PACKS (consumables)")
        return self

    # -- sections ----------------------------------------------------------------
    @cached_property
    def storage(self) -> StorageSettings:
        return StorageSettings(
            backend=self.storage_backend,
            root=self.storage_root,
            max_global_storage_mb=self.max_global_storage_mb,
            max_user_storage_mb=self.max_user_storage_mb,
            max_user_daily_gens=self.max_user_daily_gens,
            cleanup_days=self.storage_cleanup_days,
            image_gen_size_mb=self.image_gen_size_mb,
            reservation_ttl_seconds=self.reservation_ttl_seconds,
            quota_tiers=self.quota_tiers,
            premium_tiers=self.premium_tiers,
            link_ttl_seconds=self.presigned_url_ttl_seconds,
            escrow=self.storage_escrow,
            archive=self.storage_archive,
            archive_days=self.archive_days,
            max_user_archive_mb=self.max_user_archive_mb,
            archive_quality=self.archive_quality,
            archive_storage_class=self.s3_archive_storage_class,
        )

    @cached_property
    def s3(self) -> S3Settings:
        return S3Settings(
            endpoint_url=self.s3_endpoint_url,
            public_endpoint_url=self.s3_public_endpoint_url,
            bucket=self.s3_bucket,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            region=self.s3_region,
            presigned_url_ttl_seconds=self.presigned_url_ttl_seconds,
            timeout_seconds=self.s3_timeout_seconds,
            max_attempts=self.s3_max_attempts,
        )

    @cached_property
    def api(self) -> ApiSettings:
        return ApiSettings(
            provider=self.image_provider,
            fallback=self.image_provider_fallback,
            comfyui=ComfyUISettings(
                url=self.comfyui_url,
                auth_header=self.comfyui_auth_header,
                auth_header_name=self.comfyui_auth_header_name,
                workflows=self.comfyui_workflows,
                timeout_seconds=self.comfyui_timeout_seconds,
            ),
            a1111=A1111Settings(
                url=self.a1111_url,
                username=self.a1111_username,
                password=self.a1111_password,
                model=self.a1111_model,
                sampler=self.a1111_sampler,
                steps=self.a1111_steps,
                upscaler=self.a1111_upscaler,
                timeout_seconds=self.a1111_timeout_seconds,
            ),
            stability_api_key=self.stability_api_key,
            stability_api_host=self.stability_api_host,
            stability_model=self.stability_model,
            timeout_seconds=self.stability_timeout_seconds,
            max_retries=self.stability_max_retries,
            store_format=self.image_store_format,
            store_quality=self.image_store_quality,
            store_lossless=self.image_store_lossless,
        )

    @cached_property
    def analytics(self) -> AnalyticsSettings:
        return AnalyticsSettings(
            store_prompts=self.analytics_store_prompts, retention_days=self.analytics_retention_days
        )

    @cached_property
    def metrics(self) -> MetricsSettings:
        return MetricsSettings(port=self.metrics_port, host=self.metrics_host)

    @cached_property
    def dashboard(self) -> DashboardSettings:
        host = f"[{self.dashboard_host}]" if ":" in self.dashboard_host else self.dashboard_host
        return DashboardSettings(
            host=self.dashboard_host,
            port=self.dashboard_port,
            public_url=self.dashboard_public_url or f"http://{host}:{self.dashboard_port}",
            token=self.dashboard_token,
            secret_key=self.dashboard_secret_key,
            client_id=self.discord_client_id,
            client_secret=self.discord_client_secret,
            oauth_url=self.discord_oauth_url,
            api_url=self.discord_api_url,
            guild_id=self.discord_guild_id,
            admin_role_ids=self.admin_role_ids,
            bot_token=self.discord_token,
        )

    @cached_property
    def moderation(self) -> ModerationSettings:
        return ModerationSettings(
            blocklist=self.prompt_blocklist,
            blocklist_file=self.prompt_blocklist_file,
            channel_ids=self.image_channel_ids,
            age_restricted_only=self.image_age_restricted_only,
        )

    @cached_property
    def discord(self) -> DiscordSettings:
        return DiscordSettings(
            token=self.discord_token,
            guild_id=self.discord_guild_id,
            admin_role_ids=self.admin_role_ids,
            delivery=self.image_delivery,
            max_concurrent_generations=self.max_concurrent_generations,
            log_level=self.log_level,
            shard_count=self.shard_count,
            shard_ids=self.shard_ids,
            generation_queue=self.generation_queue,
            premium_tiers=self.premium_tiers,
            credit_packs=self.credit_packs,
        )


def _alias(field: str) -> str:
    info = Settings.model_fields.get(field)
    return info.alias if info is not None and info.alias else field.upper()


_BY_ALIAS = {(info.alias or name).upper(): name for name, info in Settings.model_fields.items()}


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    field = _BY_ALIAS.get(str(loc[0]).upper(), str(loc[0])) if loc else ""
    info = Settings.model_fields.get(field)
    if info is None:
        # A whole-model check (model_validator): its message already names the variables.
        return str(error.get("msg", "invalid configuration")).removeprefix("Value error, ")
    name = _alias(field)
    allowed = info.description or "a valid value"
    value = error.get("input")
    if field in _URL_FIELDS and isinstance(value, str):
        value = redact_url(value)  # an endpoint may carry credentials
    secret = info.annotation is not None and "SecretStr" in str(info.annotation)
    shown = "" if secret or isinstance(value, dict) else f" (got {str(value)[:60]!r})"
    message = f"{name}{shown}: must be {allowed}"
    if error.get("type") == "value_error":  # our own validators explain the exact fault
        message += "; " + str(error.get("msg", "")).removeprefix("Value error, ")
    return message


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the environment (and ``env_file`` when it exists) into :class:`Settings`.

    ``overrides`` take field names or variable names (``max_user_daily_gens=3`` or
    ``MAX_USER_DAILY_GENS=3``) and win over the environment; tests use them.
    Raises :class:`ConfigError` naming every bad variable.
    """
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors(include_url=False)]  # type: ignore[arg-type]
        raise ConfigError(
            "Invalid configuration:\n  - " + "\n  - ".join(problems), problems=problems
        ) from None


def describe_settings(settings: Settings) -> dict[str, Any]:
    """The settings as ``{VARIABLE: value}`` for ``abby doctor``: secrets hidden, URLs without credentials."""
    shown: dict[str, Any] = {}
    for field, info in Settings.model_fields.items():
        value = getattr(settings, field)
        if field in _URL_FIELDS and isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, SecretStr):
            value = "********"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = json.loads(json.dumps([v.model_dump() if isinstance(v, BaseModel) else v for v in value]))
        shown[info.alias or field] = value
    return shown

