"""The dashboard section: where ``abby dashboard`` listens and how admins sign in."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr, field_validator
from pydantic_core import PydanticUseDefault

from abby_core.config._fields import Section, var
from abby_core.config._urls import ListenHost, OptionalUrl, Url
from abby_core.errors import ConfigError

__all__ = ["DASHBOARD_SECRET_KEY_MIN", "DASHBOARD_TOKEN_MIN", "DashboardSettings"]

DASHBOARD_TOKEN_MIN = 16
DASHBOARD_SECRET_KEY_MIN = 32


class DashboardSettings(Section):
    """The web dashboard (``abby dashboard``): where it listens, how admins sign in.

    Sign-in with Discord needs ``client_id``, ``client_secret`` and ``guild_id``; the token
    form needs ``token``. :meth:`check_sign_in` says which is missing. ``bot_token`` (the
    bot's ``DISCORD_TOKEN``) lets the dashboard look members' names up; ``secret_key`` None
    means a random key is made at start (sessions then end when the dashboard restarts).
    ``guild_id``, ``admin_role_ids`` and ``bot_token`` are the Discord section's variables,
    handed over by :class:`Settings`.
    """

    host: ListenHost = var(
        "127.0.0.1", "DASHBOARD_HOST", "the address the dashboard listens on: an IP address or host name"
    )
    port: int = var(8765, "DASHBOARD_PORT", "a port number from 1 to 65535", ge=1, le=65535)
    #: DASHBOARD_PUBLIC_URL as set; :attr:`public_url` is the one in use.
    configured_public_url: OptionalUrl = var(
        None, "DASHBOARD_PUBLIC_URL",
        "the http(s) URL browsers use to reach the dashboard, such as https://abby.example.org, "
        "or empty for http://DASHBOARD_HOST:DASHBOARD_PORT",
    )
    token: SecretStr | None = var(
        None, "DASHBOARD_TOKEN",
        f"a token of {DASHBOARD_TOKEN_MIN} characters or more (generate one: openssl rand -hex 24), or empty",
    )
    secret_key: SecretStr | None = var(
        None, "DASHBOARD_SECRET_KEY",
        f"a key of {DASHBOARD_SECRET_KEY_MIN} characters or more (generate one: openssl rand -hex 32), "
        "or empty for a new key at each start",
    )
    client_id: str | None = var(
        None, "DISCORD_CLIENT_ID", "the Discord application's client id, digits only", pattern=r"^[0-9]{1,20}$"
    )
    client_secret: SecretStr | None = var(None, "DISCORD_CLIENT_SECRET", "the Discord application's client secret")
    oauth_url: Url = var("https://discord.com", "DISCORD_OAUTH_URL", "an http(s) URL")
    api_url: Url = var("https://discord.com/api/v10", "DISCORD_API_URL", "an http(s) URL")
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
