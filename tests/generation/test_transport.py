"""What happens on the wire's edges: broken connections, unusable keys, polls, closing."""

from __future__ import annotations

import asyncio

import pytest

from abby_core.config import load_settings
from abby_core.errors import ConfigError, GenerationUnavailable
from abby_core.generation import ImageGenerator, StabilityProvider
from tests.fixtures.fake_stability import API_KEY, FakeStability, Reply
from tests.generation.helpers import SleepRecorder, generator, png


async def test_a_connection_broken_after_the_request_is_not_retried() -> None:
    """The service may already be working (and billing) on it: one POST, then a clear error."""
    received: list[bytes] = []

    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n\x89PNG")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with ImageGenerator(API_KEY, f"http://127.0.0.1:{port}", max_retries=3, sleep=SleepRecorder()) as gen:
            with pytest.raises(GenerationUnavailable, match="connection to the image service broke"):
                await gen.text_to_image("a fox")
    finally:
        server.close()
        await server.wait_closed()
    assert len(received) == 1 and received[0].startswith(b"POST /v2beta/stable-image/generate/core")


@pytest.mark.parametrize("key", ["sk-ünïcode", "“sk-abc123”", "sk-abc 123", "sk-abc\n123", "sk-\x00"])
def test_keys_that_cannot_go_in_a_header_are_refused_at_start_up(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        StabilityProvider(key, "http://127.0.0.1:9")
    assert key.strip() not in str(refused.value)
    with pytest.raises(ConfigError) as refused_config:
        load_settings(env_file=None, STABILITY_API_KEY=key)
    assert "STABILITY_API_KEY" in str(refused_config.value) and key.strip() not in str(refused_config.value)


async def test_a_failing_poll_waits_for_the_next_one(fake_stability: FakeStability) -> None:
    fake_stability.creative_polls = 1
    fake_stability.script("results", Reply.error(500), Reply.error(503))
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        image = await gen.upscale_image(png((128, 128)), prompt="a castle", mode="creative")
    assert image.width > 128
    assert sleep.delays and all(delay == 10.0 for delay in sleep.delays)  # never faster than every 10 s
    assert fake_stability.routes_hit("creative") == 1  # the paid request was made once


async def test_a_closed_generator_stays_closed(fake_stability: FakeStability) -> None:
    gen = generator(fake_stability)
    await gen.get_balance()
    await gen.aclose()
    with pytest.raises(GenerationUnavailable, match="closed"):
        await gen.get_balance()
    with pytest.raises(GenerationUnavailable, match="closed"):
        await gen.text_to_image("a fox")
    assert fake_stability.routes_hit("balance") == 1
