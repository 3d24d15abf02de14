"""The top level: :class:`Settings` composes the sections, :func:`load_settings` builds it once.

Every source (overrides, the environment, ``.env``) is read as flat variable names; each
section is handed the variables it declares (:data:`VARIABLES`), and a few variables are
lent to a second section that reads them (``_LENT``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from abby_core.config._fields import declared
from abby_core.config._urls import URL, redact_url
from abby_core.config.bot import DiscordSettings
from abby_core.config.dashboard import DashboardSettings
from abby_core.config.moderation import ModerationSettings
from abby_core.config.monitoring import AnalyticsSettings, MetricsSettings
from abby_core.config.providers import ApiSettings
from abby_core.config.storage import S3Settings, StorageSettings
from abby_core.errors import ConfigError

__all__ = ["VARIABLES", "Settings", "describe_settings", "load_settings"]


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
VARIABLES = declared(Settings)


def _describe(error: dict[str, Any]) -> str:
    loc = error.get("loc") or ()
    name = next((str(part) for part in loc if str(part) in VARIABLES), None)
    if name is None:
        # A whole-section check (model_validator): its message already names the variables.
        return str(error.get("msg", "invalid configuration")).removeprefix("Value error, ")
    info = VARIABLES[name][1]
    allowed = info.description or "a valid value"
    value = error.get("input")
    if URL in info.metadata and isinstance(value, str):
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
        if URL in info.metadata and isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, SecretStr):
            value = "********"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = json.loads(json.dumps([v.model_dump() if isinstance(v, BaseModel) else v for v in value]))
        shown[variable] = value
    return shown
