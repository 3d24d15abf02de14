"""The Stability client against the fake server: request shape, answers, polling."""

from __future__ import annotations

import io
import socket

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from abby_core.config import load_settings
from abby_core.errors import (
    ConfigError,
    ContentFiltered,
    GenerationTimeout,
    GenerationUnavailable,
    NotConfigured,
    ProviderUnreachable,
)
from abby_core.generation import ImageGenerator
from abby_core.generation.base import TextToImageRequest, UpscaleRequest
from abby_core.generation.stability import StabilityProvider
from tests.fixtures.fake_stability import API_KEY, FakeStability, Reply
from tests.generation.helpers import SleepRecorder, generator, png


async def test_text_to_image_sends_what_the_api_expects(fake_stability: FakeStability) -> None:
    async with generator(fake_stability) as gen:
        image = await gen.text_to_image(
            "  a red fox\nin snow ",
            negative_prompt="blurry",
            aspect_ratio="16:9",
            seed=42,
            style_preset="anime",
            output_format="webp",
        )
    (req,) = fake_stability.requests
    assert req.path == "/v2beta/stable-image/generate/core"
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["accept"] == "image/*"
    assert req.headers["content-type"].startswith("multipart/form-data")
    assert req.fields["prompt"] == "a red fox in snow"
    assert req.fields["negative_prompt"] == "blurry"
    assert req.fields["aspect_ratio"] == "16:9"
    assert req.fields["seed"] == "42"
    assert req.fields["style_preset"] == "anime"
    assert req.fields["output_format"] == "webp"
    assert image.content_type == "image/webp"
    assert (image.seed, image.provider, image.finish_reason) == (42, "stability", "SUCCESS")
    assert image.label == "Stable Image Core"
    assert image.width > image.height
    assert Image.open(io.BytesIO(image.data)).format == "WEBP"


async def test_seed_zero_reports_the_seed_the_provider_chose(fake_stability: FakeStability) -> None:
    async with generator(fake_stability) as gen:
        image = await gen.text_to_image("a fox")
    assert fake_stability.requests[0].fields["seed"] == "0"
    assert image.seed == 1_234_567


@pytest.mark.parametrize(
    ("model", "path", "model_field", "label"),
    [
        ("ultra", "/v2beta/stable-image/generate/ultra", None, "Stable Image Ultra"),
        ("sd3.5-large-turbo", "/v2beta/stable-image/generate/sd3", "sd3.5-large-turbo",
         "Stable Diffusion 3.5 Large Turbo"),
        ("sd3.5-medium", "/v2beta/stable-image/generate/sd3", "sd3.5-medium", "Stable Diffusion 3.5 Medium"),
    ],
)
async def test_model_setting_picks_endpoint(
    fake_stability: FakeStability, model: str, path: str, model_field: str | None, label: str
) -> None:
    async with generator(fake_stability, model=model) as gen:
        image = await gen.text_to_image("a fox")
    (req,) = fake_stability.requests
    assert req.path == path
    assert req.fields.get("model") == model_field
    assert image.label == label


def test_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        ImageGenerator("k", model="sdxl")


async def test_image_to_image(fake_stability: FakeStability) -> None:
    async with generator(fake_stability) as gen:
        image = await gen.image_to_image(png((40, 30)), "make it blue", strength=0.25, seed=9)
    (req,) = fake_stability.requests
    assert req.path == "/v2beta/stable-image/generate/sd3"
    assert req.fields["mode"] == "image-to-image"
    assert req.fields["strength"] == "0.25"
    assert req.fields["model"] == "sd3.5-large"
    sent = Image.open(io.BytesIO(req.files["image"]))
    assert min(sent.size) >= 64  # a 40x30 upload was enlarged rather than refused by the API
    assert image.seed == 9


async def test_fast_upscale_resizes_input_into_the_allowed_range(fake_stability: FakeStability) -> None:
    async with generator(fake_stability) as gen:
        image = await gen.upscale_image(png((2000, 1500)))
    (req,) = fake_stability.requests
    assert req.path == "/v2beta/stable-image/upscale/fast"
    sent = Image.open(io.BytesIO(req.files["image"]))
    assert max(sent.size) <= 1536 and sent.width * sent.height <= 1_048_576
    assert (image.width, image.height) == (sent.width * 4, sent.height * 4)
    assert image.label == "Stable Fast Upscale"


async def test_conservative_upscale_sends_prompt(fake_stability: FakeStability) -> None:
    async with generator(fake_stability) as gen:
        await gen.upscale_image(png((100, 100)), prompt="a castle", mode="conservative")
    (req,) = fake_stability.requests
    assert req.path == "/v2beta/stable-image/upscale/conservative"
    assert req.fields["prompt"] == "a castle"


async def test_creative_upscale_polls_until_ready(fake_stability: FakeStability) -> None:
    fake_stability.creative_polls = 3
    sleep = SleepRecorder()
    async with generator(fake_stability, sleep) as gen:
        image = await gen.upscale_image(png((128, 128)), prompt="a castle", mode="creative")
    paths = [r.path for r in fake_stability.requests]
    assert paths[0] == "/v2beta/stable-image/upscale/creative"
    assert fake_stability.requests[0].headers["accept"] == "application/json"
    assert len(paths) == 1 + 4 and all(p.startswith("/v2beta/results/") for p in paths[1:])
    assert sleep.delays == [10.0] * 4  # never faster than every 10 s
    assert (image.width, image.height) == (512, 512)
    assert image.request_id == paths[1].rsplit("/", 1)[1]


