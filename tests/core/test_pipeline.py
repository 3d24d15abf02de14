"""ImageService: the whole flow with the offline provider and with the fake Stability server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from abby_core.errors import (
    ContentFiltered,
    DailyLimitExceeded,
    GenerationTimeout,
    GenerationUnavailable,
    InvalidImage,
    InvalidPrompt,
    InvalidUser,
    NotConfigured,
)
from abby_core.generation import ImageGenerator, OfflineProvider
from abby_core.generation.comfyui import ComfyUIProvider
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager
from tests.fixtures.fake_comfyui import running_fake
from tests.fixtures.fake_stability import API_KEY, FakeStability, Reply

USER = "123456789012345678"


@pytest.fixture
async def storage(tmp_path: Path):  # type: ignore[no-untyped-def]
    manager = StorageManager(storage_root=tmp_path / "shared", max_user_daily_gens=2)
    yield manager
    await manager.aclose()


@pytest.fixture
async def offline(storage: StorageManager):  # type: ignore[no-untyped-def]
    generator = ImageGenerator(provider=OfflineProvider())
    yield ImageService(storage, generator)
    await generator.aclose()


async def test_imagine_stores_and_reports_quota(offline: ImageService, tmp_path: Path) -> None:
    result = await offline.imagine(USER, "a lighthouse at dawn", seed=7)
    assert result.stored.path is not None
    saved = Path(result.stored.path)
    assert saved.is_relative_to((tmp_path / "shared" / "images" / "users" / USER).resolve())
    assert saved.read_bytes() == result.image.data
    assert result.image.seed == 7 and result.prompt == "a lighthouse at dawn"
    assert (result.status.daily_used, result.status.daily_left) == (1, 1)
    assert result.status.user_bytes == result.stored.size


async def test_bad_input_is_refused_before_quota(offline: ImageService, storage: StorageManager) -> None:
    with pytest.raises(InvalidPrompt):
        await offline.imagine(USER, "   ")
    with pytest.raises(InvalidUser):
        await offline.imagine("../1", "a cat")
    with pytest.raises(InvalidImage):
        await offline.upscale(USER, b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    status = await storage.get_quota_status(USER)
    assert (status.daily_used, status.user_bytes) == (0, 0)


async def test_img2img_and_upscale(offline: ImageService) -> None:
    first = await offline.imagine(USER, "a red fox")
    variation = await offline.img2img(USER, first.data, "a red fox in snow", strength=0.5)
    assert variation.kind == "img2img" and variation.stored.key != first.stored.key
    with pytest.raises(DailyLimitExceeded):
        await offline.upscale(USER, first.data)


async def test_webp_storage_reports_bytes_saved(storage: StorageManager) -> None:
    service = ImageService(storage, ImageGenerator(provider=OfflineProvider()), store_format="webp", store_quality=80)
    result = await service.imagine(USER, "a quiet harbour")
    assert result.stored.content_type == "image/webp" and result.stored.key.endswith(".webp")
    assert result.stored.size < result.bytes_before_compression
    assert Image.open(io.BytesIO(Path(result.stored.path or "").read_bytes())).format == "WEBP"


async def test_not_configured_holds_nothing(storage: StorageManager) -> None:
    service = ImageService(storage, ImageGenerator(api_key=None))
    with pytest.raises(NotConfigured, match="STABILITY_API_KEY"):
        await service.imagine(USER, "a cat")
    assert (await storage.get_quota_status(USER)).daily_used == 0


@pytest.mark.parametrize(
    ("replies", "error"),
    [
        ([Reply(finish_reason="CONTENT_FILTERED")], ContentFiltered),
        ([Reply.error(503), Reply.error(503)], GenerationUnavailable),
        ([Reply(delay=2)], GenerationTimeout),
    ],
    ids=["content_filtered", "server_error", "timeout"],
)
async def test_provider_failures_cost_nothing(
    storage: StorageManager, fake_stability: FakeStability, replies: list[Reply], error: type[Exception]
) -> None:
    fake_stability.script("core", *replies)
    generator = ImageGenerator(API_KEY, fake_stability.url, timeout=0.5, max_retries=1, sleep=_no_sleep)
    service = ImageService(storage, generator)
    try:
        with pytest.raises(error):
            await service.imagine(USER, "a cat")
    finally:
        await generator.aclose()
    assert fake_stability.routes_hit("core") == len(replies)
    status = await storage.get_quota_status(USER)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (0, 0, 0)
    assert list(storage.backend.list_objects("images/")) == []


async def test_stability_success_is_stored(storage: StorageManager, fake_stability: FakeStability) -> None:
    generator = ImageGenerator(API_KEY, fake_stability.url)
    try:
        result = await ImageService(storage, generator).imagine(USER, "a cat", seed=99)
    finally:
        await generator.aclose()
    assert result.image.provider == "stability" and result.image.seed == 99
    assert Path(result.stored.path or "").read_bytes() == result.image.data
    assert result.status.daily_used == 1


async def _no_sleep(_: float) -> None:
    return None


async def test_precheck_refuses_early_and_holds_nothing(offline: ImageService, storage: StorageManager) -> None:
    await offline.precheck(USER, prompt="a cat")  # fine: nothing raised, nothing held
    assert (await storage.get_quota_status(USER)).in_flight == 0
    with pytest.raises(InvalidPrompt):
        await offline.precheck(USER, prompt="\u202eevil")
    await offline.imagine(USER, "one")
    await offline.imagine(USER, "two")
    with pytest.raises(DailyLimitExceeded):
        await offline.precheck(USER, prompt="three")
    with pytest.raises(NotConfigured):
        await ImageService(storage, ImageGenerator(api_key=None)).precheck("42", prompt="a cat")
    status = await storage.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (2, 0)


async def test_a_blocked_prompt_is_refused_before_anything_is_held(storage: StorageManager) -> None:
    from abby_core.errors import InvalidPrompt
    from abby_core.moderation import Blocklist

    async with ImageGenerator(provider=OfflineProvider()) as generator:
        service = ImageService(storage, generator, blocklist=Blocklist(["gore"]))
        with pytest.raises(InvalidPrompt, match="does not allow"):
            await service.imagine("123", "a G0RE scene")
        picture = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 20, 30)).save(picture, "PNG")
        with pytest.raises(InvalidPrompt):
            await service.img2img("123", picture.getvalue(), "g o r e")
        result = await service.imagine("123", "a glass of water")
    status = await storage.get_quota_status("123")
    assert (status.daily_used, status.in_flight) == (1, 0) and result.stored.size > 0


async def test_every_outcome_is_recorded_as_a_usage_event(tmp_path: Path) -> None:
    from abby_core.analytics import EventLog
    from abby_core.errors import DailyLimitExceeded
    from abby_core.storage import FilesystemBackend

    backend = FilesystemBackend(tmp_path / "shared")
    storage = StorageManager(backend, max_user_daily_gens=1)
    async with storage, ImageGenerator(provider=OfflineProvider()) as generator:
        service = ImageService(storage, generator, events=EventLog(backend, clock=storage.clock))
        made = await service.imagine("123", "a secret lighthouse")
        with pytest.raises(DailyLimitExceeded):
            await service.imagine("123", "one more")
        with pytest.raises(DailyLimitExceeded):
            await service.precheck("123", prompt="and another")
        await service.flush_events()
        summary = service.events.summary(days=1)  # type: ignore[union-attr]
    assert (summary.images, summary.refusals_total, summary.refusals) == (1, 2, {"daily_limit": 2})
    assert summary.per_day[-1].images == 1 and summary.bytes == made.stored.size
    raw = [o.key for o in backend.list_objects("events/raw/")]
    assert len(raw) == 3
    bodies = [backend.get_object(k).decode() for k in raw]
    assert sum('"outcome":"ok"' in b for b in bodies) == 1
    assert sum('"outcome":"daily_limit"' in b for b in bodies) == 2
    assert all("lighthouse" not in b for b in bodies)  # prompts are not recorded by default
    assert any(f'"bytes_stored":{made.stored.size}' in b for b in bodies)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


async def test_input_pictures_are_fitted_to_the_providers_own_limits(storage: StorageManager) -> None:
    # ComfyUI has none of Stability's limits: the picture reaches it at its own size, and a long
    # thin one is not refused.
    async with running_fake() as fake:
        generator = ImageGenerator(provider=ComfyUIProvider(fake.url, poll_interval=0.05))
        service = ImageService(storage, generator)
        try:
            upscaled = await service.upscale(USER, _png((1200, 900)))
            await service.img2img(USER, _png((1500, 400)), "a red fox", seed=1)
        finally:
            await generator.aclose()
        uploads = [Image.open(io.BytesIO(data)).size for (kind, _, _), data in fake.files.items() if kind == "input"]
    assert (1200, 900) in uploads and (1500, 400) in uploads
    assert (upscaled.image.width, upscaled.image.height) == (4800, 3600)
