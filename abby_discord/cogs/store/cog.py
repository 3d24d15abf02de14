"""Purchases in Discord's store become quota.

A credit pack (a consumable SKU in ``CREDIT_PACKS``) is credited, then consumed::

    ENTITLEMENT_CREATE → add_credits(member, pack.credits, source="entitlement:<id>") → consume

Crediting is idempotent per entitlement and comes first, so a duplicate event, the same
event reaching two bot processes, or a process that stops between crediting and consuming
all end with the credits given once and the entitlement consumed: the primary process
sweeps the pack entitlements not consumed yet at start and every ``sweep_interval``
seconds, and finishes them. A refund (``ENTITLEMENT_DELETE``) takes back what is left of
the pack's credits; the sweep also finishes a refund that failed or was missed (a deleted
pack entitlement whose refund storage has not recorded).

Subscriptions (``PREMIUM_TIERS``) keep no state here: every request reads the member's
entitlements from the interaction, so a premium tier starts and stops with the
subscription. Their events are only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord.ext import commands

from abby_core.analytics import AuditEvent
from abby_core.errors import AbbyError

if TYPE_CHECKING:
    from abby_discord.bot import AbbyBot

__all__ = ["SWEEP_INTERVAL", "Store"]

log = logging.getLogger("abby.discord.store")

SWEEP_INTERVAL = 10 * 60.0
_SWEEP_LIMIT = 500  # entitlements read per sweep; the next sweep carries on where this one stopped
_SWEEP_TIMEOUT = 120.0
Change = Literal["created", "updated", "deleted"]


class Store(commands.Cog):
    """Credits for pack purchases, taken back on refunds; subscriptions logged."""

    def __init__(self, bot: AbbyBot) -> None:
        self.bot = bot
        section = bot.settings.discord
        self.packs = {pack.sku_id: pack for pack in section.credit_packs}
        self.tiers = {tier.sku_id: tier for tier in section.premium_tiers}
        self.sweep_interval = SWEEP_INTERVAL
        self.sweeps = 0  # sweeps finished (or failed) so far
        # Every pack entitlement with an id up to this one is settled: a sweep starts after it.
        self._settled_up_to: int | None = None
        self._busy: set[int] = set()  # entitlements being settled in this process
        self._refunded: set[int] = set()  # refunds handled by this process (a duplicate event is not recorded twice)
        self._task: asyncio.Task[None] | None = None

    async def cog_load(self) -> None:
        if self.packs and self.bot.primary:
            self._task = asyncio.create_task(self._sweep_loop(), name="abby-store-sweep")

    async def cog_unload(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    # -- gateway events --------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
        await self._changed(entitlement, "created")

    @commands.Cog.listener()
    async def on_entitlement_update(self, entitlement: discord.Entitlement) -> None:
        await self._changed(entitlement, "updated")

    @commands.Cog.listener()
    async def on_entitlement_delete(self, entitlement: discord.Entitlement) -> None:
        await self._changed(entitlement, "deleted")

    async def _changed(self, entitlement: discord.Entitlement, change: Change) -> None:
        if entitlement.sku_id in self.packs:
            if change == "deleted":
                await self.refund(entitlement)
            else:
                await self.settle(entitlement)
        elif entitlement.sku_id in self.tiers:
            self._log_subscription(entitlement, change)

    # -- credit packs ----------------------------------------------------------------------------
    async def settle(self, entitlement: discord.Entitlement) -> bool:
        """Credit a pack purchase (once, whoever asks) and then consume it.

        ``True`` when nothing is left to do: credited and consumed, consumed already, refunded,
        or not a pack a member can be credited for. ``False`` when it must be tried again (the
        sweep does): storage or Discord failed, or this process is settling it right now.
        """
        pack = self.packs.get(entitlement.sku_id)
        if pack is None or entitlement.consumed or entitlement.deleted:
            return True  # consumed means credited: crediting always comes first
        user_id = entitlement.user_id
        if user_id is None:
            log.warning("Pack entitlement %s belongs to a server, not a member: no credits given.", entitlement.id)
            return True
        if entitlement.id in self._busy:
            return False
        self._busy.add(entitlement.id)
        try:
            try:
                new = await self.bot.storage.add_credits(user_id, pack.credits, source=_source(entitlement))
            except AbbyError as exc:
                log.error(
                    "Could not credit pack entitlement %s of member %s (retried by the next sweep): %s",
                    entitlement.id, user_id, exc.message,
                )
                return False
            if new:
                log.info(
                    "Member %s bought %d credit(s) (SKU %s, entitlement %s).",
                    user_id, pack.credits, entitlement.sku_id, entitlement.id,
                )
                await self._audit("credit_purchase", entitlement, pack.credits)
            return await self._consume(entitlement)
        finally:
            self._busy.discard(entitlement.id)

    async def _consume(self, entitlement: discord.Entitlement) -> bool:
        try:
            await entitlement.consume()
            return True
        except discord.HTTPException as exc:
            failure = exc
        # Another process may have consumed it first, or Discord refunded it meanwhile: ask.
        try:
            now = await self.bot.fetch_entitlement(entitlement.id)
        except discord.NotFound:
            return True
        except discord.HTTPException:
            now = None
        if now is not None and (now.consumed or now.deleted):
            log.debug("Entitlement %s was already %s.", entitlement.id, "consumed" if now.consumed else "deleted")
            return True
        log.warning(
            "Could not consume pack entitlement %s (its credits are given; the next sweep tries again): %s",
            entitlement.id, failure,
        )
        return False

    async def refund(self, entitlement: discord.Entitlement) -> int:
        """Take back the unspent credits of a refunded pack; returns how many were taken back.

        Idempotent (storage removes a source's credits once); a duplicate event in this process
        returns 0 without a second record. Credits already spent stay spent.
        """
        return await self._refund(entitlement) or 0

    async def _refund(self, entitlement: discord.Entitlement) -> int | None:
        """:meth:`refund`; ``None`` when storage failed (the sweep tries again)."""
        pack = self.packs.get(entitlement.sku_id)
        user_id = entitlement.user_id
        if pack is None or user_id is None or entitlement.id in self._refunded:
            return 0
        try:
            removed = await self.bot.storage.refund_credits(user_id, source=_source(entitlement))
        except AbbyError as exc:
            log.error(
                "Could not take back the credits of refunded entitlement %s (retried by the next sweep): %s",
                entitlement.id, exc.message,
            )
            return None
        self._refunded.add(entitlement.id)
        log.info(
            "Pack entitlement %s of member %s was refunded: %d of its %d credit(s) taken back (the rest were spent).",
            entitlement.id, user_id, removed, pack.credits,
        )
        await self._audit("credit_refund", entitlement, removed)
        return removed

    async def _audit(
        self, action: Literal["credit_purchase", "credit_refund"], entitlement: discord.Entitlement, credits: int
    ) -> None:
        events = self.bot.service.events
        if events is None or entitlement.user_id is None:
            return
        record = AuditEvent.of_credits(
            action, entitlement.user_id, credits, actor="store", time=self.bot.storage.clock(),
            sku_id=entitlement.sku_id, entitlement_id=entitlement.id,
        )
        await events.arecord_audit(record)  # never raises

    # -- the sweep -------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Settle every pack entitlement not consumed yet, and every refunded one whose refund
        storage has not recorded (a missed event, a failure, a process that stopped).

        Reads at most a few hundred entitlements, starting after the last one known settled;
        returns how many were settled now. Discord errors propagate.
        """
        skus = [discord.Object(sku_id) for sku_id in self.packs]
        start = discord.Object(self._settled_up_to) if self._settled_up_to is not None else None
        settled, unsettled, last = 0, None, None
        async for entitlement in self.bot.entitlements(skus=skus, exclude_ended=True, after=start, limit=_SWEEP_LIMIT):
            last = entitlement.id
            if entitlement.consumed or entitlement.deleted:
                continue
            if await self.settle(entitlement):
                settled += 1
            elif unsettled is None:
                unsettled = entitlement.id
        if unsettled is not None:
            self._settled_up_to = unsettled - 1
        elif last is not None:
            self._settled_up_to = last
        # Refunds: the most recent pack entitlements, deleted ones included (discord.py passes
        # ``exclude_deleted`` only when paging backwards, hence ``before``).
        async for entitlement in self.bot.entitlements(
            skus=skus, exclude_deleted=False, before=discord.utils.utcnow(), limit=_SWEEP_LIMIT
        ):
            if entitlement.deleted and await self._finish_refund(entitlement):
                settled += 1
        return settled

    async def _finish_refund(self, entitlement: discord.Entitlement) -> bool | None:
        """Finish the refund of a deleted pack entitlement: ``None`` when nothing was left to do,
        ``True`` when it was refunded now, ``False`` when storage failed (the next sweep tries again)."""
        user_id = entitlement.user_id
        if entitlement.sku_id not in self.packs or user_id is None or entitlement.id in self._refunded:
            return None
        try:
            if await self.bot.storage.credit_refunded(user_id, source=_source(entitlement)):
                self._refunded.add(entitlement.id)
                return None
        except AbbyError as exc:
            log.error("Could not check the refund of entitlement %s (the next sweep tries again): %s",
                      entitlement.id, exc.message)
            return False
        return await self._refund(entitlement) is not None

    async def _sweep_loop(self) -> None:
        await self.bot.wait_until_ready()
        while True:
            try:
                async with asyncio.timeout(_SWEEP_TIMEOUT):
                    settled = await self.sweep()
                if settled:
                    log.info("Store sweep: settled %d pack purchase(s) whose event was missed or unfinished.", settled)
            except TimeoutError:
                log.warning("Store sweep did not finish within %.0f s; the next one carries on.", _SWEEP_TIMEOUT)
            except discord.HTTPException as exc:
                log.warning("Store sweep could not list entitlements: %s", exc)
            except Exception:
                log.exception("Unexpected error in the store sweep.")
            finally:
                self.sweeps += 1
            await asyncio.sleep(self.sweep_interval)

    # -- subscriptions ---------------------------------------------------------------------------
    def _log_subscription(self, entitlement: discord.Entitlement, change: Change) -> None:
        tier = self.tiers[entitlement.sku_id]
        who = f"Member {entitlement.user_id}" if entitlement.user_id else f"Server {entitlement.guild_id}"
        if change == "deleted":
            log.info(
                "%s's subscription %s (SKU %s) was refunded or removed: role limits apply from the next request.",
                who, entitlement.id, entitlement.sku_id,
            )
        elif entitlement.ends_at is not None:
            log.info(
                "%s's subscription %s (SKU %s) ends %s: role limits apply after that.",
                who, entitlement.id, entitlement.sku_id, entitlement.ends_at.isoformat(),
            )
        else:
            log.info(
                "%s subscribed (SKU %s, entitlement %s): up to %d images a day and %g MB while it lasts.",
                who, entitlement.sku_id, entitlement.id, tier.daily_gens, tier.storage_mb,
            )


def _source(entitlement: discord.Entitlement) -> str:
    """The credit source of a pack purchase: one per entitlement, so crediting it twice gives nothing more."""
    return f"entitlement:{entitlement.id}"
