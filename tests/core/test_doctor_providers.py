"""abby doctor's image_server check (and the stability check's skip) against the fake ComfyUI and web UI."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from abby_core.config import load_settings
from abby_core.doctor import CHECK_NAMES, Check, run_checks
from abby_core.generation import ImageGenerator
from abby_core.generation.comfyui import ComfyUIProvider
from abby_core.storage import StorageManager
from tests.fixtures.fake_a1111 import FakeA1111
from tests.fixtures.fake_comfyui import CPU_DEVICE, FakeComfyUI, NodeSpec, running_fake
from tests.fixtures.fake_stability import API_KEY, FakeStability

BUNDLED = Path(__file__).resolve().parents[2] / "abby_core" / "generation" / "workflows"


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    async with running_fake() as fake:
        yield fake


@contextlib.asynccontextmanager
async def webui(**options: Any) -> AsyncIterator[FakeA1111]:
    fake = FakeA1111(**options)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def closed_port() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def doctor(tmp_path: Path, **env: object) -> dict[str, Check]:
    settings = load_settings(env_file=None, STORAGE_ROOT=tmp_path / "shared", **env)
    storage = StorageManager.from_settings(settings)
    generator = ImageGenerator.from_settings(settings.api)
    try:
        checks = await run_checks(settings, storage, generator)
    finally:
        await storage.aclose()
        await generator.aclose()
    assert [c.name for c in checks] == list(CHECK_NAMES)
    return {c.name: c for c in checks}


def shown(check: Check) -> str:
    return f"{check.detail} {check.fix or ''}"


# -- skipped ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["offline", "stability"])
async def test_skipped_without_a_local_provider(tmp_path: Path, provider: str) -> None:
    checks = await doctor(tmp_path, IMAGE_PROVIDER=provider)
    image_server = checks["image_server"]
    assert image_server.status == "skip" and image_server.title == "Image server"
    assert f"IMAGE_PROVIDER={provider}" in image_server.detail and "no local image server" in image_server.detail


async def test_stability_skipped_for_a_local_provider(tmp_path: Path, comfy: FakeComfyUI) -> None:
    checks = await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url, STABILITY_API_KEY=API_KEY)
    assert checks["stability"].status == "skip" and "Stability is not used" in checks["stability"].detail
    async with webui() as fake:
        checks = await doctor(tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=fake.url)
    assert checks["stability"].status == "skip" and "IMAGE_PROVIDER=automatic1111" in checks["stability"].detail


async def test_stability_checked_when_it_is_the_fallback(
    tmp_path: Path, comfy: FakeComfyUI, fake_stability: FakeStability
) -> None:
    env = {"IMAGE_PROVIDER": "comfyui", "COMFYUI_URL": comfy.url, "IMAGE_PROVIDER_FALLBACK": "stability"}
    missing = await doctor(tmp_path, **env)
    assert missing["stability"].status == "fail" and "fallback is disabled" in missing["stability"].detail
    assert missing["stability"].fix and "IMAGE_PROVIDER_FALLBACK" in missing["stability"].fix
    good = await doctor(tmp_path, STABILITY_API_KEY=API_KEY, STABILITY_API_HOST=fake_stability.url, **env)
    assert good["stability"].status == "ok" and "42.5 credits" in good["stability"].detail
    assert good["image_server"].status == "ok"


# -- ComfyUI ---------------------------------------------------------------------------------------


async def test_comfyui_all_green(tmp_path: Path, comfy: FakeComfyUI) -> None:
    checks = await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url)
    check = checks["image_server"]
    assert check.status == "ok", check
    assert "ComfyUI 0.3.66" in check.detail and "NVIDIA GeForce RTX 4090" in check.detail
    assert "24 GB VRAM" in check.detail and "txt2img, img2img and upscale" in check.detail
    assert {r.path for r in comfy.requests} == {"/system_stats", "/object_info"}  # no job was started


async def test_comfyui_on_a_cpu_reports_ram_not_vram(tmp_path: Path, comfy: FakeComfyUI) -> None:
    comfy.device = dict(CPU_DEVICE)
    check = (await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url))["image_server"]
    assert check.status == "ok", check
    assert "(cpu, 32 GB RAM)" in check.detail and "VRAM" not in check.detail


async def test_comfyui_inspect_report(comfy: FakeComfyUI) -> None:
    provider = ComfyUIProvider(comfy.url)
    try:
        report = await provider.inspect()
    finally:
        await provider.aclose()
    assert report.version == "0.3.66" and report.vram_total == 24 * 1024**3
    assert report.device is not None and "RTX 4090" in report.device
    assert report.workflows == ("txt2img", "img2img", "upscale") and report.issues == ()


async def test_comfyui_missing_node(tmp_path: Path, comfy: FakeComfyUI) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    data = json.loads((BUNDLED / "txt2img.json").read_text())
    data["graph"]["3"]["class_type"] = "FancySampler"
    (folder / "txt2img.json").write_text(json.dumps(data))
    checks = await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url, COMFYUI_WORKFLOWS=folder)
    check = checks["image_server"]
    assert check.status == "fail"
    assert "txt2img workflow (txt2img.json) node 3 uses FancySampler, which is not installed" in check.detail
    assert "img2img" not in check.detail  # the bundled ones are fine
    assert check.fix and "Install the custom node that provides FancySampler" in check.fix


async def test_comfyui_missing_checkpoint_and_upscale_model(tmp_path: Path, comfy: FakeComfyUI) -> None:
    comfy.checkpoints = ["dreamshaper_8.safetensors"]
    comfy.upscale_models = []
    check = (await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url))["image_server"]
    assert check.status == "fail"
    assert "node 4 (CheckpointLoaderSimple) loads ckpt_name 'sd_xl_base_1.0.safetensors'" in check.detail
    assert "it has: dreamshaper_8.safetensors" in check.detail
    assert "node 2 (UpscaleModelLoader) loads model_name 'RealESRGAN_x4plus.pth'" in check.detail
    assert check.fix is not None
    assert "Put sd_xl_base_1.0.safetensors in ComfyUI's models/checkpoints folder" in check.fix
    assert "COMFYUI_WORKFLOWS/txt2img.json, img2img.json" in check.fix
    assert "models/upscale_models" in check.fix


async def test_comfyui_newer_combo_spelling(
    tmp_path: Path, comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Newer servers list choices as ``["COMBO", {"options": [...]}]``."""
    plain = comfy.nodes

    def nodes() -> dict[str, NodeSpec]:
        specs = plain()
        loader = specs["CheckpointLoaderSimple"]
        combo = {"ckpt_name": ["COMBO", {"options": ["only.safetensors"]}]}
        return {**specs, loader.name: dataclasses.replace(loader, required=combo)}

    monkeypatch.setattr(comfy, "nodes", nodes)
    check = (await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url))["image_server"]
    assert check.status == "fail" and "it has: only.safetensors" in check.detail


