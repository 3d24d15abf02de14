"""The fake Discord, proven with a tiny bot that lives in this file (not Abby's cogs)."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fixtures.fake_discord import (
    BotError,
    CommandNotVisible,
    FakeDiscord,
    FakeDiscordError,
    InvalidInteraction,
    WaitTimeout,
    shard_of,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LIKE_ID = "selftest:like"
MESSAGE = discord.InteractionResponseType.channel_message.value
DEFERRED = discord.InteractionResponseType.deferred_channel_message.value


class LikeView(discord.ui.View):
    """A persistent view: no timeout and a stable custom id."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Like", custom_id=LIKE_ID, style=discord.ButtonStyle.primary)
    async def like(self, interaction: discord.Interaction, button: discord.ui.Button[LikeView]) -> None:
        await interaction.response.send_message(f"liked by {interaction.user.id}", ephemeral=True)

    @discord.ui.button(label="Broken", custom_id="selftest:broken")
    async def broken(self, interaction: discord.Interaction, button: discord.ui.Button[LikeView]) -> None:
        raise RuntimeError("broken button")


def add_commands(tree: app_commands.CommandTree[TinyBot]) -> None:
    @tree.command()
    async def ping(interaction: discord.Interaction) -> None:
        """Answer privately."""
        await interaction.response.send_message("pong", ephemeral=True)

    @tree.command()
    async def render(interaction: discord.Interaction, prompt: str) -> None:
        """Defer, then send an embed and a file."""
        await interaction.response.defer(thinking=True)
        embed = discord.Embed(title=prompt).set_image(url="attachment://render.png")
        await interaction.followup.send(embed=embed, file=discord.File(io.BytesIO(PNG), "render.png"))

    @tree.command()
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        """Read an attachment and tell its size."""
        data = await image.read()
        await interaction.response.send_message(f"{image.filename}: {len(data)} bytes")

    @tree.command()
    async def roll(interaction: discord.Interaction, sides: app_commands.Range[int, 1, 10]) -> None:
        """Take a bounded integer."""
        await interaction.response.send_message(f"rolled {sides}")

    @tree.command()
    async def panel(interaction: discord.Interaction) -> None:
        """Post a message with a persistent button."""
        await interaction.response.send_message("panel", view=LikeView())

    @tree.command()
    async def progress(interaction: discord.Interaction) -> None:
        """Answer, then edit the answer."""
        await interaction.response.send_message("working")
        await interaction.edit_original_response(content="done")

    @tree.command()
    async def boom(interaction: discord.Interaction) -> None:
        """Fail."""
        raise RuntimeError("boom")

    @tree.command()
    async def slow(interaction: discord.Interaction) -> None:
        """Answer too late."""
        await asyncio.sleep(0.3)
        await interaction.response.send_message("late")

    @tree.command()
    async def twice(interaction: discord.Interaction) -> None:
        """Acknowledge twice, bypassing discord.py's own guard."""
        await interaction.response.send_message("one")
        interaction.response._response_type = None
        await interaction.response.send_message("two")

    @tree.command()
    async def shout(interaction: discord.Interaction, text: str) -> None:
        """Repeat the text ten times."""
        await interaction.response.send_message(text * 10)

    admin = app_commands.Group(
        name="admin", description="Server settings", default_permissions=discord.Permissions(manage_guild=True)
    )

    @admin.command()
    async def reset(interaction: discord.Interaction, member: discord.Member) -> None:
        """Reset a member."""
        await interaction.response.send_message(f"reset {member.id}", ephemeral=True)

    tree.add_command(admin)


class TinyBot(commands.Bot):
    def __init__(self, *, long_description: bool = False) -> None:
        super().__init__(command_prefix=commands.when_mentioned, intents=discord.Intents.default())
        self.long_description = long_description

    async def setup_hook(self) -> None:
        self.add_view(LikeView())
        add_commands(self.tree)
        if self.long_description:

            @self.tree.command()
            async def verbose(interaction: discord.Interaction) -> None:
                await interaction.response.send_message("x")

            verbose.description = "x" * 101


@pytest.fixture
async def fake(fake_discord: FakeDiscord) -> FakeDiscord:
    await fake_discord.run_bot(TinyBot())
    return fake_discord


