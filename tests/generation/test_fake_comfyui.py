"""The fake ComfyUI server keeps the real server's contract (it is only useful if it does)."""

from __future__ import annotations

import asyncio
import io
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fixtures.fake_comfyui import FakeComfyUI, running_fake

Graph = dict[str, Any]


def txt2img(*, steps: int = 3, seed: int = 1, text: str = "a red fox", size: int = 64, **override: Any) -> Graph:
    graph: Graph = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    for key, value in override.items():
        node, _, name = key.partition("__")
        if value is None:
            graph[node]["inputs"].pop(name)
        else:
            graph[node]["inputs"][name] = value
    return graph


def png(size: tuple[int, int] = (32, 24), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


class Client:
    """A plain aiohttp client, independent of Abby's own."""

    def __init__(self, fake: FakeComfyUI, session: aiohttp.ClientSession) -> None:
        self.fake = fake
        self.http = session

    async def prompt(self, graph: Graph, **body: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.fake.url}/prompt", json={"prompt": graph, **body}) as response:
            return response.status, await response.json()

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.fake.url}{path}", params=params) as response:
            assert response.status == 200, path
            return await response.json()

    async def post(self, path: str, body: Any = None) -> int:
        async with self.http.post(f"{self.fake.url}{path}", json=body) as response:
            return response.status

    async def run(self, graph: Graph, client_id: str = "c1", **body: Any) -> tuple[str, list[Any]]:
        """Queue ``graph`` with a websocket open; every message until the job's ``executing: null``."""
        seen: list[Any] = []
        async with self.http.ws_connect(f"{self.fake.url}/ws?clientId={client_id}") as ws:
            seen.append(json.loads((await ws.receive(timeout=5)).data))
            status, answer = await self.prompt(graph, client_id=client_id, **body)
            assert status == 200, answer
            for _ in range(2000):
                msg = await ws.receive(timeout=5)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    seen.append(msg.data)
                    continue
                data = json.loads(msg.data)
                seen.append(data)
                if data["type"] == "executing" and data["data"]["node"] is None:
                    return answer["prompt_id"], seen
        raise AssertionError("the job never finished")


@pytest.fixture
async def comfy() -> AsyncIterator[Client]:
    async with running_fake() as fake, aiohttp.ClientSession() as session:
        yield Client(fake, session)


def kinds(messages: list[Any]) -> list[str]:
    """Message types without the queue broadcasts, which interleave freely."""
    return [m["type"] for m in messages if isinstance(m, dict) and m["type"] not in ("status", "progress_state")]


# -- node information --------------------------------------------------------------------------


async def test_object_info_lists_the_nodes_with_their_input_specs(comfy: Client) -> None:
    info = await comfy.get("/object_info")
    for name in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode",
                 "VAEEncode", "SaveImage", "LoadImage", "ImageScaleBy", "UpscaleModelLoader",
                 "ImageUpscaleWithModel"):
        assert info[name]["name"] == name
    sampler = info["KSampler"]
    assert sampler["input"]["required"]["seed"] == ["INT", {
        "default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
        "tooltip": "The random seed used for creating the noise."}]
    assert "euler" in sampler["input"]["required"]["sampler_name"][0]
    assert sampler["input_order"]["required"][:2] == ["model", "seed"]
    assert sampler["output"] == ["LATENT"] and sampler["output_node"] is False
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == comfy.fake.checkpoints
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["SaveImage"]["output_node"] is True
    assert info["LoadImage"]["input"]["required"]["image"][1] == {"image_upload": True}
    one = await comfy.get("/api/object_info/KSampler")
    assert list(one) == ["KSampler"] and one["KSampler"] == sampler
    assert await comfy.get("/object_info/NoSuchNode") == {}


async def test_uploaded_files_appear_in_load_image_choices(comfy: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("image", png(), filename="cat.png", content_type="image/png")
    form.add_field("subfolder", "abby")
    async with comfy.http.post(f"{comfy.fake.url}/upload/image", data=form) as response:
        assert await response.json() == {"name": "cat.png", "subfolder": "abby", "type": "input"}
    info = await comfy.get("/object_info/LoadImage")
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["abby/cat.png"]


async def test_system_stats_and_queue_status(comfy: Client) -> None:
    stats = await comfy.get("/system_stats")
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version"} <= set(stats["system"])
    assert stats["devices"][0]["type"] == "cuda" and stats["devices"][0]["vram_total"] > 0
    assert await comfy.get("/prompt") == {"exec_info": {"queue_remaining": 0}}
    assert await comfy.get("/queue") == {"queue_running": [], "queue_pending": []}


# -- validation ------------------------------------------------------------------------------------


async def test_a_good_prompt_is_queued_with_its_id(comfy: Client) -> None:
    status, answer = await comfy.prompt(txt2img(), prompt_id="my-id", client_id="c")
    assert status == 200
    assert answer == {"prompt_id": "my-id", "number": 0, "node_errors": {}}
    status, answer = await comfy.prompt(txt2img())
    assert status == 200 and answer["number"] == 1 and len(answer["prompt_id"]) == 36


async def test_no_prompt(comfy: Client) -> None:
    async with comfy.http.post(f"{comfy.fake.url}/prompt", json={"client_id": "c"}) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                      "extra_info": {}},
            "node_errors": {},
        }