async def test_comfyui_unreachable_and_credentials_hidden(tmp_path: Path) -> None:
    url = closed_port().replace("//", "//admin:hunter2@")
    check = (await doctor(tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=url))["image_server"]
    assert check.status == "fail"
    assert f"the image server at {url.replace('admin:hunter2', '***')} is not reachable" in check.detail
    assert check.fix and "--listen" in check.fix and "firewall" in check.fix
    assert "hunter2" not in shown(check)


async def test_comfyui_auth_header_refused(tmp_path: Path) -> None:
    async with running_fake(auth=("X-Abby-Key", "right-value")) as fake:
        env = {"IMAGE_PROVIDER": "comfyui", "COMFYUI_URL": fake.url, "COMFYUI_AUTH_HEADER_NAME": "X-Abby-Key"}
        refused = (await doctor(tmp_path, COMFYUI_AUTH_HEADER="wrong-value", **env))["image_server"]
        accepted = (await doctor(tmp_path, COMFYUI_AUTH_HEADER="right-value", **env))["image_server"]
    assert refused.status == "fail" and "HTTP 401" in refused.detail
    assert refused.fix and "COMFYUI_AUTH_HEADER" in refused.fix and "wrong-value" not in shown(refused)
    assert accepted.status == "ok"


# -- AUTOMATIC1111 ---------------------------------------------------------------------------------


