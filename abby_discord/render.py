"""How results and quotas look in Discord: embeds, the quota line, and delivery of the file.

The result embed also carries what the buttons under it need after a restart: the
prompt is its description, and the options are fields read back by :func:`prompt_of`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import discord

from abby_core.config import PremiumTier
from abby_core.generation.offline import LABEL as OFFLINE_LABEL
from abby_core.pipeline import GenerationResult
from abby_core.storage import QuotaStatus, StoredImage
from abby_core.storage.keys import CONTENT_TYPES
from abby_discord.buttons import result_view
from abby_discord.errors import timestamp

__all__ = [
    "COLOUR",
    "OFFLINE_LABEL",
    "PromptInfo",
    "Rendered",
    "attach_chart",
    "credits_text",
    "mb",
    "mib",
    "prompt_of",
    "quota_embed",
    "quota_line",
    "render_result",
]

Delivery = Literal["attach", "link", "both"]
COLOUR = discord.Colour.from_rgb(112, 84, 214)
NEGATIVE, ASPECT, STYLE, SEED = "Negative prompt", "Aspect ratio", "Style", "Seed"
PROVIDER, QUOTA, LINK = "Made with", "Your quota", "Link"


def mb(n: int) -> str:
    """Bytes as megabytes with one decimal (``12.4``); whole numbers stay short (``500``)."""
    value = n / 1_000_000
    return f"{value:.0f}" if value >= 10 and value == int(value) else f"{value:.1f}"


def mib(n: int) -> str:
    """Bytes in mebibytes, the unit the upload limit counts in: ``10 MiB``, ``10.1 MiB``.

    Rounded up, so a file just over a limit never reads as the limit itself.
    """
    tenths = math.ceil(n * 10 / 1_048_576)
    return f"{tenths // 10} MiB" if tenths % 10 == 0 else f"{tenths / 10:.1f} MiB"


def credits_text(n: int) -> str:
    return f"{n} credit{'s' if n != 1 else ''}"


def quota_line(status: QuotaStatus) -> str:
    """``3/5 today · 12.4 of 500 MB · resets <t:…:R>``, then ``· 4 credits`` when the member has any."""
    line = (
        f"{status.daily_used}/{status.daily_limit} today · {mb(status.user_bytes)} of "
        f"{mb(status.user_limit_bytes)} MB · resets {timestamp(status.resets_at)}"
    )
    return f"{line} · {credits_text(status.credits)}" if status.credits else line


@dataclass(frozen=True)
class PromptInfo:
    """The request a result came from, as far as the buttons need it."""

    prompt: str | None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    style: str | None = None


def prompt_of(message: discord.Message | None) -> PromptInfo:
    """Read the prompt and options back from a result message's embed."""
    if message is None or not message.embeds:
        return PromptInfo(None)
    embed = message.embeds[0]
    fields = {f.name: f.value for f in embed.fields}
    return PromptInfo(
        embed.description or None,
        fields.get(NEGATIVE),
        fields.get(ASPECT),
        fields.get(STYLE),
    )


@dataclass
class Rendered:
    """Everything one result message is made of."""

    content: str | None
    embed: discord.Embed
    file: discord.File | None
    view: discord.ui.View

    @property
    def attachments(self) -> list[discord.File]:
        return [self.file] if self.file is not None else []


def _file_name(stored: StoredImage, content_type: str) -> str:
    stem = stored.name.rsplit(".", 1)[0]
    return f"{stem}.{CONTENT_TYPES.get(content_type, 'png')}"


