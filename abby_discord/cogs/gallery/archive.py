"""The archived pages of /gallery: archived images with Open links, Restore and Delete.

Buttons keep working after a restart (everything is in their custom_id, like
:mod:`abby_discord.buttons`): ``abby:arc:page:<owner>:<page>`` shows a page of archived
images, ``abby:arc:restore|delete:<owner>:<file name>`` acts on one (at most 92 characters).
The work is done by :class:`~abby_discord.cogs.gallery.cog.Gallery`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import discord

from abby_core.storage import ArchivedImage
from abby_discord.errors import report, timestamp
from abby_discord.render import COLOUR, mb

__all__ = ["ARCHIVE_PAGE_SIZE", "ArchiveAction", "ArchivePage", "archive_embed", "archive_view", "open_archive_button"]

#: Archived images per page: one Restore and one Delete button each, five to a row.
ARCHIVE_PAGE_SIZE = 5
_OWNER = r"(?P<owner>[1-9][0-9]{0,19})"
_NAME = r"(?P<name>[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8,32}\.(?:png|jpg|jpeg|webp))"


_PAGE = rf"abby:arc:page:{_OWNER}:(?P<page>[0-9]{{1,6}})"


class ArchivePage(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_PAGE):
    """Show a page of the member's archived images (page 0: back to their active images)."""

    def __init__(self, owner_id: str, page: int, label: str, *, disabled: bool = False) -> None:
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, style=discord.ButtonStyle.secondary, custom_id=f"abby:arc:page:{owner_id}:{page}",
            disabled=disabled,
        )
        super().__init__(button)
        self.owner_id, self.page = owner_id, page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ArchivePage:
        return cls(match["owner"], int(match["page"]), getattr(item, "label", None) or "Page")

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await _cog(interaction).on_archive_page(interaction, self.owner_id, self.page)
        except Exception as exc:
            await report(interaction, exc)


class ArchiveAction(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"abby:arc:(?P<action>restore|delete):{_OWNER}:{_NAME}"
):
    """Restore or Delete one archived image."""

    def __init__(self, action: str, owner_id: str, name: str, label: str) -> None:
        style = discord.ButtonStyle.success if action == "restore" else discord.ButtonStyle.danger
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, style=style, custom_id=f"abby:arc:{action}:{owner_id}:{name}"
        )
        super().__init__(button)
        self.action, self.owner_id, self.image_name = action, owner_id, name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ArchiveAction:
        return cls(match["action"], match["owner"], match["name"], getattr(item, "label", None) or match["action"])

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await _cog(interaction).on_archive_action(interaction, self.action, self.owner_id, self.image_name)
        except Exception as exc:
            await report(interaction, exc)


def _cog(interaction: discord.Interaction) -> Any:
    cog = interaction.client.get_cog("Gallery")  # type: ignore[attr-defined]
    if cog is None:
        raise RuntimeError("the Gallery cog is not loaded")
    return cog


def open_archive_button(owner_id: str, count: int) -> ArchivePage:
    """The button under the gallery that opens the archived pages."""
    return ArchivePage(owner_id, 1, f"🗄️ Archived ({count})")


def archive_embed(
    images: Sequence[ArchivedImage], page: int, pages: int, *, keep_days: int, limit_bytes: int
) -> discord.Embed:
    embed = discord.Embed(title="🗄️ Your archived images", colour=COLOUR)
    if not images:
        embed.description = "You have no archived images."
        return embed
    used = sum(i.size for i in images)
    embed.description = (
        f"{len(images)} archived image{'s' if len(images) != 1 else ''} · {mb(used)} of {mb(limit_bytes)} MB · "
        f"page {page} of {pages}\nOld images are kept here, smaller, for {keep_days} days. "
        "Restore brings one back to your gallery (it uses storage, not a generation)."
    )
    start = (page - 1) * ARCHIVE_PAGE_SIZE
    for number, image in enumerate(images[start : start + ARCHIVE_PAGE_SIZE], start=start + 1):
        facts = (
            f"{mb(image.size)} MB · made {timestamp(image.created_at)} · "
            f"deleted {timestamp(image.archived_at + timedelta(days=keep_days))}"
        )
        value = f"[Open]({image.url}) · {facts}" if image.url else facts
        embed.add_field(name=f"{number}. {image.name}", value=value if len(value) <= 1024 else facts, inline=False)
    if any(i.url for i in images):
        embed.set_footer(text="Links expire after a while; open the archive again for fresh ones.")
    return embed


def archive_view(owner_id: str, images: Sequence[ArchivedImage], page: int, pages: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    start = (page - 1) * ARCHIVE_PAGE_SIZE
    shown = list(enumerate(images[start : start + ARCHIVE_PAGE_SIZE], start=start + 1))
    for row, action, word in ((0, "restore", "Restore"), (1, "delete", "Delete")):
        for number, image in shown:
            item = ArchiveAction(action, owner_id, image.name, f"{word} {number}")
            item.item.row = row
            view.add_item(item)
    nav = [
        ArchivePage(owner_id, page - 1, "◀ Previous", disabled=page <= 1),
        ArchivePage(owner_id, page + 1, "Next ▶", disabled=page >= pages),
        ArchivePage(owner_id, 0, "🖼️ Back to images"),
    ]
    for button in nav if pages > 1 else nav[2:]:
        button.item.row = 2
        view.add_item(button)
    return view
