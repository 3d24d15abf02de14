"""Usage charts in Discord: /abby-admin stats attaches the server's last 30 days, /quota the member's own."""

from __future__ import annotations

import discord
import pytest

from abby_core.errors import DailyLimitExceeded
from abby_discord.charts import CHART_SIZE, IMAGES, REFUSALS, SPARKLINE_SIZE
from tests.discord.conftest import Abby, field, refusal, result_of
from tests.discord.test_charts import bars, columns, decode
from tests.fixtures.fake_discord import CapturedRequest, FakeMember


@pytest.fixture
def moderator(abby: Abby) -> FakeMember:
    mods = abby.fake.make_role("mods", permissions=discord.Permissions(manage_guild=True))
    return abby.fake.make_member(name="mod", roles=[mods])


async def _reply(abby: Abby, command: str, user: FakeMember) -> CapturedRequest:
    handle = await abby.fake.slash(command, user=user)
    assert (await handle.response()).type == 5
    reply = await handle.followup()
    assert handle.original is not None and handle.original["flags"] & 64, "private answer"
    return reply


def _chart(reply: CapturedRequest) -> bytes:
    """The one PNG attached to ``reply``, checked to be the embed's image."""
    [upload] = reply.files
    [embed] = reply.embeds
    assert upload.filename.endswith(".png")
    assert embed["image"]["url"] == f"attachment://{upload.filename}"
    assert reply.message is not None and [a["filename"] for a in reply.message["attachments"]] == [upload.filename]
    return upload.data


async def _use(abby: Abby, member: FakeMember, images: int, *, refused: bool = False) -> None:
    for n in range(images):
        await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": f"picture {n}"}))
    if refused:
        error, _ = await refusal(await abby.fake.slash("imagine", user=member, options={"prompt": "one more"},
                                                       expect_error=True))
        assert isinstance(error, DailyLimitExceeded)
    assert abby.bot is not None
    await abby.bot.service.flush_events()


async def test_stats_and_quota_show_the_last_30_days(abby: Abby, moderator: FakeMember) -> None:
    await abby.start(MAX_USER_DAILY_GENS=2)
    assert abby.bot is not None and abby.bot.service.events is not None
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    await _use(abby, ann, 2, refused=True)
    # A day later, after the nightly compaction: yesterday is read from its daily summary.
    abby.clock.advance(days=1, minutes=30)
    assert [r.status for r in abby.bot.service.events.compact_finished()] == ["compacted"]
    await _use(abby, ann, 1)

    stats = await _reply(abby, "abby-admin stats", moderator)
    assert field(stats.embeds[0], "Last 30 days") == "3 image(s) · 1 refused · 0 failed"
    chart = decode(_chart(stats))
    assert chart.size == CHART_SIZE
    yesterday, today = bars(chart, IMAGES)
    assert yesterday == pytest.approx(2 * today, abs=1)
    refused = columns(chart, REFUSALS)
    assert len(max(refused.values(), key=len)) == pytest.approx(today, abs=1), "the refusal stacked on yesterday"

    quota = await _reply(abby, "quota", ann)
    assert field(quota.embeds[0], "Your last 30 days") == "3 images on 2 days"
    assert field(quota.embeds[0], "Today") == "1 of 2 used · 1 left", "the quota answer is unchanged"
    line = decode(_chart(quota))
    assert line.size == SPARKLINE_SIZE
    yesterday, today = bars(line, IMAGES)
    assert yesterday == pytest.approx(2 * today, abs=1)

    nothing = await _reply(abby, "quota", bob)
    assert field(nothing.embeds[0], "Your last 30 days") == "No images in the last 30 days."
    assert nothing.files == [] and "image" not in nothing.embeds[0]


async def test_stats_without_events_say_so_and_attach_nothing(abby: Abby, moderator: FakeMember) -> None:
    await abby.start()
    stats = await _reply(abby, "abby-admin stats", moderator)
    assert field(stats.embeds[0], "Last 30 days").startswith("No usage recorded yet")
    assert stats.files == [] and "image" not in stats.embeds[0]
    assert stats.message is not None and stats.message["attachments"] == []
