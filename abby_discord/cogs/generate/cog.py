"""Image commands: cheap checks, defer, one service call, render.

Every generation goes through :meth:`Images._generate`, which hands it to
:meth:`~abby_core.admission.Admission.generate` (the member's slot, the precheck, the queue
and the deadline, as for every adapter) with three Discord things: defer the reply
publicly once admitted, show the queue position, edit in the progress; then renders.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

import discord
from discord import app_commands
from discord.ext import commands

from abby_core.config import PremiumTier
from abby_core.errors import InvalidImage, InvalidPrompt
from abby_core.generation import ASPECT_RATIOS, MAX_SEED, STYLE_PRESETS, ProgressCallback
from abby_core.images import MAX_IMAGE_BYTES
from abby_core.pipeline import GenerationResult
from abby_core.storage.keys import CONTENT_TYPES, IMAGE_EXTENSIONS
from abby_discord.errors import PUBLIC_DEFER, ChannelNotAllowed, NotOwner
from abby_discord.progress import ProgressMessage
from abby_discord.render import PromptInfo, mb, mib, prompt_of, render_result

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Images", "Tiers", "check_attachment", "role_ids", "sku_ids", "tiers_of"]

events = logging.getLogger("abby.events")
log = logging.getLogger("abby.discord")
_ANSWER_WITHIN = timedelta(minutes=14)  # Discord's interaction token lasts 15

_DISCORD_FILE_LIMIT = 10 * 1024 * 1024  # what a bot may attach where Discord does not say
IMAGE_TYPES = tuple(CONTENT_TYPES)
_EXTENSIONS = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)


class Tiers(NamedTuple):
    """What picks a member's limits: their roles (``QUOTA_TIERS``) and subscriptions (``PREMIUM_TIERS``)."""

    role_ids: tuple[int, ...]
    sku_ids: tuple[int, ...]


Run = Callable[[Tiers, ProgressCallback], Awaitable[GenerationResult]]


def role_ids(user: discord.User | discord.Member) -> tuple[int, ...]:
    """The member's role ids (for ``QUOTA_TIERS``); none outside a server."""
    return tuple(r.id for r in user.roles) if isinstance(user, discord.Member) else ()


def sku_ids(interaction: discord.Interaction, premium_tiers: Iterable[PremiumTier]) -> tuple[int, ...]:
    """The SKU ids of the invoking member's active subscriptions that ``PREMIUM_TIERS`` names.

    Read from ``interaction.entitlements`` (discord.py 2.7's ``entitlement_sku_ids`` is always
    empty): an entitlement counts while it is neither deleted (refunded), consumed nor ended,
    so a subscription that ended or was refunded stops counting at the member's next request.
    """
    wanted = {tier.sku_id for tier in premium_tiers}
    if not wanted:
        return ()
    now = discord.utils.utcnow()
    active = {
        e.sku_id
        for e in interaction.entitlements
        if e.sku_id in wanted and not e.deleted and not e.consumed and (e.ends_at is None or e.ends_at > now)
    }
    return tuple(sorted(active))


def tiers_of(interaction: discord.Interaction, premium_tiers: Iterable[PremiumTier]) -> Tiers:
    """The invoking member's roles and active subscriptions."""
    return Tiers(role_ids(interaction.user), sku_ids(interaction, premium_tiers))


def check_attachment(attachment: discord.Attachment) -> None:
    """Refuse an upload by its declared type and size, before downloading it."""
    if attachment.size > MAX_IMAGE_BYTES:
        raise InvalidImage(
            f"`{attachment.filename[:80]}` is {mib(attachment.size)}; images must be {mib(MAX_IMAGE_BYTES)} or smaller."
        )
    declared = (attachment.content_type or "").split(";")[0].strip().lower()
    if declared not in IMAGE_TYPES and not (not declared and attachment.filename.lower().endswith(_EXTENSIONS)):
        raise InvalidImage(f"`{attachment.filename[:80]}` is not an image. Please attach a PNG, JPEG or WebP image.")


def _seconds_until(moment: datetime) -> float:
    return max(1.0, (moment - datetime.now(UTC)).total_seconds())


def _size_limit(interaction: discord.Interaction) -> int:
    limit = getattr(interaction, "filesize_limit", None)
    if not limit and interaction.guild is not None:
        limit = interaction.guild.filesize_limit
    return int(limit or _DISCORD_FILE_LIMIT)


