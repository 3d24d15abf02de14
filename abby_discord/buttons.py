"""Buttons that keep working after a restart: everything they need is in their custom_id.

Result buttons carry ``abby:<action>:<owner id>:<image file name>`` (at most 88
characters; Discord allows 100), gallery buttons ``abby:gallery:<owner id>:<page>``.
They are :class:`discord.ui.DynamicItem` classes registered with
``bot.add_dynamic_items``, so any old message's buttons are understood by a new
process. The work is done by the cogs (``Images.on_result_button``,
``Gallery.on_page_button``); failures go to the one error reporter.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import discord

from abby_discord.errors import report

__all__ = ["ACTIONS", "GalleryButton", "ResultButton", "gallery_view", "result_view"]

log = logging.getLogger("abby.discord")

ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "upscale": ("Upscale", "🔍", discord.ButtonStyle.primary),
    "vary": ("Variation", "🎨", discord.ButtonStyle.secondary),
    "reroll": ("Reroll", "🎲", discord.ButtonStyle.secondary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}
_OWNER = r"(?P<owner>[1-9][0-9]{0,19})"
_NAME = r"(?P<name>[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8,32}\.(?:png|jpg|jpeg|webp))"
RESULT_TEMPLATE = rf"abby:(?P<action>upscale|vary|reroll|delete):{_OWNER}:{_NAME}"
GALLERY_TEMPLATE = rf"abby:gallery:{_OWNER}:(?P<page>[0-9]{{1,6}})"


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=RESULT_TEMPLATE):
    """Upscale, Variation, Reroll or Delete for one stored image."""

    def __init__(self, action: str, owner_id: str, name: str) -> None:
        label, emoji, style = ACTIONS[action]
        custom_id = f"abby:{action}:{owner_id}:{name}"
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id))
        self.action, self.owner_id, self.image_name = action, owner_id, name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ResultButton:
        return cls(match["action"], match["owner"], match["name"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # discord.py only logs a dynamic item's errors, so report them here.
        try:
            cog = interaction.client.get_cog("Images")  # type: ignore[attr-defined]
            if cog is None:
                raise RuntimeError("the Images cog is not loaded")
            await cog.on_result_button(interaction, self.action, self.owner_id, self.image_name)
        except Exception as exc:
            await report(interaction, exc)


class GalleryButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=GALLERY_TEMPLATE):
    """Previous / next page of a member's gallery."""

    def __init__(self, owner_id: str, page: int, label: str, *, disabled: bool = False) -> None:
        custom_id = f"abby:gallery:{owner_id}:{page}"
        button: discord.ui.Button[Any] = discord.ui.Button(
            label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id, disabled=disabled
        )
        super().__init__(button)
        self.owner_id, self.page = owner_id, page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> GalleryButton:
        return cls(match["owner"], int(match["page"]), getattr(item, "label", None) or "Page")

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            cog = interaction.client.get_cog("Gallery")  # type: ignore[attr-defined]
            if cog is None:
                raise RuntimeError("the Gallery cog is not loaded")
            await cog.on_page_button(interaction, self.owner_id, self.page)
        except Exception as exc:
            await report(interaction, exc)


def result_view(owner_id: str, name: str, *, can_remix: bool = True) -> discord.ui.View:
    """The buttons under a result; Variation and Reroll need a prompt to reuse."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        if action in ("vary", "reroll") and not can_remix:
            continue
        view.add_item(ResultButton(action, owner_id, name))
    return view


def gallery_view(owner_id: str, page: int, pages: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton(owner_id, page - 1, "◀ Previous", disabled=page <= 1))
    view.add_item(GalleryButton(owner_id, page + 1, "Next ▶", disabled=page >= pages))
    return view
