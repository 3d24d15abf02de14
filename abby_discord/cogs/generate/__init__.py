"""/imagine, /imgimg, /upscale and the buttons under their results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from abby_discord.cogs.generate.cog import Images

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Images", "setup"]


async def setup(bot: AbbyBot) -> None:
    await bot.add_cog(Images(bot))
