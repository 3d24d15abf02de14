"""Quota sold through Discord's store: credit packs, subscriptions, refunds, through the real bot."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import discord
import pytest

from abby_core.errors import DailyLimitExceeded, StorageUnavailable, UserStorageFull
from abby_discord.cogs.store import Store
from tests.discord.conftest import Abby, field, refusal, result_of
from tests.discord.test_bot_shards import guilds_by_shard
from tests.fixtures.fake_discord import FakeDiscord, FakeMember

PACK, PLUS, OTHER_PACK = 1_234_567_890_001, 1_234_567_890_002, 1_234_567_890_003
PACK_CREDITS = 3
SELLS = {"CREDIT_PACKS": f"{PACK}:{PACK_CREDITS}", "PREMIUM_TIERS": f"{PLUS}:3:1000"}


def consumes(fake: FakeDiscord, entitlement_id: object) -> int:
    return fake.count_requests("POST", rf"/applications/\d+/entitlements/{entitlement_id}/consume")


async def eventually(check: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until ``check()`` (sync or async) is true: store events are handled in the background."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def credits(abby: Abby, member: FakeMember) -> int:
    assert abby.storage is not None
    return (await abby.storage.get_quota_status(member.id)).credits


def audits(abby: Abby, action: Any) -> list[Any]:
    assert abby.bot is not None and abby.bot.service.events is not None
    return abby.bot.service.events.audit_events(action=action)


def store_cog(abby: Abby) -> Any:
    """The running bot's store cog (its class is re-imported with each bot: compare names, not classes)."""
    assert abby.bot is not None
    cog = abby.bot.get_cog("Store")
    assert cog is not None and type(cog).__name__ == Store.__name__
    return cog


def add_skus(fake: FakeDiscord) -> None:
    fake.add_sku(PACK, "Three images", 3)
    fake.add_sku(OTHER_PACK, "Not for sale here", 3)
    fake.add_sku(PLUS, "Abby Plus", 5)


async def start_selling(abby: Abby, **env: Any) -> None:
    add_skus(abby.fake)
    await abby.start(**{**SELLS, **env})
    cog = store_cog(abby)
    await eventually(lambda: cog.sweeps >= 1, "the startup sweep")


async def buy_pack(abby: Abby, member: FakeMember, **kw: Any) -> dict[str, Any]:
    bought = await abby.fake.purchase(member, PACK, **kw)
    await eventually(lambda: abby.fake.entitlement(bought["id"])["consumed"], "the pack to be consumed")
    return bought


def premium_buttons(reply: Any) -> list[dict[str, Any]]:
    return [item for row in reply.components for item in row["components"]]


async def test_a_pack_purchase_credits_once_and_is_consumed(abby: Abby) -> None:
    await start_selling(abby)
    ann = abby.fake.make_member(name="ann")

    bought = await buy_pack(abby, ann)
    assert await credits(abby, ann) == PACK_CREDITS
    assert consumes(abby.fake, bought["id"]) == 1
    [record] = audits(abby, "credit_purchase")
    assert (record.actor, record.target) == ("store", str(ann.id))
    assert record.details == {"credits": PACK_CREDITS, "sku_id": PACK, "entitlement_id": int(bought["id"])}

    # The same event again (Discord may send one twice): nothing more is credited or consumed.
    await abby.fake.redispatch(bought["id"], "ENTITLEMENT_CREATE")
    await abby.fake.redispatch(bought["id"], "ENTITLEMENT_UPDATE")
    await asyncio.sleep(0.3)
    assert await credits(abby, ann) == PACK_CREDITS
    assert consumes(abby.fake, bought["id"]) == 1
    assert len(audits(abby, "credit_purchase")) == 1

    # Consumed, the pack can be bought again: a second purchase is a second source of credits.
    again = await buy_pack(abby, ann)
    assert await credits(abby, ann) == 2 * PACK_CREDITS and consumes(abby.fake, again["id"]) == 1

    # A consumable the server does not sell is left alone.
    other = await abby.fake.purchase(ann, OTHER_PACK)
    await asyncio.sleep(0.3)
    assert not abby.fake.entitlement(other["id"])["consumed"] and consumes(abby.fake, other["id"]) == 0
    assert await credits(abby, ann) == 2 * PACK_CREDITS


