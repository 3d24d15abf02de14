"""Abby on the fake Discord with a local GPU server (ComfyUI or AUTOMATIC1111), each against its fake.

Most tests run for both providers (the ``gpu`` fixture); a few cover what only one server does
(ComfyUI's queue places, its node errors; the web UI's 422 and out-of-memory answers). The bot is
built from settings alone (``IMAGE_PROVIDER``, ``COMFYUI_*`` / ``A1111_*``), the way ``run_bot`` builds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from abby_core.errors import (
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    PromptRejected,
    ProviderRejected,
    ProviderUnreachable,
)
from abby_core.generation.offline import LABEL as OFFLINE_LABEL
from tests.discord.conftest import Abby, buttons, field, refusal, result_of
from tests.fixtures.fake_a1111 import FakeA1111
from tests.fixtures.fake_comfyui import FakeComfyUI
from tests.fixtures.fake_discord import CapturedRequest, InteractionHandle, WaitTimeout

STEPS = 25  # the bundled ComfyUI workflows' KSampler steps, and A1111_STEPS' default
STEP_RE = re.compile(r"step (\d+)/(\d+)")


class Gpu:
    """One fake GPU server and the settings that point Abby at it."""

    def __init__(self, name: str, fake: FakeComfyUI | FakeA1111) -> None:
        self.name = name
        self.fake = fake
        self.prefix = "COMFYUI" if name == "comfyui" else "A1111"

    def __repr__(self) -> str:
        return self.name

    @property
    def comfy(self) -> FakeComfyUI:
        assert isinstance(self.fake, FakeComfyUI)
        return self.fake

    @property
    def a1111(self) -> FakeA1111:
        assert isinstance(self.fake, FakeA1111)
        return self.fake

    @property
    def label(self) -> str:
        """What the result's "Made with" says for a text-to-image job."""
        return "ComfyUI (SDXL)" if self.name == "comfyui" else "v1-5-pruned-emaonly"

    def env(self, **settings: Any) -> dict[str, Any]:
        """``IMAGE_PROVIDER`` and the provider's URL; ``TIMEOUT_SECONDS=1`` means ``COMFYUI_TIMEOUT_SECONDS=1``…"""
        values = {"IMAGE_PROVIDER": self.name, f"{self.prefix}_URL": self.fake.url}
        values.update({f"{self.prefix}_{key}": value for key, value in settings.items()})
        return values

    def slow(self, step_delay: float) -> None:
        self.fake.step_delay = step_delay

    def show_previews(self) -> None:
        if self.name == "comfyui":
            self.comfy.previews = "JPEG"
        else:
            self.a1111.options["show_progress_every_n_steps"] = 3

    def jobs(self) -> list[str]:
        """The kinds of job the server was sent, in order."""
        if self.name == "comfyui":
            kinds = []
            for graph in self.comfy.prompts.values():
                classes = {node["class_type"] for node in graph.values()}
                if "ImageUpscaleWithModel" in classes:
                    kinds.append("upscale")
                else:
                    kinds.append("img2img" if "LoadImage" in classes else "txt2img")
            return kinds
        paths = {
            "/sdapi/v1/txt2img": "txt2img",
            "/sdapi/v1/img2img": "img2img",
            "/sdapi/v1/extra-single-image": "upscale",
        }
        return [paths[r.path] for r in self.a1111.requests if r.method == "POST" and r.path in paths]

    def prompts(self) -> list[str]:
        """The positive prompts the server was sent, in order."""
        if self.name == "comfyui":
            return [graph["6"]["inputs"]["text"] for graph in self.comfy.prompts.values() if "6" in graph]
        return [
            r.body["prompt"]
            for r in self.a1111.requests
            if r.path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img") and isinstance(r.body, dict)
        ]

    async def wait_until(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.fake.wait_until(check, timeout=timeout)


@contextlib.asynccontextmanager
async def _running(name: str) -> AsyncIterator[Gpu]:
    fake: FakeComfyUI | FakeA1111 = FakeComfyUI() if name == "comfyui" else FakeA1111()
    await fake.start()
    try:
        yield Gpu(name, fake)
    finally:
        await fake.stop()


# Ask for these before ``abby``: the fake server then outlives the bot.
@pytest.fixture(params=["comfyui", "automatic1111"])
async def gpu(request: pytest.FixtureRequest) -> AsyncIterator[Gpu]:
    """A started fake GPU server of each kind."""
    async with _running(request.param) as server:
        yield server


@pytest.fixture
async def comfyui() -> AsyncIterator[Gpu]:
    async with _running("comfyui") as server:
        yield server


@pytest.fixture
async def a1111() -> AsyncIterator[Gpu]:
    async with _running("automatic1111") as server:
        yield server


def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _closed_port() -> int:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _imagine(abby: Abby, member: object, prompt: str = "a red fox") -> dict[str, Any]:
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": prompt, "seed": 7})
    await result_of(handle, timeout=20)
    assert handle.original is not None
    return handle.original


async def _timed_edits(handle: InteractionHandle, *, timeout: float = 20.0) -> list[tuple[float, CapturedRequest]]:
    """Every edit of the deferred reply up to the result, each stamped when the fake Discord got it."""
    first = await handle.response()
    assert first.type == 5, f"expected a deferred response, got {first.type}"
    edits: list[tuple[float, CapturedRequest]] = []
    for _ in range(50):
        edit = await handle.edit(timeout=timeout)
        edits.append((time.monotonic(), edit))
        if edit.embeds:
            return edits
    raise AssertionError(f"no result after 50 edits: {[e.content for _, e in edits]}")


async def _no_more_edits(handle: InteractionHandle) -> None:
    with pytest.raises(WaitTimeout):
        await handle.edit(timeout=0.5)


# -- the commands and buttons ---------------------------------------------------------------------


async def test_imagine_returns_the_gpu_image_with_its_label_and_quota(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**gpu.env())
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash(
        "imagine", user=member, options={"prompt": "a lighthouse at dawn", "seed": 42, "aspect_ratio": "16:9"}
    )
    result = await result_of(handle, timeout=20)
    embed = result.embeds[0]
    assert embed["description"] == "a lighthouse at dawn"
    assert field(embed, "Seed") == "42"
    assert field(embed, "Aspect ratio") == "16:9"
    assert field(embed, "Made with") == gpu.label
    assert field(embed, "Your quota").startswith("1/5 today")
    [upload] = result.files
    assert embed["image"]["url"] == f"attachment://{upload.filename}"
    width, height = _size(upload.data)
    assert width > height and width / height == pytest.approx(16 / 9, rel=0.05)
    assert gpu.jobs() == ["txt2img"] and gpu.prompts() == ["a lighthouse at dawn"]
    message = handle.original
    assert message is not None and not message["flags"] & 64, "results are public"
    assert {"Upscale", "Variation", "Reroll", "Delete"} <= set(buttons(message))
    status = await abby.status(member)
    assert status.daily_used == 1 and status.user_bytes == len(upload.data)


async def test_imgimg_sends_the_attachment_to_the_gpu(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**gpu.env())
    member = abby.fake.make_member(name="ann")
    picture = abby.fake.add_attachment("cat.png", _png(), "image/png")
    handle = await abby.fake.slash(
        "imgimg", user=member, options={"image": picture, "prompt": "a cat in snow", "strength": 0.4}
    )
    result = await result_of(handle, timeout=20)
    assert result.embeds[0]["description"] == "a cat in snow"
    width, height = _size(result.files[0].data)
    assert width / height == pytest.approx(96 / 64, rel=0.02)
    assert gpu.jobs() == ["img2img"] and gpu.prompts() == ["a cat in snow"]
    if gpu.name == "comfyui":
        assert [r for r in gpu.comfy.requests if r.path == "/upload/image"], "the picture was uploaded"
    else:
        [sent] = [r.body for r in gpu.a1111.requests if r.path == "/sdapi/v1/img2img"]
        assert sent["denoising_strength"] == pytest.approx(0.4) and len(sent["init_images"]) == 1
    assert (await abby.status(member)).daily_used == 1


async def test_upscale_enlarges_the_attachment_on_the_gpu(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**gpu.env())
    member = abby.fake.make_member(name="ann")
    picture = abby.fake.add_attachment("small.png", _png((64, 48)), "image/png")
    handle = await abby.fake.slash("upscale", user=member, options={"image": picture})
    result = await result_of(handle, timeout=20)
    assert _size(result.files[0].data) == (256, 192)
    assert gpu.jobs() == ["upscale"]
    assert set(buttons(handle.original or {})) == {"Upscale", "Delete"}
    assert (await abby.status(member)).daily_used == 1


async def test_variation_reroll_and_upscale_buttons_run_on_the_gpu(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**gpu.env())
    ann = abby.fake.make_member(name="ann")
    message = await _imagine(abby, ann, "a red fox")
    ids = buttons(message)

    varied = await result_of(await abby.fake.click(ids["Variation"], user=ann, message=message), timeout=20)
    assert varied.embeds[0]["title"].endswith("Variation") and varied.embeds[0]["description"] == "a red fox"

    rerolled = await result_of(await abby.fake.click(ids["Reroll"], user=ann, message=message), timeout=20)
    assert rerolled.embeds[0]["description"] == "a red fox"
    assert field(rerolled.embeds[0], "Seed") != field(message["embeds"][0], "Seed")

    upscaled = await result_of(await abby.fake.click(ids["Upscale"], user=ann, message=message), timeout=30)
    assert _size(upscaled.files[0].data) == (4096, 4096)

    assert gpu.jobs() == ["txt2img", "img2img", "txt2img", "upscale"]
    assert gpu.prompts() == ["a red fox"] * 3
    assert (await abby.status(ann)).daily_used == 4


# -- progress in the deferred reply ---------------------------------------------------------------


async def test_progress_edits_show_the_steps_at_most_every_two_seconds(gpu: Gpu, abby: Abby) -> None:
    gpu.slow(0.2)  # 25 steps: about 5 s on the "GPU"
    gpu.show_previews()
    await abby.start(**gpu.env())
    member = abby.fake.make_member(name="ann")
    started = time.monotonic()
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a slow fox"})
    edits = await _timed_edits(handle)
    duration = time.monotonic() - started
    *progress, (_, result) = edits

    # the final edit is the result, and nothing comes after it
    assert result.embeds and result.embeds[0]["description"] == "a slow fox"
    await _no_more_edits(handle)
    final = handle.original
    assert final is not None and not final["content"], "the progress text is gone from the result"
    assert [a["filename"] for a in final["attachments"]] == [result.files[0].filename], "no preview left behind"

    # progress: the steps, in order, of the job's sampler
    texts = [edit.content or "" for _, edit in progress]
    steps = [(int(m[1]), int(m[2])) for m in map(STEP_RE.search, texts) if m]
    assert len(steps) >= 2, texts
    assert all(total == STEPS and 1 <= step <= STEPS for step, total in steps), texts
    assert [s for s, _ in steps] == sorted(s for s, _ in steps) and steps[-1][0] > steps[0][0]
    assert all(not edit.embeds for _, edit in progress)
    previews = [f for _, edit in progress for f in edit.files]
    assert previews and all(f.filename.startswith("SPOILER_preview.") for f in previews)

    # rate limit: at least 2 s between progress edits (a little slack for the HTTP round trip)
    stamps = [stamp for stamp, _ in progress]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 1.8 for gap in gaps), gaps
    assert len(progress) <= duration / 2 + 1, (len(progress), duration)
    assert (await abby.status(member)).daily_used == 1


