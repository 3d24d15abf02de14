"""/quota and /gallery: private answers about a member's own images."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from abby_core.errors import InvalidInput
from abby_discord.buttons import gallery_view
from abby_discord.cogs.generate.cog import role_ids
from abby_discord.errors import timestamp
from abby_discord.render import COLOUR, mb, quota_embed

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["PAGE_SIZE", "Gallery"]

PAGE_SIZE = 8


class Gallery(commands.Cog):
    """A member's quota and recent images."""

    def __init__(self, bot: AbbyBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        """See how many images you can still make today and how much storage you use."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await self.bot.storage.get_quota_status(interaction.user.id, role_ids=role_ids(interaction.user))
        await interaction.followup.send(embed=quota_embed(status), ephemeral=True)

    @app_commands.command(name="gallery")
    @app_commands.guild_only()
    @app_commands.describe(page="Which page to show (newest images first)")
    async def gallery(
        self, interaction: discord.Interaction, page: app_commands.Range[int, 1, 100_000] | None = None
    ) -> None:
        """List your recent images, newest first, with links to open them."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed, view = await self._page(str(interaction.user.id), page or 1)
        if view is None:
            await interaction.followup.send(embed=embed, ephemeral=True)
        else:
            await interaction.followup.send(embed=embed, view=view, ephemeral=True)

    async def on_page_button(self, interaction: discord.Interaction, owner: str, page: int) -> None:
        """Previous / Next under a gallery page."""
        if str(interaction.user.id) != owner:
            raise InvalidInput("That gallery belongs to another member. Use /gallery to see yours.")
        await interaction.response.defer()
        embed, view = await self._page(owner, page)
        await interaction.edit_original_response(embed=embed, view=view)

    async def _page(self, user_id: str, page: int) -> tuple[discord.Embed, discord.ui.View | None]:
        images = await self.bot.storage.list_images(user_id)
        pages = max(1, math.ceil(len(images) / PAGE_SIZE))
        page = min(max(page, 1), pages)
        embed = discord.Embed(title="🖼️ Your images", colour=COLOUR)
        if not images:
            embed.description = "You have no images yet — make one with /imagine."
            return embed, None
        embed.description = f"{len(images)} image{'s' if len(images) != 1 else ''} · page {page} of {pages}"
        start = (page - 1) * PAGE_SIZE
        for number, image in enumerate(images[start : start + PAGE_SIZE], start=start + 1):
            made = f"{mb(image.size)} MB · made {timestamp(image.created_at)}"
            value = f"[Open]({image.url}) · {made}" if image.url else made
            if len(value) > 1024:
                value = made
            embed.add_field(name=f"{number}. {image.name}", value=value, inline=False)
        if any(i.url for i in images):
            embed.set_footer(text="Links expire after a while; run /gallery again for fresh ones.")
        return embed, gallery_view(user_id, page, pages) if pages > 1 else None
