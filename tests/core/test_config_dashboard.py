"""The dashboard's settings: defaults, the public URL, secrets, and which sign-in is configured."""

from __future__ import annotations

import pytest

from abby_core.config import describe_settings, load_settings
from abby_core.errors import ConfigError


def test_defaults() -> None:
    d = load_settings(env_file=None).dashboard
    assert (d.host, d.port, d.public_url) == ("127.0.0.1", 8765, "http://127.0.0.1:8765")
    assert (d.oauth_url, d.api_url) == ("https://discord.com", "https://discord.com/api/v10")
    assert d.redirect_uri == "http://127.0.0.1:8765/auth/callback" and not d.secure_cookies
    assert not d.oauth_enabled and not d.token_enabled


def test_public_url_and_flat_names() -> None:
    s = load_settings(
        env_file=None, DASHBOARD_HOST="::1", DASHBOARD_PORT="9000", DISCORD_CLIENT_ID="4242",
        DISCORD_CLIENT_SECRET="x", DISCORD_GUILD_ID="7", ADMIN_ROLE_IDS="5,6", DISCORD_TOKEN="bot",
    )
    d = s.dashboard
    assert d.public_url == "http://[::1]:9000" and d.oauth_enabled and d.admin_role_ids == (5, 6)
    assert d.bot_token is not None and d.bot_token.get_secret_value() == "bot"
    https = load_settings(env_file=None, DASHBOARD_PUBLIC_URL="https://abby.example.org/").dashboard
    assert https.public_url == "https://abby.example.org" and https.secure_cookies
    assert https.redirect_uri == "https://abby.example.org/auth/callback"


def test_empty_values_mean_unset() -> None:
    d = load_settings(
        env_file=None, DASHBOARD_PUBLIC_URL="", DASHBOARD_TOKEN=" ", DASHBOARD_SECRET_KEY="", DISCORD_CLIENT_ID="",
        DISCORD_CLIENT_SECRET="", DASHBOARD_PORT="",
    ).dashboard
    assert d.public_url == "http://127.0.0.1:8765" and d.token is None and d.secret_key is None
    assert d.client_id is None and d.client_secret is None and d.port == 8765


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"DASHBOARD_TOKEN": "short"}, "DASHBOARD_TOKEN: must be a token of 16 characters or more"),
        ({"DASHBOARD_TOKEN": "sixteen chars and spaces"}, "a space or a character outside ASCII"),
        ({"DASHBOARD_SECRET_KEY": "abc"}, "DASHBOARD_SECRET_KEY: must be a key of 32 characters or more"),
        ({"DASHBOARD_PUBLIC_URL": "https://example.org/abby"}, "without a path"),
        ({"DASHBOARD_PUBLIC_URL": "abby.example.org"}, "must start with http:// or https://"),
        ({"DASHBOARD_PORT": "70000"}, "DASHBOARD_PORT (got '70000'): must be a port number from 1 to 65535"),
        ({"DASHBOARD_HOST": "bad host!"}, "DASHBOARD_HOST"),
        ({"DISCORD_CLIENT_ID": "12ab"}, "DISCORD_CLIENT_ID (got '12ab'): must be the Discord application's client id"),
        ({"DISCORD_API_URL": "ftp://discord.com"}, "DISCORD_API_URL"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None, **env)
    assert words in str(caught.value)


def test_secrets_are_never_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None, DASHBOARD_TOKEN="tiny-secret", DASHBOARD_SECRET_KEY="also-secret")
    assert "tiny-secret" not in str(caught.value) and "also-secret" not in str(caught.value)
    shown = describe_settings(load_settings(env_file=None, DASHBOARD_TOKEN="t" * 20, DISCORD_CLIENT_SECRET="cs"))
    assert shown["DASHBOARD_TOKEN"] == "********" and shown["DISCORD_CLIENT_SECRET"] == "********"


def test_sign_in_check_names_the_variables() -> None:
    with pytest.raises(ConfigError) as nothing:
        load_settings(env_file=None).dashboard.check_sign_in()
    for name in ("DISCORD_CLIENT_ID", "DISCORD_CLIENT_SECRET", "DISCORD_GUILD_ID", "DASHBOARD_TOKEN"):
        assert name in str(nothing.value)
    with pytest.raises(ConfigError, match="half configured: set DISCORD_CLIENT_SECRET, DISCORD_GUILD_ID"):
        load_settings(env_file=None, DISCORD_CLIENT_ID="1", DASHBOARD_TOKEN="t" * 16).dashboard.check_sign_in()
    load_settings(env_file=None, DASHBOARD_TOKEN="t" * 16).dashboard.check_sign_in()
    load_settings(
        env_file=None, DISCORD_CLIENT_ID="1", DISCORD_CLIENT_SECRET="s", DISCORD_GUILD_ID="2"
    ).dashboard.check_sign_in()