async def test_comfyui_shows_the_place_in_its_queue(comfyui: Gpu, abby: Abby) -> None:
    fake = comfyui.comfy
    await abby.start(**comfyui.env())
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    fake.pause()
    first = await abby.fake.slash("imagine", user=bob, options={"prompt": "bob's fox"})
    await fake.wait_until(lambda: len(fake.pending_ids) == 1)
    second = await abby.fake.slash("imagine", user=ann, options={"prompt": "ann's fox"})
    await fake.wait_until(lambda: len(fake.pending_ids) == 2)
    assert (await first.response()).type == 5 and (await second.response()).type == 5
    assert (await first.edit(timeout=10)).content == "⏳ Waiting for the image server…"
    assert (await second.edit(timeout=10)).content == "⏳ Waiting for the image server — 1 image ahead of yours."
    fake.resume()
    assert (await result_of(second, responded=True, timeout=20)).embeds[0]["description"] == "ann's fox"
    assert (await result_of(first, responded=True, timeout=20)).embeds[0]["description"] == "bob's fox"
    assert comfyui.prompts() == ["bob's fox", "ann's fox"]
    assert (await abby.status(ann)).daily_used == 1 and (await abby.status(bob)).daily_used == 1


async def test_a1111_says_it_waits_while_another_client_holds_the_server(a1111: Gpu, abby: Abby) -> None:
    fake = a1111.a1111
    a1111.slow(0.1)
    await abby.start(**a1111.env(STEPS=5))
    member = abby.fake.make_member(name="ann")
    async with httpx.AsyncClient(base_url=fake.url) as other_client:
        body = {"prompt": "someone else's", "steps": 20, "width": 64, "height": 64}  # about 2 s
        theirs = asyncio.create_task(other_client.post("/sdapi/v1/txt2img", json=body, timeout=30))
        await fake.wait_until(lambda: fake.state.sampling_step >= 1)
        handle = await abby.fake.slash("imagine", user=member, options={"prompt": "ours"})
        assert (await handle.response()).type == 5
        assert (await handle.edit(timeout=10)).content == "⏳ Waiting for the image server…"
        result = await result_of(handle, responded=True, timeout=20)
        assert (await theirs).status_code == 200
    assert result.embeds[0]["description"] == "ours"
    assert [job.outcome for job in fake.jobs] == ["completed", "completed"]


