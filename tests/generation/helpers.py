"""Small helpers shared by the generation tests."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from abby_core.generation import ImageGenerator
from tests.fixtures.fake_stability import API_KEY, FakeStability


class SleepRecorder:
    """Stands in for ``asyncio.sleep``: records delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def png(size: tuple[int, int] = (256, 256), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def generator(fake: FakeStability, sleep: SleepRecorder | None = None, **kw: Any) -> ImageGenerator:
    kw.setdefault("max_retries", 3)
    return ImageGenerator(API_KEY, fake.url, sleep=sleep or SleepRecorder(), **kw)
