"""Seed 0 means a fresh random seed; the offline caption never draws empty boxes."""

from __future__ import annotations

import io
from itertools import count

import pytest
from PIL import Image

from abby_core.generation import ImageGenerator, OfflineProvider, validate_text_to_image
from abby_core.generation.offline import NOT_SHOWN, PLACEHOLDER, caption_text, has_glyph, random_seed
from abby_core.generation.params import MAX_SEED
from tests.generation.helpers import png


async def test_seed_zero_takes_the_next_random_seed_and_reports_it() -> None:
    seeds = count(101)
    offline = ImageGenerator(provider=OfflineProvider(seed_source=lambda: next(seeds)))
    first = await offline.text_to_image("a fox")
    second = await offline.text_to_image("a fox")
    assert (first.seed, second.seed) == (101, 102) and first.data != second.data
    remade = await offline.text_to_image("a fox", seed=101)
    assert remade.seed == 101 and remade.data == first.data
    variation = await offline.image_to_image(png((200, 200)), "a fox", seed=0)
    assert variation.seed == 103


async def test_generate_with_a_validated_request_also_picks_a_seed() -> None:
    # The path the pipeline (and so the bot and the CLI) takes: validate, then generate.
    request = validate_text_to_image("six identical runs")
    assert request.seed == 0
    offline = ImageGenerator(provider=OfflineProvider())
    made = [await offline.generate(request) for _ in range(6)]
    assert len({image.seed for image in made}) == 6 and 0 not in {image.seed for image in made}
    assert len({image.data for image in made}) == 6


def test_random_seed_range() -> None:
    seeds = {random_seed() for _ in range(200)}
    assert len(seeds) > 190 and all(1 <= s <= MAX_SEED for s in seeds)


def test_glyph_coverage_check() -> None:
    assert all(has_glyph(c) for c in "Aa0 ,.?!-")
    assert not any(has_glyph(c) for c in "日本猫🦊🌲Жα")


@pytest.mark.parametrize(
    ("prompt", "shown", "left_out"),
    [
        ("a red fox", "a red fox", False),
        ("café crème", "cafe creme", False),
        ("Ｆｕｌｌ width — dash", "Full width - dash", False),
        ("一只猫 in Tokyo 東京", f"{PLACEHOLDER} in Tokyo {PLACEHOLDER}", True),
        ("🦊🌲", PLACEHOLDER, True),
        ("a 🦊 and a 🐱", f"a {PLACEHOLDER} and a {PLACEHOLDER}", True),
    ],
)
def test_caption_text_substitutes_what_the_font_lacks(prompt: str, shown: str, left_out: bool) -> None:
    text, missing = caption_text(prompt)
    assert (text, missing) == (shown, left_out)
    assert all(has_glyph(c) for c in text)  # nothing is left to be drawn as an empty box


async def test_a_cjk_and_emoji_prompt_is_captioned_with_the_note(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageDraw

    drawn: list[str] = []
    original = ImageDraw.ImageDraw.multiline_text

    def spy(self: ImageDraw.ImageDraw, xy: object, text: str, *args: object, **kwargs: object) -> None:
        drawn.append(text)
        original(self, xy, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageDraw.ImageDraw, "multiline_text", spy)
    image = await ImageGenerator(provider=OfflineProvider()).text_to_image("東京の猫 🦊", seed=1)
    assert Image.open(io.BytesIO(image.data)).size == (1024, 1024)
    (caption,) = drawn
    assert caption.endswith(NOT_SHOWN) and PLACEHOLDER in caption
    assert all(has_glyph(c) for c in caption if c != "\n")
