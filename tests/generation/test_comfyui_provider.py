"""The ComfyUI provider against the fake ComfyUI server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from abby_core.errors import (
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    NotConfigured,
    ProviderAuthError,
    ProviderRejected,
    ProviderUnreachable,
)
from abby_core.generation import ImageGenerator, base
from abby_core.generation.base import (
    ImageToImageRequest,
    Progress,
    TextToImageRequest,
    UpscaleRequest,
    reporting_progress,
)
from abby_core.generation.comfyui import ComfyUIProvider, Workflow, default_workflows
from abby_core.generation.params import MAX_SEED
from tests.fixtures.fake_comfyui import FakeComfyUI, running_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    async with running_fake() as server:
        yield server


FOX = TextToImageRequest(prompt="a red fox", negative_prompt="blurry", aspect_ratio="16:9", seed=42)


def small_workflows() -> dict[str, Workflow]:
    """The bundled workflows at 256 pixels a side, so the fake's PNGs stay small."""
    return {kind: dataclasses.replace(wf, base_size=256) for kind, wf in default_workflows().items()}


def make(fake: FakeComfyUI, **kw: Any) -> ComfyUIProvider:
    kw.setdefault("workflows", small_workflows())
    kw.setdefault("poll_interval", 0.05)
    return ComfyUIProvider(fake.url, **kw)


@contextlib.contextmanager
def listening() -> Iterator[list[Progress]]:
    """Collect the progress of the generations started inside the block."""
    events: list[Progress] = []
    with reporting_progress(events.append):
        yield events


def stages(events: list[Progress]) -> list[str]:
    """The stages in order, repeats folded: ``["queued", "running", "finished"]``."""
    folded: list[str] = []
    for event in events:
        if not folded or folded[-1] != event.stage:
            folded.append(event.stage)
    return folded


def steps_of(events: list[Progress]) -> list[tuple[int | None, int | None]]:
    return [(e.step, e.steps) for e in events if e.step is not None and e.preview is None]


def png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def only_prompt(fake: FakeComfyUI) -> tuple[str, dict[str, Any]]:
    ((prompt_id, graph),) = fake.prompts.items()
    return prompt_id, graph


def posted(fake: FakeComfyUI, path: str) -> list[Any]:
    return [r.json for r in fake.requests if r.method == "POST" and r.path == path]


# -- the three kinds of job ------------------------------------------------------------------------


async def test_text_to_image(fake: FakeComfyUI) -> None:
    provider = make(fake)
    try:
        image = await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    prompt_id, graph = only_prompt(fake)
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["7"]["inputs"]["text"] == "blurry"
    assert graph["3"]["inputs"]["seed"] == 42
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (320, 192)
    assert (image.width, image.height, image.content_type) == (320, 192, "image/png")
    assert Image.open(io.BytesIO(image.data)).size == (320, 192)
    assert image.data == fake.output_image(fake.history[prompt_id])
    assert (image.seed, image.provider, image.finish_reason, image.request_id) == (42, "comfyui", "SUCCESS", prompt_id)
    assert image.label == "ComfyUI (SDXL)"
    # Abby's prompt id was used, and the job's messages went to its own client id.
    (body,) = posted(fake, "/prompt")
    assert body["prompt_id"] == prompt_id and body["client_id"]
    assert fake.history[prompt_id]["prompt"][3] == {"client_id": body["client_id"]}


async def test_members_get_the_image_without_the_embedded_workflow(fake: FakeComfyUI) -> None:
    generator = ImageGenerator(provider=make(fake))
    try:
        image = await generator.generate(FOX)
    finally:
        await generator.aclose()
    prompt_id, _ = only_prompt(fake)
    served = fake.output_image(fake.history[prompt_id])
    assert json.loads(Image.open(io.BytesIO(served)).text["prompt"])["3"]["class_type"] == "KSampler"
    received = Image.open(io.BytesIO(image.data))
    assert received.text == {} and b"KSampler" not in image.data and b"blurry" not in image.data
    assert received.tobytes() == Image.open(io.BytesIO(served)).tobytes()
    assert (image.seed, image.request_id) == (42, prompt_id)  # what Abby records itself stays