async def test_a_crash_between_crediting_and_consuming_is_finished_by_the_startup_sweep(
    abby: Abby, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_selling(abby)
    ann = abby.fake.make_member(name="ann")
    credited = asyncio.Event()

    async def process_dies(self: discord.Entitlement) -> None:
        credited.set()
        raise ConnectionResetError("the process stopped before consuming")

    monkeypatch.setattr(discord.Entitlement, "consume", process_dies)
    bought = await abby.fake.purchase(ann, PACK)
    await asyncio.wait_for(credited.wait(), 5)
    assert await credits(abby, ann) == PACK_CREDITS, "credited before consuming"
    assert not abby.fake.entitlement(bought["id"])["consumed"]
    monkeypatch.undo()

    await abby.restart()
    cog = store_cog(abby)
    await eventually(lambda: cog.sweeps >= 1, "the startup sweep of the new process")
    assert abby.fake.entitlement(bought["id"])["consumed"], "the sweep consumed it"
    assert consumes(abby.fake, bought["id"]) == 1
    assert await credits(abby, ann) == PACK_CREDITS, "and did not credit it twice"
    assert len(audits(abby, "credit_purchase")) == 1


async def test_a_failed_consume_is_retried_by_the_next_sweep(abby: Abby) -> None:
    await start_selling(abby)
    ann = abby.fake.make_member(name="ann")
    cog = store_cog(abby)
    real = discord.Entitlement.consume
    failures = 0

    async def discord_fails_once(self: discord.Entitlement) -> None:
        nonlocal failures
        if not failures:
            failures += 1
            response = type("Response", (), {"status": 503, "reason": "Service Unavailable"})()
            raise discord.HTTPException(response, "try later")  # type: ignore[arg-type]
        await real(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(discord.Entitlement, "consume", discord_fails_once)
        bought = await abby.fake.purchase(ann, PACK)
        await eventually(lambda: failures == 1, "the failed consume")
        await eventually(lambda: abby.fake.count_requests("GET", rf"/applications/\d+/entitlements/{bought['id']}"),
                         "the check after the failure")
        assert not abby.fake.entitlement(bought["id"])["consumed"]
        assert await cog.sweep() == 1
    assert abby.fake.entitlement(bought["id"])["consumed"]
    assert await credits(abby, ann) == PACK_CREDITS
    assert await cog.sweep() == 0, "nothing left to settle"


async def test_a_refund_takes_back_the_unspent_credits(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_DAILY_GENS=1)
    ann = abby.fake.make_member(name="ann")
    bought = await buy_pack(abby, ann)
    for prompt in ("free", "paid"):
        await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": prompt}))
    assert await credits(abby, ann) == PACK_CREDITS - 1

    await abby.fake.refund(bought["id"])
    await eventually(lambda: audits(abby, "credit_refund"), "the refund")
    assert await credits(abby, ann) == 0
    [record] = audits(abby, "credit_refund")
    assert record.details["credits"] == PACK_CREDITS - 1 and record.target == str(ann.id)

    await abby.fake.redispatch(bought["id"], "ENTITLEMENT_DELETE")  # the same refund, announced twice
    await asyncio.sleep(0.3)
    assert len(audits(abby, "credit_refund")) == 1 and await credits(abby, ann) == 0

    handle = await abby.fake.slash("imagine", user=ann, options={"prompt": "no credits left"}, expect_error=True)
    error, _ = await refusal(handle)
    assert isinstance(error, DailyLimitExceeded)


async def test_a_refund_that_meets_a_storage_error_is_settled_by_the_sweep(
    abby: Abby, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_selling(abby)
    ann = abby.fake.make_member(name="ann")
    cog = store_cog(abby)
    bought = await buy_pack(abby, ann)
    assert abby.storage is not None
    real = abby.storage.refund_credits
    failures = 0

    async def storage_fails_once(user_id: object, *, source: str) -> int:
        nonlocal failures
        if not failures:
            failures += 1
            raise StorageUnavailable("storage is away (test)")
        return await real(user_id, source=source)

    monkeypatch.setattr(abby.storage, "refund_credits", storage_fails_once)
    await abby.fake.refund(bought["id"])
    await eventually(lambda: failures == 1, "the refund that failed")
    assert await credits(abby, ann) == PACK_CREDITS and not audits(abby, "credit_refund")

    assert await cog.sweep() == 1, "the sweep settles the refund that did not land"
    assert await credits(abby, ann) == 0
    [record] = audits(abby, "credit_refund")
    assert record.details["credits"] == PACK_CREDITS
    assert await cog.sweep() == 0, "nothing left to settle"
    monkeypatch.undo()
    await abby.restart()  # a new process sweeps from the start: a refund that landed is not made twice
    again = store_cog(abby)
    await eventually(lambda: again.sweeps >= 1, "the startup sweep of the new process")
    assert len(audits(abby, "credit_refund")) == 1 and await credits(abby, ann) == 0


async def test_two_processes_receiving_the_same_event_credit_once(abby: Abby, second_abby: Abby) -> None:
    fake = abby.fake
    guilds = guilds_by_shard(fake)
    ann = fake.make_member(name="ann", guild=guilds[1])  # bought in shard 1's server, announced to shard 0
    add_skus(fake)
    await abby.start(SHARD_COUNT="2", SHARD_IDS="0", **SELLS)
    await second_abby.start(alongside=True, SHARD_COUNT="2", SHARD_IDS="1", **SELLS)
    assert second_abby.bot is not None and not second_abby.bot.primary
    await eventually(lambda: store_cog(abby).sweeps >= 1, "the startup sweep")

    bought = await fake.purchase(ann, PACK, everywhere=True)
    assert fake.store_events[-1].shards == [(0, 2), (1, 2)], "both processes got the event"
    await eventually(lambda: fake.entitlement(bought["id"])["consumed"], "the pack to be consumed")
    await asyncio.sleep(0.3)  # let the slower process finish too
    assert await credits(abby, ann) == PACK_CREDITS
    assert await credits(second_abby, ann) == PACK_CREDITS
    assert 1 <= consumes(fake, bought["id"]) <= 2
    assert len(audits(abby, "credit_purchase")) == 1, "one purchase recorded"


async def test_past_the_daily_limit_a_credit_pays_and_quota_shows_it(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_DAILY_GENS=1)
    ann = abby.fake.make_member(name="ann")
    await buy_pack(abby, ann)

    first = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "included"}))
    assert field(first.embeds[0], "Your quota").startswith("1/1 today")
    assert field(first.embeds[0], "Your quota").endswith("· 3 credits")
    paid = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "with a credit"}))
    assert field(paid.embeds[0], "Your quota").endswith("· 2 credits")

    handle = await abby.fake.slash("quota", user=ann)
    await handle.response()
    embed = (await handle.followup()).embeds[0]
    assert field(embed, "Credits").startswith("2 credits")

    assert abby.bot is not None and abby.bot.service.events is not None
    await abby.bot.service.flush_events()
    summary = abby.bot.service.events.summary(1)
    assert (summary.images, summary.credits_spent) == (2, 1)


