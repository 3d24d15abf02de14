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
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from abby_core.errors import ConfigError

__all__ = [
    "ARCHIVE_STORAGE_CLASSES",
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

MB = 1_000_000
#: S3 storage classes an archived copy may use (S3_ARCHIVE_STORAGE_CLASS): those read at once.
ARCHIVE_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
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



def _http_url(value: str | None) -> str | None:
    return None if value is None else _check_http_url(value)


def _listen_host(value: str) -> str:
    value = value.strip().removeprefix("[").removesuffix("]")
    if not value:
        raise ValueError("it is empty (127.0.0.1 listens on this machine only, 0.0.0.0 on every interface)")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _check_host(value)
    return value


_URL = AfterValidator(_http_url)
#: An http(s) URL variable (checked, and shown without credentials in errors and ``abby doctor``).
_Url = Annotated[str, _URL]
_OptionalUrl = Annotated[str | None, _URL]
_ListenHost = Annotated[str, AfterValidator(_listen_host)]
_Ids = Annotated[tuple[int, ...], BeforeValidator(_csv_ints)]


def _var(default: Any, name: str, description: str, **bounds: Any) -> Any:
    """The field of one variable: its default, its name in the environment, what it allows."""
    return Field(default, alias=name, description=description, **bounds)


class _Section(BaseModel):
    # Built from the variables (by alias) or, in tests and tools, by field name; a name that
    # is neither is refused rather than ignored.
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty value means "not set" for a variable that may be unset."""
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.default is None and isinstance(value, str) and not value.strip():
            return None
        return value


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


def _tiers(value: Any) -> Any:
    def check(tier: dict[str, Any]) -> str | None:
        if tier["role_id"] < 1 or tier["daily_gens"] < 1 or not 0 < tier["storage_mb"] <= 100_000_000:
            return "must have a role id, daily gens and storage above 0"
        return "allows more than 100000 generations a day" if tier["daily_gens"] > 100_000 else None

    return _entries(value, (("role_id", int), ("daily_gens", int), ("storage_mb", float)), check)


def _premium(value: Any) -> Any:
    def check(tier: dict[str, Any]) -> str | None:
        daily_ok = 1 <= tier["daily_gens"] <= 100_000
        if tier["sku_id"] < 1 or not daily_ok or not 0 < tier["storage_mb"] <= 100_000_000:
            return "needs a SKU id, 1 to 100000 daily gens and storage above 0"
        return None

    return _entries(value, (("sku_id", int), ("daily_gens", int), ("storage_mb", float)), check)


def _packs(value: Any) -> Any:
    def check(pack: dict[str, Any]) -> str | None:
        from abby_core.storage.rules import MAX_CREDITS  # the rule's home; it imports this module

        if pack["sku_id"] < 1 or not 1 <= pack["credits"] <= MAX_CREDITS:
            return f"needs a SKU id and 1 to {MAX_CREDITS} credits"
        return None

    return _entries(value, (("sku_id", int), ("credits", int)), check)


_MB_ABOVE_0 = "a number of megabytes above 0 and at most 100000000"


class StorageSettings(_Section):
    """Where images live and how much of it each user may use."""

    backend: Literal["filesystem", "s3"] = _var("filesystem", "STORAGE_BACKEND", "'filesystem' or 's3'")
    root: Path = _var(Path("shared"), "STORAGE_ROOT", "a folder path")
    max_global_storage_mb: float = _var(5000, "MAX_GLOBAL_STORAGE_MB", _MB_ABOVE_0, gt=0, le=100_000_000)
    max_user_storage_mb: float = _var(500, "MAX_USER_STORAGE_MB", _MB_ABOVE_0, gt=0, le=100_000_000)
    max_user_daily_gens: int = _var(
        5, "MAX_USER_DAILY_GENS", "a whole number from 1 to 100000 (to stop generation, block users instead)",
        ge=1, le=100_000,
    )
    cleanup_days: int = _var(7, "STORAGE_CLEANUP_DAYS", "a whole number of days from 1 to 3650", ge=1, le=3650)
    image_gen_size_mb: float = _var(
        1.5, "IMAGE_GEN_SIZE_MB", "a number of megabytes above 0 and at most 100", gt=0, le=100
    )
    reservation_ttl_seconds: int = _var(
        900, "RESERVATION_TTL_SECONDS", "a whole number of seconds from 30 to 86400", ge=30, le=86_400
    )
    quota_tiers: Annotated[tuple[QuotaTier, ...], BeforeValidator(_tiers)] = _var(
        (), "QUOTA_TIERS", "entries ROLE_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 123:20:2000"
    )
    premium_tiers: Annotated[tuple[PremiumTier, ...], BeforeValidator(_premium)] = _var(
        (), "PREMIUM_TIERS", "entries SKU_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 1234:50:5000"
    )
    #: How long a link to an image works.
    link_ttl_seconds: int = _var(
        3600, "PRESIGNED_URL_TTL_SECONDS", "a whole number of seconds from 1 to 604800 (7 days, the SigV4 maximum)",
        ge=1, le=604_800,
    )
    escrow: bool = _var(
        False, "STORAGE_ESCROW",
        "true or false (true: each bot process leases slices of the global storage budget)",
    )
    # -- archive: old images are shrunk and kept instead of deleted --
    archive: bool = _var(
        False, "STORAGE_ARCHIVE",
        "on or off (or true/false): on keeps old images in a smaller archive instead of deleting them",
    )
    archive_days: int = _var(
        90, "ARCHIVE_DAYS", "a whole number of days from 1 to 3650 (how long archived images are kept)",
        ge=1, le=3650,
    )
    max_user_archive_mb: float = _var(
        200, "MAX_USER_ARCHIVE_MB", _MB_ABOVE_0 + " (each member's archive)", gt=0, le=100_000_000
    )
    archive_quality: int = _var(60, "ARCHIVE_QUALITY", "a whole number from 1 to 100 (WebP quality)", ge=1, le=100)
    #: Keep archived originals in this S3 storage class.
    archive_storage_class: str | None = _var(
        None, "S3_ARCHIVE_STORAGE_CLASS",
        "empty, or an S3 storage class that is read at once: " + ", ".join(ARCHIVE_STORAGE_CLASSES),
    )

    @field_validator("archive_storage_class", mode="before")
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
    def _consistent(self) -> StorageSettings:
        if self.archive_storage_class is not None and self.backend != "s3":
            raise ValueError(
                "S3_ARCHIVE_STORAGE_CLASS only applies with STORAGE_BACKEND=s3; leave it empty for a folder"
            )
        smallest = min(self.max_user_storage_mb, self.max_global_storage_mb)
        if self.image_gen_size_mb > smallest:
            raise ValueError(
                f"IMAGE_GEN_SIZE_MB ({self.image_gen_size_mb}) must not be larger than "
                f"MAX_USER_STORAGE_MB or MAX_GLOBAL_STORAGE_MB ({smallest})"
            )
        return self

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

    endpoint_url: _OptionalUrl = _var(None, "S3_ENDPOINT_URL", "an http(s) URL, or empty for AWS")
    public_endpoint_url: _OptionalUrl = _var(
        None, "S3_PUBLIC_ENDPOINT_URL", "an http(s) URL that users' browsers reach, or empty"
    )
    bucket: str = _var(
        "abby-images", "S3_BUCKET", "a bucket name: 3-63 lowercase letters, digits, dots and hyphens",
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    access_key_id: str | None = _var(None, "S3_ACCESS_KEY_ID", "an access key id")
    secret_access_key: SecretStr | None = _var(None, "S3_SECRET_ACCESS_KEY", "a secret access key")
    region: str = _var(
        "us-east-1", "S3_REGION", "a region name such as us-east-1 (lowercase letters, digits, hyphens)",
        pattern=r"^[a-z0-9][a-z0-9-]{0,40}$",
    )
    timeout_seconds: float = _var(10, "S3_TIMEOUT_SECONDS", "seconds above 0 and at most 300", gt=0, le=300)
    max_attempts: int = _var(3, "S3_MAX_ATTEMPTS", "a whole number from 1 to 10", ge=1, le=10)


ProviderName = Literal["stability", "comfyui", "automatic1111", "offline"]


class ComfyUISettings(_Section):
    """A ComfyUI server (``COMFYUI_*``)."""

    url: _OptionalUrl = _var(None, "COMFYUI_URL", "an http(s) URL such as http://127.0.0.1:8188")
    auth_header: SecretStr | None = _var(
        None, "COMFYUI_AUTH_HEADER", "the value of a header a reverse proxy requires, or empty"
    )
    auth_header_name: str = _var(
        "Authorization", "COMFYUI_AUTH_HEADER_NAME", "a header name such as Authorization",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
    )
    workflows: Path | None = _var(
        None, "COMFYUI_WORKFLOWS",
        "a folder with txt2img.json, img2img.json and/or upscale.json, or empty for the bundled ones",
    )
    timeout_seconds: float = _var(
        300, "COMFYUI_TIMEOUT_SECONDS", "seconds above 0 and at most 3600", gt=0, le=3600
    )


class A1111Settings(_Section):
    """An AUTOMATIC1111 / Forge / SD.Next web UI started with ``--api`` (``A1111_*``)."""

    url: _OptionalUrl = _var(None, "A1111_URL", "an http(s) URL such as http://127.0.0.1:7860")
    username: str | None = _var(None, "A1111_USERNAME", "the --api-auth user, or empty")
    password: SecretStr | None = _var(None, "A1111_PASSWORD", "the --api-auth password")
    model: str | None = _var(None, "A1111_MODEL", "a checkpoint name, or empty for the server's")
    sampler: str | None = _var(None, "A1111_SAMPLER", "a sampler name, or empty")
    steps: int = _var(25, "A1111_STEPS", "a whole number from 1 to 150", ge=1, le=150)
    upscaler: str = _var("R-ESRGAN 4x+", "A1111_UPSCALER", "an upscaler name")
    timeout_seconds: float = _var(300, "A1111_TIMEOUT_SECONDS", "seconds above 0 and at most 3600", gt=0, le=3600)


def _blocklist(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())
    return value


class ModerationSettings(_Section):
    """Content controls that work the same for every provider."""

    blocklist: Annotated[tuple[str, ...], BeforeValidator(_blocklist)] = _var(
        (), "PROMPT_BLOCKLIST", "words or re:patterns separated by commas (or newlines)"
    )
    blocklist_file: Path | None = _var(
        None, "PROMPT_BLOCKLIST_FILE", "a text file with one word or re:pattern per line"
    )
    channel_ids: _Ids = _var(
        (), "IMAGE_CHANNEL_IDS", "channel ids separated by commas, or empty for every channel"
    )
    age_restricted_only: bool = _var(False, "IMAGE_AGE_RESTRICTED_ONLY", "true or false")


class AnalyticsSettings(_Section):
    """Usage events (``ANALYTICS_*``)."""

    store_prompts: bool = _var(
        False, "ANALYTICS_STORE_PROMPTS", "true or false (prompts are not recorded by default)"
    )
    retention_days: int = _var(
        90, "ANALYTICS_RETENTION_DAYS", "a whole number of days from 1 to 3650", ge=1, le=3650
    )


class MetricsSettings(_Section):
    """The Prometheus ``/metrics`` endpoint (``METRICS_*``); off while ``port`` is None."""

    port: int | None = _var(
        None, "METRICS_PORT", "a port number from 1 to 65535, or empty for no metrics endpoint", ge=1, le=65535
    )
    host: _ListenHost = _var(
        "127.0.0.1", "METRICS_HOST", "the address the metrics endpoint listens on: an IP address or host name"
    )

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
    ``guild_id``, ``admin_role_ids`` and ``bot_token`` are the Discord section's variables,
    handed over by :class:`Settings`.
    """

    host: _ListenHost = _var(
        "127.0.0.1", "DASHBOARD_HOST", "the address the dashboard listens on: an IP address or host name"
    )
    port: int = _var(8765, "DASHBOARD_PORT", "a port number from 1 to 65535", ge=1, le=65535)
    #: DASHBOARD_PUBLIC_URL as set; :attr:`public_url` is the one in use.
    configured_public_url: _OptionalUrl = _var(
        None, "DASHBOARD_PUBLIC_URL",
        "the http(s) URL browsers use to reach the dashboard, such as https://abby.example.org, "
        "or empty for http://DASHBOARD_HOST:DASHBOARD_PORT",
    )
    token: SecretStr | None = _var(
        None, "DASHBOARD_TOKEN",
        f"a token of {DASHBOARD_TOKEN_MIN} characters or more (generate one: openssl rand -hex 24), or empty",
    )
    secret_key: SecretStr | None = _var(
        None, "DASHBOARD_SECRET_KEY",
        f"a key of {DASHBOARD_SECRET_KEY_MIN} characters or more (generate one: openssl rand -hex 32), "
        "or empty for a new key at each start",
    )
    client_id: str | None = _var(
        None, "DISCORD_CLIENT_ID", "the Discord application's client id, digits only", pattern=r"^[0-9]{1,20}$"
    )
    client_secret: SecretStr | None = _var(None, "DISCORD_CLIENT_SECRET", "the Discord application's client secret")
    oauth_url: _Url = _var("https://discord.com", "DISCORD_OAUTH_URL", "an http(s) URL")
    api_url: _Url = _var("https://discord.com/api/v10", "DISCORD_API_URL", "an http(s) URL")
    guild_id: int | None = None
    admin_role_ids: tuple[int, ...] = ()
    bot_token: SecretStr | None = None

    @field_validator("port", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise PydanticUseDefault
        return value

    @field_validator("token")
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

    @field_validator("secret_key")
    @classmethod
    def _long_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < DASHBOARD_SECRET_KEY_MIN:
            raise ValueError(f"it is shorter than {DASHBOARD_SECRET_KEY_MIN} characters")
        return value

    @field_validator("configured_public_url")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).path not in ("", "/"):
            raise ValueError("give the origin only (scheme, host and port), without a path: "
                             "the dashboard is served at the root of its address")
        if value is not None and (urlsplit(value).query or urlsplit(value).fragment or "@" in urlsplit(value).netloc):
            raise ValueError("give the origin only (scheme, host and port), without user, query or fragment")
        return value

    @property
    def public_url(self) -> str:
        """Where browsers reach the dashboard: DASHBOARD_PUBLIC_URL, or ``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.configured_public_url or f"http://{host}:{self.port}"

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

    provider: ProviderName = _var(
        "stability", "IMAGE_PROVIDER", "'stability', 'comfyui', 'automatic1111' or 'offline'"
    )
    fallback: ProviderName | None = _var(
        None, "IMAGE_PROVIDER_FALLBACK", "empty, or a second provider used when the first cannot be reached"
    )
    comfyui: ComfyUISettings = Field(default_factory=ComfyUISettings)
    a1111: A1111Settings = Field(default_factory=A1111Settings)
    stability_api_key: SecretStr | None = _var(None, "STABILITY_API_KEY", "a Stability AI API key")
    stability_api_host: _Url = _var("https://api.stability.ai", "STABILITY_API_HOST", "an http(s) URL")
    stability_model: str = _var(
        "core", "STABILITY_MODEL", "one of core, ultra, sd3.5-large, sd3.5-large-turbo, sd3.5-medium",
        pattern=r"^(core|ultra|sd3\.5-large|sd3\.5-large-turbo|sd3\.5-medium)$",
    )
    timeout_seconds: float = _var(
        60, "STABILITY_TIMEOUT_SECONDS", "seconds above 0 and at most 600", gt=0, le=600
    )
    max_retries: int = _var(3, "STABILITY_MAX_RETRIES", "a whole number from 0 to 10", ge=0, le=10)
    store_format: Literal["png", "webp"] = _var("png", "IMAGE_STORE_FORMAT", "'png' or 'webp'")
    store_quality: int = _var(90, "IMAGE_STORE_QUALITY", "a whole number from 1 to 100", ge=1, le=100)
    store_lossless: bool = _var(False, "IMAGE_STORE_LOSSLESS", "true or false")

    @field_validator("stability_api_key")
    @classmethod
    def _header_safe_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[\x21-\x7e]{1,512}", value.get_secret_value().strip()):
            raise ValueError("it has characters an API key cannot have (spaces, quotes, non-ASCII)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApiSettings:
        for name, role in ((self.provider, "IMAGE_PROVIDER"), (self.fallback, "IMAGE_PROVIDER_FALLBACK")):
            if name == "comfyui" and not self.comfyui.url:
                raise ValueError(f"{role}=comfyui needs COMFYUI_URL (for example http://127.0.0.1:8188)")
            if name == "automatic1111" and not self.a1111.url:
                raise ValueError(f"{role}=automatic1111 needs A1111_URL (for example http://127.0.0.1:7860)")
        if self.fallback is not None and self.fallback == self.provider:
            raise ValueError("IMAGE_PROVIDER_FALLBACK must name another provider than IMAGE_PROVIDER")
        if (self.a1111.username is None) != (self.a1111.password is None):
            raise ValueError("A1111_USERNAME and A1111_PASSWORD must be set together (as in --api-auth user:password)")
        return self


class DiscordSettings(_Section):
    """The bot's Discord side.

    ``shard_count`` None lets Discord pick it and runs every shard in this process; ``shard_ids``
    empty runs every shard of ``shard_count`` here, otherwise only those (each below ``shard_count``).
    ``premium_tiers`` is the storage section's ``PREMIUM_TIERS``, handed over by :class:`Settings`.
    """

    token: SecretStr | None = _var(None, "DISCORD_TOKEN", "a bot token")
    guild_id: int | None = _var(None, "DISCORD_GUILD_ID", "a server (guild) id, digits only", ge=1)
    admin_role_ids: _Ids = _var((), "ADMIN_ROLE_IDS", "role ids separated by commas")
    delivery: Literal["attach", "link", "both"] = _var("both", "IMAGE_DELIVERY", "'attach', 'link' or 'both'")
    max_concurrent_generations: int = _var(
        4, "MAX_CONCURRENT_GENERATIONS", "a whole number from 1 to 256", ge=1, le=256
    )
    log_level: str = _var(
        "INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL",
        pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
    )
    shard_count: int | None = _var(None, "SHARD_COUNT", "a whole number from 1 to 1000", ge=1, le=1000)
    shard_ids: Annotated[tuple[Annotated[int, Field(ge=0)], ...], BeforeValidator(_csv_ints)] = _var(
        (), "SHARD_IDS", "shard ids (0, 1, ...) separated by commas"
    )
    # "shared": MAX_CONCURRENT_GENERATIONS and the queue are those of every process on the storage.
    generation_queue: Literal["local", "shared"] = _var(
        "local", "GENERATION_QUEUE",
        "'local' (each bot process has its own queue) or 'shared' (one queue for every process)",
    )
    # What the server sells through Discord's store (nothing configured: no store anywhere).
    credit_packs: Annotated[tuple[CreditPack, ...], BeforeValidator(_packs)] = _var(
        (), "CREDIT_PACKS", "entries SKU_ID:CREDITS separated by commas, e.g. 5678:20"
    )
    premium_tiers: tuple[PremiumTier, ...] = ()

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> DiscordSettings:
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

    @property
    def sells(self) -> bool:
        return bool(self.premium_tiers or self.credit_packs)


def _declared(model: type[BaseModel], path: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """``{VARIABLE: (section path, field)}`` for every variable ``model`` and its sections declare."""
    found: dict[str, tuple[tuple[str, ...], FieldInfo]] = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, _Section):
            inner = _declared(info.annotation, (*path, name))
        else:
            inner = {info.alias: (path, info)} if info.alias else {}
        if set(inner) & set(found):  # a second declaration would silently shadow the first
            raise TypeError(f"{', '.join(sorted(set(inner) & set(found)))} declared twice")
        found.update(inner)
    return found


class _Variables(PydanticBaseSettingsSource):
    """One flat source (the environment, ``.env``, overrides) as ``{VARIABLE: value}``, ours only."""

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = {key.upper(): value for key, value in values.items() if key.upper() in VARIABLES}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ gives every value at once

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def _flat(source: PydanticBaseSettingsSource) -> Mapping[str, Any]:
    if isinstance(source, EnvSettingsSource):  # the environment, and .env (its subclass)
        return source.env_vars
    return getattr(source, "init_kwargs", {})


# Variables a section reads but another declares: (section, field) <- (its owner, field).
_LENT = {
    "discord": {"premium_tiers": ("storage", "premium_tiers")},
    "dashboard": {"bot_token": ("discord", "token"), "guild_id": ("discord", "guild_id"),
                  "admin_role_ids": ("discord", "admin_role_ids")},
}


class Settings(BaseSettings):
    """Every variable Abby reads, by section. Build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, frozen=True
    )

    # In this order: a section is validated after those it borrows from (_LENT).
    storage: StorageSettings = Field(default_factory=StorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flat variable names, not one per section: overrides win over the environment, which wins over .env.
        sources = (init_settings, env_settings, dotenv_settings)
        return tuple(_Variables(settings_cls, _flat(source)) for source in sources)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Hand each section (and sub-section) the variables it declares."""
        if not isinstance(data, dict) or not set(data) <= set(VARIABLES):
            return data
        sections: dict[str, Any] = {name: {} for name in cls.model_fields}
        for variable, value in data.items():
            path, _ = VARIABLES[variable]
            target = sections
            for name in path:
                target = target.setdefault(name, {})
            target[variable] = value
        return sections

    @field_validator(*_LENT, mode="before")
    @classmethod
    def _lend(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        lent = dict(value)
        for field, (owner, name) in _LENT[info.field_name or ""].items():
            if owner in info.data:  # else the owner's own errors are reported
                lent[field] = getattr(info.data[owner], name)
        return lent


#: Every variable Abby reads, in declaration order: ``{NAME: (section path, field)}``.
VARIABLES = _declared(Settings)


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    name = next((str(part) for part in loc if str(part) in VARIABLES), None)
    if name is None:
        # A whole-section check (model_validator): its message already names the variables.
        return str(error.get("msg", "invalid configuration")).removeprefix("Value error, ")
    info = VARIABLES[name][1]
    allowed = info.description or "a valid value"
    value = error.get("input")
    if _URL in info.metadata and isinstance(value, str):
        value = redact_url(value)  # an endpoint may carry credentials
    secret = info.annotation is not None and "SecretStr" in str(info.annotation)
    shown = "" if secret or isinstance(value, dict) else f" (got {str(value)[:60]!r})"
    message = f"{name}{shown}: must be {allowed}"
    if error.get("type") == "value_error":  # our own validators explain the exact fault
        message += "; " + str(error.get("msg", "")).removeprefix("Value error, ")
    return message


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the environment (and ``env_file`` when it exists) into :class:`Settings`.

    ``overrides`` take variable names (``MAX_USER_DAILY_GENS=3``, any case) and win over
    the environment; tests use them. Raises :class:`ConfigError` naming every bad variable.
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
    for variable, (path, info) in VARIABLES.items():
        section: Any = settings
        for name in path:
            section = getattr(section, name)
        value = getattr(section, next(n for n, i in type(section).model_fields.items() if i is info))
        if _URL in info.metadata and isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, SecretStr):
            value = "********"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = json.loads(json.dumps([v.model_dump() if isinstance(v, BaseModel) else v for v in value]))
        shown[variable] = value
    return shown
