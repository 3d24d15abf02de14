"""The fake Discord's store (SKUs, entitlements, subscriptions), proven with discord.py's own client."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import discord
import pytest
from discord.ext import commands

from tests.fixtures.fake_discord import BotError, FakeDiscord, StoreRefused, shard_of

DURABLE_SKU, CONSUMABLE_SKU, SUBSCRIPTION_SKU, GROUP_SKU, GUILD_SKU = 101, 102, 103, 104, 105
CONSUME = r"/applications/\d+/entitlements/{}/consume"


class StoreBot(commands.Bot):
    """Records store events; ``/perks`` tells the caller's entitlements, ``/shop`` sells."""

    def __init__(self, shard_id: int | None = None, shard_count: int | None = None) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            shard_id=shard_id,
            shard_count=shard_count,
        )
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def setup_hook(self) -> None:
        @self.tree.command()
        async def perks(interaction: discord.Interaction) -> None:
            """List my entitlements."""
            ids = sorted(e.sku_id for e in interaction.entitlements)
            await interaction.response.send_message(" ".join(map(str, ids)) or "none", ephemeral=True)

        @self.tree.command()
        async def shop(interaction: discord.Interaction, label: str | None = None, sku: int = DURABLE_SKU) -> None:
            """Offer a purchase."""
            view = discord.ui.View()
            view.add_item(discord.ui.Button(style=discord.ButtonStyle.premium, sku_id=sku, label=label))
            await interaction.response.send_message("Buy it", view=view)

    async def on_entitlement_create(self, entitlement: discord.Entitlement) -> None:
        self.events.put_nowait(("entitlement_create", entitlement))

    async def on_entitlement_update(self, entitlement: discord.Entitlement) -> None:
        self.events.put_nowait(("entitlement_update", entitlement))

    async def on_entitlement_delete(self, entitlement: discord.Entitlement) -> None:
        self.events.put_nowait(("entitlement_delete", entitlement))

    async def on_subscription_create(self, subscription: discord.Subscription) -> None:
        self.events.put_nowait(("subscription_create", subscription))

    async def on_subscription_update(self, subscription: discord.Subscription) -> None:
        self.events.put_nowait(("subscription_update", subscription))

    async def next_event(self, timeout: float = 2.0) -> tuple[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def no_event(self, wait: float = 0.2) -> None:
        await asyncio.sleep(wait)
        assert self.events.empty(), f"unexpected event {self.events.get_nowait()}"


def add_skus(fake: FakeDiscord) -> None:
    fake.add_sku(DURABLE_SKU, "Lifetime", 2)
    fake.add_sku(CONSUMABLE_SKU, "Ten images", 3)
    fake.add_sku(SUBSCRIPTION_SKU, "Abby Plus", 5)
    fake.add_sku(GROUP_SKU, "Abby Plus", 6)
    fake.add_sku(GUILD_SKU, "Abby for servers", 5, flags=1 << 2 | 1 << 7)


@pytest.fixture
async def setup(fake_discord: FakeDiscord) -> tuple[FakeDiscord, StoreBot]:
    add_skus(fake_discord)
    bot = StoreBot()
    await fake_discord.run_bot(bot)
    return fake_discord, bot


async def test_fetch_skus_lists_what_the_test_configured(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    skus = {s.id: s for s in await bot.fetch_skus()}
    assert [(i, s.type.value) for i, s in skus.items()] == [(101, 2), (102, 3), (103, 5), (104, 6), (105, 5)]
    assert skus[SUBSCRIPTION_SKU].name == "Abby Plus" and skus[SUBSCRIPTION_SKU].slug == "abby-plus"
    assert skus[SUBSCRIPTION_SKU].flags.user_subscription and not skus[SUBSCRIPTION_SKU].flags.guild_subscription
    assert skus[GUILD_SKU].flags.guild_subscription and skus[GUILD_SKU].flags.available
    assert skus[DURABLE_SKU].application_id == fake.application_id


async def test_entitlement_listing_filters(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann, bob = fake.make_member(name="ann"), fake.make_member(name="bob")
    durable = await fake.purchase(ann, DURABLE_SKU)
    consumable = await fake.purchase(ann, CONSUMABLE_SKU)
    plus = await fake.purchase(bob, SUBSCRIPTION_SKU)
    server = await fake.purchase(bob, GUILD_SKU, guild_id=fake.guild)
    refunded = await fake.purchase(bob, DURABLE_SKU)
    await fake.refund(refunded["id"])
    await fake.end_subscription(plus["id"], dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))

    async def ids(**kw: Any) -> list[str]:
        return [str(e.id) async for e in bot.entitlements(**kw)]

    assert await ids() == [durable["id"], consumable["id"], plus["id"], server["id"]], "deleted ones are left out"
    assert await ids(user=discord.Object(ann.id)) == [durable["id"], consumable["id"]]
    assert await ids(skus=[discord.Object(DURABLE_SKU), discord.Object(GUILD_SKU)]) == [durable["id"], server["id"]]
    assert await ids(guild=discord.Object(fake.guild.id)) == [server["id"]]
    assert await ids(user=discord.Object(bob.id), exclude_ended=True) == [server["id"]]
    assert await ids(limit=2) == [durable["id"], consumable["id"]]
    assert await ids(after=discord.Object(int(consumable["id"]))) == [plus["id"], server["id"]]
    before = discord.Object(int(server["id"]))
    assert await ids(before=before, limit=2) == [consumable["id"], plus["id"]], "the two just before, ascending"
    # discord.py forwards exclude_deleted only with before=; Discord's default then is to exclude.
    assert await ids(exclude_deleted=False) == await ids()
    everything = await ids(before=discord.Object(int(refunded["id"]) + 1), exclude_deleted=False)
    assert refunded["id"] in everything

    fetched = await bot.fetch_entitlement(int(refunded["id"]))
    assert fetched.deleted and fetched.user_id == bob.id and fetched.type is discord.EntitlementType.purchase
    with pytest.raises(discord.HTTPException) as too_many:
        await bot.http.get_entitlements(fake.application_id, limit=101)
    assert too_many.value.status == 400 and too_many.value.code == 50035
    with pytest.raises(discord.NotFound) as unknown:
        await bot.fetch_entitlement(1)
    assert unknown.value.code == 10029


async def test_consume_once_then_refused(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann = fake.make_member(name="ann")
    bought = await fake.purchase(ann, CONSUMABLE_SKU)
    with pytest.raises(StoreRefused, match="unconsumed"):
        await fake.purchase(ann, CONSUMABLE_SKU)
    entitlement = await bot.fetch_entitlement(int(bought["id"]))
    assert not entitlement.consumed and not fake.entitlement(bought["id"])["consumed"]

    await entitlement.consume()
    assert fake.entitlement(bought["id"])["consumed"]
    assert (await bot.fetch_entitlement(entitlement.id)).consumed
    with pytest.raises(discord.HTTPException) as twice:
        await entitlement.consume()
    assert twice.value.status == 400
    assert fake.count_requests("POST", CONSUME.format(bought["id"])) == 2

    durable = await fake.purchase(ann, DURABLE_SKU)
    with pytest.raises(discord.HTTPException) as not_consumable:
        await (await bot.fetch_entitlement(int(durable["id"]))).consume()
    assert not_consumable.value.code == 40018
    assert not fake.entitlement(durable["id"])["consumed"]
    again = await fake.purchase(ann, CONSUMABLE_SKU)
    assert again["id"] != bought["id"], "once consumed, the consumable can be bought again"


async def test_test_entitlements_are_created_and_deleted(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann = fake.make_member(name="ann")
    user_owned = discord.EntitlementOwnerType.user
    await bot.create_entitlement(discord.Object(SUBSCRIPTION_SKU), discord.Object(ann.id), user_owned)
    name, created = await bot.next_event()
    assert name == "entitlement_create" and created.type is discord.EntitlementType.test_mode_purchase
    assert (created.user_id, created.sku_id) == (ann.id, SUBSCRIPTION_SKU)
    assert created.starts_at is None and created.ends_at is None, "valid in perpetuity"
    with pytest.raises(discord.HTTPException) as granted:
        await bot.create_entitlement(discord.Object(SUBSCRIPTION_SKU), discord.Object(ann.id), user_owned)
    assert granted.value.code == 40074
    with pytest.raises(discord.NotFound) as unknown:
        await bot.create_entitlement(discord.Object(999), discord.Object(ann.id), user_owned)
    assert unknown.value.code == 10027
    await bot.create_entitlement(
        discord.Object(GUILD_SKU), discord.Object(fake.guild.id), discord.EntitlementOwnerType.guild
    )
    _, for_guild = await bot.next_event()
    assert for_guild.guild_id == fake.guild.id and for_guild.user_id is None

    await created.delete()
    name, deleted = await bot.next_event()
    assert name == "entitlement_delete" and deleted.id == created.id and deleted.deleted
    assert fake.entitlement(created.id)["deleted"]
    assert [e.id async for e in bot.entitlements(user=discord.Object(ann.id))] == []

    bought = await fake.purchase(ann, DURABLE_SKU)
    await bot.next_event()
    with pytest.raises(discord.HTTPException) as not_a_test:
        await (await bot.fetch_entitlement(int(bought["id"]))).delete()
    assert not_a_test.value.code == 40019
    assert not fake.entitlement(bought["id"])["deleted"]


async def test_purchase_end_refund_and_duplicates_reach_the_bot(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann = fake.make_member(name="ann")
    bought = await fake.purchase(ann, DURABLE_SKU)
    name, entitlement = await bot.next_event()
    assert name == "entitlement_create" and str(entitlement.id) == bought["id"]
    assert entitlement.user_id == ann.id and entitlement.type is discord.EntitlementType.purchase

    duplicate = await fake.redispatch(bought["id"], "ENTITLEMENT_CREATE")
    assert duplicate.shards == [(0, 1)]
    name, again = await bot.next_event()
    assert (name, again.id) == ("entitlement_create", entitlement.id), "the same event a second time"
    await bot.no_event()

    await fake.refund(bought["id"])
    name, deleted = await bot.next_event()
    assert name == "entitlement_delete" and deleted.id == entitlement.id and deleted.deleted
    with pytest.raises(StoreRefused, match="already deleted"):
        await fake.refund(bought["id"])
    assert [e.name for e in fake.store_events] == ["ENTITLEMENT_CREATE", "ENTITLEMENT_CREATE", "ENTITLEMENT_DELETE"]


async def test_subscription_lifecycle_and_status_values(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann = fake.make_member(name="ann")
    bought = await fake.purchase(ann, SUBSCRIPTION_SKU)
    events = [await bot.next_event() for _ in range(3)]
    assert [name for name, _ in events] == ["subscription_create", "entitlement_create", "subscription_update"]
    assert events[0][1].status.value == 1 and events[2][1].status.value == 0
    assert events[1][1].ends_at is None and events[2][1].entitlement_ids == [int(bought["id"])]
    assert bought["type"] == 1, "subscription entitlements are PURCHASE since the 2024 migration"

    sku = next(s for s in await bot.fetch_skus() if s.id == SUBSCRIPTION_SKU)
    [subscription] = [s async for s in sku.subscriptions(user=discord.Object(ann.id))]
    assert subscription.id == int(bought["subscription_id"]) and subscription.status.value == 0
    assert [s async for s in sku.subscriptions(user=discord.Object(fake.owner.id))] == []

    await fake.cancel_subscription(bought["id"])
    name, cancelled = await bot.next_event()
    assert name == "subscription_update" and cancelled.status.value == 2 and cancelled.canceled_at is not None
    await bot.no_event()  # no entitlement event on cancelling
    fetched = await sku.fetch_subscription(subscription.id)
    assert fetched.status.value == 2, "ENDING is 2 in the API (discord.py 2.7 names it inactive)"

    renewed = await fake.renew(bought["id"])
    name, update = await bot.next_event()
    assert name == "subscription_update" and update.status.value == 0 and update.canceled_at is None
    assert renewed["current_period_start"] == events[2][1].current_period_end.isoformat()
    await bot.no_event()  # no ENTITLEMENT_UPDATE on a renewal any more

    ends = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    await fake.end_subscription(bought["id"], ends)
    name, ended = await bot.next_event()
    assert name == "entitlement_update" and ended.ends_at == ends
    name, inactive = await bot.next_event()
    assert name == "subscription_update" and inactive.status.value == 1
    assert fake.subscription(subscription.id)["status"] == 1
    with pytest.raises(discord.NotFound):
        await sku.fetch_subscription(1)


async def test_legacy_subscription_entitlements_move_on_renewal(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann = fake.make_member(name="ann")
    bought = await fake.purchase(ann, SUBSCRIPTION_SKU, entitlement_type=8)
    created = [await bot.next_event() for _ in range(3)][1][1]
    assert created.type is discord.EntitlementType.application_subscription and created.ends_at is not None
    await fake.renew(bought["id"], period=dt.timedelta(days=7))
    name, updated = await bot.next_event()
    assert name == "entitlement_update" and updated.ends_at == created.ends_at + dt.timedelta(days=7)


async def test_interactions_carry_the_members_entitlements(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, bot = setup
    ann, bob = fake.make_member(name="ann"), fake.make_member(name="bob")

    async def perks(member: Any) -> str | None:
        return (await (await fake.slash("perks", user=member)).response()).content

    assert await perks(ann) == "none"
    await fake.purchase(ann, SUBSCRIPTION_SKU)
    durable = await fake.purchase(ann, DURABLE_SKU)
    consumable = await fake.purchase(ann, CONSUMABLE_SKU)
    assert await perks(ann) == f"{DURABLE_SKU} {CONSUMABLE_SKU} {SUBSCRIPTION_SKU}"
    assert await perks(bob) == "none", "a user subscription is ann's alone"

    await fake.refund(durable["id"])
    await (await bot.fetch_entitlement(int(consumable["id"]))).consume()
    assert await perks(ann) == str(SUBSCRIPTION_SKU)
    await fake.purchase(ann, GUILD_SKU, guild_id=fake.guild.id)
    assert await perks(bob) == str(GUILD_SKU), "a guild subscription covers every member of the server"
    elsewhere = fake.make_member(bob.id, name="bob", guild=fake.make_guild("Elsewhere"))
    assert await perks(elsewhere) == "none"


async def test_premium_buttons_follow_discords_rules(setup: tuple[FakeDiscord, StoreBot]) -> None:
    fake, _ = setup
    ann = fake.make_member(name="ann")
    reply = await (await fake.slash("shop", user=ann)).response()
    button = reply.components[0]["components"][0]
    assert (button["style"], button["sku_id"]) == (6, str(DURABLE_SKU)) and "label" not in button
    assert reply.message is not None and reply.message["components"] == reply.components

    labelled = await fake.slash("shop", user=ann, options={"label": "Buy now"})
    with pytest.raises(BotError, match="Invalid Form Body") as refused:
        await labelled.response()
    error = refused.value.error.original  # type: ignore[attr-defined]
    assert error.code == 50035
    assert "cannot have a label" in str(error)
    unknown = await fake.slash("shop", user=ann, options={"sku": 999})
    with pytest.raises(BotError, match="Invalid SKU"):
        await unknown.response()


async def test_store_events_go_to_shard_zero_or_everywhere(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    add_skus(fake)
    second = fake.make_guild("Second", guild_id=fake.guild.id + (1 << 22))
    on_shard_one = next(g for g in (fake.guild, second) if shard_of(g.id, 2) == 1)
    bots = {0: StoreBot(0, 2), 1: StoreBot(1, 2)}
    await fake.run_bot(bots[0])
    await fake.run_bot(bots[1], alongside=True)
    # Bought in a server of shard 1, yet announced to shard 0: the event carries no guild.
    member = fake.make_member(name="there", guild=on_shard_one)

    bought = await fake.purchase(member, DURABLE_SKU)
    name, entitlement = await bots[0].next_event()
    assert name == "entitlement_create" and str(entitlement.id) == bought["id"]
    await bots[1].no_event()
    assert fake.store_events[-1].shards == [(0, 2)]

    both = await fake.redispatch(bought["id"], "ENTITLEMENT_CREATE", everywhere=True)
    assert both.shards == [(0, 2), (1, 2)]
    for bot in bots.values():
        assert (await bot.next_event())[1].id == entitlement.id
