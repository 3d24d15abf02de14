"""/abby-admin: server-wide usage and per-member overrides.

Discord hides the group from members without Manage Server (``default_permissions``),
but a server owner can grant it to anyone in Server Settings → Integrations, so every
subcommand also checks at run time: Manage Server, or a role listed in ``ADMIN_ROLE_IDS``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from abby_core.analytics import AuditEvent
from abby_core.errors import GenerationError, InvalidInput, NotConfigured, StorageError
from abby_core.storage.rules import MAX_CREDITS, MAX_GRANT
from abby_discord.charts import daily_chart
from abby_discord.cogs.generate.cog import role_ids
from abby_discord.errors import NotAdmin, timestamp
from abby_discord.render import COLOUR, attach_chart, credits_text, mb, quota_embed

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["Admin", "is_admin"]

log = logging.getLogger("abby.discord.admin")

HISTORY_DAYS = 30
HISTORY = f"Last {HISTORY_DAYS} days"


def is_admin(interaction: discord.Interaction, admin_role_ids: tuple[int, ...]) -> bool:
    """Manage Server (or Administrator, or owner) in this server, or one of the admin roles."""
    user = interaction.user
    if not isinstance(user, discord.Member):
        return False
    perms = interaction.permissions
    if perms.manage_guild or perms.administrator or user.guild_permissions.manage_guild:
        return True
    return any(role.id in admin_role_ids for role in user.roles)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Admin(commands.GroupCog, group_name="abby-admin", group_description="Image bot administration"):
    """Commands for server admins."""

    def __init__(self, bot: AbbyBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not is_admin(interaction, self.bot.settings.discord.admin_role_ids):
            log.warning("Member %s tried /abby-admin without admin rights.", interaction.user.id)
            raise NotAdmin("not an admin")
        return True

    async def _defer(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)

    @app_commands.command(name="stats")
    async def stats(self, interaction: discord.Interaction) -> None:
        """Server-wide storage, the members using the most, and the image service's credits."""
        await self._defer(interaction)
        stats = await self.bot.storage.stats(top=10)
        try:
            balance = await self.bot.generator.get_balance()
            credits = "not applicable (local provider)" if balance is None else f"{balance:g}"
        except NotConfigured:
            credits = "not configured"
        except GenerationError as exc:
            credits = f"unavailable ({exc.code})"
        embed = discord.Embed(title="📊 Abby usage", colour=COLOUR)
        embed.add_field(name="Storage", value=f"{mb(stats.global_bytes)} of {mb(stats.global_limit_bytes)} MB")
        embed.add_field(name="Members with images", value=str(stats.users))
        embed.add_field(name="Generations in progress", value=str(stats.in_flight))
        embed.add_field(name="Provider credits", value=credits)
        if stats.leases:
            # STORAGE_ESCROW: each bot process's slice of the budget, counted in the storage above.
            leases = "\n".join(
                f"{lease.owner or lease.lease_id}: {mb(lease.bytes)} MB until {timestamp(lease.expires, 'T')}"
                for lease in stats.leases[:10]
            )
            embed.add_field(name=f"Leased by bot processes ({mb(stats.leased_bytes)} MB)", value=leases, inline=False)
        top = "\n".join(f"{n}. <@{uid}> — {mb(size)} MB" for n, (uid, size) in enumerate(stats.top_users, start=1))
        embed.add_field(name="Top members by storage", value=top or "nobody yet", inline=False)
        chart = await self._history(embed)
        await interaction.followup.send(embed=embed, files=[chart] if chart else [], ephemeral=True)

    async def _history(self, embed: discord.Embed) -> discord.File | None:
        """Add the last 30 days to ``embed``: a line of totals and, once there are events, the chart."""
        events = self.bot.service.events
        if events is None:
            embed.add_field(name=HISTORY, value="Usage history is not recorded.", inline=False)
            return None
        try:
            summary = await asyncio.to_thread(events.summary, HISTORY_DAYS)
        except StorageError as exc:
            log.warning("Usage history unavailable for /abby-admin stats: %s", exc)
            embed.add_field(name=HISTORY, value=f"Usage history unavailable ({exc.code}).", inline=False)
            return None
        if not summary.events:
            embed.add_field(name=HISTORY, value="No usage recorded yet: the chart appears after the first request.",
                            inline=False)
            return None
        embed.add_field(
            name=HISTORY,
            value=f"{summary.images} image(s) · {summary.refusals_total} refused · {summary.failures} failed",
            inline=False,
        )
        png = await asyncio.to_thread(daily_chart, summary.per_day, title=f"Images per day, last {HISTORY_DAYS} days")
        return attach_chart(embed, png, f"usage-{HISTORY_DAYS}-days.png")

    @app_commands.command(name="cleanup")
    async def cleanup(self, interaction: discord.Interaction) -> None:
        """Delete images older than the configured number of days now."""
        await self._defer(interaction)
        report = await self.bot.storage.cleanup_old_files()
        log.info("Cleanup by %s: %d objects, %d bytes.", interaction.user.id, report.objects, report.bytes)
        if self.bot.service.events is not None:  # never fails: the images are already gone
            record = AuditEvent.of_cleanup(report, actor=str(interaction.user.id), time=self.bot.storage.clock(),
                                           days=self.bot.settings.storage.cleanup_days)
            await self.bot.service.events.arecord_audit(record)
        await interaction.followup.send(
            f"🧹 Cleanup removed {report.objects} image(s), {mb(report.bytes)} MB, from {report.users} member(s) "
            f"(images older than {self.bot.settings.storage.cleanup_days} days).",
            ephemeral=True,
        )

    @app_commands.command(name="quota")
    @app_commands.describe(user="The member to look up")
    async def quota(self, interaction: discord.Interaction, user: discord.Member) -> None:
        """See any member's quota."""
        await self._defer(interaction)
        status = await self.bot.storage.get_quota_status(user.id, role_ids=role_ids(user))
        sells_credits = bool(self.bot.settings.discord.credit_packs)
        embed = quota_embed(status, title=f"Quota of {user.display_name}", sells_credits=sells_credits)
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="grant")
    @app_commands.describe(
        user="The member",
        count="How many extra generations, for today only",
        credits="How many credits: each pays for one image past the daily limit, on any day",
    )
    async def grant(
        self,
        interaction: discord.Interaction,
        user: discord.Member,
        count: app_commands.Range[int, 1, MAX_GRANT] | None = None,
        credits: app_commands.Range[int, 1, MAX_CREDITS] | None = None,
    ) -> None:
        """Give a member extra generations for today (until midnight UTC), credits that keep, or both."""
        if count is None and credits is None:
            raise InvalidInput("Say what to give: `count` (extra generations today), `credits`, or both.")
        await self._defer(interaction)
        admin, events, now = str(interaction.user.id), self.bot.service.events, self.bot.storage.clock()
        given: list[str] = []
        if count is not None:
            await self.bot.storage.grant(user.id, count)
            log.info("Admin %s granted %d generation(s) to %s.", admin, count, user.id)
            if events is not None:
                await events.arecord_audit(
                    AuditEvent(time=now, actor=admin, action="grant", target=str(user.id), details={"extra": count})
                )
            given.append(f"{count} extra generation(s) for today")
        if credits is not None:
            # A grant is its own source: granting the same number twice gives it twice.
            await self.bot.storage.add_credits(user.id, credits, source=f"grant:{secrets.token_hex(8)}")
            log.info("Admin %s granted %s to %s.", admin, credits_text(credits), user.id)
            if events is not None:
                record = AuditEvent.of_credits("credit_grant", user.id, credits, actor=admin, time=now)
                await events.arecord_audit(record)
            given.append(credits_text(credits))
        status = await self.bot.storage.get_quota_status(user.id, role_ids=role_ids(user))
        standing = f"{status.daily_used}/{status.daily_limit} used today"
        if status.credits:
            standing += f", {credits_text(status.credits)} to spend"
        await interaction.followup.send(
            f"✅ {user.mention} got {' and '.join(given)}: {standing}.",
            ephemeral=True,
        )

    @app_commands.command(name="reset")
    @app_commands.describe(user="The member")
    async def reset(self, interaction: discord.Interaction, user: discord.Member) -> None:
        """Set a member's generations used today back to zero."""
        await self._defer(interaction)
        await self.bot.storage.reset_daily(user.id)
        log.info("Admin %s reset the daily count of %s.", interaction.user.id, user.id)
        await interaction.followup.send(f"✅ {user.mention}'s generations for today were reset.", ephemeral=True)

    @app_commands.command(name="block")
    @app_commands.describe(user="The member")
    async def block(self, interaction: discord.Interaction, user: discord.Member) -> None:
        """Stop a member from generating images (their images stay)."""
        await self._defer(interaction)
        await self.bot.storage.set_blocked(user.id, True)
        log.info("Admin %s blocked %s.", interaction.user.id, user.id)
        await interaction.followup.send(f"⛔ {user.mention} can no longer generate images.", ephemeral=True)

    @app_commands.command(name="unblock")
    @app_commands.describe(user="The member")
    async def unblock(self, interaction: discord.Interaction, user: discord.Member) -> None:
        """Let a blocked member generate images again."""
        await self._defer(interaction)
        await self.bot.storage.set_blocked(user.id, False)
        log.info("Admin %s unblocked %s.", interaction.user.id, user.id)
        await interaction.followup.send(f"✅ {user.mention} can generate images again.", ephemeral=True)
