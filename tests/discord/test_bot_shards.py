"""Two bot processes splitting the gateway by shard (SHARD_COUNT=2, SHARD_IDS=0 / 1) on one storage folder."""

from __future__ import annotations

import asyncio
import logging

import pytest

from abby_core.admission import UserBusy
from abby_core.generation import ImageGenerator
from tests.discord.conftest import Abby, GatedProvider, field, refusal, result_of
from tests.fixtures.fake_discord import FakeDiscord, FakeGuild, shard_of


def guilds_by_shard(fake: FakeDiscord) -> dict[int, FakeGuild]:
    """The fake's guild and a second one on the other shard of two (ids 2**22 apart)."""
    second = fake.make_guild("Second", guild_id=fake.guild.id + (1 << 22))
    found = {shard_of(fake.guild.id, 2): fake.guild, shard_of(second.id, 2): second}
    assert set(found) == {0, 1}
    return found


def command_syncs(fake: FakeDiscord) -> int:
    return sum(1 for r in fake.requests if r.method == "PUT" and r.path.endswith("/commands"))


async def test_two_shard_processes_split_guilds_and_share_member_limits(
    abby: Abby, second_abby: Abby, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="abby")
    fake = abby.fake
    guilds = guilds_by_shard(fake)
    ann = fake.make_member(name="ann", guild=guilds[0])
    ann_there = fake.make_member(ann.id, name="ann", guild=guilds[1])  # the same person, in both servers
    cat = fake.make_member(name="cat", guild=guilds[1])

    provider = GatedProvider()
    bot0 = await abby.start(
        generator=ImageGenerator(provider=provider), maintenance_delay=0, SHARD_COUNT="2", SHARD_IDS="0"
    )
    bot1 = await second_abby.start(maintenance_delay=0, alongside=True, SHARD_COUNT="2", SHARD_IDS="1")
    assert fake.shards == [(0, 2), (1, 2)]
    assert [g.id for g in bot0.guilds] == [guilds[0].id] and [g.id for g in bot1.guilds] == [guilds[1].id]
    assert bot0.primary and not bot1.primary
    assert command_syncs(fake) == 1, "only shard 0's process syncs the commands"
    assert "Running shard(s) 0 of 2" in caplog.text and "Running shard(s) 1 of 2" in caplog.text
    for _ in range(100):
        if bot0.maintenance_runs:
            break
        await asyncio.sleep(0.02)
    assert bot0.maintenance_runs >= 1 and bot1.maintenance_runs == 0, "maintenance runs in one process only"

    # ann's first image runs on shard 0 (held at the provider's door)...
    first = await fake.slash("imagine", user=ann, options={"prompt": "slow one"})
    await asyncio.wait_for(provider.entered.wait(), 5)
    # ...so shard 1's process refuses her there, from the slot both processes share.
    busy = await fake.slash("imagine", user=ann_there, options={"prompt": "impatient"}, expect_error=True)
    error, reply = await refusal(busy)
    assert isinstance(error, UserBusy) and reply.type == 4
    # Shard 1 answers its own guild meanwhile, with its own generator.
    other = await result_of(await fake.slash("imagine", user=cat, options={"prompt": "elsewhere"}))
    assert field(other.embeds[0], "Your quota").startswith("1/5 today")
    assert provider.calls == 1

    provider.gate.set()
    done = await result_of(first)
    assert field(done.embeds[0], "Your quota").startswith("1/5 today")
    again = await result_of(await fake.slash("imagine", user=ann_there, options={"prompt": "now it's fine"}))
    assert field(again.embeds[0], "Your quota").startswith("2/5 today"), "one quota across processes"
    assert provider.calls == 1, "shard 1's process generated it"
    assert command_syncs(fake) == 1
