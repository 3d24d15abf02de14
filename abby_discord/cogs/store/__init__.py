"""Quota sold through Discord's store: credit packs and subscriptions (loaded only when the server sells)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abby_discord.cogs.store.cog import Store

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Store", "setup"]


async def setup(bot: AbbyBot) -> None:
    await bot.add_cog(Store(bot))