async def test_webui_all_green(tmp_path: Path) -> None:
    async with webui() as fake:
        check = (await doctor(
            tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=fake.url, A1111_MODEL="sd_xl_base_1.0",
            A1111_SAMPLER="k_euler_a",
        ))["image_server"]
        posted = [r for r in fake.requests if r.method != "GET"]
    assert check.status == "ok", check
    assert "2 checkpoints" in check.detail and "A1111_MODEL 'sd_xl_base_1.0'" in check.detail
    assert "A1111_UPSCALER 'R-ESRGAN 4x+'" in check.detail and fake.jobs == [] and posted == []


async def test_webui_wrong_model_and_upscaler(tmp_path: Path) -> None:
    async with webui() as fake:
        check = (await doctor(
            tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=fake.url, A1111_MODEL="dreamshaper",
            A1111_UPSCALER="4x-UltraSharp",
        ))["image_server"]
    assert check.status == "fail"
    assert "A1111_MODEL 'dreamshaper' is not on the server" in check.detail
    assert "sd_xl_base_1.0.safetensors [31e35c80fc]" in check.detail
    assert "A1111_UPSCALER '4x-UltraSharp' is not on the server" in check.detail and "R-ESRGAN 4x+" in check.detail
    assert check.fix and "A1111_MODEL" in check.fix and "A1111_UPSCALER" in check.fix
    assert "A1111_SAMPLER" not in shown(check)  # not set: not judged


async def test_webui_auth_required(tmp_path: Path) -> None:
    async with webui(api_auth="abby:s3cret-pass") as fake:
        env = {"IMAGE_PROVIDER": "automatic1111", "A1111_URL": fake.url}
        anonymous = (await doctor(tmp_path, **env))["image_server"]
        wrong = (await doctor(tmp_path, A1111_USERNAME="abby", A1111_PASSWORD="not-it", **env))["image_server"]
        right = (await doctor(tmp_path, A1111_USERNAME="abby", A1111_PASSWORD="s3cret-pass", **env))["image_server"]
    assert anonymous.status == "fail" and "requires a user name and password (HTTP 401)" in anonymous.detail
    assert wrong.status == "fail" and "refused A1111_USERNAME/A1111_PASSWORD" in wrong.detail
    for check in (anonymous, wrong):
        assert check.fix and "A1111_USERNAME/A1111_PASSWORD" in check.fix and "--api-auth" in check.fix
        assert "not-it" not in shown(check) and "s3cret" not in shown(check)
    assert right.status == "ok"


async def test_webui_without_api(tmp_path: Path) -> None:
    async with webui(api_enabled=False) as fake:
        check = (await doctor(tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=fake.url))["image_server"]
    assert check.status == "fail" and "does not answer as the web UI API" in check.detail
    assert check.fix and "--api" in check.fix


async def test_webui_unreachable(tmp_path: Path) -> None:
    url = closed_port()
    check = (await doctor(tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=url))["image_server"]
    assert check.status == "fail" and check.detail == f"AUTOMATIC1111: the image server at {url} is not reachable"
    assert check.fix and "--listen" in check.fix and "firewall" in check.fix


# -- both ------------------------------------------------------------------------------------------


async def test_each_local_provider_is_checked(tmp_path: Path, comfy: FakeComfyUI) -> None:
    url = closed_port()
    check = (await doctor(
        tmp_path, IMAGE_PROVIDER="comfyui", COMFYUI_URL=comfy.url, IMAGE_PROVIDER_FALLBACK="automatic1111",
        A1111_URL=url,
    ))["image_server"]
    assert check.status == "fail"
    assert check.detail.startswith("ComfyUI 0.3.66") and f"AUTOMATIC1111: the image server at {url}" in check.detail
    assert check.fix and "A1111_URL" in check.fix and "COMFYUI_URL" not in check.fix
    async with webui() as fake:
        both = (await doctor(
            tmp_path, IMAGE_PROVIDER="automatic1111", A1111_URL=fake.url, IMAGE_PROVIDER_FALLBACK="comfyui",
            COMFYUI_URL=comfy.url,
        ))["image_server"]
    assert both.status == "ok" and both.detail.startswith("AUTOMATIC1111") and "; ComfyUI" in both.detail