# -- when the GPU server fails ----------------------------------------------------------------------


async def test_server_down_is_not_reachable_and_costs_nothing(gpu: Gpu, abby: Abby) -> None:
    await gpu.fake.stop()  # its port is closed now
    await abby.start(**gpu.env())
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
    error, reply = await refusal(handle, timeout=15)
    assert isinstance(error, ProviderUnreachable)
    assert "The image server is not reachable right now. Nothing was charged" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0


async def test_a_closed_port_is_not_reachable_for_every_command(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**{**gpu.env(), f"{gpu.prefix}_URL": f"http://127.0.0.1:{_closed_port()}"})
    member = abby.fake.make_member(name="ann")
    picture = abby.fake.add_attachment("cat.png", _png(), "image/png")
    for command, options in (("imgimg", {"image": picture, "prompt": "a cat"}), ("upscale", {"image": picture})):
        handle = await abby.fake.slash(command, user=member, options=options, expect_error=True)
        error, reply = await refusal(handle, timeout=15)
        assert isinstance(error, ProviderUnreachable), command
        assert "not reachable" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0


async def test_with_an_offline_fallback_a_down_server_gives_an_offline_image(gpu: Gpu, abby: Abby) -> None:
    await gpu.fake.stop()
    await abby.start(**gpu.env(), IMAGE_PROVIDER_FALLBACK="offline")
    member = abby.fake.make_member(name="ann")
    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}), timeout=15)
    assert field(result.embeds[0], "Made with") == OFFLINE_LABEL
    assert result.files[0].data.startswith(b"\x89PNG")
    assert (await abby.status(member)).daily_used == 1


