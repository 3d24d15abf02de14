"""Starting the bot: the token check, command sync, storage check, maintenance, and logging."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import discord
import pytest

from abby_core.config import Settings, load_settings
from abby_core.errors import NotConfigured, StorageError
from abby_core.generation import STYLE_PRESETS
from abby_core.storage import StorageManager
from abby_discord.bot import _run, run_bot
from abby_discord.logs import setup_logging
from tests.discord.conftest import Abby, result_of
from tests.fixtures.fake_discord import FakeDiscord, FakeDiscordError

ROOT = Path(__file__).resolve().parents[2]


def test_run_bot_without_a_token_refuses_to_start() -> None:
    with pytest.raises(NotConfigured, match="DISCORD_TOKEN is not set"):
        run_bot(load_settings(env_file=None))


def test_python_m_abby_discord_without_a_token_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("DISCORD_", "STABILITY_"))}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "abby_discord"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0], done.stderr
    assert not (tmp_path / "shared").exists(), "nothing is created before the token check"


async def test_commands_are_synced_to_the_configured_server(abby: Abby) -> None:
    bot = await abby.start(DISCORD_GUILD_ID=str(abby.fake.guild.id))
    imagine = abby.fake.command("imagine")
    assert imagine["guild_id"] == str(abby.fake.guild.id)
    assert {c["name"] for c in abby.fake.synced_commands} == {"imagine", "imgimg", "upscale", "quota", "gallery",
                                                             "abby-admin"}
    style = next(o for o in imagine["options"] if o["name"] == "style")
    assert [c["value"] for c in style["choices"]] == list(STYLE_PRESETS[:25])
    seed = next(o for o in imagine["options"] if o["name"] == "seed")
    assert (seed["min_value"], seed["max_value"]) == (0, 4_294_967_294)
    assert not bot.intents.members and not bot.intents.message_content and not bot.intents.presences
    member = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "guild only"}))


async def test_maintenance_runs_after_start_and_survives_errors(abby: Abby, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="abby")
    bot = await abby.start(maintenance_delay=0)
    for _ in range(100):
        if bot.maintenance_runs:
            break
        await asyncio.sleep(0.02)
    assert bot.maintenance_runs >= 1
    assert "Maintenance reconcile" in caplog.text
    assert "Storage ready: filesystem" in caplog.text

    assert abby.storage is not None
    await abby.storage.aclose()  # every storage call now fails
    await bot.run_maintenance()
    assert "Maintenance failed" in caplog.text
    assert not bot.is_closed()


def _settings(root: Path, **env: str) -> Settings:
    return load_settings(env_file=None, STORAGE_ROOT=str(root), DISCORD_TOKEN="MTIz.abc.secret-token-value", **env)


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("discord").level)
    yield None
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    logging.getLogger("discord").setLevel(saved[2])


def test_logs_go_to_a_rotating_file_without_secrets(tmp_path: Path, restore_logging: object) -> None:
    settings = _settings(tmp_path / "shared", STABILITY_API_KEY="sk-very-secret-key", LOG_LEVEL="debug")
    path = setup_logging(settings)
    assert path == tmp_path / "shared" / "logs" / "abby.log"
    setup_logging(settings)  # once more: handlers are replaced, not doubled
    log = logging.getLogger("abby.test")
    log.info("token is %s and key is %s", "MTIz.abc.secret-token-value", "sk-very-secret-key")
    try:
        raise RuntimeError("failed with sk-very-secret-key")
    except RuntimeError:
        log.exception("boom")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text(encoding="utf-8")
    assert text.count("token is ******** and key is ********") == 1
    assert "secret-token-value" not in text and "sk-very-secret-key" not in text
    assert "RuntimeError: failed with ********" in text
    assert logging.getLogger("discord").level == logging.INFO, "discord.py never logs payloads at DEBUG"


def test_an_unwritable_log_folder_means_console_only(
    tmp_path: Path, restore_logging: object, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert setup_logging(_settings(blocker)) is None
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_abby_handler", False)]
    assert len(ours) == 1 and not isinstance(ours[0], logging.FileHandler)
    assert "logging to the console only" in capsys.readouterr().err


async def test_the_entry_point_serves_commands_and_closes_what_it_opened(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    settings = load_settings(
        env_file=None, STORAGE_ROOT=str(tmp_path / "shared"), IMAGE_PROVIDER="offline", DISCORD_TOKEN=fake_discord.token
    )
    member = fake_discord.make_member(name="ann")
    opened: list[StorageManager] = []
    original = StorageManager.from_settings

    def spy(*args: object, **kw: object) -> StorageManager:
        manager = original(*args, **kw)  # type: ignore[arg-type]
        opened.append(manager)
        return manager

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StorageManager, "from_settings", spy)
        task = asyncio.create_task(_run(settings, fake_discord.token))
        try:
            await fake_discord.wait_for("PUT", r"/applications/\d+/commands", timeout=10)
            handle = None
            for _ in range(200):  # until the gateway session is up
                try:
                    handle = await fake_discord.slash("quota", user=member)
                    break
                except FakeDiscordError:
                    await asyncio.sleep(0.02)
            assert handle is not None
            await handle.response()
            assert "0 of 5 used" in str((await handle.followup()).embeds[0])
        finally:
            task.cancel()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
    assert len(opened) == 1
    with pytest.raises(StorageError, match="closed"):
        await opened[0].get_quota_status(member.id)


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (discord.LoginFailure("Improper token has been passed."), "Discord refused DISCORD_TOKEN"),
        (aiohttp.ClientConnectorError(None, OSError(-2, "Name or service not known")), "Could not reach Discord"),  # type: ignore[arg-type]
    ],
)
def test_run_bot_turns_login_and_network_failures_into_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: object, failure: Exception, words: str
) -> None:
    import abby_discord.bot as bot_module

    async def refused(settings: object, token: str) -> None:
        raise failure

    monkeypatch.setattr(bot_module, "_run", refused)
    with pytest.raises(NotConfigured) as refusal:
        bot_module.run_bot(_settings(tmp_path / "shared"))
    assert words in str(refusal.value)
    assert "secret-token-value" not in str(refusal.value)