async def test_unknown_class_type_is_a_missing_node_type(comfy: Client) -> None:
    graph = txt2img()
    graph["4"]["class_type"] = "FancyLoader"
    graph["4"]["_meta"] = {"title": "My loader"}
    status, answer = await comfy.prompt(graph)
    assert status == 400
    assert answer == {
        "error": {
            "type": "missing_node_type",
            "message": "Node 'My loader' not found. The custom node may not be installed.",
            "details": "Node ID '#4'",
            "extra_info": {"node_id": "4", "class_type": "FancyLoader", "node_title": "My loader"},
        },
        "node_errors": {},
    }
    del graph["4"]["class_type"]
    status, answer = await comfy.prompt(graph)
    assert answer["error"]["type"] == "missing_node_type" and "has no class_type" in answer["error"]["message"]
    assert comfy.fake.pending_ids == [] and comfy.fake.prompts == {}


async def test_a_graph_without_an_output_node(comfy: Client) -> None:
    graph = txt2img()
    del graph["9"]
    status, answer = await comfy.prompt(graph)
    assert status == 400
    assert answer["error"] == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                               "extra_info": {}}


async def test_missing_required_input_names_node_and_output(comfy: Client) -> None:
    status, answer = await comfy.prompt(txt2img(**{"3__steps": None}))
    assert status == 400
    assert answer["error"]["type"] == "prompt_outputs_failed_validation"
    assert answer["error"]["message"] == "Prompt outputs failed validation"
    # The summary only lists the output node's own errors; the sampler's are in node_errors.
    assert answer["error"]["details"] == ""
    assert answer["node_errors"] == {"3": {
        "errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": "steps",
                    "extra_info": {"input_name": "steps"}}],
        "dependent_outputs": ["9"],
        "class_type": "KSampler",
    }}


async def test_values_not_in_list(comfy: Client) -> None:
    status, answer = await comfy.prompt(txt2img(**{"4__ckpt_name": "missing.safetensors",
                                                   "3__sampler_name": "warp"}))
    assert status == 400
    (ckpt,) = answer["node_errors"]["4"]["errors"]
    assert ckpt["type"] == "value_not_in_list"
    assert ckpt["details"] == f"ckpt_name: 'missing.safetensors' not in {comfy.fake.checkpoints}"
    assert ckpt["extra_info"]["received_value"] == "missing.safetensors"
    assert ckpt["extra_info"]["input_config"] == [comfy.fake.checkpoints, {
        "tooltip": "The name of the checkpoint (model) to load."}]
    (sampler,) = answer["node_errors"]["3"]["errors"]
    assert sampler["details"].startswith("sampler_name: 'warp' not in (list of length ")
    assert sampler["extra_info"]["input_config"] is None  # long lists are not sent back


@pytest.mark.parametrize(
    ("override", "kind", "message"),
    [
        ({"3__steps": 0}, "value_smaller_than_min", "Value 0 smaller than min of 1"),
        ({"3__denoise": 1.5}, "value_bigger_than_max", "Value 1.5 bigger than max of 1.0"),
        ({"3__seed": "abc"}, "invalid_input_type", "Failed to convert an input value to a INT value"),
        ({"3__model": ["4", 1]}, "return_type_mismatch", "Return type mismatch between linked nodes"),
        ({"3__model": ["4", 0, 1]}, "bad_linked_input",
         "Bad linked input, must be a length-2 list of [node_id, slot_index]"),
    ],
)
async def test_bad_values_and_links(comfy: Client, override: dict[str, Any], kind: str, message: str) -> None:
    status, answer = await comfy.prompt(txt2img(**override))
    assert status == 400
    (error,) = answer["node_errors"]["3"]["errors"]
    assert (error["type"], error["message"]) == (kind, message)


