"""The fake web UI API behaves as the real one does (see the fixture's docstring for the sources)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fixtures import fake_a1111 as fake_module
from tests.fixtures.fake_a1111 import CHECKPOINTS, VERSION, FakeA1111
from tests.generation.helpers import png

fake_a1111 = fake_module.fake_a1111  # the fixture (tests/generation/conftest.py is not ours to edit)

AUTH = {"api_auth": "abby:s3cret"}
SLOW = {"step_delay": 0.02}


@pytest.fixture
async def client(fake_a1111: FakeA1111) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_a1111.url + "/sdapi/v1", timeout=30) as http:
        yield http


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _b64png(size: tuple[int, int] = (64, 48)) -> str:
    return base64.b64encode(png(size)).decode()


async def _txt2img(http: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await http.post("/txt2img", json={"prompt": "a red fox", "steps": 4, "width": 64, "height": 64, **body})


# -- lists ------------------------------------------------------------------------------------


async def test_lists_have_the_real_shapes(client: httpx.AsyncClient) -> None:
    models = (await client.get("/sd-models")).json()
    assert models[0].keys() == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert models[0]["title"] == f"{models[0]['model_name']}.safetensors [{models[0]['hash']}]"
    upscalers = (await client.get("/upscalers")).json()
    assert upscalers[0] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    assert "R-ESRGAN 4x+" in {u["name"] for u in upscalers}
    samplers = (await client.get("/samplers")).json()
    assert samplers[0]["name"] == "DPM++ 2M" and {"name", "aliases", "options"} == samplers[0].keys()
    options = (await client.get("/options")).json()
    assert options["sd_model_checkpoint"] == models[0]["title"]


# -- txt2img ---------------------------------------------------------------------------------


async def test_txt2img_makes_pngs_of_the_requested_size_with_info(client: httpx.AsyncClient) -> None:
    response = await _txt2img(client, width=100, height=64, seed=1234, batch_size=2, negative_prompt="blurry")
    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"images", "parameters", "info"}
    assert len(body["images"]) == 2
    first = _image(body["images"][0])
    assert first.format == "PNG" and first.size == (96, 64)  # the latent is 1/8 the size
    assert first.text["parameters"].startswith("a red fox\nNegative prompt: blurry\nSteps: 4, Sampler: Euler,")
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235]
    assert info["sd_model_name"] == "v1-5-pruned-emaonly" and info["version"] == VERSION
    assert body["parameters"]["prompt"] == "a red fox" and body["parameters"]["sampler_index"] == "Euler"
    assert body["parameters"]["cfg_scale"] == 7.0  # defaults are echoed too


async def test_a_random_seed_is_reported(client: httpx.AsyncClient) -> None:
    info = json.loads((await _txt2img(client, seed=-1)).json()["info"])
    assert 0 <= info["seed"] < 4294967294 and info["all_seeds"] == [info["seed"]]


async def test_an_unknown_sampler_falls_back_silently(client: httpx.AsyncClient) -> None:
    info = json.loads((await _txt2img(client, sampler_name="Nope")).json()["info"])
    assert info["sampler_name"] == "DPM++ 2M"
    info = json.loads((await _txt2img(client, sampler_name="Euler a Karras")).json()["info"])
    assert info["sampler_name"] == "Euler a" and "Schedule type: Karras" in info["infotexts"][0]


@pytest.mark.parametrize("fake_a1111", [{"unknown_sampler": "404"}], indirect=True)
async def test_old_servers_refuse_an_unknown_sampler(client: httpx.AsyncClient) -> None:
    response = await _txt2img(client, sampler_name="Nope")
    assert response.status_code == 404
    assert response.json() == {"error": "HTTPException", "detail": "Sampler not found", "body": "", "errors": ""}


async def test_override_checkpoint_is_used_or_silently_dropped(
    client: httpx.AsyncClient, fake_a1111: FakeA1111
) -> None:
    xl = CHECKPOINTS[1]
    info = json.loads((await _txt2img(client, override_settings={"sd_model_checkpoint": xl["title"]})).json()["info"])
    assert info["sd_model_name"] == "sd_xl_base_1.0"
    assert fake_a1111.options["sd_model_checkpoint"] == CHECKPOINTS[0]["title"]  # restored afterwards
    info = json.loads((await _txt2img(client, override_settings={"sd_model_checkpoint": "nope"})).json()["info"])
    assert info["sd_model_name"] == "v1-5-pruned-emaonly"
    response = await _txt2img(client, override_settings={"not_an_option": 1})
    assert response.status_code == 500 and response.json()["error"] == "KeyError"


# -- validation ------------------------------------------------------------------------------


async def test_wrong_types_get_fastapi_422s(client: httpx.AsyncClient) -> None:
    response = await client.post("/txt2img", json={"prompt": ["x"], "steps": "many", "width": 64.5})
    assert response.status_code == 422
    assert response.json() == {"detail": [
        {"loc": ["body", "prompt"], "msg": "str type expected", "type": "type_error.str"},
        {"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"},
    ]}  # pydantic v1 truncates 64.5 to 64
    response = await client.post("/txt2img", json=[1, 2])
    not_a_dict = {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}
    assert response.json()["detail"] == [not_a_dict]
    response = await client.post("/txt2img", content=b"{nope", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "value_error.jsondecode"
    response = await client.post("/txt2img")
    assert response.json()["detail"] == [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]
    response = await client.get("/progress", params={"skip_current_image": "maybe"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "skip_current_image"]


async def test_extras_ranges_are_checked(client: httpx.AsyncClient) -> None:
    response = await client.post("/extra-single-image", json={"image": _b64png(), "upscaling_resize": 0})
    assert response.status_code == 422
    assert response.json()["detail"] == [{
        "loc": ["body", "upscaling_resize"], "msg": "ensure this value is greater than 0",
        "type": "value_error.number.not_gt", "ctx": {"limit_value": 0},
    }]


@pytest.mark.parametrize("fake_a1111", [{"flavor": "forge"}], indirect=True)
async def test_forge_validates_with_pydantic_v2(client: httpx.AsyncClient) -> None:
    response = await client.post("/txt2img", json={"steps": "many"})
    assert response.status_code == 422
    assert response.json()["detail"] == [{
        "type": "int_parsing", "loc": ["body", "steps"], "input": "many",
        "msg": "Input should be a valid integer, unable to parse string as an integer",
    }]


# -- auth and errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("fake_a1111", [AUTH], indirect=True)
async def test_api_auth(client: httpx.AsyncClient) -> None:
    missing = await client.get("/sd-models")
    assert missing.status_code == 401
    assert missing.json() == {"error": "HTTPException", "detail": "Not authenticated", "body": "", "errors": ""}
    assert "www-authenticate" not in missing.headers  # the web UI's handler drops it
    wrong = await client.get("/sd-models", auth=("abby", "nope"))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
    before_validation = await client.post("/txt2img", json={"steps": "x"}, auth=("abby", "nope"))
    assert before_validation.status_code == 401
    assert (await client.get("/sd-models", auth=("abby", "s3cret"))).status_code == 200
    assert (await client.get("/nope")).json() == {"detail": "Not Found"}  # no route: FastAPI's own 404


@pytest.mark.parametrize("fake_a1111", [{**AUTH, "flavor": "forge"}], indirect=True)
async def test_forge_answers_http_errors_with_detail_only(client: httpx.AsyncClient) -> None:
    missing = await client.get("/sd-models")
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Not authenticated"} and missing.headers["www-authenticate"] == "Basic"


@pytest.mark.parametrize("fake_a1111", [{"api_enabled": False}], indirect=True)
async def test_without_api_flag_every_route_is_missing(client: httpx.AsyncClient) -> None:
    response = await client.get("/sd-models")
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


async def test_out_of_memory_is_a_500_and_the_server_stays_usable(
    client: httpx.AsyncClient, fake_a1111: FakeA1111
) -> None:
    response = await _txt2img(client, width=4096, height=4096)
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "OutOfMemoryError" and body["detail"] == "" and body["body"] == ""
    assert body["errors"].startswith("CUDA out of memory.")
    assert fake_a1111.state.job_count == 0 and fake_a1111.jobs[-1].outcome == "failed"
    fake_a1111.fail_next(error="RuntimeError", message="boom", at_step=2)
    failed = await _txt2img(client)
    assert failed.json()["errors"] == "boom" and fake_a1111.jobs[-1].steps_done == 2
    assert (await _txt2img(client)).status_code == 200


@pytest.mark.parametrize("fake_a1111", [{"flavor": "forge"}], indirect=True)
async def test_forge_reports_crashes_as_message(client: httpx.AsyncClient) -> None:
    body = (await _txt2img(client, width=4096, height=4096)).json()
    assert body["error"] == "OutOfMemoryError" and body["message"].startswith("CUDA out of memory.")


async def test_options_refuse_unknown_models_and_keys(client: httpx.AsyncClient, fake_a1111: FakeA1111) -> None:
    response = await client.post("/options", json={"sd_model_checkpoint": "nope"})
    assert response.status_code == 500
    assert response.json() == {"error": "RuntimeError", "detail": "", "body": "", "errors": "model 'nope' not found"}
    assert (await client.post("/options", json={"bogus": 1})).json()["error"] == "KeyError"
    response = await client.post("/options", json={"sd_model_checkpoint": "sd_xl_base_1.0"})
    assert response.status_code == 200 and response.json() is None
    assert (await client.get("/options")).json()["sd_model_checkpoint"] == CHECKPOINTS[1]["title"]


# -- img2img and extras --------------------------------------------------------------------------


async def test_img2img_takes_base64_or_data_urls(client: httpx.AsyncClient, fake_a1111: FakeA1111) -> None:
    body = {"prompt": "a fox", "steps": 20, "denoising_strength": 0.5, "width": 64, "height": 48}
    response = await client.post("/img2img", json={**body, "init_images": ["data:image/png;base64," + _b64png()]})
    assert response.status_code == 200
    assert _image(response.json()["images"][0]).size == (64, 48)
    assert fake_a1111.state.sampling_steps == 11  # int(0.5 * 20) + 1 steps are sampled
    info = json.loads(response.json()["info"])
    assert info["denoising_strength"] == 0.5
    assert response.json()["parameters"]["init_images"] is None  # not echoed back


async def test_img2img_errors(client: httpx.AsyncClient) -> None:
    missing = await client.post("/img2img", json={"prompt": "a fox"})
    assert missing.status_code == 404 and missing.json()["detail"] == "Init image not found"
    broken = await client.post("/img2img", json={"prompt": "a fox", "init_images": ["not an image"]})
    assert broken.status_code == 500 and broken.json()["detail"] == "Invalid encoded image"


async def test_extra_single_image_upscales(client: httpx.AsyncClient) -> None:
    body = {"image": _b64png((64, 48)), "upscaler_1": "R-ESRGAN 4x+", "upscaling_resize": 2}
    response = await client.post("/extra-single-image", json=body)
    assert response.status_code == 200
    result = response.json()
    assert _image(result["image"]).size == (128, 96)
    assert "Postprocess upscaler: R-ESRGAN 4x+" in result["html_info"] and result["html_info"].startswith("<p>")
    odd = await client.post("/extra-single-image", json={**body, "upscaling_resize": 1.3})
    assert _image(odd.json()["image"]).size == (80, 56)  # rounded down to multiples of 8


async def test_unknown_upscaler_is_an_assertion_that_leaves_the_job_behind(
    client: httpx.AsyncClient, fake_a1111: FakeA1111
) -> None:
    response = await client.post("/extra-single-image", json={"image": _b64png(), "upscaler_1": "Magic 8x"})
    assert response.status_code == 500
    assert response.json() == {
        "error": "AssertionError", "detail": "", "body": "", "errors": "could not find upscaler named Magic 8x",
    }
    state = (await client.get("/progress")).json()["state"]
    assert state["job"] == "extras" and state["job_count"] == 1
    assert (await _txt2img(client)).status_code == 200  # the next job begins afresh


# -- progress, interrupt, skip, queue -------------------------------------------------------------


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_progress_during_a_job(client: httpx.AsyncClient, fake_a1111: FakeA1111) -> None:
    idle = (await client.get("/progress")).json()
    assert idle["progress"] == 0 and idle["eta_relative"] == 0 and idle["current_image"] is None
    assert idle["state"].keys() == {
        "skipped", "interrupted", "stopping_generation", "job", "job_count", "job_timestamp", "job_no",
        "sampling_step", "sampling_steps",
    }
    await client.post("/options", json={"show_progress_every_n_steps": 3})
    job = asyncio.create_task(_txt2img(client, steps=30))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 4)
    running = (await client.get("/progress", params={"skip_current_image": "false"})).json()
    assert 0 < running["progress"] < 1 and running["eta_relative"] > 0
    state = running["state"]
    assert state["job"] == "scripts_txt2img" and state["job_count"] == 1 and state["sampling_steps"] == 30
    assert 4 <= state["sampling_step"] < 29
    preview = _image(running["current_image"])
    assert preview.size == (64, 64)
    skipped = (await client.get("/progress", params={"skip_current_image": "true"})).json()
    assert skipped["current_image"] is None
    assert (await job).status_code == 200
    after = (await client.get("/progress")).json()
    assert after["progress"] == 0 and after["state"]["job"] == "" and after["state"]["job_timestamp"] != "0"


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_interrupt_returns_what_the_job_has(client: httpx.AsyncClient, fake_a1111: FakeA1111) -> None:
    job = asyncio.create_task(_txt2img(client, steps=200, n_iter=2))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 3)
    answer = await client.post("/interrupt")
    assert answer.status_code == 200 and answer.json() == {}
    response = await job
    assert response.status_code == 200
    assert len(response.json()["images"]) == 1  # the current batch, partly denoised; the next never starts
    record = fake_a1111.jobs[-1]
    assert record.outcome == "interrupted" and 3 <= record.steps_done < 200
    state = (await client.get("/progress")).json()["state"]
    assert state["interrupted"] is True and state["job"] == ""  # the flag stays until the next job


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_skip_moves_to_the_next_batch(client: httpx.AsyncClient, fake_a1111: FakeA1111) -> None:
    job = asyncio.create_task(_txt2img(client, steps=20, n_iter=2))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 2)
    skip = await client.post("/skip")
    assert skip.status_code == 200 and skip.json() is None
    response = await job
    assert len(response.json()["images"]) == 2
    assert fake_a1111.jobs[-1].outcome == "skipped" and fake_a1111.jobs[-1].steps_done < 40


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_one_job_at_a_time_and_interrupt_spares_the_queue(
    client: httpx.AsyncClient, fake_a1111: FakeA1111
) -> None:
    first = asyncio.create_task(_txt2img(client, steps=200, seed=1))
    await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 2)
    second = asyncio.create_task(_txt2img(client, steps=5, seed=2))
    await fake_a1111.wait_until(lambda: fake_a1111.paths_hit("/sdapi/v1/txt2img") == 2)
    await asyncio.sleep(0.1)
    assert len(fake_a1111.jobs) == 1  # the second waits for the queue lock
    timestamp = fake_a1111.state.job_timestamp
    await client.post("/interrupt")
    assert (await first).status_code == 200 and (await second).status_code == 200
    assert [j.outcome for j in fake_a1111.jobs] == ["interrupted", "completed"]
    assert [j.seeds for j in fake_a1111.jobs] == [[1], [2]]
    assert fake_a1111.jobs[1].steps_done == 5 and fake_a1111.state.job_timestamp >= timestamp


@pytest.mark.parametrize("fake_a1111", [SLOW], indirect=True)
async def test_a_job_goes_on_when_its_client_leaves(fake_a1111: FakeA1111) -> None:
    async with httpx.AsyncClient(base_url=fake_a1111.url + "/sdapi/v1") as http:
        job = asyncio.create_task(_txt2img(http, steps=30))
        await fake_a1111.wait_until(lambda: fake_a1111.state.sampling_step >= 1)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
    await fake_a1111.wait_until(lambda: fake_a1111.jobs[-1].outcome == "completed")
    assert fake_a1111.jobs[-1].steps_done == 30


async def test_an_interrupt_while_idle_is_forgotten_by_the_next_job(
    client: httpx.AsyncClient, fake_a1111: FakeA1111
) -> None:
    await client.post("/interrupt")
    assert (await client.get("/progress")).json()["state"]["interrupted"] is True
    response = await _txt2img(client, steps=6)
    assert len(response.json()["images"]) == 1
    assert fake_a1111.jobs[-1].outcome == "completed" and fake_a1111.jobs[-1].steps_done == 6


async def test_waiting_for_a_job_that_has_not_arrived_yet_waits(fake_a1111: FakeA1111) -> None:
    # On a loaded machine the job may reach the server after the test starts waiting for it.
    async with httpx.AsyncClient(base_url=fake_a1111.url + "/sdapi/v1") as http:
        job = asyncio.create_task(_txt2img(http, steps=3))
        assert not fake_a1111.jobs
        await fake_a1111.wait_until(lambda: fake_a1111.jobs[-1].outcome == "completed")
        await job
    assert fake_a1111.jobs[-1].steps_done == 3
