"""Content controls through the real bot: the prompt blocklist and the channels images are made in."""

from __future__ import annotations

import pytest

from abby_core.errors import InvalidPrompt
from abby_discord.errors import ChannelNotAllowed
from tests.discord.conftest import Abby, refusal, result_of


@pytest.mark.parametrize(
    "prompt",
    [
        "a GORE scene",
        "a g\u043er\u0435 scene",  # Cyrillic o and e
        "a g.o.r.e scene",
        "a g0re scene",
        "a gôre scene",
        "a \uff47\uff4f\uff52\uff45 scene",  # full-width letters
    ],
)
async def test_a_blocked_prompt_is_refused_privately_and_costs_nothing(abby: Abby, prompt: str) -> None:
    await abby.start(PROMPT_BLOCKLIST="gore, re:blood\\w*")
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": prompt}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, InvalidPrompt)
    assert "does not allow" in reply.content and "gore" not in reply.content.lower()
    status = await abby.status(member)
    assert (status.daily_used, status.in_flight) == (0, 0)


async def test_an_innocent_prompt_near_a_blocked_word_is_made(abby: Abby) -> None:
    await abby.start(PROMPT_BLOCKLIST="gore, ass")
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a glass of water in class"})
    result = await result_of(handle)
    assert result.embeds[0]["description"] == "a glass of water in class"


async def test_images_only_in_listed_channels(abby: Abby) -> None:
    studio = abby.fake.make_channel("studio")
    await abby.start(IMAGE_CHANNEL_IDS=str(studio.id))
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, ChannelNotAllowed)
    assert f"<#{studio.id}>" in reply.content
    assert (await abby.status(member)).daily_used == 0
    made = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, channel=studio)
    assert (await result_of(made)).embeds


async def test_images_only_in_age_restricted_channels(abby: Abby) -> None:
    restricted = abby.fake.make_channel("after-dark", nsfw=True)
    await abby.start(IMAGE_AGE_RESTRICTED_ONLY="true")
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, ChannelNotAllowed) and "age-restricted" in reply.content
    made = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, channel=restricted)
    assert (await result_of(made)).embeds