async def test_progress_comes_in_order(fake: FakeComfyUI) -> None:
    fake.pause()
    provider = make(fake)
    try:
        with listening() as events:
            task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: bool(events))
        assert events == [Progress("queued", queue_position=0)]  # nothing ahead, not started yet
        fake.resume()
        await asyncio.wait_for(task, 5)
    finally:
        await provider.aclose()
    assert stages(events) == ["queued", "running", "finished"]
    assert steps_of(events) == [(i, 25) for i in range(1, 26)]
    # A node after the sampler (decode, save) clears the step count.
    last_step = max(i for i, e in enumerate(events) if e.step is not None)
    assert events[last_step + 1] == Progress("running")
    assert all(e.preview is None for e in events)  # the server sends none unless asked to
    assert all(a != b for a, b in itertools.pairwise(events))  # no report repeats the last one


async def test_queued_behind_other_jobs_reports_the_place(fake: FakeComfyUI) -> None:
    fake.pause()
    other, provider = make(fake), make(fake)
    theirs = [asyncio.create_task(other.text_to_image(dataclasses.replace(FOX, seed=s))) for s in (1, 2)]
    try:
        await fake.wait_until(lambda: len(fake.pending_ids) == 2)
        with listening() as events:
            ours = asyncio.create_task(provider.text_to_image(FOX))
            await fake.wait_until(lambda: bool(events))
        assert events == [Progress("queued", queue_position=2)]
        fake.resume()
        image = await asyncio.wait_for(ours, 10)
        await asyncio.gather(*theirs)
    finally:
        await provider.aclose()
        await other.aclose()
    queued = [e for e in events if e.stage == "queued"]
    places = [e.queue_position for e in queued if e.queue_position is not None]
    assert len(places) == len(queued)  # the place was always known
    assert places[0] == 2 and 1 in places and places == sorted(places, reverse=True)
    assert len(places) == len(set(places))  # a place is reported once, when it changes
    assert stages(events) == ["queued", "running", "finished"]
    assert steps_of(events) == [(i, 25) for i in range(1, 26)]
    assert image.request_id in fake.history


async def test_previews_are_reported(fake: FakeComfyUI) -> None:
    fake.previews = "JPEG"
    provider = make(fake)
    try:
        with listening() as events:
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    previews = [e for e in events if e.preview is not None]
    assert len(previews) == 25
    assert [(e.stage, e.step, e.steps) for e in previews] == [("running", i, 25) for i in range(1, 26)]
    assert previews[0].preview_type == "image/jpeg"
    assert previews[0].preview is not None and Image.open(io.BytesIO(previews[0].preview)).format == "JPEG"
    assert stages(events)[-1] == "finished"


async def test_a_slow_listener_still_gets_every_preview(fake: FakeComfyUI) -> None:
    # The history may say "done" while the socket still holds previews the listener has not
    # taken yet (a busy machine, a slow Discord edit): they are delivered, not cut off.
    fake.previews = "JPEG"
    provider = make(fake)  # the history is checked every 50 ms
    events: list[Progress] = []

    async def slow(progress: Progress) -> None:
        events.append(progress)
        if progress.preview is not None:
            await asyncio.sleep(0.03)  # stands for a listener slower than the poll: 25 take 0.75 s

    try:
        with reporting_progress(slow):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert [e.step for e in events if e.preview is not None] == list(range(1, 26))
    assert stages(events)[-1] == "finished"


