"""One generation at a time per member, and a visible queue when the bot is at its global cap."""

from __future__ import annotations

import asyncio

import pytest

from abby_core.admission import UserBusy
from abby_core.errors import GenerationTimeout
from abby_core.generation import ImageGenerator
from tests.discord.conftest import Abby, GatedProvider, field, refusal, result_of


async def test_a_second_request_while_the_first_runs_is_refused_without_cost(abby: Abby) -> None:
    provider = GatedProvider()
    await abby.start(generator=ImageGenerator(provider=provider))
    member = abby.fake.make_member(name="ann")
    first = await abby.fake.slash("imagine", user=member, options={"prompt": "slow one"})
    await asyncio.wait_for(provider.entered.wait(), 5)

    second = await abby.fake.slash("imagine", user=member, options={"prompt": "impatient"}, expect_error=True)
    error, reply = await refusal(second)
    assert isinstance(error, UserBusy)
    assert reply.type == 4, "refused at once, before deferring"
    assert "still working on your last image" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 1, "only the first one is held"

    provider.gate.set()
    result = await result_of(first)
    assert field(result.embeds[0], "Your quota").startswith("1/5 today")
    assert provider.calls == 1
    again = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "now it's fine"}))
    assert field(again.embeds[0], "Your quota").startswith("2/5 today")


async def test_queue_position_is_shown_when_the_bot_is_at_its_cap(abby: Abby) -> None:
    provider = GatedProvider()
    await abby.start(generator=ImageGenerator(provider=provider), MAX_CONCURRENT_GENERATIONS=1)
    ann, bob, cat = (abby.fake.make_member(name=n) for n in ("ann", "bob", "cat"))
    running = await abby.fake.slash("imagine", user=ann, options={"prompt": "first"})
    await asyncio.wait_for(provider.entered.wait(), 5)

    second = await abby.fake.slash("imagine", user=bob, options={"prompt": "second"})
    assert (await second.response()).type == 5
    queued = (await second.edit()).content
    assert queued == "⏳ Queued — position 1. I'll start on your image as soon as a slot is free."
    third = await abby.fake.slash("imagine", user=cat, options={"prompt": "third"})
    await third.response()
    assert (await third.edit()).content.startswith("⏳ Queued — position 2.")
    assert provider.calls == 1

    provider.gate.set()
    await result_of(running)
    await result_of(second, responded=True)
    assert second.original is not None and second.original["embeds"], "the result replaced the queue message"
    assert second.original["content"] == ""
    await result_of(third, responded=True)
    positions = [(e.content or "").split(".")[0] for e in third.edits[:2]]
    assert positions == ["⏳ Queued — position 2", "⏳ Queued — position 1"]
    assert provider.calls == 3


async def test_a_generation_is_stopped_and_refunded_before_discord_stops_listening(
    abby: Abby, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    import abby_discord.cogs.generate.cog as cog

    monkeypatch.setattr(cog, "_ANSWER_WITHIN", timedelta(seconds=1))  # instead of Discord's 15 minutes
    provider = GatedProvider()  # never let through: the provider hangs
    await abby.start(generator=ImageGenerator(provider=provider))
    ann = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=ann, options={"prompt": "slow"}, expect_error=True)
    error, reply = await refusal(handle, timeout=8)
    assert isinstance(error, GenerationTimeout)
    assert "nothing was charged" in (reply.content or "").lower()
    status = await abby.status(ann)
    assert (status.daily_used, status.in_flight) == (0, 0)


async def test_a_request_while_another_bot_process_runs_the_members_first_is_refused(abby: Abby) -> None:
    from datetime import UTC, datetime

    from abby_core.storage import FilesystemBackend
    from abby_core.storage.slots import MemberSlots

    await abby.start()
    member = abby.fake.make_member(name="ann")
    assert abby.storage is not None
    # Another bot process on the same storage folder is generating for this member.
    other = MemberSlots(FilesystemBackend(abby.storage.backend.root), clock=lambda: datetime.now(UTC))  # type: ignore[attr-defined]
    lease = other.claim(str(member.id))
    assert lease is not None
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, UserBusy) and reply.type == 4
    assert (await abby.status(member)).daily_used == 0
    assert other.release(lease)
    done = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}))
    assert field(done.embeds[0], "Your quota").startswith("1/5 today")
    # The bot gave its own slot back: the other process can take the member's next one.
    assert other.holder(str(member.id)) is None