async def test_startup_syncs_the_tree(fake: FakeDiscord) -> None:
    names = {c["name"] for c in fake.synced_commands}
    assert {"ping", "render", "describe", "roll", "panel", "admin"} <= names
    assert fake.command("admin")["default_member_permissions"] == str(discord.Permissions(manage_guild=True).value)
    sides = fake.command("roll")["options"][0]
    assert (sides["name"], sides["type"], sides["min_value"], sides["max_value"]) == ("sides", 4, 1, 10)


async def test_ping_answers_ephemerally(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    handle = await fake.slash("ping", user=member)
    reply = await handle.response()
    assert reply.type == MESSAGE
    assert reply.content == "pong"
    assert reply.ephemeral
    assert handle.original is not None and handle.original["flags"] & 64


async def test_deferred_followup_carries_embed_and_file(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    handle = await fake.slash("render", user=member, options={"prompt": "a cat"})
    assert (await handle.response()).type == DEFERRED
    followup = await handle.followup()
    assert followup.embeds[0]["title"] == "a cat"
    assert [(f.filename, f.data) for f in followup.files] == [("render.png", PNG)]
    # Discord: the first followup after a defer edits the loading message.
    assert followup.message is not None and handle.original is not None
    assert followup.message["id"] == handle.original["id"]
    assert not handle.original["flags"] & 64, "the defer was public, so the result is public"
    attachment = handle.original["attachments"][0]
    assert attachment["content_type"] == "image/png"
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as response:
        assert await response.read() == PNG


async def test_attachment_option_is_read_from_the_cdn(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    picture = fake.add_attachment("cat.png", b"x" * 1234, "image/png")
    handle = await fake.slash("describe", user=member, options={"image": picture})
    assert (await handle.response()).content == "cat.png: 1234 bytes"
    assert handle.payload["data"]["resolved"]["attachments"][picture["id"]]["size"] == 1234
    await fake.wait_for("GET", r"/cdn/attachments/.*/cat\.png", timeout=1)


async def test_options_are_checked_against_the_synced_schema(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    for options, problem in [
        ({"sides": 11}, "max_value 10"),
        ({"sides": 0}, "min_value 1"),
        ({"sides": "3"}, "expected an integer"),
        ({"sides": True}, "expected an integer"),
        ({}, "'sides' is required"),
        ({"sides": 3, "colour": "red"}, "no option"),
    ]:
        with pytest.raises(InvalidInteraction, match=problem):
            await fake.slash("roll", user=member, options=options)
    assert fake.dispatched == []
    reply = await (await fake.slash("roll", user=member, options={"sides": 10})).response()
    assert reply.content == "rolled 10"


async def test_admin_group_is_hidden_without_manage_guild(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    with pytest.raises(CommandNotVisible, match="manage_guild"):
        await fake.slash("admin reset", user=member, options={"member": member})
    with pytest.raises(InvalidInteraction, match="needs a subcommand"):
        await fake.slash("admin", user=member, bypass_permissions=True)
    assert fake.dispatched == []

    moderators = fake.make_role("mods", permissions=discord.Permissions(manage_guild=True))
    moderator = fake.make_member(name="mod", roles=[moderators])
    handle = await fake.slash("admin", subcommand="reset", user=moderator, options={"member": member})
    reply = await handle.response()
    assert reply.content == f"reset {member.id}" and reply.ephemeral
    assert handle.payload["member"]["permissions"] == str(moderator.permissions)

    # discord.py itself does not enforce default_permissions: once bypassed, the command runs.
    bypassed = await fake.slash("admin reset", user=member, options={"member": member}, bypass_permissions=True)
    assert (await bypassed.response()).content == f"reset {member.id}"


async def test_edit_of_the_original_response(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    handle = await fake.slash("progress", user=member)
    assert (await handle.response()).content == "working"
    edit = await handle.edit()
    assert edit.content == "done"
    assert handle.original is not None and handle.original["content"] == "done"
    assert handle.original["edited_timestamp"] is not None


async def test_persistent_view_works_after_a_restart(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    reply = await (await fake.slash("panel", user=member)).response()
    assert reply.message is not None
    panel = reply.message

    await fake.stop_bot()
    await fake.run_bot(TinyBot())
    assert fake.message(panel["id"]) is not None

    click = await fake.click(LIKE_ID, user=member, message=panel)
    answer = await click.response()
    assert answer.content == f"liked by {member.id}" and answer.ephemeral
    assert click.payload["message"]["id"] == panel["id"]
    with pytest.raises(InvalidInteraction, match="no component"):
        await fake.click("selftest:nope", user=member, message=panel)
    broken = await fake.click("selftest:broken", user=member, message=panel)
    with pytest.raises(BotError, match="broken button"):
        await broken.response()


async def test_a_failing_command_fails_the_test_at_once(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    handle = await fake.slash("boom", user=member)
    started = time.monotonic()
    with pytest.raises(BotError, match="boom"):
        await handle.response(timeout=5)
    assert time.monotonic() - started < 2


async def test_discord_rules_the_bot_can_break(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    fake.ack_timeout = 0.1
    late = await fake.slash("slow", user=member, expect_error=True)
    error = await late.error()
    assert isinstance(error.original, discord.NotFound) and error.original.code == 10062
    fake.ack_timeout = 3.0

    twice = await fake.slash("twice", user=member, expect_error=True)
    error = await twice.error()
    assert isinstance(error.original, discord.HTTPException) and error.original.code == 40060

    long = await fake.slash("shout", user=member, options={"text": "x" * 201})
    with pytest.raises(BotError, match="2000 or fewer"):
        await long.response()


async def test_nothing_sent_is_a_timeout(fake: FakeDiscord) -> None:
    member = fake.make_member(name="ann")
    handle = await fake.slash("ping", user=member)
    await handle.response()
    with pytest.raises(WaitTimeout, match="POST"):
        await handle.followup(timeout=0.2)


async def test_sync_rejects_what_discord_rejects(fake_discord: FakeDiscord) -> None:
    with pytest.raises(app_commands.CommandSyncFailure, match="between 1 and 100"):
        await fake_discord.run_bot(TinyBot(long_description=True))


async def test_login_with_a_wrong_token_fails(fake_discord: FakeDiscord) -> None:
    with pytest.raises(AssertionError, match="LoginFailure"):
        await fake_discord.run_bot(TinyBot(), token="wrong")


class ShardBot(commands.Bot):
    """One shard of a sharded application; ``/where`` says which shard answered."""

    def __init__(self, shard_id: int, shard_count: int) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            shard_id=shard_id,
            shard_count=shard_count,
        )

    async def setup_hook(self) -> None:
        @self.tree.command()
        async def where(interaction: discord.Interaction) -> None:
            """Tell the shard."""
            await interaction.response.send_message(f"shard {interaction.client.shard_id}")


async def test_sharded_bots_get_only_their_guilds_and_interactions(fake_discord: FakeDiscord) -> None:
    fake = fake_discord
    # Two guilds, one per shard: ids one step of 2**22 apart land on different shards of two.
    first = fake.guild
    second = fake.make_guild("Second", guild_id=first.id + (1 << 22))
    by_shard = {shard_of(first.id, 2): first, shard_of(second.id, 2): second}
    assert set(by_shard) == {0, 1}
    bots = [ShardBot(0, 2), ShardBot(1, 2)]
    await fake.run_bot(bots[0])
    await fake.run_bot(bots[1], alongside=True)
    assert fake.shards == [(0, 2), (1, 2)]
    assert sum(1 for r in fake.requests if r.method == "PUT") == 1  # the one alongside does not sync

    for shard_id, bot in enumerate(bots):
        guild = by_shard[shard_id]
        assert [g.id for g in bot.guilds] == [guild.id]
        member = fake.make_member(name=f"on-{shard_id}", guild=guild)
        reply = await (await fake.slash("where", user=member)).response()
        assert reply.content == f"shard {shard_id}"

    with pytest.raises(RuntimeError, match="already running"):
        await fake.run_bot(ShardBot(0, 2))
    await fake.stop_bot(bots[1])
    assert fake.shards == [(0, 2)]
    with pytest.raises(FakeDiscordError, match="no connected shard serves"):
        await fake.slash("where", user=fake.make_member(name="late", guild=by_shard[1]))
    reply = await (await fake.slash("where", user=fake.make_member(name="still", guild=by_shard[0]))).response()
    assert reply.content == "shard 0"


async def test_an_invalid_shard_is_refused(fake_discord: FakeDiscord) -> None:
    with pytest.raises(AssertionError, match="4010"):
        await fake_discord.run_bot(ShardBot(2, 2))


def test_discord_py_is_restored_after_the_fixture() -> None:
    assert discord.http.Route.BASE == "https://discord.com/api/v10"
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"
    assert discord.Asset.BASE == "https://cdn.discordapp.com"
