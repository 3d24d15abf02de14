"""The web UI provider against the fake web UI API server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import itertools
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from abby_core.errors import (
    ConfigError,
    GenerationTimeout,
    GenerationUnavailable,
    PromptRejected,
    ProviderAuthError,
    ProviderUnreachable,
)
from abby_core.generation import ImageGenerator, base
from abby_core.generation.automatic1111 import Automatic1111Provider
from abby_core.generation.base import (
    ImageToImageRequest,
    Progress,
    TextToImageRequest,
    UpscaleRequest,
    reporting_progress,
)
from abby_core.generation.params import MAX_SEED
from tests.fixtures import fake_a1111 as fake_module
from tests.fixtures.fake_a1111 import CHECKPOINTS, FakeA1111
from tests.generation.helpers import SleepRecorder, png

fake_a1111 = fake_module.fake_a1111  # the fixture (tests/generation/conftest.py is not ours to edit)

TXT2IMG = "/sdapi/v1/txt2img"
SLOW = {"step_delay": 0.02}
Make = Callable[..., Automatic1111Provider]


@pytest.fixture
async def make(fake_a1111: FakeA1111) -> AsyncIterator[Make]:
    """Build providers for the fake (small, fast defaults); all are closed afterwards."""
    made: list[Automatic1111Provider] = []

    def build(**kw: Any) -> Automatic1111Provider:
        kw.setdefault("steps", 4)
        kw.setdefault("image_size", 256)
        kw.setdefault("poll_interval", 0.02)
        kw.setdefault("timeout", 20)
        made.append(Automatic1111Provider(kw.pop("base_url", fake_a1111.url), **kw))
        return made[-1]

    yield build
    for provider in made:
        await provider.aclose()


def _sent(fake: FakeA1111, path: str = TXT2IMG) -> dict[str, Any]:
    body = [r.body for r in fake.requests if r.path == path][-1]
    assert isinstance(body, dict)
    return body


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


@contextlib.contextmanager
def listening() -> Iterator[list[Progress]]:
    """Collect the progress of the generations started inside the block."""
    events: list[Progress] = []
    with reporting_progress(events.append):
        yield events


def _stages(events: list[Progress]) -> list[str]:
    """The stages in order, repeats folded."""
    folded: list[str] = []
    for event in events:
        if not folded or folded[-1] != event.stage:
            folded.append(event.stage)
    return folded


def _closed_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- making images -------------------------------------------------------------------------


async def test_text_to_image_reports_the_servers_seed(make: Make, fake_a1111: FakeA1111) -> None:
    image = await make().text_to_image(TextToImageRequest("a red fox", aspect_ratio="16:9"))
    sent = _sent(fake_a1111)
    assert sent["steps"] == 4 and sent["negative_prompt"] == ""
    assert "sampler_name" not in sent and "override_settings" not in sent
    assert 0 < sent["seed"] <= MAX_SEED  # seed 0 asks for a random one, picked once
    assert image.seed == fake_a1111.jobs[-1].seeds[0] == sent["seed"]
    assert (image.width, image.height) == _size(image.data) == (320, 192)
    assert image.content_type == "image/png" and image.provider == "automatic1111"
    assert image.label == "v1-5-pruned-emaonly" and image.request_id == sent["force_task_id"]
    assert image.request_id is not None and image.request_id.startswith("abby-")


async def test_members_get_the_image_without_the_embedded_parameters(make: Make) -> None:
    provider = make()
    served = await provider.text_to_image(TextToImageRequest("a red fox", negative_prompt="blurry", seed=7))
    assert "Negative prompt: blurry" in Image.open(io.BytesIO(served.data)).text["parameters"]
    generator = ImageGenerator(provider=provider)
    image = await generator.generate(TextToImageRequest("a red fox", negative_prompt="blurry", seed=7))
    received = Image.open(io.BytesIO(image.data))
    assert received.text == {} and b"blurry" not in image.data
    assert received.tobytes() == Image.open(io.BytesIO(served.data)).tobytes()


async def test_a_chosen_seed_and_style_are_sent(make: Make, fake_a1111: FakeA1111) -> None:
    request = TextToImageRequest("a red fox", seed=1234, negative_prompt="blur", style_preset="pixel-art")
    image = await make().text_to_image(request)
    sent = _sent(fake_a1111)
    assert sent["seed"] == 1234 and image.seed == 1234 and sent["negative_prompt"] == "blur"
    assert sent["prompt"] == "a red fox, pixel art style"


async def test_other_output_formats_are_converted(make: Make) -> None:
    image = await make().text_to_image(TextToImageRequest("a red fox", output_format="jpeg"))
    assert image.content_type == "image/jpeg" and image.data.startswith(b"\xff\xd8\xff")


async def test_model_and_sampler_names_are_checked_once_and_sent_as_the_server_knows_them(
    make: Make, fake_a1111: FakeA1111
) -> None:
    provider = make(model="sd_xl_base_1.0", sampler="k_euler_a")
    first = await provider.text_to_image(TextToImageRequest("a red fox"))
    await provider.text_to_image(TextToImageRequest("a red fox"))
    sent = _sent(fake_a1111)
    assert sent["override_settings"] == {"sd_model_checkpoint": CHECKPOINTS[1]["title"]}
    assert sent["sampler_name"] == "Euler a"
    assert first.label == "sd_xl_base_1.0" and fake_a1111.jobs[-1].model == CHECKPOINTS[1]["title"]
    assert fake_a1111.paths_hit("/sdapi/v1/sd-models") == fake_a1111.paths_hit("/sdapi/v1/samplers") == 1


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"model": "dreamshaper_8"}, "no model 'dreamshaper_8'. It has: v1-5-pruned-emaonly.safetensors [6ce0161689]"),
        ({"sampler": "Euler b"}, "no sampler 'Euler b'. It has: DPM++ 2M, DPM++ SDE"),
    ],
)
async def test_unknown_names_are_caught_before_the_server_swaps_in_its_defaults(
    make: Make, fake_a1111: FakeA1111, settings: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("+", r"\+")):
        await make(**settings).text_to_image(TextToImageRequest("a red fox"))
    assert fake_a1111.paths_hit(TXT2IMG) == 0


async def test_image_to_image(make: Make, fake_a1111: FakeA1111) -> None:
    source = png((200, 120))
    image = await make().image_to_image(ImageToImageRequest(source, "a blue fox", strength=0.4, seed=7))
    sent = _sent(fake_a1111, "/sdapi/v1/img2img")
    assert base64.b64decode(sent["init_images"][0]) == source
    assert sent["denoising_strength"] == 0.4 and (sent["width"], sent["height"]) == (200, 120)
    assert image.seed == 7 and _size(image.data) == (200, 120)
    assert fake_a1111.state.sampling_steps == int(0.4 * 4) + 1


async def test_a_long_thin_picture_reaches_the_web_ui_at_its_own_size(make: Make, fake_a1111: FakeA1111) -> None:
    # The web UI has none of Stability's limits (no "2.5 to 1"): the picture is not refused or resized.
    generator = ImageGenerator(provider=make())
    await generator.image_to_image(png((1500, 400)), "a blue fox", seed=7)
    sent = _sent(fake_a1111, "/sdapi/v1/img2img")
    assert _size(base64.b64decode(sent["init_images"][0])) == (1500, 400)
    assert (sent["width"], sent["height"]) == (1496, 400)  # the web UI works in steps of 8


async def test_upscale_uses_the_configured_upscaler(make: Make, fake_a1111: FakeA1111) -> None:
    image = await make(upscaler="r-esrgan 4x+").upscale(UpscaleRequest(png((64, 48))))
    sent = _sent(fake_a1111, "/sdapi/v1/extra-single-image")
    assert sent["upscaler_1"] == "R-ESRGAN 4x+" and sent["upscaling_resize"] == 4
    assert _size(image.data) == (image.width, image.height) == (256, 192)
    assert image.label == "R-ESRGAN 4x+ upscale"


@pytest.mark.parametrize("upscaler", ["Magic 8x", "None"])
async def test_unknown_upscaler_is_a_config_error(make: Make, fake_a1111: FakeA1111, upscaler: str) -> None:
    with pytest.raises(ConfigError, match=f"no upscaler '{upscaler}'. It has: Lanczos, Nearest"):
        await make(upscaler=upscaler).upscale(UpscaleRequest(png((64, 48))))
    assert fake_a1111.paths_hit("/sdapi/v1/extra-single-image") == 0


# -- errors --------------------------------------------------------------------------------------


async def test_422_is_prompt_rejected_with_the_fields(make: Make, fake_a1111: FakeA1111) -> None:
    detail = [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}]
    fake_a1111.answer_next("txt2img", 422, {"detail": detail})
    with pytest.raises(PromptRejected, match=r"refused the request \(steps: value is not a valid integer\)") as info:
        await make().text_to_image(TextToImageRequest("a red fox"))
    assert info.value.status == 422


@pytest.mark.parametrize(
    "fake_a1111", [{"api_auth": "abby:s3cret"}, {"api_auth": "abby:s3cret", "flavor": "forge"}], indirect=True
)
async def test_api_auth(make: Make, fake_a1111: FakeA1111) -> None:
    with pytest.raises(ProviderAuthError) as info:
        await make().text_to_image(TextToImageRequest("a red fox"))
    assert info.value.status == 401
    with pytest.raises(ProviderAuthError) as info:
        await make(username="abby", password="guess", model="sd_xl_base_1.0").text_to_image(
            TextToImageRequest("a red fox")
        )
    assert "guess" not in str(info.value) and fake_a1111.paths_hit(TXT2IMG) == 1
    image = await make(username="abby", password="s3cret").text_to_image(TextToImageRequest("a red fox"))
    assert image.data.startswith(b"\x89PNG")
    assert fake_a1111.requests[-1].headers["authorization"] == "Basic " + base64.b64encode(b"abby:s3cret").decode()


async def test_server_down_is_unreachable_after_retries(fake_a1111: FakeA1111) -> None:
    url = fake_a1111.url
    await fake_a1111.stop()
    sleep = SleepRecorder()
    provider = Automatic1111Provider(url, max_retries=2, sleep=sleep, model="x")  # the name check fails
    try:
        with pytest.raises(ProviderUnreachable, match="is not reachable right now") as info:
            await provider.text_to_image(TextToImageRequest("a red fox"))
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert len(sleep.delays) == 2
    finally:
        await provider.aclose()


@pytest.mark.parametrize("kind", ["txt2img", "img2img", "upscale"])
async def test_a_closed_port_is_unreachable_for_each_kind_of_job(kind: str) -> None:
    port = _closed_port()
    provider = Automatic1111Provider(f"http://abby:s3cret@127.0.0.1:{port}", max_retries=1, sleep=SleepRecorder())
    try:
        with pytest.raises(ProviderUnreachable) as info:
            if kind == "txt2img":  # no model or sampler to check: the POST itself cannot connect
                await provider.text_to_image(TextToImageRequest("a red fox"))
            elif kind == "img2img":
                await provider.image_to_image(ImageToImageRequest(png((64, 64)), "a blue fox"))
            else:  # the upscaler name check
                await provider.upscale(UpscaleRequest(png((64, 48))))
    finally:
        await provider.aclose()
    assert info.value.code == "provider_unreachable"
    assert f"http://127.0.0.1:{port}" in str(info.value) and "s3cret" not in str(info.value) + repr(provider)


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_server_that_dies_during_the_job_is_not_unreachable(make: Make, fake_a1111: FakeA1111) -> None:
    task = asyncio.create_task(make(steps=150).text_to_image(TextToImageRequest("a red fox")))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 2)
    await fake_a1111.stop()
    with pytest.raises(GenerationUnavailable) as info:
        await asyncio.wait_for(task, 10)
    assert not isinstance(info.value, ProviderUnreachable)


@pytest.mark.parametrize("fake_a1111", [{"api_enabled": False}], indirect=True)
async def test_a_server_without_api_flag_is_a_config_error(make: Make) -> None:
    with pytest.raises(ConfigError, match=r"does not answer as a web UI API \(is its API enabled\?\)"):
        await make().text_to_image(TextToImageRequest("a red fox"))


@pytest.mark.parametrize("fake_a1111", [{}, {"flavor": "forge"}], indirect=True)
async def test_out_of_memory_is_unavailable(
    make: Make, fake_a1111: FakeA1111, caplog: pytest.LogCaptureFixture
) -> None:
    fake_a1111.fail_next()
    with caplog.at_level(logging.WARNING, "abby.generation"), pytest.raises(GenerationUnavailable, match="GPU memory"):
        await make().text_to_image(TextToImageRequest("a red fox"))
    assert "OutOfMemoryError CUDA out of memory" in caplog.text
    assert (await make().text_to_image(TextToImageRequest("a red fox"))).seed > 0


async def test_other_server_errors_are_unavailable(make: Make, fake_a1111: FakeA1111) -> None:
    fake_a1111.fail_next(error="RuntimeError", message="Expected all tensors to be on the same device")
    with pytest.raises(GenerationUnavailable, match="HTTP 500"):
        await make().text_to_image(TextToImageRequest("a red fox"))


def test_settings_are_checked() -> None:
    for kw in ({"base_url": "ftp://x"}, {"username": "abby"}, {"username": "a:b", "password": "c"},
               {"password": "pässword", "username": "abby"}, {"steps": 0}, {"upscale_factor": 1}):
        with pytest.raises(ConfigError):
            Automatic1111Provider(**{"base_url": "http://127.0.0.1:7860", **kw})


# -- progress, cancellation, timeout -------------------------------------------------------------


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_progress_with_previews(make: Make, fake_a1111: FakeA1111) -> None:
    fake_a1111.options["show_progress_every_n_steps"] = 3
    events: list[Progress] = []

    async def collect(progress: Progress) -> None:
        events.append(progress)

    with reporting_progress(collect):
        await make(steps=30).text_to_image(TextToImageRequest("a red fox"))
    assert _stages(events) == ["running", "finished"]  # the server was idle: never queued
    sampling = [e for e in events if e.steps == 30]
    steps = [e.step for e in sampling if e.step is not None]
    assert len(sampling) >= 3 and steps == sorted(steps) and steps[-1] > steps[0]
    assert all(1 <= step <= 30 for step in steps)  # steps done, counted from 1
    previews = [e for e in sampling if e.preview is not None]
    assert previews and all(e.preview_type == "image/png" for e in previews)
    assert all(e.preview is not None and e.preview.startswith(b"\x89PNG") for e in previews)
    assert len({e.preview for e in previews}) == len(previews)  # each preview once
    assert all(a != b for a, b in itertools.pairwise(events))  # no report repeats the last one
    assert fake_a1111.paths_hit("/sdapi/v1/progress") > len(events)  # what did not change was not reported


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_queued_behind_another_clients_job(make: Make, fake_a1111: FakeA1111) -> None:
    async with httpx.AsyncClient(base_url=fake_a1111.url) as other_client:
        body = {"prompt": "someone else's", "steps": 20, "width": 64, "height": 64}
        theirs = asyncio.create_task(other_client.post(TXT2IMG, json=body, timeout=30))
        await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 1)
        with listening() as events:
            await make(steps=10).text_to_image(TextToImageRequest("a red fox"))
        assert (await theirs).status_code == 200
    assert events[0] == Progress("queued")  # the server says nothing of a place in its queue
    assert _stages(events) == ["queued", "running", "finished"]
    steps = [e.step for e in events if e.stage == "running" and e.step is not None]
    assert steps and steps == sorted(steps) and steps[-1] > steps[0]
    assert all(e.steps == 10 for e in events if e.step is not None)


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_nobody_listening_means_no_reports_and_no_previews_fetched(
    make: Make, fake_a1111: FakeA1111, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_a1111.options["show_progress_every_n_steps"] = 1
    reported: list[Progress] = []

    async def spy(progress: Progress) -> None:
        reported.append(progress)

    monkeypatch.setattr(base, "report_progress", spy)
    image = await make(steps=10).text_to_image(TextToImageRequest("a red fox"))
    assert image.data and reported == []
    reads = [r.query for r in fake_a1111.requests if r.path == "/sdapi/v1/progress"]
    assert len(reads) >= 3 and all(q == {"skip_current_image": "true"} for q in reads)


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_failing_listener_does_not_stop_the_job(
    make: Make, fake_a1111: FakeA1111, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(progress: Progress) -> None:
        raise RuntimeError("the message to edit is gone")

    with caplog.at_level(logging.WARNING, "abby.generation"), reporting_progress(broken):
        image = await make(steps=10).text_to_image(TextToImageRequest("a red fox"))
    assert image.data and "progress listener failed" in caplog.text


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_cancelling_the_call_interrupts_the_job_on_the_server(make: Make, fake_a1111: FakeA1111) -> None:
    provider = make(steps=150)
    task = asyncio.create_task(provider.text_to_image(TextToImageRequest("a red fox")))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_a1111.interrupts == 1  # sent before the cancelled call returned
    await fake_a1111.wait_until(lambda: fake_a1111.jobs[-1].outcome == "interrupted")
    assert fake_a1111.jobs[-1].steps_done < 150
    assert (await provider.text_to_image(TextToImageRequest("a red fox"))).data  # the provider is free again


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_timeout_interrupts_the_job_too(make: Make, fake_a1111: FakeA1111) -> None:
    # 1.5 s leaves the job time to reach the web UI on a loaded machine; it needs 3 s to finish.
    with pytest.raises(GenerationTimeout, match=r"within 1\.5 seconds"):
        await make(steps=150, timeout=1.5).text_to_image(TextToImageRequest("a red fox"))
    await fake_a1111.wait_until(lambda: fake_a1111.jobs[-1].outcome == "interrupted")
    assert fake_a1111.interrupts == 1 and fake_a1111.jobs[-1].steps_done < 150


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_cancelling_while_queued_spares_the_job_in_front(make: Make, fake_a1111: FakeA1111) -> None:
    async with httpx.AsyncClient(base_url=fake_a1111.url) as other_client:
        body = {"prompt": "someone else's", "steps": 60, "width": 64, "height": 64}
        theirs = asyncio.create_task(other_client.post(TXT2IMG, json=body, timeout=30))
        await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 1)
        ours = asyncio.create_task(make(steps=150).text_to_image(TextToImageRequest("a red fox")))
        await fake_a1111.wait_until(lambda: fake_a1111.paths_hit(TXT2IMG) == 2)
        ours.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ours
        assert fake_a1111.interrupts == 0
        assert (await theirs).status_code == 200
    assert fake_a1111.jobs[0].outcome == "completed" and fake_a1111.jobs[0].steps_done == 60
    # Ours starts once theirs is done, and is stopped then.
    await fake_a1111.wait_until(lambda: len(fake_a1111.jobs) == 2 and fake_a1111.jobs[1].outcome == "interrupted")
    assert fake_a1111.interrupts == 1


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_job_left_behind_by_a_failed_upscale_is_not_taken_for_ours(
    make: Make, fake_a1111: FakeA1111
) -> None:
    async with httpx.AsyncClient(base_url=fake_a1111.url) as other_client:
        body = {"image": base64.b64encode(png((64, 64))).decode(), "upscaler_1": "Magic 8x"}
        assert (await other_client.post("/sdapi/v1/extra-single-image", json=body)).status_code == 500
    assert fake_a1111.state.job == "extras"  # never ended; ours most likely starts in the same second
    with listening() as events:
        task = asyncio.create_task(make(steps=150).text_to_image(TextToImageRequest("a fox")))
    await fake_a1111.wait_until(lambda: any(e.steps == 150 and (e.step or 0) >= 3 for e in events))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_a1111.interrupts == 1
    await fake_a1111.wait_until(lambda: fake_a1111.jobs[-1].outcome == "interrupted")


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_job_interrupted_by_someone_else_is_refused(make: Make, fake_a1111: FakeA1111) -> None:
    task = asyncio.create_task(make(steps=150).text_to_image(TextToImageRequest("a red fox")))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 2)
    async with httpx.AsyncClient(base_url=fake_a1111.url) as operator:
        await operator.post("/sdapi/v1/interrupt")
    with pytest.raises(GenerationUnavailable, match="stopped on the image server"):
        await task


async def test_the_seed_comes_from_info_or_else_is_the_one_sent(make: Make, fake_a1111: FakeA1111) -> None:
    image_b64 = base64.b64encode(png((64, 64))).decode()
    fake_a1111.answer_next("txt2img", 200, {"images": [image_b64], "parameters": {}, "info": json.dumps({"seed": 5})})
    assert (await make().text_to_image(TextToImageRequest("a red fox", seed=99))).seed == 5
    fake_a1111.answer_next("txt2img", 200, {"images": [image_b64], "parameters": {}, "info": "not json"})
    image = await make().text_to_image(TextToImageRequest("a red fox"))
    assert image.seed == _sent(fake_a1111)["seed"] > 0 and image.label == "Stable Diffusion"
    fake_a1111.answer_next("txt2img", 200, {"images": [], "parameters": {}, "info": json.dumps({"seed": 5})})
    with pytest.raises(GenerationUnavailable, match="no image"):
        await make().text_to_image(TextToImageRequest("a red fox"))
