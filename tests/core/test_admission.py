"""Admission: the member's slot, the precheck, the queue and the deadline hold for every caller.

Two :class:`Admission` objects over one storage folder stand for two processes (the bot and
``abby imagine``, or two bot shards): each has its own limiter and its own slot client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abby_core.admission import Admission, GenerationLimiter, UserBusy
from abby_core.errors import DailyLimitExceeded, GenerationTimeout, InvalidPrompt, InvalidUser
from abby_core.generation import GeneratedImage, ImageGenerator, OfflineProvider, TextToImageRequest
from abby_core.pipeline import GenerationResult, ImageService
from abby_core.storage import FilesystemBackend, StorageManager
from abby_core.storage.slots import AsyncMemberSlots, MemberSlots

USER = "123456789012345678"


class HeldProvider(OfflineProvider):
    """The offline renderer, held until ``gate`` is set (or for ever)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        return await super().text_to_image(request)


class Process:
    """One process's view: its own storage manager, service and admission on the shared folder."""

    def __init__(self, root: Path, provider: OfflineProvider, *, capacity: int = 4) -> None:
        self.storage = StorageManager(storage_root=root, max_user_daily_gens=2)
        self.provider = provider
        self.generator = ImageGenerator(provider=provider)
        self.service = ImageService(self.storage, self.generator)
        slots = AsyncMemberSlots(MemberSlots(FilesystemBackend(root), clock=self.storage.clock))
        self.admission = Admission(self.service, GenerationLimiter(capacity), slots)
        self.admitted = 0

    async def imagine(self, prompt: str = "a lighthouse", *, within: float | None = None) -> GenerationResult:
        async def admitted() -> None:
            self.admitted += 1

        return await self.admission.generate(
            USER, lambda: self.service.imagine(USER, prompt), prompt=prompt, on_admitted=admitted, within=within
        )

    async def aclose(self) -> None:
        await self.generator.aclose()
        await self.storage.aclose()


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Process]:
    process = Process(tmp_path / "shared", HeldProvider())
    yield process
    await process.aclose()


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Process]:
    process = Process(tmp_path / "shared", OfflineProvider())
    yield process
    await process.aclose()


async def test_a_second_caller_in_another_process_is_refused_while_the_first_runs(bot: Process, cli: Process) -> None:
    provider = bot.provider
    assert isinstance(provider, HeldProvider)
    running = asyncio.create_task(bot.imagine())
    await asyncio.wait_for(provider.entered.wait(), 30)

    with pytest.raises(UserBusy) as refused:
        await cli.imagine("a second one")
    assert refused.value.user_id == USER and refused.value.code == "user_busy"
    assert cli.admitted == 0, "refused before it was admitted"
    status = await cli.storage.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (1, 1), "only the first one is held"

    provider.gate.set()
    await asyncio.wait_for(running, 30)
    done = await cli.imagine("now it's fine")
    assert done.status.daily_used == 2 and cli.admitted == 1
    assert await cli.admission.slots.holder(USER) is None, "the slot is given back"


@pytest.mark.parametrize("bad", ["../1", "0", "abc", "1" * 21, None])
async def test_a_bad_user_id_is_refused_at_the_door_before_any_slot(cli: Process, bad: object) -> None:
    async def never() -> None:
        raise AssertionError("a bad id was admitted")

    with pytest.raises(InvalidUser) as refused:
        await cli.admission.generate(bad, never, prompt="a lighthouse", on_admitted=never)
    assert "Discord user id" in str(refused.value)
    assert list(cli.storage.backend.list_objects("")) == [], "no slot, no ledger: nothing written"
    assert not cli.admission.limiter.busy(bad)


async def test_the_precheck_refuses_before_admission_and_gives_the_slot_back(cli: Process) -> None:
    with pytest.raises(InvalidPrompt):
        await cli.imagine("   ")
    for _ in range(2):
        await cli.imagine()
    with pytest.raises(DailyLimitExceeded):
        await cli.imagine()
    assert cli.admitted == 2, "refusals come before the adapter is told to wait"
    assert await cli.admission.slots.holder(USER) is None


async def test_a_generation_past_its_deadline_is_cancelled_and_costs_nothing(bot: Process) -> None:
    provider = bot.provider
    assert isinstance(provider, HeldProvider)  # never let through
    with pytest.raises(GenerationTimeout):
        await bot.imagine(within=0.5)
    assert provider.calls == 1 and bot.admitted == 1
    status = await bot.storage.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (0, 0)
    assert await bot.admission.slots.holder(USER) is None


async def test_a_cancelled_generation_gives_the_slot_back_and_costs_nothing(bot: Process) -> None:
    """What Ctrl+C does to 'abby imagine' (asyncio.run cancels the command) and a bot shutdown to a command."""
    provider = bot.provider
    assert isinstance(provider, HeldProvider)
    running = asyncio.create_task(bot.imagine())
    await asyncio.wait_for(provider.entered.wait(), 30)
    assert await bot.admission.slots.holder(USER) is not None
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await bot.admission.slots.holder(USER) is None
    status = await bot.storage.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (0, 0)
    assert bot.admission.limiter.active == 0 and not bot.admission.limiter.busy(USER)