async def test_with_an_offline_fallback_a_running_server_is_still_used(gpu: Gpu, abby: Abby) -> None:
    await abby.start(**gpu.env(), IMAGE_PROVIDER_FALLBACK="offline")
    member = abby.fake.make_member(name="ann")
    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}), timeout=15)
    assert field(result.embeds[0], "Made with") == gpu.label
    assert gpu.jobs() == ["txt2img"]


@pytest.mark.parametrize("where", ["running", "queued"])
async def test_a_job_that_times_out_is_stopped_on_the_gpu_and_costs_nothing(gpu: Gpu, abby: Abby, where: str) -> None:
    gpu.slow(0.2)  # 25 steps: about 5 s, far past the timeout
    await abby.start(**gpu.env(TIMEOUT_SECONDS=1))
    member = abby.fake.make_member(name="ann")
    other: asyncio.Task[httpx.Response] | None = None
    client = httpx.AsyncClient(base_url=gpu.fake.url)
    try:
        if where == "queued" and gpu.name == "comfyui":
            gpu.comfy.pause()
        elif where == "queued":  # someone else's job holds the web UI for about 2 s
            body = {"prompt": "someone else's", "steps": 10, "width": 64, "height": 64}
            other = asyncio.create_task(client.post("/sdapi/v1/txt2img", json=body, timeout=30))
            await gpu.wait_until(lambda: gpu.a1111.state.sampling_step >= 1)
        handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
        error, reply = await refusal(handle, timeout=20)
        assert isinstance(error, GenerationTimeout)
        assert "took too long" in (reply.content or "") and "Nothing was charged" in (reply.content or "")
        assert (await abby.status(member)).daily_used == 0

        if gpu.name == "comfyui":
            fake = gpu.comfy
            [prompt_id] = fake.prompts
            if where == "queued":
                assert fake.deleted == [prompt_id] and fake.pending_ids == [] and fake.interrupt_requests == []
            else:
                assert fake.interrupt_requests == [prompt_id]
                await gpu.wait_until(lambda: prompt_id in fake.history and fake.running is None)
                assert fake.history[prompt_id]["status"]["messages"][-1][0] == "execution_interrupted"
        else:
            a1111 = gpu.a1111
            ours = 0 if where == "running" else 1  # queued: ours runs second, and is stopped once it starts
            await gpu.wait_until(lambda: len(a1111.jobs) > ours and a1111.jobs[ours].outcome == "interrupted")
            assert a1111.jobs[ours].steps_done < STEPS and a1111.interrupts == 1
            if other is not None:
                assert (await other).status_code == 200 and a1111.jobs[0].outcome == "completed"
            await gpu.wait_until(lambda: a1111.state.job == "")
    finally:
        if other is not None and not other.done():
            other.cancel()
        await client.aclose()