def render_result(
    result: GenerationResult,
    *,
    title: str,
    info: PromptInfo,
    delivery: Delivery,
    size_limit: int,
    link_ttl: int | None = None,
) -> Rendered:
    """The result message for ``result``, with the file attached or linked per ``IMAGE_DELIVERY``.

    The file is attached when delivery allows it and it fits ``size_limit``; otherwise
    the presigned link stands in for it. Without either (a large image on filesystem
    storage) the message says the image is kept in the gallery.
    """
    stored, image = result.stored, result.image
    embed = discord.Embed(title=title, description=info.prompt, colour=COLOUR, timestamp=stored.created_at)
    if info.negative_prompt:
        embed.add_field(name=NEGATIVE, value=info.negative_prompt[:1024], inline=False)
    if info.aspect_ratio:
        embed.add_field(name=ASPECT, value=info.aspect_ratio)
    if info.style:
        embed.add_field(name=STYLE, value=info.style)
    if image.seed:
        embed.add_field(name=SEED, value=str(image.seed))
    embed.add_field(name=PROVIDER, value=image.label or image.provider, inline=False)
    embed.add_field(name=QUOTA, value=quota_line(result.status), inline=False)

    url = stored.url
    fits = len(image.data) <= size_limit
    attach = fits and (delivery != "link" or url is None)
    content: str | None = None
    file: discord.File | None = None
    if attach:
        name = _file_name(stored, image.content_type)
        file = discord.File(io.BytesIO(image.data), filename=name)
        embed.set_image(url=f"attachment://{name}")
    elif url is not None:
        embed.set_image(url=url)
    else:
        content = (
            f"The image is too large to attach here ({mb(len(image.data))} MB). "
            f"It is kept in your gallery as `{stored.name}` — see /gallery."
        )
    if url is not None and (delivery != "attach" or not attach):
        expires = f" (expires {timestamp(stored.created_at + timedelta(seconds=link_ttl))})" if link_ttl else ""
        link = f"[Open the full image]({url}){expires}"
        if len(link) <= 1024:
            embed.add_field(name=LINK, value=link, inline=False)
    embed.set_footer(text=f"{stored.name} · /gallery shows your images")
    view = result_view(stored.user_id, stored.name, can_remix=info.prompt is not None)
    return Rendered(content, embed, file, view)


def attach_chart(embed: discord.Embed, png: bytes, filename: str) -> discord.File:
    """The chart ``png`` as a file to send with ``embed``, which shows it as its image."""
    embed.set_image(url=f"attachment://{filename}")
    return discord.File(io.BytesIO(png), filename=filename)


def quota_embed(
    status: QuotaStatus,
    *,
    title: str = "Your image quota",
    sells_credits: bool = False,
    premium: Sequence[PremiumTier] = (),
) -> discord.Embed:
    """A member's standing: generations today, storage, server storage, and when it resets.

    Credits are shown when the member has some or the server sells them (``sells_credits``);
    ``premium`` lists the tiers of the member's active subscriptions (shown when any).
    """
    embed = discord.Embed(title=title, colour=COLOUR)
    embed.add_field(name="Today", value=f"{status.daily_used} of {status.daily_limit} used · {status.daily_left} left")
    if status.credits or sells_credits:
        embed.add_field(
            name="Credits",
            value=f"{credits_text(status.credits)} · each pays for one image past your daily limit",
            inline=False,
        )
    if premium:
        best = max(premium, key=lambda t: (t.daily_gens, t.storage_mb))
        embed.add_field(
            name="Subscription",
            value=f"Active · up to {best.daily_gens} images a day and {best.storage_mb:g} MB of storage",
            inline=False,
        )
    embed.add_field(name="Storage", value=f"{mb(status.user_bytes)} of {mb(status.user_limit_bytes)} MB")
    embed.add_field(
        name="Server storage", value=f"{mb(status.global_bytes)} of {mb(status.global_limit_bytes)} MB"
    )
    embed.add_field(name="Resets", value=f"{timestamp(status.resets_at)} ({timestamp(status.resets_at, 't')})")
    if status.in_flight:
        embed.add_field(name="In progress", value=str(status.in_flight))
    if status.blocked:
        embed.add_field(name="Blocked", value="Yes — generating images is blocked for this member.", inline=False)
    embed.description = quota_line(status)
    return embed