async def test_nobody_listening_means_no_reports_and_no_queue_reads(
    fake: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[Progress] = []

    async def spy(progress: Progress) -> None:
        reported.append(progress)

    monkeypatch.setattr(base, "report_progress", spy)
    fake.previews = "JPEG"
    provider = make(fake, poll_interval=30)  # the websocket says when it is done: no polling needed
    try:
        image = await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert image.width == 320
    assert reported == []
    assert [r.path for r in fake.requests if r.path == "/queue"] == []


async def test_an_async_listener_is_awaited_and_a_failing_one_does_not_stop_the_job(
    fake: FakeComfyUI, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def listener(progress: Progress) -> None:
        await asyncio.sleep(0)
        seen.append(progress.stage)
        if progress.stage == "running":
            raise RuntimeError("the progress message could not be edited")

    provider = make(fake)
    try:
        with reporting_progress(listener):
            image = await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert image.width == 320
    assert "running" in seen and seen[-1] == "finished"
    assert "progress listener failed" in caplog.text


async def test_seed_zero_picks_a_seed_and_reports_it(fake: FakeComfyUI) -> None:
    provider = make(fake)
    try:
        image = await provider.text_to_image(TextToImageRequest(prompt="a fox"))
    finally:
        await provider.aclose()
    _, graph = only_prompt(fake)
    assert 1 <= image.seed <= MAX_SEED
    assert graph["3"]["inputs"]["seed"] == image.seed
    assert graph["7"]["inputs"]["text"] == ""
    assert (image.width, image.height) == (256, 256)


async def test_output_format_is_honoured(fake: FakeComfyUI) -> None:
    provider = make(fake)
    try:
        image = await provider.text_to_image(dataclasses.replace(FOX, output_format="webp"))
    finally:
        await provider.aclose()
    assert image.content_type == "image/webp"
    assert Image.open(io.BytesIO(image.data)).format == "WEBP"


async def test_image_to_image_uploads_the_picture(fake: FakeComfyUI) -> None:
    picture = png((64, 48))
    provider = make(fake)
    try:
        image = await provider.image_to_image(
            ImageToImageRequest(image=picture, prompt="as a painting", strength=0.35, seed=7)
        )
    finally:
        await provider.aclose()
    ((kind, folder, name),) = [key for key in fake.files if key[0] == "input"]
    assert (kind, folder) == ("input", "abby") and name.startswith("abby-") and name.endswith(".png")
    assert fake.files[(kind, folder, name)] == picture
    _, graph = only_prompt(fake)
    assert graph["10"]["inputs"]["image"] == f"abby/{name}"
    assert graph["3"]["inputs"]["denoise"] == 0.35
    assert graph["6"]["inputs"]["text"] == "as a painting"
    assert (image.width, image.height, image.seed) == (64, 48, 7)


async def test_upscale(fake: FakeComfyUI) -> None:
    provider = make(fake)
    try:
        with listening() as events:
            image = await provider.upscale(UpscaleRequest(image=png((64, 48)), mode="fast"))
    finally:
        await provider.aclose()
    assert (image.width, image.height) == (256, 192)
    assert image.label == "ComfyUI (RealESRGAN 4x)"
    _, graph = only_prompt(fake)
    assert graph["1"]["inputs"]["image"].startswith("abby/abby-")
    assert steps_of(events) == [(1, 2), (2, 2)]


async def test_two_jobs_at_once_each_get_their_own_progress(fake: FakeComfyUI) -> None:
    provider = make(fake)
    first_events: list[Progress] = []
    second_events: list[Progress] = []

    async def run(request: TextToImageRequest, events: list[Progress]) -> Any:
        with reporting_progress(events.append):
            return await provider.text_to_image(request)

    try:
        first, second = await asyncio.gather(
            run(FOX, first_events), run(dataclasses.replace(FOX, seed=43), second_events)
        )
    finally:
        await provider.aclose()
    assert (first.seed, second.seed) == (42, 43) and first.data != second.data
    for events in (first_events, second_events):
        assert stages(events)[-2:] == ["running", "finished"]  # queued too, unless it started at once
        assert steps_of(events) == [(i, 25) for i in range(1, 26)]


# -- refusals and failures --------------------------------------------------------------------------


async def test_node_errors_name_the_node(fake: FakeComfyUI) -> None:
    fake.checkpoints = ["some-other-model.safetensors"]
    provider = make(fake)
    try:
        with pytest.raises(ProviderRejected) as refused:
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    message = str(refused.value)
    assert "txt2img.json" in message
    assert "node 4 (CheckpointLoaderSimple): Value not in list" in message
    assert "sd_xl_base_1.0.safetensors" in message
    assert refused.value.status == 400
    assert fake.prompts == {} and posted(fake, "/queue") == []


async def test_a_missing_custom_node_is_named(fake: FakeComfyUI) -> None:
    workflows = small_workflows()
    graph = json.loads(json.dumps(dict(workflows["txt2img"].graph)))
    graph["8"]["class_type"] = "FancyVAEDecode"
    workflows["txt2img"] = dataclasses.replace(workflows["txt2img"], graph=graph)
    provider = make(fake, workflows=workflows)
    try:
        with pytest.raises(ProviderRejected, match=r"Node 'VAE Decode' not found.*Node ID '#8', class FancyVAEDecode"):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()


async def test_queued_for_other_outputs_but_not_ours_is_withdrawn(fake: FakeComfyUI) -> None:
    workflows = small_workflows()
    graph = json.loads(json.dumps(dict(workflows["txt2img"].graph)))
    graph["9"]["inputs"].pop("filename_prefix")  # our output fails validation...
    graph["20"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}  # ...another one passes
    workflows["txt2img"] = dataclasses.replace(workflows["txt2img"], graph=graph)
    fake.pause()
    provider = make(fake, workflows=workflows)
    try:
        with pytest.raises(ProviderRejected, match=r"node 9 \(SaveImage\): Required input is missing"):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    prompt_id, _ = only_prompt(fake)
    assert fake.deleted == [prompt_id] and fake.pending_ids == []


async def test_execution_error_names_the_node(fake: FakeComfyUI) -> None:
    fake.fail("KSampler", "CUDA out of memory. Tried to allocate 2.00 GiB", "torch.OutOfMemoryError")
    provider = make(fake)
    try:
        with pytest.raises(GenerationError) as failed:
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert not isinstance(failed.value, GenerationUnavailable)
    assert str(failed.value) == (
        "ComfyUI workflow txt2img.json failed at node 3 (KSampler): "
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    # The server is done with the job: nothing to withdraw.
    assert fake.interrupt_requests == [] and posted(fake, "/queue") == []


async def test_an_interrupt_from_elsewhere_is_reported(fake: FakeComfyUI) -> None:
    fake.step_delay = 0.02
    provider = make(fake)
    try:
        task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: fake.running is not None)
        async with httpx.AsyncClient() as other:  # someone presses Cancel in the ComfyUI page
            await other.post(f"{fake.url}/interrupt")
        with pytest.raises(GenerationUnavailable, match=r"interrupted .* node 3 \(KSampler\)"):
            await task
    finally:
        await provider.aclose()


async def test_a_cleared_queue_does_not_leave_the_job_waiting(fake: FakeComfyUI) -> None:
    fake.pause()
    provider = make(fake)
    try:
        task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: bool(fake.pending_ids))
        async with httpx.AsyncClient() as other:
            await other.post(f"{fake.url}/queue", json={"clear": True})
        with pytest.raises(GenerationUnavailable, match="removed from the ComfyUI queue"):
            await asyncio.wait_for(task, 5)
    finally:
        await provider.aclose()


def closed_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("request_", [FOX, UpscaleRequest(image=png())], ids=["txt2img", "upscale"])
async def test_server_down_is_unreachable(request_: TextToImageRequest | UpscaleRequest) -> None:
    port = closed_port()
    provider = ComfyUIProvider(f"http://abby:s3cret@127.0.0.1:{port}/?token=t0ken", small_workflows())
    try:
        with pytest.raises(ProviderUnreachable) as down:
            if isinstance(request_, UpscaleRequest):
                await provider.upscale(request_)
            else:
                await provider.text_to_image(request_)
    finally:
        await provider.aclose()
    assert down.value.code == "provider_unreachable"
    assert f"The ComfyUI server at http://127.0.0.1:{port}/ is not reachable" in str(down.value)
    assert "s3cret" not in str(down.value) + repr(provider) and "t0ken" not in str(down.value)
    assert isinstance(down.value.__cause__, OSError | httpx.ConnectError)


class RefusePrompt(httpx.AsyncBaseTransport):
    """A real transport whose connection for ``POST /prompt`` cannot be opened."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/prompt":
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_prompt_that_could_not_be_sent_is_unreachable_and_nothing_is_withdrawn(fake: FakeComfyUI) -> None:
    provider = make(fake, transport=RefusePrompt())
    try:
        with pytest.raises(ProviderUnreachable):
            await provider.image_to_image(ImageToImageRequest(image=png(), prompt="x", seed=1))
    finally:
        await provider.aclose()
    assert fake.prompts == {} and posted(fake, "/queue") == [] and fake.interrupt_requests == []
    assert any(key[0] == "input" for key in fake.files)  # the websocket and the upload got through


async def test_a_server_that_dies_after_taking_the_job_is_not_unreachable(fake: FakeComfyUI) -> None:
    fake.pause()
    provider = make(fake)
    try:
        task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: bool(fake.pending_ids))
        await fake.stop()
        with pytest.raises(GenerationUnavailable) as down:
            await asyncio.wait_for(task, 5)
    finally:
        await provider.aclose()
    assert not isinstance(down.value, ProviderUnreachable)


class BreakAfterPrompt(httpx.AsyncBaseTransport):
    """A real transport whose connections break once the prompt was queued (the server was killed)."""

    def __init__(self, error: type[httpx.TransportError]) -> None:
        self.inner, self.error, self.queued = httpx.AsyncHTTPTransport(), error, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.queued:
            raise self.error("Server disconnected without sending a response.", request=request)
        response = await self.inner.handle_async_request(request)
        self.queued = request.method == "POST" and request.url.path == "/prompt"
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError])
async def test_a_server_killed_mid_job_could_not_be_reached(
    fake: FakeComfyUI, error: type[httpx.TransportError]
) -> None:
    fake.pause()
    provider = make(fake, transport=BreakAfterPrompt(error))
    try:
        with pytest.raises(GenerationUnavailable) as down:
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert not isinstance(down.value, ProviderUnreachable)  # the job was taken: never handed to a fallback
    assert "could not be reached" in str(down.value) and error.__name__ not in str(down.value)


async def test_a_closed_provider_refuses_work(fake: FakeComfyUI) -> None:
    provider = make(fake)
    await provider.aclose()
    await provider.aclose()
    with pytest.raises(GenerationUnavailable, match="closed"):
        await provider.text_to_image(FOX)


# -- abandoned jobs ----------------------------------------------------------------------------------


async def test_cancelling_a_running_job_interrupts_it(fake: FakeComfyUI) -> None:
    fake.step_delay = 0.05
    provider = make(fake)
    try:
        task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: fake.running is not None)
        prompt_id = fake.running.prompt_id if fake.running else ""
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fake.interrupt_requests == [prompt_id]
        assert posted(fake, "/queue") == [{"delete": [prompt_id]}]
        await fake.wait_until(lambda: prompt_id in fake.history)
    finally:
        await provider.aclose()
    status = fake.history[prompt_id]["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
    assert fake.running is None and fake.pending_ids == []


async def test_cancelling_a_queued_job_deletes_it(fake: FakeComfyUI) -> None:
    fake.pause()
    provider = make(fake)
    try:
        task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: bool(fake.pending_ids))
        (prompt_id,) = fake.pending_ids
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await provider.aclose()
    assert fake.pending_ids == [] and fake.deleted == [prompt_id]
    assert fake.interrupt_requests == []  # nothing of ours was running
    fake.resume()
    await asyncio.sleep(0.1)
    assert fake.history == {} and fake.running is None


# The timeouts below leave the job a second or more to be queued first, even on a loaded
# machine; the jobs themselves take longer than that (a paused queue, 25 steps of 0.2 s).
async def test_a_timeout_withdraws_the_job(fake: FakeComfyUI) -> None:
    fake.step_delay = 0.2
    provider = make(fake, timeout=1.5)
    try:
        with pytest.raises(GenerationTimeout, match=r"within 1\.5 seconds"):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    prompt_id, _ = only_prompt(fake)
    assert fake.interrupt_requests == [prompt_id]
    await fake.wait_until(lambda: prompt_id in fake.history)
    assert fake.history[prompt_id]["status"]["status_str"] == "error"
    assert fake.running is None and fake.pending_ids == []


async def test_a_timeout_in_the_queue_deletes_without_interrupting(fake: FakeComfyUI) -> None:
    fake.pause()
    provider = make(fake, timeout=1.5)
    try:
        with pytest.raises(GenerationTimeout):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    prompt_id, _ = only_prompt(fake)
    assert fake.deleted == [prompt_id] and fake.interrupt_requests == []


# -- without the websocket ----------------------------------------------------------------------------


async def test_a_dropped_websocket_falls_back_to_polling(fake: FakeComfyUI) -> None:
    fake.step_delay = 0.02
    provider = make(fake)
    try:
        with listening() as events:
            task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: any(e.step is not None for e in events))
        await fake.drop_sockets()
        image = await asyncio.wait_for(task, 5)
    finally:
        await provider.aclose()
    assert image.width == 320
    assert stages(events)[-2:] == ["running", "finished"]
    assert len(steps_of(events)) < 25
    assert any(r.path.startswith("/history/") for r in fake.requests)


async def test_a_proxy_without_websockets_still_works(fake: FakeComfyUI) -> None:
    fake.websockets = False
    fake.step_delay = 0.02
    fake.pause()
    provider = make(fake)
    try:
        with listening() as events:
            task = asyncio.create_task(provider.text_to_image(FOX))
        await fake.wait_until(lambda: bool(events))
        fake.resume()
        image = await asyncio.wait_for(task, 5)
    finally:
        await provider.aclose()
    assert image.width == 320
    # Polling /queue still shows the job start; there are no steps without the websocket.
    assert events == [Progress("queued", queue_position=0), Progress("running"), Progress("finished")]


async def test_without_a_websocket_failures_are_read_from_the_history(fake: FakeComfyUI) -> None:
    fake.websockets = False
    fake.fail("8", "VAE decode failed", "RuntimeError")
    provider = make(fake)
    try:
        with pytest.raises(GenerationError, match=r"failed at node 8 \(VAEDecode\): RuntimeError: VAE decode failed"):
            await provider.text_to_image(FOX)
    finally:
        await provider.aclose()
    assert fake.interrupt_requests == []


# -- behind an authenticating proxy ------------------------------------------------------------------------


async def test_the_auth_header_goes_on_every_request() -> None:
    async with running_fake(auth=("Authorization", "Bearer let-me-in")) as fake:
        provider = make(fake, auth_header="Bearer let-me-in")
        try:
            with listening() as events:
                image = await provider.image_to_image(ImageToImageRequest(image=png(), prompt="x", seed=1))
        finally:
            await provider.aclose()
        assert image.width == 64
        assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer let-me-in"}
        assert any(r.path == "/ws" for r in fake.requests)
        assert steps_of(events)  # the websocket got through too


async def test_a_wrong_auth_header_is_the_operators_problem() -> None:
    async with running_fake(auth=("X-Api-Key", "right")) as fake:
        provider = make(fake, auth_header="wrong", auth_header_name="X-Api-Key")
        try:
            with pytest.raises(ProviderAuthError) as refused:
                await provider.text_to_image(FOX)
        finally:
            await provider.aclose()
        assert "wrong" not in str(refused.value)
        assert fake.prompts == {}
        # The server asked for the auth header: it is not an API key.
        assert "auth header" in str(refused.value) and "API key" not in str(refused.value)


async def test_a_missing_auth_header_is_named_as_missing() -> None:
    async with running_fake(auth=("X-Api-Key", "right")) as fake:
        provider = make(fake)
        try:
            with pytest.raises(ProviderAuthError, match="sends none") as refused:
                await provider.text_to_image(FOX)
        finally:
            await provider.aclose()
        assert "API key" not in str(refused.value)


def test_the_bundled_workflows_are_valid_for_the_server(fake: FakeComfyUI) -> None:
    fake.files[("input", "", "example.png")] = png()
    for kind, workflow in default_workflows().items():
        valid, error, outputs, node_errors = fake.validate(json.loads(json.dumps(dict(workflow.graph))))
        assert valid, (kind, error, node_errors)
        assert outputs == [workflow.output]


def write(tmp_path: Path, data: dict[str, Any], name: str = "mine.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def workflow_file() -> dict[str, Any]:
    return {
        "inputs": {"prompt": ["6", "text"], "seed": ["3", "seed"]},
        "output": "9",
        "graph": json.loads(json.dumps(dict(default_workflows()["txt2img"].graph))),
    }


def test_a_workflow_file_loads(tmp_path: Path) -> None:
    workflow = Workflow.load(write(tmp_path, workflow_file()))
    assert (workflow.name, workflow.output, workflow.label, workflow.base_size) == ("mine.json", "9", "ComfyUI", 1024)
    assert workflow.inputs == {"prompt": ("6", "text"), "seed": ("3", "seed")}
    built = workflow.build({"prompt": "hello", "seed": 5, "negative_prompt": "ignored: not declared"})
    assert built["6"]["inputs"]["text"] == "hello" and built["3"]["inputs"]["seed"] == 5
    assert workflow.graph["6"]["inputs"]["text"] == ""  # building never changes the workflow
    # A value of None (no negative prompt given) keeps what the workflow has.
    workflow = dataclasses.replace(workflow, inputs={**workflow.inputs, "negative_prompt": ("7", "text")})
    assert workflow.build({"negative_prompt": None})["7"]["inputs"]["text"] == ""
    assert workflow.build({"negative_prompt": "blurry"})["7"]["inputs"]["text"] == "blurry"
    with pytest.raises(ConfigError, match=r"mine\.json: the output node '99' is not in the graph"):
        dataclasses.replace(workflow, output="99")
    assert workflow.size("1:1") == (1024, 1024) and workflow.size("9:16") == (768, 1344)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["inputs"].update(prompt=["60", "text"]),
         "mine.json: 'prompt' is declared on node '60', which is not in the graph"),
        (lambda d: d["inputs"].update(prompt=["6", "txt"]),
         "mine.json: 'prompt' is declared on node '6' (CLIPTextEncode), which has no input 'txt'"),
        (lambda d: d["inputs"].update(seed=["3", "model"]), "node '3' input 'model', which is a link"),
        (lambda d: d["inputs"].update(style=["3", "seed"]), "unknown input slot 'style'"),
        (lambda d: d["inputs"].update(width=["5", "width"]), "both 'width' and 'height'"),
        (lambda d: d.update(output="99"), "the output node '99' is not in the graph"),
        (lambda d: d["graph"]["8"].pop("class_type"), "node '8' has no class_type"),
        (lambda d: d["graph"]["8"]["inputs"].update(vae=["44", 2]), "node '8' links its input 'vae'"),
        (lambda d: d.update(base_size=10), "'base_size' must be"),
        (lambda d: d.pop("graph"), "'graph' must be the API-format graph"),
    ],
)
def test_a_bad_workflow_file_names_the_file_and_node(tmp_path: Path, change: Any, message: str) -> None:
    data = workflow_file()
    change(data)
    with pytest.raises(ConfigError, match=r"ComfyUI workflow mine\.json") as bad:
        Workflow.load(write(tmp_path, data))
    assert message in str(bad.value)


def test_an_unreadable_workflow_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.json could not be read"):
        Workflow.load(path)


def test_a_workflow_must_declare_what_its_kind_needs(tmp_path: Path) -> None:
    data = workflow_file()
    workflow = Workflow.load(write(tmp_path, data))
    with pytest.raises(ConfigError, match=r"mine\.json is used for img2img but declares no input for image"):
        ComfyUIProvider("http://127.0.0.1:8188", {"img2img": workflow})
    with pytest.raises(ConfigError, match="Unknown ComfyUI workflow kind 'inpaint'"):
        ComfyUIProvider("http://127.0.0.1:8188", {"inpaint": workflow})


async def test_a_kind_without_a_workflow_is_not_configured(fake: FakeComfyUI) -> None:
    provider = make(fake, workflows={"txt2img": small_workflows()["txt2img"]})
    try:
        with pytest.raises(NotConfigured, match="no upscale workflow"):
            await provider.upscale(UpscaleRequest(image=png()))
    finally:
        await provider.aclose()
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"base_url": "gpu-box:8188"}, "must start with http:// or https://"),
        ({"timeout": 0}, "above 0 seconds"),
        ({"auth_header": "Bearer a\nb"}, "characters a header cannot hold"),
        ({"auth_header_name": "Bad Header"}, "plain header name"),
    ],
)
def test_bad_settings_are_config_errors(kw: dict[str, Any], message: str) -> None:
    kw.setdefault("base_url", "http://127.0.0.1:8188")
    with pytest.raises(ConfigError, match=message):
        ComfyUIProvider(**kw)
    assert "Bearer a" not in repr(ComfyUIProvider("http://127.0.0.1:8188", auth_header="Bearer a"))