async def test_creative_upscale_gives_up_at_the_deadline(fake_stability: FakeStability) -> None:
    fake_stability.creative_polls = 1000
    now = [0.0]
    sleep_calls: list[float] = []

    async def sleep(seconds: float) -> None:
        sleep_calls.append(seconds)
        now[0] += seconds

    provider = StabilityProvider(API_KEY, fake_stability.url, sleep=sleep, clock=lambda: now[0],
                                 poll_deadline=60)
    async with ImageGenerator(provider=provider) as gen:
        with pytest.raises(GenerationTimeout):
            await gen.upscale_image(png((128, 128)), prompt="a castle", mode="creative")
    assert len(sleep_calls) == 6
    assert fake_stability.routes_hit("results") == 6


async def test_content_filtered_finish_reason_is_not_a_success(fake_stability: FakeStability) -> None:
    fake_stability.script("core", Reply(finish_reason="CONTENT_FILTERED"))
    async with generator(fake_stability) as gen:
        with pytest.raises(ContentFiltered) as info:
            await gen.text_to_image("something")
    assert info.value.status == 200


async def test_balance(fake_stability: FakeStability) -> None:
    fake_stability.credits = 12.25
    async with generator(fake_stability) as gen:
        assert await gen.get_balance() == 12.25
    (req,) = fake_stability.requests
    assert (req.method, req.path) == ("GET", "/v1/user/balance")
    assert req.headers["authorization"] == f"Bearer {API_KEY}"


async def test_wrong_key_is_the_operators_problem(fake_stability: FakeStability) -> None:
    from abby_core.errors import ProviderAuthError

    async with ImageGenerator("sk-wrong-key-123456", fake_stability.url, sleep=SleepRecorder()) as gen:
        with pytest.raises(ProviderAuthError) as info:
            await gen.text_to_image("a fox")
    assert "server owner" in str(info.value)
    assert "sk-wrong-key-123456" not in str(info.value) + repr(info.value)
    assert len(fake_stability.requests) == 1  # 401 is not retried


@pytest.mark.parametrize("key", [None, "", "   "])
async def test_without_key_nothing_is_sent(fake_stability: FakeStability, key: str | None) -> None:
    async with ImageGenerator(key, fake_stability.url) as gen:
        assert gen.configured is False
        for call in (
            gen.text_to_image("a fox"),
            gen.image_to_image(png(), "a fox"),
            gen.upscale_image(png()),
            gen.get_balance(),
        ):
            with pytest.raises(NotConfigured) as info:
                await call
            assert "STABILITY_API_KEY" in str(info.value)
    assert fake_stability.requests == []


async def test_from_settings(fake_stability: FakeStability) -> None:
    settings = load_settings(
        env_file=None,
        STABILITY_API_KEY=API_KEY,
        STABILITY_API_HOST=fake_stability.url,
        STABILITY_MODEL="ultra",
    )
    async with ImageGenerator.from_settings(settings.api, sleep=SleepRecorder()) as gen:
        assert (gen.provider_name, gen.configured) == ("stability", True)
        await gen.text_to_image("a fox")
    assert fake_stability.requests[0].path.endswith("/generate/ultra")
    offline = ImageGenerator.from_settings(load_settings(env_file=None, IMAGE_PROVIDER="offline").api)
    assert (offline.provider_name, offline.configured) == ("offline", True)
    assert await offline.get_balance() is None
    unset = ImageGenerator.from_settings(load_settings(env_file=None).api)
    assert unset.configured is False


async def test_secret_str_key_is_accepted_and_never_shown(fake_stability: FakeStability) -> None:
    async with ImageGenerator(SecretStr(API_KEY), fake_stability.url) as gen:
        await gen.text_to_image("a fox")
        assert API_KEY not in repr(gen)
    assert fake_stability.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_aclose_twice_is_fine(fake_stability: FakeStability) -> None:
    gen = generator(fake_stability)
    await gen.text_to_image("a fox")
    await gen.aclose()
    await gen.aclose()
    with pytest.raises(GenerationUnavailable, match="closed"):
        await gen.text_to_image("a fox")
    assert fake_stability.routes_hit("core") == 1


# -- unreachable: nothing was sent -------------------------------------------------------------


async def test_a_closed_port_is_unreachable_after_the_retries() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleep = SleepRecorder()
    provider = StabilityProvider(API_KEY, f"http://127.0.0.1:{port}", max_retries=2, sleep=sleep)
    try:
        with pytest.raises(ProviderUnreachable, match="not reachable right now") as info:
            await provider.text_to_image(TextToImageRequest(prompt="a fox"))
    finally:
        await provider.aclose()
    assert info.value.code == "provider_unreachable"
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleep.delays) == 2 and API_KEY not in str(info.value)


async def test_a_service_that_answered_once_is_not_unreachable() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(503, json={"name": "service_unavailable", "errors": ["busy"]})
        raise httpx.ConnectError("connection refused", request=request)

    provider = StabilityProvider(API_KEY, "http://stability.test", max_retries=1, sleep=SleepRecorder(),
                                 transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(GenerationUnavailable) as info:
            await provider.text_to_image(TextToImageRequest(prompt="a fox"))
    finally:
        await provider.aclose()
    assert len(calls) == 2 and not isinstance(info.value, ProviderUnreachable)


async def test_an_unreachable_poll_after_the_job_was_sent_is_not_unreachable() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": "a1b2c3"})
        raise httpx.ConnectError("connection refused", request=request)

    provider = StabilityProvider(API_KEY, "http://stability.test", sleep=sleep, clock=lambda: now[0],
                                 poll_deadline=30, transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(GenerationTimeout):  # the upscale was paid for: it is waited for, never moved
            await provider.upscale(UpscaleRequest(image=png((128, 128)), prompt="a castle", mode="creative"))
    finally:
        await provider.aclose()
