"""/abby-admin: hidden from members, refused at run time to non-admins, and each subcommand."""

from __future__ import annotations

import discord
import pytest

from abby_core.errors import UserBlocked
from abby_discord.errors import NotAdmin
from abby_discord.render import mb
from tests.discord.conftest import Abby, field, refusal, result_of
from tests.fixtures.fake_discord import CommandNotVisible, FakeMember


async def _admin(abby: Abby, command: str, user: FakeMember, **kw: object) -> str:
    """Run an admin subcommand; return the private reply's text (content plus embed)."""
    handle = await abby.fake.slash(f"abby-admin {command}", user=user, **kw)  # type: ignore[arg-type]
    assert (await handle.response()).type == 5
    reply = await handle.followup()
    assert handle.original is not None and handle.original["flags"] & 64, "admin answers are private"
    parts = [reply.content or ""]
    for embed in reply.embeds:
        parts += [embed.get("title", ""), embed.get("description") or ""]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields") or []]
    return "\n".join(parts)


@pytest.fixture
def moderator(abby: Abby) -> FakeMember:
    mods = abby.fake.make_role("mods", permissions=discord.Permissions(manage_guild=True))
    return abby.fake.make_member(name="mod", roles=[mods])


async def test_non_admins_cannot_see_or_use_admin_commands(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    assert abby.fake.command("abby-admin")["default_member_permissions"] == str(
        discord.Permissions(manage_guild=True).value
    )
    with pytest.raises(CommandNotVisible):
        await abby.fake.slash("abby-admin stats", user=member)
    # a server owner may re-grant the command to anyone; the bot still refuses non-admins
    handle = await abby.fake.slash(
        "abby-admin block", user=member, options={"user": member}, bypass_permissions=True, expect_error=True
    )
    error, reply = await refusal(handle)
    assert isinstance(error, NotAdmin)
    assert "for server admins" in (reply.content or "")
    assert abby.storage is not None and not (await abby.storage.get_quota_status(member.id)).blocked


async def test_admin_role_ids_grant_the_commands(abby: Abby) -> None:
    helpers = abby.fake.make_role("helpers")
    await abby.start(ADMIN_ROLE_IDS=str(helpers.id))
    helper = abby.fake.make_member(name="helper", roles=[helpers])
    text = await _admin(abby, "stats", helper, bypass_permissions=True)
    assert "Abby usage" in text


async def test_stats_and_cleanup(abby: Abby, moderator: FakeMember) -> None:
    await abby.start()
    ann = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "old picture"}))
    stats = await _admin(abby, "stats", moderator)
    assert f"1. <@{ann.id}> — 0." in stats
    assert "Provider credits: not applicable (local provider)" in stats
    assert "Members with images: 1" in stats

    nothing = await _admin(abby, "cleanup", moderator)
    assert "removed 0 image(s)" in nothing
    abby.clock.advance(days=8)
    cleaned = await _admin(abby, "cleanup", moderator)
    assert "removed 1 image(s)" in cleaned and "from 1 member(s)" in cleaned
    assert abby.storage is not None and await abby.storage.list_images(ann.id) == []


async def test_stats_shows_stability_credits(abby: Abby, moderator: FakeMember, stability_generator: object) -> None:
    await abby.start(generator=stability_generator(), IMAGE_PROVIDER="stability")  # type: ignore[operator]
    assert "Provider credits: 42.5" in await _admin(abby, "stats", moderator)


async def test_quota_grant_and_reset(abby: Abby, moderator: FakeMember) -> None:
    await abby.start(MAX_USER_DAILY_GENS=1)
    ann = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "a"}))
    assert "Today: 1 of 1 used · 0 left" in await _admin(abby, "quota", moderator, options={"user": ann})

    granted = await _admin(abby, "grant", moderator, options={"user": ann, "count": 2})
    assert "2 extra generation(s)" in granted and "1/3 used" in granted
    result = await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "b"}))
    assert field(result.embeds[0], "Your quota").startswith("2/3 today")

    await _admin(abby, "reset", moderator, options={"user": ann})
    assert abby.storage is not None
    status = await abby.storage.get_quota_status(ann.id)
    assert (status.daily_used, status.daily_limit) == (0, 1)


async def test_block_and_unblock(abby: Abby, moderator: FakeMember) -> None:
    await abby.start()
    ann = abby.fake.make_member(name="ann")
    assert "can no longer generate" in await _admin(abby, "block", moderator, options={"user": ann})
    error, reply = await refusal(
        await abby.fake.slash("imagine", user=ann, options={"prompt": "a"}, expect_error=True)
    )
    assert isinstance(error, UserBlocked)
    assert "blocked from generating images" in (reply.content or "")
    assert "Blocked" in await _admin(abby, "quota", moderator, options={"user": ann})

    assert "can generate images again" in await _admin(abby, "unblock", moderator, options={"user": ann})
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "a"}))


async def test_stats_show_the_leases_of_the_global_budget(abby: Abby, moderator: FakeMember) -> None:
    await abby.start(STORAGE_ESCROW="true")
    ann = abby.fake.make_member(name="ann")
    assert "Leased by bot processes" not in await _admin(abby, "stats", moderator)
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "from the lease"}))
    stats = await _admin(abby, "stats", moderator)
    assert abby.storage is not None and abby.storage.escrow is not None
    assert f"Leased by bot processes ({mb(abby.storage.escrow.view().granted)} MB)" in stats
    assert abby.storage.escrow.owner in stats
    assert f"1. <@{ann.id}> — 0." in stats  # this process's members are settled before the figures
