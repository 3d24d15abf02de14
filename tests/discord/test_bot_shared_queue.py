"""GENERATION_QUEUE=shared: two bot processes (shards 0 and 1) on one storage have one queue,
one MAX_CONCURRENT_GENERATIONS, and the place a member is told counts both processes."""

from __future__ import annotations

import asyncio

import pytest

from abby_core.generation import ImageGenerator
from tests.discord.conftest import Abby, GatedProvider, field, result_of
from tests.discord.test_bot_shards import guilds_by_shard

SHARED = {"SHARD_COUNT": "2", "GENERATION_QUEUE": "shared", "MAX_CONCURRENT_GENERATIONS": "1"}


# Process 1's clock: right, or 90 s off either way (docs/SCALING.md: up to 2 minutes apart are safe).
@pytest.mark.parametrize("offset", [0, 90, -90])
async def test_one_queue_and_one_limit_across_two_processes(abby: Abby, second_abby: Abby, offset: int) -> None:
    second_abby.clock.advance(seconds=offset)
    fake = abby.fake
    guilds = guilds_by_shard(fake)
    ann = fake.make_member(name="ann", guild=guilds[0])
    bob = fake.make_member(name="bob", guild=guilds[1])
    cat = fake.make_member(name="cat", guild=guilds[0])
    gate0, gate1 = GatedProvider(), GatedProvider()
    await abby.start(generator=ImageGenerator(provider=gate0), SHARD_IDS="0", **SHARED)
    bot1 = await second_abby.start(generator=ImageGenerator(provider=gate1), alongside=True, SHARD_IDS="1", **SHARED)
    assert bot1.limiter.shared is not None

    # ann's image runs in process 0 and takes the one slot the two processes share.
    running = await fake.slash("imagine", user=ann, options={"prompt": "first"})
    await asyncio.wait_for(gate0.entered.wait(), 5)
    # bob asks process 1: he waits, first in line, though process 1 runs nothing itself.
    second = await fake.slash("imagine", user=bob, options={"prompt": "second"})
    assert (await second.response()).type == 5
    assert (await second.edit()).content.startswith("⏳ Queued — position 1.")
    # cat asks process 0 after him: second in line.
    third = await fake.slash("imagine", user=cat, options={"prompt": "third"})
    await third.response()
    assert (await third.edit()).content.startswith("⏳ Queued — position 2.")
    assert (gate0.calls, gate1.calls) == (1, 0)

    gate0.gate.set()
    gate1.gate.set()
    await result_of(running)
    done = await result_of(second, responded=True)
    assert field(done.embeds[0], "Your quota").startswith("1/5 today")
    await result_of(third, responded=True)
    assert (gate0.calls, gate1.calls) == (2, 1), "bob's image was made by process 1, after ann's"
    positions = [(e.content or "").split(".")[0] for e in third.edits[:2]]
    assert positions == ["⏳ Queued — position 2", "⏳ Queued — position 1"]
