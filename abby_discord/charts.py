"""Usage charts drawn with Pillow, as PNG bytes for a Discord attachment.

Pure and synchronous (a chart takes a few milliseconds of CPU): cogs call them through
``asyncio.to_thread`` so the event loop never waits on drawing. No network, no fonts on
disk: Pillow's bundled default font. Colours are chosen to read on Discord's dark and
light themes alike (the chart has its own dark background).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from abby_core.analytics import DayUsage

__all__ = [
    "BACKGROUND",
    "CHART_SIZE",
    "IMAGES",
    "REFUSALS",
    "SPARKLINE_SIZE",
    "daily_chart",
    "member_sparkline",
]

RGB = tuple[int, int, int]
CHART_SIZE = (800, 320)
SPARKLINE_SIZE = (600, 120)
BACKGROUND: RGB = (43, 45, 49)
IMAGES: RGB = (112, 84, 214)  # Abby's embed colour
REFUSALS: RGB = (240, 160, 60)
TEXT: RGB = (230, 231, 235)
MUTED: RGB = (148, 155, 164)
GRID: RGB = (64, 67, 73)

_LABEL_EVERY = 7  # days between date labels, counted back from the last day


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _nice_top(value: int) -> tuple[int, int]:
    """An axis top at or above ``value`` and a round step dividing it into at most 4 parts."""
    if value <= 4:
        return max(value, 1), 1
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return int(math.ceil(value / step) * step), int(step)


def daily_chart(per_day: Sequence[DayUsage], *, title: str) -> bytes:
    """Images per day as bars with refusals stacked on top, a date label every week, a title and legend.

    ``per_day`` is oldest first (as :meth:`EventLog.summary` lists it). Empty data, or days
    with nothing in them, still make a valid chart: the axis and a "No activity" note.
    """
    width, height = CHART_SIZE
    image = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, small = _font(18), _font(12)

    draw.text((16, 12), title, font=title_font, fill=TEXT)
    # Legend, right-aligned on the title's line.
    x = width - 16
    for label, colour in (("refusals", REFUSALS), ("images", IMAGES)):
        x -= int(draw.textlength(label, font=small))
        draw.text((x, 18), label, font=small, fill=MUTED)
        x -= 16
        draw.rectangle((x, 19, x + 10, 29), fill=colour)
        x -= 14

    left, right, top, bottom = 48, width - 16, 52, height - 30
    peak = max((d.images + d.refusals for d in per_day), default=0)
    axis_top, step = _nice_top(peak)
    scale = (bottom - top) / axis_top
    for value in range(0, axis_top + 1, step):
        y = round(bottom - value * scale)
        draw.line((left, y, right, y), fill=GRID)
        label = str(value)
        draw.text((left - 8 - draw.textlength(label, font=small), y - 7), label, font=small, fill=MUTED)

    if not per_day or peak == 0:
        note = "No activity in this period"
        draw.text(((left + right - draw.textlength(note, font=small)) / 2, (top + bottom) / 2 - 7), note,
                  font=small, fill=MUTED)
    slot = (right - left) / max(len(per_day), 1)
    bar = max(1.0, slot * 0.7)
    for index, day in enumerate(per_day):
        x0 = round(left + index * slot + (slot - bar) / 2)
        x1 = max(x0, round(x0 + bar) - 1)
        images_top = round(bottom - day.images * scale)
        if day.images:
            draw.rectangle((x0, images_top, x1, bottom - 1), fill=IMAGES)
        if day.refusals:
            draw.rectangle((x0, round(images_top - day.refusals * scale), x1, images_top - 1), fill=REFUSALS)
        if (len(per_day) - 1 - index) % _LABEL_EVERY == 0:
            label = f"{day.day:%b} {day.day.day}"
            label_width = draw.textlength(label, font=small)
            centre = (x0 + x1) / 2
            draw.line((centre, bottom, centre, bottom + 4), fill=MUTED)
            draw.text((min(max(centre - label_width / 2, 8), width - 8 - label_width), bottom + 8), label,
                      font=small, fill=MUTED)
    return _png(image)


def member_sparkline(per_day: Sequence[DayUsage]) -> bytes:
    """A member's images per day as a small strip of bars (oldest on the left), with the busiest day noted.

    Empty data gives a valid strip with only the baseline.
    """
    width, height = SPARKLINE_SIZE
    image = Image.new("RGB", SPARKLINE_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    small = _font(12)
    left, right, top, bottom = 8, width - 8, 24, height - 8
    draw.line((left, bottom, right, bottom), fill=GRID)
    peak = max((d.images for d in per_day), default=0)
    if per_day:
        first, last = per_day[0].day, per_day[-1].day
        draw.text((left, 5), f"{first:%b} {first.day} - {last:%b} {last.day}", font=small, fill=MUTED)
    note = f"busiest day: {peak} image{'s' if peak != 1 else ''}" if peak else "no images"
    draw.text((right - draw.textlength(note, font=small), 5), note, font=small, fill=MUTED)
    if not peak:
        return _png(image)
    scale = (bottom - top) / peak
    slot = (right - left) / len(per_day)
    bar = max(1.0, slot * 0.7)
    for index, day in enumerate(per_day):
        if day.images:
            x0 = round(left + index * slot + (slot - bar) / 2)
            x1 = max(x0, round(x0 + bar) - 1)
            draw.rectangle((x0, round(bottom - day.images * scale), x1, bottom - 1), fill=IMAGES)
    return _png(image)