class Images(commands.Cog):
    """Make images from prompts and pictures."""

    def __init__(self, bot: AbbyBot) -> None:
        self.bot = bot

    # -- the one flow ------------------------------------------------------------------------
    def _check_channel(self, interaction: discord.Interaction) -> None:
        """Refuse channels the owner did not open to image generation (nothing is held yet)."""
        rules = self.bot.settings.moderation
        channel = interaction.channel
        nsfw = bool(channel is not None and getattr(channel, "is_nsfw", lambda: False)())
        allowed = not rules.channel_ids or interaction.channel_id in rules.channel_ids
        if not allowed or (rules.age_restricted_only and not nsfw):
            events.info("refused code=channel_not_allowed channel=%s", interaction.channel_id)
            self.bot.service.record(
                "imagine", interaction.user.id, "channel_not_allowed", guild_id=interaction.guild_id
            )
            raise ChannelNotAllowed(rules.channel_ids, age_restricted=rules.age_restricted_only)

    async def _generate(self, interaction: discord.Interaction, *, title: str, info: PromptInfo, run: Run) -> None:
        self._check_channel(interaction)
        tiers = tiers_of(interaction, self.bot.settings.discord.premium_tiers)

        async def defer() -> None:
            # Refusals a member can be told about at once (busy, blocked, limits, bad prompt,
            # not configured) were answered privately; from here the reply is public.
            interaction.extras[PUBLIC_DEFER] = True
            await interaction.response.defer(thinking=True)

        async def show_position(place: int) -> None:
            await interaction.edit_original_response(
                content=f"⏳ Queued — position {place}. I'll start on your image as soon as a slot is free."
            )

        async def make() -> GenerationResult:
            progress = ProgressMessage(interaction)
            try:
                return await run(tiers, progress)
            finally:
                await progress.close()  # no progress edit may land after the answer

        # Discord accepts edits of this reply for 15 minutes: queue and generation share
        # what is left of them, so a slow provider is stopped (and refunded) in time.
        result = await self.bot.admission.generate(
            interaction.user.id, make, prompt=info.prompt, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids,
            on_admitted=defer, on_position=show_position,
            within=_seconds_until(interaction.created_at + _ANSWER_WITHIN),
        )
        try:
            rendered = render_result(
                result,
                title=title,
                info=info,
                delivery=self.bot.settings.discord.delivery,
                size_limit=_size_limit(interaction),
                link_ttl=self.bot.settings.storage.link_ttl_seconds if result.stored.url else None,
            )
            await interaction.edit_original_response(
                content=rendered.content, embed=rendered.embed, attachments=rendered.attachments, view=rendered.view
            )
            interaction.extras[PUBLIC_DEFER] = False
        except discord.HTTPException:
            # The image is stored and charged: say where it is rather than "try again".
            log.warning("Could not show image %s to member %s.", result.stored.key, interaction.user.id, exc_info=True)
            interaction.extras[PUBLIC_DEFER] = False
            with contextlib.suppress(discord.HTTPException):
                await interaction.followup.send(
                    f"Your image was made and saved as `{result.stored.name}`, but I couldn't show it here. "
                    "You can find it with /gallery.",
                    ephemeral=True,
                )

    # -- commands ------------------------------------------------------------------------------
    @app_commands.command(name="imagine")
    @app_commands.guild_only()
    @app_commands.describe(
        prompt="Describe the image you want",
        negative_prompt="What to keep out of the image",
        aspect_ratio="The image's shape (default 1:1, square)",
        seed="The same seed and prompt give a similar image again (0 or empty: random)",
        style="A style preset",
    )
    @app_commands.choices(
        aspect_ratio=[app_commands.Choice(name=r, value=r) for r in ASPECT_RATIOS],
        style=[app_commands.Choice(name=s.replace("-", " "), value=s) for s in STYLE_PRESETS[:25]],
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 2000],
        negative_prompt: app_commands.Range[str, 1, 1000] | None = None,
        aspect_ratio: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        style: str | None = None,
    ) -> None:
        """Make an image from a description."""
        ratio = aspect_ratio or "1:1"
        uid = interaction.user.id

        async def run(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
            return await self.bot.service.imagine(
                uid, prompt, negative_prompt=negative_prompt, aspect_ratio=ratio, seed=seed or 0,
                style_preset=style, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids, progress=progress,
            )

        info = PromptInfo(prompt, negative_prompt, ratio, style)
        await self._generate(interaction, title="🎨 Imagine", info=info, run=run)

    @app_commands.command(name="imgimg")
    @app_commands.guild_only()
    @app_commands.describe(
        image=f"A PNG, JPEG or WebP picture (up to {mib(MAX_IMAGE_BYTES)}) to start from",
        prompt="How to change it",
        strength="0 keeps your picture, 1 ignores it (default 0.6)",
    )
    async def imgimg(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, 2000],
        strength: app_commands.Range[float, 0.0, 1.0] | None = None,
    ) -> None:
        """Make a new image from your picture and a description."""
        check_attachment(image)
        uid = interaction.user.id
        amount = 0.6 if strength is None else strength

        async def run(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
            data = await image.read()
            return await self.bot.service.img2img(
                uid, data, prompt, strength=amount, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids,
                progress=progress,
            )

        await self._generate(interaction, title="🖼️ Image to image", info=PromptInfo(prompt), run=run)

    @app_commands.command(name="upscale")
    @app_commands.guild_only()
    @app_commands.describe(image=f"A PNG, JPEG or WebP picture (up to {mib(MAX_IMAGE_BYTES)}) to enlarge")
    async def upscale(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Make a larger, sharper copy of your picture."""
        check_attachment(image)
        uid = interaction.user.id

        async def run(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
            return await self.bot.service.upscale(
                uid, await image.read(), role_ids=tiers.role_ids, sku_ids=tiers.sku_ids, progress=progress
            )

        await self._generate(interaction, title="🔍 Upscale", info=PromptInfo(None), run=run)

    # -- buttons under a result ----------------------------------------------------------------
    async def on_result_button(self, interaction: discord.Interaction, action: str, owner: str, name: str) -> None:
        """Run a result button; the image is read from the owner's storage, the work charged to the clicker."""
        if action == "delete":
            await self._delete(interaction, owner, name)
            return
        info = prompt_of(interaction.message)
        storage, service, uid = self.bot.storage, self.bot.service, interaction.user.id
        if action == "upscale":

            async def run(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
                data = await storage.get_image(owner, name)
                return await service.upscale(
                    uid, data, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids, progress=progress
                )

            await self._generate(interaction, title="🔍 Upscale", info=info, run=run)
            return
        if not info.prompt:
            raise InvalidPrompt("This image has no prompt to reuse. Use /imgimg with a prompt instead.")
        prompt = info.prompt
        if action == "vary":

            async def run(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
                data = await storage.get_image(owner, name)
                return await service.img2img(
                    uid, data, prompt, strength=0.6, negative_prompt=info.negative_prompt, role_ids=tiers.role_ids,
                    sku_ids=tiers.sku_ids, progress=progress,
                )

            await self._generate(
                interaction, title="🎨 Variation", info=PromptInfo(prompt, info.negative_prompt), run=run
            )
            return
        seed = secrets.randbelow(MAX_SEED) + 1
        ratio = info.aspect_ratio if info.aspect_ratio in ASPECT_RATIOS else "1:1"
        style = info.style if info.style in STYLE_PRESETS else None

        async def reroll(tiers: Tiers, progress: ProgressCallback) -> GenerationResult:
            return await service.imagine(
                uid, prompt, negative_prompt=info.negative_prompt, aspect_ratio=ratio, seed=seed,
                style_preset=style, role_ids=tiers.role_ids, sku_ids=tiers.sku_ids, progress=progress,
            )

        await self._generate(
            interaction, title="🎲 Reroll", info=PromptInfo(prompt, info.negative_prompt, ratio, style), run=reroll
        )

    async def _delete(self, interaction: discord.Interaction, owner: str, name: str) -> None:
        if str(interaction.user.id) != owner:
            raise NotOwner()
        await interaction.response.defer()
        freed = await self.bot.storage.delete_image(owner, name)
        embed = discord.Embed(
            title="🗑️ Image deleted",
            description=f"`{name}` was deleted; {mb(freed)} MB of your storage is free again.",
        )
        await interaction.edit_original_response(content=None, embed=embed, attachments=[], view=None)
