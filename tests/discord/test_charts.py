"""The usage charts: valid PNGs of the promised size whose bars follow the data."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from PIL import Image

from abby_core.analytics import DayUsage
from abby_discord.charts import CHART_SIZE, IMAGES, REFUSALS, SPARKLINE_SIZE, daily_chart, member_sparkline

START = date(2026, 10, 27)


def days(images: list[int], refusals: list[int] | None = None) -> list[DayUsage]:
    refused = refusals or [0] * len(images)
    return [
        DayUsage(day=START + timedelta(days=n), events=i + r, images=i, refusals=r, failures=0, bytes=0)
        for n, (i, r) in enumerate(zip(images, refused, strict=True))
    ]


def decode(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    return image.convert("RGB")


def columns(image: Image.Image, colour: tuple[int, int, int]) -> dict[int, list[int]]:
    """x -> the rows painted ``colour`` in that column, below the title and legend band (the top 12 %)."""
    found: dict[int, list[int]] = {}
    pixels = image.load()
    assert pixels is not None
    for x in range(image.width):
        rows = [y for y in range(int(image.height * 0.12), image.height) if pixels[x, y] == colour]
        if rows:
            found[x] = rows
    return found


def bars(image: Image.Image, colour: tuple[int, int, int]) -> list[int]:
    """Heights, left to right, of the ``colour`` bars standing on the lowest painted row."""
    painted = columns(image, colour)
    if not painted:
        return []
    base = max(max(rows) for rows in painted.values())
    heights: list[int] = []
    previous = -2
    for x in sorted(painted):
        rows = painted[x]
        if max(rows) != base:
            continue
        height = len(rows)
        if x == previous + 1:
            heights[-1] = max(heights[-1], height)
        else:
            heights.append(height)
        previous = x
    return heights


def test_daily_chart_bars_follow_the_images_per_day() -> None:
    data = [0] * 30
    data[10], data[20], data[29] = 1, 5, 3
    image = decode(daily_chart(days(data), title="Images per day"))
    assert image.size == CHART_SIZE
    low, high, last = bars(image, IMAGES)
    assert high > last > low > 0
    assert high == pytest.approx(5 * low, rel=0.1)
    assert bars(image, REFUSALS) == []


def test_daily_chart_stacks_refusals_on_the_images() -> None:
    images, refusals = [0] * 30, [0] * 30
    images[5], refusals[5] = 2, 2
    images[6] = 4
    image = decode(daily_chart(days(images, refusals), title="t"))
    stacked, alone = bars(image, IMAGES)
    assert stacked == pytest.approx(alone / 2, abs=1)
    refused = columns(image, REFUSALS)
    # the refusal part sits directly on top of the first bar's image part
    x = next(x for x, rows in columns(image, IMAGES).items() if len(rows) == stacked)
    assert x in refused and max(refused[x]) + 1 == min(columns(image, IMAGES)[x])
    assert len(refused[x]) == pytest.approx(stacked, abs=1)


def test_different_data_draw_different_charts() -> None:
    one, other = days([1] * 30), days([1] * 29 + [5])
    assert daily_chart(one, title="t") != daily_chart(other, title="t")
    assert member_sparkline(one) != member_sparkline(other)


@pytest.mark.parametrize("data", [[], [0] * 30], ids=["no days", "no events"])
def test_empty_data_still_makes_a_chart(data: list[int]) -> None:
    chart = decode(daily_chart(days(data), title="Nothing yet"))
    assert chart.size == CHART_SIZE and bars(chart, IMAGES) == []
    line = decode(member_sparkline(days(data)))
    assert line.size == SPARKLINE_SIZE and columns(line, IMAGES) == {}


def test_member_sparkline_bars() -> None:
    data = [0] * 30
    data[3], data[17] = 1, 5
    image = decode(member_sparkline(days(data)))
    assert image.size == SPARKLINE_SIZE
    low, high = bars(image, IMAGES)
    assert high > low > 0
    painted = sorted(columns(image, IMAGES))
    assert painted[0] < SPARKLINE_SIZE[0] / 4 < SPARKLINE_SIZE[0] / 2 < painted[-1], "oldest day on the left"
