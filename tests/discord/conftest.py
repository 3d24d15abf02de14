"""Fixtures for end-to-end tests of the Discord adapter against the fake Discord."""

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from abby_core.config import Settings, load_settings
from abby_core.generation import ImageGenerator, OfflineProvider
from abby_core.generation.base import GeneratedImage, TextToImageRequest
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager
from abby_discord.bot import AbbyBot
from tests.fixtures import fake_discord as harness
from tests.fixtures.clocks import Clock
from tests.fixtures.fake_discord import fake_discord  # noqa: F401
from tests.fixtures.fake_stability import API_KEY, FakeStability


class GatedProvider(OfflineProvider):
    """The offline renderer, held at the door until ``gate`` is set (bounded wait)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls = 0
        self.entered = asyncio.Event()

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        self.calls += 1
        self.entered.set()
        await asyncio.wait_for(self.gate.wait(), 10)
        return await super().text_to_image(request)


class Abby:
    """Builds Abby on the fake Discord the way ``run_bot`` does, with test collaborators."""

    def __init__(self, fake: harness.FakeDiscord, tmp_path: Path) -> None:
        self.fake = fake
        self.tmp_path = tmp_path
        self.clock = Clock(running=True)
        self.settings: Settings | None = None
        self.storage: StorageManager | None = None
        self.generator: ImageGenerator | None = None
        self.bot: AbbyBot | None = None
        self.maintenance_delay = 3600.0
        self.alongside = False
        self._opened: list[Any] = []

    async def start(
        self,
        *,
        generator: ImageGenerator | None = None,
        maintenance_delay: float = 3600,
        alongside: bool = False,
        **env: Any,
    ) -> AbbyBot:
        """Build settings from ``env`` and start the bot; ``alongside``: next to another ``Abby``'s bot
        (another shard process on the same storage folder), see ``FakeDiscord.run_bot``."""
        values: dict[str, Any] = {
            "STORAGE_ROOT": str(self.tmp_path / "shared"),
            "IMAGE_PROVIDER": "offline",
            "DISCORD_TOKEN": self.fake.token,
        }
        values.update(env)
        self.settings = load_settings(env_file=None, **values)
        self.storage = StorageManager.from_settings(self.settings, clock=self.clock)
        self.generator = generator or (
            ImageGenerator(provider=OfflineProvider())
            if self.settings.api.provider == "offline"
            else ImageGenerator.from_settings(self.settings.api)
        )
        self._opened += [self.generator, self.storage]
        self.maintenance_delay = maintenance_delay
        self.alongside = alongside
        return await self.restart(first=True)

    async def restart(self, *, first: bool = False) -> AbbyBot:
        """A new bot on the same storage and generator (the old one is stopped first)."""
        assert self.settings is not None and self.storage is not None and self.generator is not None
        if not first and self.bot is not None:
            await self.fake.stop_bot(self.bot)
        service = ImageService.from_settings(self.settings, self.storage, self.generator)
        self.bot = AbbyBot(
            self.settings,
            storage=self.storage,
            generator=self.generator,
            service=service,
            maintenance_delay=self.maintenance_delay,
        )
        await self.fake.run_bot(self.bot, alongside=self.alongside)
        return self.bot

    async def close(self) -> None:
        if self.bot is not None:
            await self.fake.stop_bot(self.bot)
        for resource in reversed(self._opened):
            await resource.aclose()

    async def status(self, member: Any) -> Any:
        assert self.storage is not None
        return await self.storage.get_quota_status(member.id)


@pytest_asyncio.fixture
async def abby(fake_discord: harness.FakeDiscord, tmp_path: Path) -> AsyncIterator[Abby]:  # noqa: F811
    instance = Abby(fake_discord, tmp_path)
    try:
        yield instance
    finally:
        await instance.close()


@pytest_asyncio.fixture
async def second_abby(fake_discord: harness.FakeDiscord, tmp_path: Path) -> AsyncIterator[Abby]:  # noqa: F811
    """A second bot process: its own settings, storage manager and generator, the same storage folder."""
    instance = Abby(fake_discord, tmp_path)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def stability_generator(fake_stability: FakeStability) -> Callable[..., ImageGenerator]:
    """A Stability generator pointed at the fake server, fast to fail (no real sleeping)."""

    async def no_sleep(_: float) -> None:
        return None

    def make(**kw: Any) -> ImageGenerator:
        options: dict[str, Any] = {"timeout": 0.5, "max_retries": 1, "sleep": no_sleep}
        options.update(kw)
        return ImageGenerator(API_KEY, fake_stability.url, **options)

    return make


# -- reading what the bot sent ------------------------------------------------------------------


async def result_of(
    handle: harness.InteractionHandle, *, timeout: float = 10.0, responded: bool = False
) -> harness.CapturedRequest:
    """The edit that put a generation's result in the deferred message (skipping queue updates).

    ``responded``: the test already took the deferred response from ``handle``.
    """
    if not responded:
        first = await handle.response()
        assert first.type == 5, f"expected a deferred response, got {first.type}: {first.content!r}"
    for _ in range(20):
        edit = await handle.edit(timeout=timeout)
        if edit.embeds:
            return edit
    raise AssertionError("no result after 20 edits")


async def refusal(
    handle: harness.InteractionHandle, *, timeout: float = 10.0
) -> tuple[BaseException, harness.CapturedRequest]:
    """The error the bot raised for ``handle`` (made with ``expect_error=True``) and the private reply."""
    error = await handle.error(timeout=timeout)
    first = await handle.response()
    if first.type == 4:
        assert first.ephemeral, first.content
        return getattr(error, "original", error), first
    reply = await handle.followup(timeout=timeout)
    assert reply.ephemeral and reply.message is not None and reply.message["flags"] & 64, reply.content
    assert handle.original is None, "the public 'thinking' message should be gone"
    return getattr(error, "original", error), reply


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Button label → custom_id on a stored message."""
    found: dict[str, str] = {}
    for row in message.get("components") or []:
        for item in row.get("components") or []:
            if item.get("type") == 2 and item.get("custom_id"):
                found[item["label"]] = item["custom_id"]
    return found


def field(embed: dict[str, Any], name: str) -> str:
    for item in embed.get("fields") or []:
        if item["name"] == name:
            return str(item["value"])
    raise AssertionError(f"no field {name!r} in {[f['name'] for f in embed.get('fields') or []]}")
