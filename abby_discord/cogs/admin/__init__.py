"""/abby-admin: usage, cleanup and per-member overrides for server admins."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abby_discord.cogs.admin.cog import Admin

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Admin", "setup"]


async def setup(bot: AbbyBot) -> None:
    await bot.add_cog(Admin(bot))
