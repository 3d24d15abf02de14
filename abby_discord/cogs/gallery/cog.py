"""/quota and /gallery: private answers about a member's own images."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from abby_core.errors import GlobalStorageFull, InvalidInput, StorageError, UserStorageFull
from abby_discord.buttons import gallery_view
from abby_discord.charts import member_sparkline
from abby_discord.cogs.gallery.archive import ARCHIVE_PAGE_SIZE, archive_embed, archive_view, open_archive_button
from abby_discord.cogs.generate.cog import tiers_of
from abby_discord.errors import timestamp
from abby_discord.render import COLOUR, attach_chart, mb, quota_embed

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["HISTORY_DAYS", "PAGE_SIZE", "Gallery"]

log = logging.getLogger("abby.discord.gallery")

PAGE_SIZE = 8
HISTORY_DAYS = 30


class Gallery(commands.Cog):
    """A member's quota and recent images."""

    def __init__(self, bot: AbbyBot) -> None:
        self.bot = bot

    @app_commands.command(name="quota")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        """See how many images you can still make today and how much storage you use."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        section = self.bot.settings.discord
        tiers = tiers_of(interaction, section.premium_tiers)
        status = await self.bot.storage.get_quota_status(
            interaction.user.id, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids
        )
        embed = quota_embed(
            status,
            sells_credits=bool(section.credit_packs),
            premium=[t for t in section.premium_tiers if t.sku_id in tiers.sku_ids],
        )
        chart = await self._history(embed, interaction.user.id)
        await interaction.followup.send(embed=embed, files=[chart] if chart else [], ephemeral=True)

    async def _history(self, embed: discord.Embed, user_id: int) -> discord.File | None:
        """Add the member's last 30 days to ``embed``: a chart of images per day, or a line when there are none."""
        events = self.bot.service.events
        if events is None:
            return None
        name = f"Your last {HISTORY_DAYS} days"
        try:
            days = await asyncio.to_thread(events.member_days, user_id, HISTORY_DAYS)
        except StorageError as exc:
            log.warning("Usage history of member %s unavailable for /quota: %s", user_id, exc)
            return None
        images = sum(d.images for d in days)
        if not images:
            embed.add_field(name=name, value=f"No images in the last {HISTORY_DAYS} days.", inline=False)
            return None
        active = sum(1 for d in days if d.images)
        embed.add_field(
            name=name,
            value=f"{images} image{'s' if images != 1 else ''} on {active} day{'s' if active != 1 else ''}",
            inline=False,
        )
        png = await asyncio.to_thread(member_sparkline, days)
        return attach_chart(embed, png, f"your-{HISTORY_DAYS}-days.png")

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
        archived = len(await self.bot.storage.list_archived(user_id))
        pages = max(1, math.ceil(len(images) / PAGE_SIZE))
        page = min(max(page, 1), pages)
        embed = discord.Embed(title="🖼️ Your images", colour=COLOUR)
        if not images:
            embed.description = "You have no images yet — make one with /imagine."
            if archived:
                embed.description = "You have no images in your gallery now; older ones are in your archive."
                only = discord.ui.View(timeout=None)
                only.add_item(open_archive_button(user_id, archived))
                return embed, only
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
        view = gallery_view(user_id, page, pages) if pages > 1 else None
        if archived:
            view = view or discord.ui.View(timeout=None)
            view.add_item(open_archive_button(user_id, archived))
        return embed, view

    # -- archived images (STORAGE_ARCHIVE) ------------------------------------------------------
    async def _archive_page(self, user_id: str, page: int) -> tuple[discord.Embed, discord.ui.View]:
        images = await self.bot.storage.list_archived(user_id)
        pages = max(1, math.ceil(len(images) / ARCHIVE_PAGE_SIZE))
        page = min(max(page, 1), pages)
        section = self.bot.settings.storage  # ARCHIVE_DAYS, MAX_USER_ARCHIVE_MB
        embed = archive_embed(
            images, page, pages, keep_days=section.archive_days, limit_bytes=section.max_user_archive_bytes
        )
        return embed, archive_view(user_id, images, page, pages)

    async def on_archive_page(self, interaction: discord.Interaction, owner: str, page: int) -> None:
        """A page of archived images (page 0: back to the gallery)."""
        if str(interaction.user.id) != owner:
            raise InvalidInput("That gallery belongs to another member. Use /gallery to see yours.")
        await interaction.response.defer()
        view: discord.ui.View | None
        if page == 0:
            embed, view = await self._page(owner, 1)
        else:
            embed, view = await self._archive_page(owner, page)
        await interaction.edit_original_response(content=None, embed=embed, view=view)

    async def on_archive_action(self, interaction: discord.Interaction, action: str, owner: str, name: str) -> None:
        """Restore or Delete under an archived page."""
        if str(interaction.user.id) != owner:
            raise InvalidInput("That archive belongs to another member. Use /gallery to see yours.")
        await interaction.response.defer()
        storage = self.bot.storage
        if action == "delete":
            await storage.delete_archived(owner, name)
            note = f"🗑️ Deleted {name} from your archive."
        else:
            try:
                tiers = tiers_of(interaction, self.bot.settings.discord.premium_tiers)
                restored = await storage.restore_archived(
                    owner, name, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids
                )
            except (UserStorageFull, GlobalStorageFull) as exc:
                whose = "Your storage" if isinstance(exc, UserStorageFull) else "This server's storage"
                await interaction.followup.send(
                    f"There is no room to restore {name}: {whose.lower()} is full ({mb(exc.used)} of "
                    f"{mb(exc.limit)} MB) and it needs {mb(await self._archived_size(owner, name))} MB. "
                    "Delete some images from your gallery first; it stays in your archive meanwhile.",
                    ephemeral=True,
                )
                return
            note = f"♻️ Restored {restored.name} — it is back in /gallery."
        embed, view = await self._archive_page(owner, 1)
        await interaction.edit_original_response(content=note, embed=embed, view=view)

    async def _archived_size(self, owner: str, name: str) -> int:
        try:
            return (await self.bot.storage.archived_link(owner, name)).size
        except StorageError:
            return 0
