"""/quota and /gallery: a member's own standing and images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abby_discord.cogs.gallery.archive import ArchiveAction, ArchivePage
from abby_discord.cogs.gallery.cog import Gallery

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Gallery", "setup"]


async def setup(bot: AbbyBot) -> None:
    await bot.add_cog(Gallery(bot))
    bot.add_dynamic_items(ArchivePage, ArchiveAction)  # the archived pages' buttons, after a restart too