async def test_without_credits_the_refusal_offers_premium_buttons(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_DAILY_GENS=1)
    ann = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "the only one"}))

    error, reply = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "more"},
                                                       expect_error=True))
    assert isinstance(error, DailyLimitExceeded)
    assert "all 1 of your image generations" in (reply.content or "")
    assert "pack of credits below" in (reply.content or "") and "subscribe" in (reply.content or "")
    offered = premium_buttons(reply)
    assert [(b["style"], b["sku_id"]) for b in offered] == [(6, str(PACK)), (6, str(PLUS))]
    assert all(set(b) <= {"type", "style", "sku_id", "disabled", "id"} for b in offered), offered
    assert reply.message is not None and reply.message["components"], "Discord accepted the buttons"


async def test_storage_full_offers_the_subscription_only(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_STORAGE_MB=1.5, IMAGE_GEN_SIZE_MB=1.5)
    ann = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "fills it"}))
    error, reply = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "no room"},
                                                       expect_error=True))
    assert isinstance(error, UserStorageFull)
    assert "subscribe below" in (reply.content or "")
    assert [b["sku_id"] for b in premium_buttons(reply)] == [str(PLUS)]

    await abby.fake.purchase(ann, PLUS)
    made = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "room now"}))
    assert " of 1000 MB" in field(made.embeds[0], "Your quota"), "the subscription's storage applies"


async def test_a_subscription_raises_the_daily_limit_while_it_lasts(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_DAILY_GENS=1)
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    plus = await abby.fake.purchase(ann, PLUS)

    for n in (1, 2):
        made = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": f"plus {n}"}))
        assert field(made.embeds[0], "Your quota").startswith(f"{n}/3 today")
    await result_of(await abby.fake.slash("imagine", user=bob, options={"prompt": "bob's"}))
    error, _ = await refusal(await abby.fake.slash("imagine", user=bob, options={"prompt": "x"}, expect_error=True))
    assert isinstance(error, DailyLimitExceeded) and error.limit == 1, "bob has no subscription"

    quota = await abby.fake.slash("quota", user=ann)
    await quota.response()
    embed = (await quota.followup()).embeds[0]
    assert field(embed, "Today").startswith("2 of 3 used")
    assert field(embed, "Subscription").startswith("Active · up to 3 images a day")

    await abby.fake.end_subscription(plus["id"], dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    error, reply = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "after"},
                                                       expect_error=True))
    assert isinstance(error, DailyLimitExceeded) and error.limit == 1, "back to the default after it ended"
    assert premium_buttons(reply), "and offered to buy again"
    assert store_cog(abby).packs and consumes(abby.fake, plus["id"]) == 0, "a subscription is never consumed"
    quota = await abby.fake.slash("quota", user=ann)
    await quota.response()
    embed = (await quota.followup()).embeds[0]
    assert field(embed, "Today").startswith("2 of 1 used")
    assert "Subscription" not in [f["name"] for f in embed["fields"]]


