"""The offline renderer, the validators, and the core's import boundary."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from PIL import Image

from abby_core.errors import InvalidImage, InvalidInput, InvalidPrompt
from abby_core.generation import (
    ImageGenerator,
    OfflineProvider,
    validate_image_to_image,
    validate_text_to_image,
    validate_upscale,
)
from abby_core.generation.offline import LABEL
from abby_core.generation.stability import StabilityProvider
from tests.generation.helpers import png

STABILITY = StabilityProvider.input_limits


@pytest.fixture
def offline() -> ImageGenerator:
    return ImageGenerator(provider=OfflineProvider())


async def test_offline_is_deterministic_and_labelled(offline: ImageGenerator) -> None:
    a = await offline.text_to_image("a lighthouse at dusk", aspect_ratio="9:16", seed=5)
    b = await offline.text_to_image("a lighthouse at dusk", aspect_ratio="9:16", seed=5)
    c = await offline.text_to_image("a lighthouse at dusk", aspect_ratio="9:16", seed=6)
    assert a.data == b.data and a.data != c.data
    assert (a.width, a.height) == (576, 1024)
    assert Image.open(io.BytesIO(a.data)).format == "PNG"
    assert (a.provider, a.label, a.finish_reason, a.content_type) == ("offline", LABEL, "SUCCESS", "image/png")
    assert "not AI" in a.label


async def test_offline_seed_zero_picks_a_fresh_reported_seed(offline: ImageGenerator) -> None:
    a = await offline.text_to_image("🦊🌲")
    b = await offline.text_to_image("🦊🌲")
    assert a.seed != 0 and b.seed != 0 and a.seed != b.seed
    assert a.data != b.data
    explicit = await offline.text_to_image("🦊🌲", seed=a.seed)
    assert explicit.seed == a.seed and explicit.data == a.data


async def test_offline_image_to_image_and_upscale(offline: ImageGenerator) -> None:
    source = png((300, 200))
    weak = await offline.image_to_image(source, "blue sky", strength=0.1, seed=3)
    strong = await offline.image_to_image(source, "blue sky", strength=0.9, seed=3)
    assert weak.data != strong.data
    assert (weak.width, weak.height) == (1024, 683)
    red = Image.open(io.BytesIO(weak.data)).convert("RGB").getpixel((600, 300))
    assert isinstance(red, tuple) and red[0] > 150  # mostly the red input at low strength
    up = await offline.upscale_image(png((100, 50)))
    assert (up.width, up.height) == (400, 200)
    again = await offline.upscale_image(png((100, 50)))
    assert up.data == again.data
    big = await offline.upscale_image(png((1200, 800)))
    assert max(big.width, big.height) == 4096


async def test_offline_handles_wide_large_and_small_inputs(offline: ImageGenerator) -> None:
    # Speed is measured by bench/, not asserted here; this checks the shapes come out right.
    wide = await offline.text_to_image("a long prompt " * 50, aspect_ratio="21:9")
    assert wide.width > wide.height
    remade = await offline.image_to_image(png((1024, 1024)), "x")
    assert remade.width == remade.height
    bigger = await offline.upscale_image(png((512, 512)))
    assert (bigger.width, bigger.height) == (2048, 2048)


def test_validate_text_to_image() -> None:
    req = validate_text_to_image(" hi ", negative_prompt="  ", style_preset="", seed=4_294_967_294)
    assert (req.prompt, req.negative_prompt, req.style_preset) == ("hi", None, None)
    for bad in (
        {"aspect_ratio": "4:3"},
        {"seed": -1},
        {"seed": 4_294_967_295},
        {"seed": True},
        {"style_preset": "watercolour"},
        {"output_format": "gif"},
    ):
        with pytest.raises(InvalidInput):
            validate_text_to_image("hi", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrompt, match="negative prompt"):
        validate_text_to_image("hi", negative_prompt="a\x00b")


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan"), "0.5"])
async def test_bad_strength_is_refused_before_anything(offline: ImageGenerator, strength: object) -> None:
    with pytest.raises(InvalidInput, match="strength"):
        await offline.image_to_image(png(), "x", strength=strength)  # type: ignore[arg-type]


def test_validate_upscale() -> None:
    with pytest.raises(InvalidPrompt, match="creative"):
        validate_upscale(png(), mode="creative", limits=STABILITY)
    with pytest.raises(InvalidInput, match="mode"):
        validate_upscale(png(), mode="magic", limits=STABILITY)
    with pytest.raises(InvalidImage):
        validate_upscale(b"GIF89a....", mode="fast", limits=STABILITY)
    with pytest.raises(InvalidImage, match="long and thin"):
        validate_upscale(png((10, 2000)), mode="fast", limits=STABILITY)
    req = validate_upscale(png((20, 900)), mode="fast", limits=STABILITY)
    size = Image.open(io.BytesIO(req.image)).size
    assert min(size) >= 32 and max(size) <= 1536 and 1_024 <= size[0] * size[1] <= 1_048_576


def test_core_never_imports_discord_typer_or_rich() -> None:
    code = (
        # httpx's own command line (httpx._main) loads rich when click is installed: not Abby's import.
        "import sys; sys.modules['httpx._main'] = None;"
        "import abby_core.generation, abby_core.images;"
        "bad = [m for m in ('discord', 'typer', 'rich') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_each_provider_states_its_own_input_limits() -> None:
    from abby_core.generation.automatic1111 import Automatic1111Provider
    from abby_core.generation.comfyui import ComfyUIProvider
    wide, photo = png((1500, 400)), png((1200, 900))
    stability = StabilityProvider.input_limits
    with pytest.raises(InvalidImage, match=r"1500x400.*2\.5 to 1"):
        validate_image_to_image(wide, "a fox", limits=stability)
    fitted = validate_upscale(photo, mode="fast", limits=stability)
    assert Image.open(io.BytesIO(fitted.image)).size == (1182, 887)  # Stability's 1,048,576 pixels
    for provider in (ComfyUIProvider, Automatic1111Provider, OfflineProvider):
        limits = provider.input_limits
        assert Image.open(io.BytesIO(validate_image_to_image(wide, "a fox", limits=limits).image)).size == (1500, 400)
        for mode in ("fast", "conservative", "creative"):
            request = validate_upscale(photo, prompt="a fox", mode=mode, limits=limits)
            assert Image.open(io.BytesIO(request.image)).size == (1200, 900), (provider, mode)


def test_a_fallback_fits_pictures_to_what_both_providers_take() -> None:
    from abby_core.generation import FallbackProvider
    from abby_core.generation.comfyui import ComfyUIProvider
    both = FallbackProvider(ComfyUIProvider("http://127.0.0.1:8188"), StabilityProvider("sk-test"))
    with pytest.raises(InvalidImage, match="2\\.5 to 1"):
        validate_image_to_image(png((1500, 400)), "a fox", limits=both.input_limits)
    assert both.input_limits == StabilityProvider.input_limits.narrowed(ComfyUIProvider.input_limits)


async def test_a_providers_damaged_image_is_its_failure_not_the_members() -> None:
    from dataclasses import replace

    from abby_core.errors import GenerationUnavailable
    from abby_core.generation import TextToImageRequest

    class Truncating(OfflineProvider):
        async def text_to_image(self, request: TextToImageRequest) -> Any:
            image = await super().text_to_image(request)
            return replace(image, data=image.data[: len(image.data) // 2])

    generator = ImageGenerator(provider=Truncating())
    with pytest.raises(GenerationUnavailable, match="unreadable image"):
        await generator.text_to_image("a red fox")
