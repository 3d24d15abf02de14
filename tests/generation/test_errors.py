"""Every provider failure becomes the right Abby error, after the right retries."""

from __future__ import annotations

import socket

import pytest

from abby_core.errors import (
    AbbyError,
    ContentFiltered,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    PromptRejected,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    ProviderUnreachable,
    RateLimited,
    RequestTooLarge,
)
from abby_core.generation import ImageGenerator
from abby_core.generation._policy import RetryPolicy, parse_retry_after
from abby_core.generation._status import error_for_status, sanitize
from tests.fixtures.fake_stability import API_KEY, FakeStability, Reply
from tests.generation.helpers import SleepRecorder, generator, png

# status (and error name) -> what the member gets, after no retries
NOT_RETRIED = [
    (400, None, PromptRejected),
    (401, None, ProviderAuthError),
    (402, None, ProviderOutOfCredits),
    (403, "content_moderation", ContentFiltered),
    (403, "forbidden", ProviderAuthError),
    (404, None, ProviderRejected),
    (413, None, RequestTooLarge),
    (422, None, PromptRejected),
]
RETRIED = [(408, GenerationTimeout), (429, RateLimited), (500, GenerationUnavailable),
           (502, GenerationUnavailable), (503, GenerationUnavailable), (504, GenerationUnavailable)]


@pytest.mark.parametrize(("status", "name", "expected"), NOT_RETRIED)
async def test_client_errors_map_without_retry(
    fake_stability: FakeStability, status: int, name: str | None, expected: type[AbbyError]
) -> None:
    reply = Reply.error(status, f"prompt: rejected for {API_KEY}", name=name)
    fake_stability.script("core", reply)
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        with pytest.raises(expected) as info:
            await gen.text_to_image("a fox")
    assert type(info.value) is expected
    assert isinstance(info.value, ProviderRejected)
    assert info.value.status == status
    assert info.value.request_id == reply.json["id"]
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert len(str(info.value)) < 300
    assert fake_stability.routes_hit("core") == 1 and sleep.delays == []


def test_prompt_rejection_quotes_the_provider_reason() -> None:
    err = error_for_status(400, {"id": "x", "name": "bad_request", "errors": ["prompt: too\x00 weird"]})
    assert isinstance(err, PromptRejected)
    assert "prompt: too weird" in str(err)


@pytest.mark.parametrize(("status", "expected"), RETRIED)
async def test_retryable_statuses_give_up_after_max_retries(
    fake_stability: FakeStability, status: int, expected: type[AbbyError]
) -> None:
    fake_stability.script("core", *[Reply.error(status) for _ in range(10)])
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep, max_retries=2) as gen:
        with pytest.raises(expected) as info:
            await gen.text_to_image("a fox")
    assert type(info.value) is expected
    assert fake_stability.routes_hit("core") == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_transient_errors_then_success(fake_stability: FakeStability, status: int) -> None:
    fake_stability.script("core", Reply.error(status), Reply.error(status), Reply())
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        image = await gen.text_to_image("a fox")
    assert image.finish_reason == "SUCCESS"
    assert fake_stability.routes_hit("core") == 3
    # Exponential backoff with jitter: 0.5 then 1.0, each shortened by at most 25%.
    assert 0.375 <= sleep.delays[0] <= 0.5 and 0.75 <= sleep.delays[1] <= 1.0


async def test_retry_after_is_honoured(fake_stability: FakeStability) -> None:
    fake_stability.script(
        "core",
        Reply.error(429, headers={"Retry-After": "7"}),
        Reply.error(429, headers={"Retry-After": "2.5"}),
        Reply(),
    )
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        await gen.text_to_image("a fox")
    assert sleep.delays == [7.0, 2.5]


async def test_retry_after_over_the_cap_is_reported_at_once(fake_stability: FakeStability) -> None:
    # Waiting the cap and asking again while the service said "an hour" only wastes the member's time.
    fake_stability.script("core", *[Reply.error(429, headers={"Retry-After": "3600"}) for _ in range(4)])
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        with pytest.raises(RateLimited) as info:
            await gen.text_to_image("a fox")
    assert sleep.delays == []
    assert info.value.retry_after == 3600
    assert fake_stability.routes_hit("core") == 1


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 01 Jan 2025 12:00:30 GMT"}, now=lambda: now) == 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "-5"}) == 0


def test_backoff_grows_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(random=lambda: 0.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert RetryPolicy(random=lambda: 1.0).delay(0) == 0.375


async def test_read_timeout_is_not_retried(fake_stability: FakeStability) -> None:
    fake_stability.script("core", Reply(delay=2))
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep, timeout=0.2) as gen:
        with pytest.raises(GenerationTimeout) as info:
            await gen.text_to_image("a fox")
    assert "STABILITY_TIMEOUT_SECONDS" in str(info.value)
    assert fake_stability.routes_hit("core") == 1 and sleep.delays == []
    assert info.value.__cause__ is not None  # translated with ``from exc``


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_errors_are_retried_then_unavailable() -> None:
    sleep = SleepRecorder()
    gen = ImageGenerator(API_KEY, f"http://127.0.0.1:{_closed_port()}", sleep=sleep, max_retries=2)
    async with gen:
        with pytest.raises(GenerationUnavailable) as info:
            await gen.text_to_image("a fox")
    assert type(info.value) is ProviderUnreachable
    assert len(sleep.delays) == 2
    assert "httpx" not in type(info.value).__module__
    assert API_KEY not in str(info.value)


async def test_unreadable_image_is_unavailable(fake_stability: FakeStability) -> None:
    fake_stability.script("core", Reply(body=b"<html>oops</html>", headers={"finish-reason": "SUCCESS"}))
    async with generator(fake_stability) as gen:
        with pytest.raises(GenerationUnavailable):
            await gen.text_to_image("a fox")


async def test_body_over_10_mib_maps_to_request_too_large(fake_stability: FakeStability) -> None:
    from abby_core.generation.base import ImageToImageRequest

    async with generator(fake_stability) as gen:
        with pytest.raises(RequestTooLarge):
            await gen.generate(ImageToImageRequest(png() + b"\0" * (11 * 1024 * 1024), "a fox"))


async def test_fake_rejects_invalid_fields_like_the_api(fake_stability: FakeStability) -> None:
    from abby_core.generation.base import TextToImageRequest

    async with generator(fake_stability) as gen:
        with pytest.raises(PromptRejected) as info:
            await gen.generate(TextToImageRequest("a fox", aspect_ratio="7:3"))
    assert "aspect_ratio" in str(info.value)


@pytest.mark.parametrize("status", range(100, 600))
def test_every_status_is_mapped(status: int) -> None:
    err = error_for_status(status, {"id": "abc", "name": "x", "errors": ["e"]})
    assert isinstance(err, GenerationError)
    assert err.message and len(err.message) < 300
    if 400 <= status < 500 and status not in (408, 429):
        assert isinstance(err, ProviderRejected) and err.status == status
    elif status >= 500:
        assert type(err) is GenerationUnavailable


def test_sanitize_redacts_keys_and_controls() -> None:
    text = sanitize(f"bad \u202e key {API_KEY} Bearer abc.def sk-live-abcdefgh" + "x" * 500, secrets=[API_KEY])
    assert API_KEY not in text and "abc.def" not in text and "sk-live" not in text
    assert "\u202e" not in text and len(text) <= 200