async def test_a_server_subscription_raises_the_limit_of_every_member_of_that_server(abby: Abby) -> None:
    """A guild subscription SKU in PREMIUM_TIERS: interactions in the subscribed server carry the
    server's entitlement, so all its members get the tier; members elsewhere do not."""
    server_plus = 1_234_567_890_004
    abby.fake.add_sku(server_plus, "Abby Plus for servers", 5, flags=1 << 2 | 1 << 7)
    await start_selling(abby, MAX_USER_DAILY_GENS=1, PREMIUM_TIERS=f"{PLUS}:3:1000,{server_plus}:2:1000")
    elsewhere = abby.fake.make_guild("Another server")
    owner, ann = abby.fake.make_member(name="owner"), abby.fake.make_member(name="ann")
    cy = abby.fake.make_member(name="cy", guild=elsewhere)
    await abby.fake.purchase(owner, server_plus, guild_id=abby.fake.guild)

    for n in (1, 2):
        made = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": f"server plus {n}"}))
        assert field(made.embeds[0], "Your quota").startswith(f"{n}/2 today"), "ann never bought it herself"
    error, _ = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "3"}, expect_error=True))
    assert isinstance(error, DailyLimitExceeded) and error.limit == 2
    await result_of(await abby.fake.slash("imagine", user=cy, options={"prompt": "cy's"}))
    error, _ = await refusal(await abby.fake.slash("imagine", user=cy, options={"prompt": "x"}, expect_error=True))
    assert isinstance(error, DailyLimitExceeded) and error.limit == 1, "another server has no subscription"


async def test_admins_grant_credits(abby: Abby) -> None:
    await start_selling(abby, MAX_USER_DAILY_GENS=1)
    mods = abby.fake.make_role("mods", permissions=discord.Permissions(manage_guild=True))
    moderator = abby.fake.make_member(name="mod", roles=[mods])
    ann = abby.fake.make_member(name="ann")

    handle = await abby.fake.slash("abby-admin grant", user=moderator, options={"user": ann, "credits": 4})
    await handle.response()
    reply = (await handle.followup()).content or ""
    assert "got 4 credits" in reply and "4 credits to spend" in reply
    assert await credits(abby, ann) == 4
    [record] = audits(abby, "credit_grant")
    assert (record.actor, record.target, record.details) == (str(moderator.id), str(ann.id), {"credits": 4})

    both = await abby.fake.slash("abby-admin grant", user=moderator, options={"user": ann, "count": 1, "credits": 4})
    await both.response()
    text = (await both.followup()).content or ""
    assert "1 extra generation(s) for today and 4 credits" in text
    assert await credits(abby, ann) == 8, "each grant is its own source"
    assert len(audits(abby, "credit_grant")) == 2 and len(audits(abby, "grant")) == 1

    nothing = await abby.fake.slash("abby-admin grant", user=moderator, options={"user": ann}, expect_error=True)
    _, refused = await refusal(nothing)
    assert "Say what to give" in (refused.content or "")


async def test_a_server_that_sells_nothing_has_no_store(abby: Abby) -> None:
    add_skus(abby.fake)
    bot = await abby.start(MAX_USER_DAILY_GENS=1)
    assert bot.get_cog("Store") is None
    ann = abby.fake.make_member(name="ann")

    bought = await abby.fake.purchase(ann, PACK)
    await asyncio.sleep(0.3)
    assert not abby.fake.entitlement(bought["id"])["consumed"] and await credits(abby, ann) == 0
    assert abby.fake.count_requests("GET", r"/applications/\d+/entitlements") == 0, "no sweep"
    assert consumes(abby.fake, bought["id"]) == 0

    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "the only one"}))
    error, reply = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "more"},
                                                       expect_error=True))
    assert isinstance(error, DailyLimitExceeded)
    assert not reply.components and "credit" not in (reply.content or "") and "below" not in (reply.content or "")
    handle = await abby.fake.slash("quota", user=ann)
    await handle.response()
    embed = (await handle.followup()).embeds[0]
    assert "Credits" not in [f["name"] for f in embed.get("fields") or []]
