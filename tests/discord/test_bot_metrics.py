"""The /metrics endpoint of a running bot: counters after /imagine, storage and queue gauges, start-up errors."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from abby_core.errors import NotConfigured
from abby_core.generation import ImageGenerator
from tests.discord.conftest import Abby, GatedProvider, result_of
from tests.fixtures.fake_discord import FakeDiscordError

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


async def scrape(port: int) -> Samples:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape_until(port: int, name: str, wanted: float, *, timeout: float = 5.0) -> Samples:
    """Scrape until ``name`` (no labels) has ``wanted`` (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(port)
        if sample(samples, name) == wanted or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.02)


async def test_the_endpoint_counts_images_and_shows_storage_and_the_queue(abby: Abby, port: int) -> None:
    provider = GatedProvider()
    bot = await abby.start(
        generator=ImageGenerator(provider=provider), METRICS_PORT=str(port), MAX_CONCURRENT_GENERATIONS=1
    )
    assert abby.generator is not None and abby.storage is not None
    name = abby.generator.provider_name
    before = await scrape_until(port, "abby_storage_up", 1)  # the first storage read runs at start
    assert sample(before, "abby_storage_up") == 1
    assert sample(before, "abby_storage_used_bytes") == 0
    assert sample(before, "abby_storage_limit_bytes") == 5000 * 1_000_000
    assert sample(before, "abby_queue_length") == 0 and sample(before, "abby_generations_running") == 0
    # Every known series is there from the start, at 0, so rate() and increase() see the first count.
    assert sample(before, "abby_generations_total", kind="imagine", provider=name, outcome="ok") == 0
    assert sample(before, "abby_provider_errors_total", provider=name, code="generation_unavailable") == 0

    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    first = await abby.fake.slash("imagine", user=ann, options={"prompt": "a lighthouse at dawn"})
    await asyncio.wait_for(provider.entered.wait(), 5)
    second = await abby.fake.slash("imagine", user=bob, options={"prompt": "a harbour at dusk"})
    assert (await second.response()).type == 5
    assert ((await second.edit()).content or "").startswith("⏳ Queued — position 1.")
    busy = await scrape(port)
    assert sample(busy, "abby_generations_running") == 1
    assert sample(busy, "abby_queue_length") == 1

    provider.gate.set()
    await result_of(first)
    await result_of(second, responded=True)
    await bot.refresh_metrics()  # the periodic read, now rather than in 60 s
    after = await scrape(port)
    assert sample(after, "abby_generations_total", kind="imagine", provider=name, outcome="ok") == 2
    assert sample(after, "abby_generation_seconds_count", provider=name) == 2
    stored = (await abby.status(ann)).user_bytes + (await abby.status(bob)).user_bytes
    assert stored > 0
    assert sample(after, "abby_stored_bytes_total") == stored
    assert sample(after, "abby_storage_used_bytes") == stored
    assert sample(after, "abby_storage_users") == 2
    assert sample(after, "abby_storage_up") == 1
    assert sample(after, "abby_queue_length") == 0 and sample(after, "abby_generations_running") == 0

    await abby.restart()  # the old server let go of the port; the new bot counts afresh, from 0
    again = await scrape_until(port, "abby_storage_up", 1)
    assert sample(again, "abby_generations_total", kind="imagine", provider=name, outcome="ok") == 0
    assert sample(again, "abby_storage_used_bytes") == stored


async def test_storage_down_sets_storage_up_to_zero_and_is_logged_once(
    abby: Abby, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await abby.start(METRICS_PORT=str(port))
    await scrape_until(port, "abby_storage_up", 1)
    assert abby.storage is not None
    await abby.storage.aclose()  # every storage call now fails
    caplog.set_level(logging.INFO, logger="abby")
    await bot.refresh_metrics()
    await bot.refresh_metrics()
    assert sample(await scrape(port), "abby_storage_up") == 0
    assert caplog.text.count("storage cannot be read") == 1


async def test_a_metrics_port_in_use_is_a_clear_start_up_error(abby: Abby, taken_port: int) -> None:
    with pytest.raises(FakeDiscordError) as info:
        await abby.start(METRICS_PORT=str(taken_port))
    error = info.value.__cause__
    assert isinstance(error, NotConfigured) and error.setting == "METRICS_PORT"
    assert f"127.0.0.1:{taken_port}" in error.message and "already in use" in error.message


async def test_no_endpoint_without_metrics_port(abby: Abby) -> None:
    bot = await abby.start()
    assert bot.service.metrics is None
    assert not any(task.get_name() == "abby-metrics" for task in bot._background)
