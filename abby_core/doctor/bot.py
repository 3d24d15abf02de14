"""The Discord token check: judged by its shape only, never shown."""

from __future__ import annotations

import re

from abby_core.config import Settings
from abby_core.doctor.report import Check, fail, ok, skip

__all__ = ["discord_token_check"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{10,}")


def discord_token_check(settings: Settings) -> Check:
    """DISCORD_TOKEN's shape: three base64url parts separated by dots. Never shows the token."""
    token = settings.discord.token
    if token is None:
        return skip("discord_token", "DISCORD_TOKEN is not set; 'abby run' needs it to start the bot")
    if _TOKEN.fullmatch(token.get_secret_value().strip()):
        return ok("discord_token", "DISCORD_TOKEN looks like a bot token (Discord verifies it at 'abby run')")
    return fail(
        "discord_token",
        "DISCORD_TOKEN does not look like a bot token (three base64url parts separated by dots)",
        "Copy the token again from the Discord developer portal (Bot > Reset Token).",
    )