async def test_numbers_sent_as_strings_are_converted(comfy: Client) -> None:
    status, _ = await comfy.prompt(txt2img(**{"3__steps": "4", "3__cfg": "6.5"}), prompt_id="p")
    assert status == 200
    assert comfy.fake.prompts["p"]["3"]["inputs"]["steps"] == 4


async def test_links_to_missing_nodes_fail_validation_where_the_link_is(comfy: Client) -> None:
    status, answer = await comfy.prompt(txt2img(**{"9__images": ["42", 0]}))
    assert status == 400
    (error,) = answer["node_errors"]["9"]["errors"]
    assert (error["type"], error["details"]) == ("exception_during_validation", "'42'")
    status, answer = await comfy.prompt(txt2img(**{"8__vae": ["4", 7]}))
    (error,) = answer["node_errors"]["8"]["errors"]
    assert error["type"] == "exception_during_inner_validation"
    assert answer["node_errors"]["8"]["dependent_outputs"] == ["9"]


async def test_load_image_checks_its_file(comfy: Client) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    status, answer = await comfy.prompt(graph)
    assert status == 400
    assert answer["node_errors"]["1"]["errors"] == [{
        "type": "custom_validation_failed", "message": "Custom validation failed for node",
        "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}}]


async def test_one_bad_output_among_good_ones_still_queues(comfy: Client) -> None:
    graph = txt2img()
    graph["10"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}  # no filename_prefix
    status, answer = await comfy.prompt(graph, prompt_id="p")
    assert status == 200
    assert answer["node_errors"]["10"]["dependent_outputs"] == ["10"]
    await comfy.fake.wait_until(lambda: "p" in comfy.fake.history)
    assert list(comfy.fake.history["p"]["outputs"]) == ["9"]
    assert comfy.fake.history["p"]["prompt"][4] == ["9"]


# -- running a job -------------------------------------------------------------------------------------


async def test_messages_come_in_the_servers_order(comfy: Client) -> None:
    prompt_id, messages = await comfy.run(txt2img(steps=3))
    first = messages[0]
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "c1"}}
    assert kinds(messages) == [
        "execution_start", "execution_cached",
        "executing", "executing", "executing", "executing", "executing",  # 4, 6, 7, 5, 3
        "progress", "progress", "progress",
        "executing", "executing", "executed",  # 8, 9
        "execution_success", "executing",
    ]
    by_type = [m for m in messages if m["type"] not in ("status", "progress_state")]
    assert [m["data"]["node"] for m in by_type if m["type"] == "executing"] == \
        ["4", "6", "7", "5", "3", "8", "9", None]
    assert all(m["data"]["prompt_id"] == prompt_id for m in by_type)
    progress = [m["data"] for m in by_type if m["type"] == "progress"]
    assert progress == [{"value": i, "max": 3, "prompt_id": prompt_id, "node": "3"} for i in (1, 2, 3)]
    (executed,) = [m["data"] for m in by_type if m["type"] == "executed"]
    assert executed["node"] == "9"
    assert executed["output"] == {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}
    # The queue is reported as it changes: queued, started, done.
    statuses = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages[1:] if m["type"] == "status"]
    assert statuses[0] == 1 and statuses[-1] == 0
    assert any(m["type"] == "progress_state" for m in messages)


async def test_history_and_view_serve_the_saved_png(comfy: Client) -> None:
    prompt_id, _ = await comfy.run(txt2img(size=96))
    history = await comfy.get(f"/history/{prompt_id}")
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [event for event, _ in entry["status"]["messages"]] == [
        "execution_start", "execution_cached", "execution_success"]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][3] == {"client_id": "c1"}
    (image,) = entry["outputs"]["9"]["images"]
    async with comfy.http.get(f"{comfy.fake.url}/view", params=image) as response:
        assert response.status == 200 and response.content_type == "image/png"
        data = await response.read()
    assert Image.open(io.BytesIO(data)).size == (96, 96)
    assert await comfy.get("/history/unknown") == {}
    assert prompt_id in await comfy.get("/history")