async def test_comfyui_node_errors_are_refused_privately_and_cost_nothing(comfyui: Gpu, abby: Abby) -> None:
    fake = comfyui.comfy
    await abby.start(**comfyui.env())
    member = abby.fake.make_member(name="ann")

    # the server will not queue the workflow (its checkpoint is missing)
    fake.checkpoints = ["something_else.safetensors"]
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
    error, reply = await refusal(handle, timeout=15)
    assert isinstance(error, ProviderRejected) and "sd_xl_base_1.0.safetensors" in str(error)
    assert "did not accept this request. Nothing was charged" in (reply.content or "")
    assert fake.history == {}, "nothing ran"

    # the workflow was queued, then a node failed while running
    fake.checkpoints = ["sd_xl_base_1.0.safetensors"]
    fake.fail("KSampler", "CUDA out of memory. Tried to allocate 2.00 GiB", "torch.OutOfMemoryError")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
    error, reply = await refusal(handle, timeout=15)
    assert isinstance(error, GenerationError) and "KSampler" in str(error)
    assert "could not be made. Nothing was charged" in (reply.content or "")
    assert "CUDA" not in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0

    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}))
    assert field(result.embeds[0], "Your quota").startswith("1/5 today")


@pytest.mark.parametrize("failure", ["422", "oom"])
async def test_a1111_refusals_are_told_privately_and_cost_nothing(a1111: Gpu, abby: Abby, failure: str) -> None:
    fake = a1111.a1111
    await abby.start(**a1111.env())
    member = abby.fake.make_member(name="ann")
    if failure == "422":
        detail = [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}]
        fake.answer_next("txt2img", 422, {"detail": detail})
    else:
        fake.fail_next()  # a 500 with CUDA's out-of-memory error
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
    error, reply = await refusal(handle, timeout=15)
    text = reply.content or ""
    if failure == "422":
        assert isinstance(error, PromptRejected) and error.status == 422
        assert "refused the request (steps: value is not a valid integer)" in text
    else:
        assert isinstance(error, GenerationUnavailable) and "GPU memory" in str(error)
        assert "unavailable right now. Nothing was charged" in text and "CUDA" not in text
    assert (await abby.status(member)).daily_used == 0

    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}))
    assert field(result.embeds[0], "Your quota").startswith("1/5 today")