async def test_an_unchanged_prompt_is_served_from_the_cache(comfy: Client) -> None:
    graph = txt2img()
    await comfy.run(graph)
    _, messages = await comfy.run(graph)
    cached = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == sorted(graph)
    assert "progress" not in kinds(messages)
    executed = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "executed"]
    saved = [e["output"] for e in executed if e["node"] == "9"]
    assert saved == [{"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}]
    # A new seed re-runs the sampler and what follows it, not the loader.
    _, messages = await comfy.run(txt2img(seed=2))
    cached = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == ["4", "5", "6", "7"]


async def test_previews_use_the_binary_formats(comfy: Client) -> None:
    comfy.fake.previews = "JPEG"
    _, messages = await comfy.run(txt2img(steps=2))
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2
    event, image_type = struct.unpack(">II", frames[0][:8])
    assert (event, image_type) == (1, 1)
    assert Image.open(io.BytesIO(frames[0][8:])).format == "JPEG"


async def test_previews_with_metadata_for_clients_that_ask(comfy: Client) -> None:
    comfy.fake.previews = "PNG"
    async with comfy.http.ws_connect(f"{comfy.fake.url}/ws?clientId=meta") as ws:
        await ws.receive_json(timeout=5)
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        flags = await ws.receive_json(timeout=5)
        assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"] is True
        _, answer = await comfy.prompt(txt2img(steps=1), client_id="meta")
        for _ in range(200):
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.BINARY:
                break
        else:
            raise AssertionError("no preview")
    event, size = struct.unpack(">II", msg.data[:8])
    meta = json.loads(msg.data[8 : 8 + size])
    assert event == 4
    assert meta["prompt_id"] == answer["prompt_id"] and meta["node_id"] == "3"
    assert meta["image_type"] == "image/png"
    assert Image.open(io.BytesIO(msg.data[8 + size :])).format == "PNG"


async def test_execution_error_names_the_node(comfy: Client) -> None:
    comfy.fake.fail("KSampler", "CUDA out of memory", "torch.OutOfMemoryError")
    prompt_id, messages = await comfy.run(txt2img())
    assert kinds(messages)[-2:] == ["execution_error", "executing"]
    error = next(m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_error")
    assert error["prompt_id"] == prompt_id
    assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
    assert error["exception_message"] == "CUDA out of memory"
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert isinstance(error["traceback"], list) and sorted(error["executed"]) == ["4", "5", "6", "7"]
    entry = comfy.fake.history[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_error"
    assert entry["outputs"] == {}


async def test_interrupt_stops_the_running_job_only(comfy: Client) -> None:
    comfy.fake.step_delay = 0.02
    task = asyncio.create_task(comfy.run(txt2img(steps=200), prompt_id="long"))
    await comfy.fake.wait_until(lambda: comfy.fake.running is not None)
    assert await comfy.post("/interrupt", {"prompt_id": "someone-else"}) == 200
    await asyncio.sleep(0.05)
    assert "long" not in comfy.fake.history
    assert await comfy.post("/interrupt", {"prompt_id": "long"}) == 200
    _, messages = await asyncio.wait_for(task, 5)
    assert kinds(messages)[-2:] == ["execution_interrupted", "executing"]
    interrupted = next(m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_interrupted")
    assert (interrupted["prompt_id"], interrupted["node_id"], interrupted["node_type"]) == ("long", "3", "KSampler")
    assert comfy.fake.history["long"]["status"]["status_str"] == "error"
    assert comfy.fake.interrupt_requests == ["someone-else", "long"]


async def test_a_bare_interrupt_stops_whatever_runs(comfy: Client) -> None:
    comfy.fake.step_delay = 0.02
    task = asyncio.create_task(comfy.run(txt2img(steps=200)))
    await comfy.fake.wait_until(lambda: comfy.fake.running is not None)
    async with comfy.http.post(f"{comfy.fake.url}/interrupt") as response:  # no body at all
        assert response.status == 200
    _, messages = await asyncio.wait_for(task, 5)
    assert "execution_interrupted" in kinds(messages)


async def test_queue_order_delete_and_clear(comfy: Client) -> None:
    comfy.fake.pause()
    for name in ("a", "b", "c", "d"):
        status, _ = await comfy.prompt(txt2img(seed=len(name)), prompt_id=name)
        assert status == 200
    status, answer = await comfy.prompt(txt2img(), prompt_id="urgent", front=True)
    assert answer["number"] == -4
    queue = await comfy.get("/queue")
    assert queue["queue_running"] == []
    assert sorted(item[1] for item in queue["queue_pending"]) == ["a", "b", "c", "d", "urgent"]
    assert queue["queue_pending"][0][2]["9"]["class_type"] == "SaveImage"
    assert await comfy.post("/queue", {"delete": ["b", "unknown"]}) == 200
    assert comfy.fake.pending_ids == ["urgent", "a", "c", "d"]
    assert comfy.fake.deleted == ["b"]
    assert await comfy.post("/queue", {"delete": ["d"]}) == 200
    comfy.fake.resume()
    await comfy.fake.wait_until(lambda: len(comfy.fake.history) == 3)
    assert list(comfy.fake.history) == ["urgent", "a", "c"]
    comfy.fake.pause()
    await comfy.prompt(txt2img(), prompt_id="e")
    assert await comfy.post("/queue", {"clear": True}) == 200
    assert comfy.fake.pending_ids == []


async def test_history_delete_and_clear(comfy: Client) -> None:
    first, _ = await comfy.run(txt2img(seed=1))
    second, _ = await comfy.run(txt2img(seed=2))
    assert await comfy.post("/history", {"delete": [first]}) == 200
    assert list(await comfy.get("/history")) == [second]
    assert await comfy.post("/history", {"clear": True}) == 200
    assert await comfy.get("/history") == {}


# -- files ---------------------------------------------------------------------------------------------


async def upload(comfy: Client, data: bytes, name: str = "in.png", **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    async with comfy.http.post(f"{comfy.fake.url}/upload/image", data=form) as response:
        return response.status, (await response.json() if response.status == 200 else None)


async def test_upload_renames_rather_than_overwrites(comfy: Client) -> None:
    assert await upload(comfy, png(colour=(1, 1, 1))) == (200, {"name": "in.png", "subfolder": "", "type": "input"})
    # The same bytes again: the same file. Other bytes: a new name. overwrite=true: replaced.
    assert (await upload(comfy, png(colour=(1, 1, 1))))[1]["name"] == "in.png"
    assert (await upload(comfy, png(colour=(2, 2, 2))))[1]["name"] == "in (1).png"
    assert (await upload(comfy, png(colour=(3, 3, 3)), overwrite="true"))[1]["name"] == "in.png"
    assert comfy.fake.files[("input", "", "in.png")] == png(colour=(3, 3, 3))
    _, answer = await upload(comfy, png(), subfolder="abby", type="temp")
    assert answer == {"name": "in.png", "subfolder": "abby", "type": "temp"}


async def test_upload_refuses_bad_requests(comfy: Client) -> None:
    assert (await upload(comfy, png(), subfolder="../escape"))[0] == 400
    form = aiohttp.FormData()
    form.add_field("overwrite", "true")
    async with comfy.http.post(f"{comfy.fake.url}/upload/image", data=form) as response:
        assert response.status == 400


async def test_view_guards_its_paths(comfy: Client) -> None:
    await upload(comfy, png(), subfolder="abby")

    async def view(**params: str) -> int:
        async with comfy.http.get(f"{comfy.fake.url}/view", params=params) as response:
            return response.status

    assert await view(filename="in.png", subfolder="abby", type="input") == 200
    assert await view(filename="in.png [input]", subfolder="abby") == 200
    assert await view(filename="in.png", subfolder="abby") == 404  # type defaults to output
    assert await view(filename="../in.png", type="input") == 400
    assert await view(filename="in.png", subfolder="../..", type="input") == 403
    assert await view(subfolder="abby") == 404


async def test_image_to_image_and_upscale_graphs_run(comfy: Client) -> None:
    await upload(comfy, png((40, 30)), subfolder="abby")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "abby/in.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "ImageScaleBy", "inputs": {"image": ["3", 0], "upscale_method": "area",
                                                      "scale_by": 0.5}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "abby/up"}},
    }
    prompt_id, messages = await comfy.run(graph)
    assert [m["data"]["max"] for m in messages if isinstance(m, dict) and m["type"] == "progress"] == [2, 2]
    entry = comfy.fake.history[prompt_id]
    assert entry["outputs"]["5"]["images"] == [{"filename": "up_00001_.png", "subfolder": "abby", "type": "output"}]
    assert Image.open(io.BytesIO(comfy.fake.output_image(entry))).size == (80, 60)


# -- the proxy in front -----------------------------------------------------------------------------------


async def test_auth_is_required_on_every_route_when_set() -> None:
    async with running_fake(auth=("X-Token", "s3cret")) as fake, aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/queue") as response:
            assert response.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(f"{fake.url}/ws?clientId=x")
        assert refused.value.status == 401
        headers = {"X-Token": "s3cret"}
        async with session.get(f"{fake.url}/queue", headers=headers) as response:
            assert response.status == 200
        async with session.ws_connect(f"{fake.url}/ws?clientId=x", headers=headers) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "status"


async def test_cross_site_posts_to_a_loopback_server_are_refused(comfy: Client) -> None:
    headers = {"Origin": "http://evil.example"}
    async with comfy.http.post(f"{comfy.fake.url}/prompt", json={"prompt": txt2img()}, headers=headers) as response:
        assert response.status == 403
    assert comfy.fake.pending_ids == [] and comfy.fake.running is None
