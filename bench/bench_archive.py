"""What archiving saves: provider-sized images archived through the real code on a folder.

    python bench/bench_archive.py [--count 12] [--quality 60]

Makes ``--count`` images of each kind: 1024×1024 and 1216×832 PNGs with photographic-like
content (smooth gradients, soft shapes, sensor-like noise) and 1024×1024 images of the
offline provider; saves them through ``StorageManager`` (reserve → save), moves the clock
past ``STORAGE_CLEANUP_DAYS`` and runs ``archive_old`` (read, shrink, put, record, delete,
forget) with the long side capped at 1024 (the default), 768, and not capped. Prints, per
kind and cap, the bytes before and after, the ratio and the time per image.

One process, one machine: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abby_core.generation import OfflineProvider
from abby_core.generation.base import TextToImageRequest
from abby_core.storage import FilesystemBackend, StorageManager


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def photo_like(size: tuple[int, int], seed: int) -> bytes:
    """Gradients, blurred shapes and fine noise: compresses like a photograph, not like a flat fill."""
    rng = random.Random(seed)
    w, h = size
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / (h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(40):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(20, w // 4)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(6))
    noise = Image.effect_noise(size, 18).convert("RGB")
    img = Image.blend(img, noise, 0.12)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def offline_image(seed: int) -> bytes:
    provider = OfflineProvider(seed_source=lambda: seed)
    result = await provider.text_to_image(TextToImageRequest(prompt=f"a lighthouse at dusk, take {seed}"))
    return result.data


async def run(count: int, quality: int) -> list[tuple[str, str, int, int, int, float]]:
    kinds: dict[str, list[bytes]] = {
        "photo-like 1024×1024": [photo_like((1024, 1024), n) for n in range(count)],
        "photo-like 1216×832": [photo_like((1216, 832), 100 + n) for n in range(count)],
        "offline provider 1024×1024": [await offline_image(200 + n) for n in range(count)],
    }
    rows = []
    for cap in (1024, 768, 100_000):
        for kind, images in kinds.items():
            with tempfile.TemporaryDirectory() as root:
                clock = Clock()
                manager = StorageManager(
                    FilesystemBackend(root), clock=clock, archive=True, archive_quality=quality,
                    max_user_daily_gens=len(images), max_user_archive_mb=10_000, image_gen_size_mb=5,
                )
                manager.archiver.max_side = cap
                try:
                    for n, data in enumerate(images):
                        res = await manager.reserve(str(10_000 + n))
                        await manager.save_image(res, data)
                    clock.offset = timedelta(days=8)
                    started = time.perf_counter()
                    report = await manager.archive_old()
                    seconds = time.perf_counter() - started
                finally:
                    await manager.aclose()
            assert report.archived == len(images), report
            label = "none" if cap >= 100_000 else f"{cap} px"
            rows.append((kind, label, len(images), report.original_bytes, report.archived_bytes, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--quality", type=int, default=60)
    args = parser.parse_args()
    rows = asyncio.run(run(args.count, args.quality))
    print(f"WebP quality {args.quality}, {args.count} images per kind, filesystem backend")
    print("| images | long side cap | count | before | after | ratio | ms per image |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind, cap, n, before, after, seconds in rows:
        print(
            f"| {kind} | {cap} | {n} | {before / n / 1e6:.2f} MB | {after / n / 1e3:.0f} kB | "
            f"{before / after:.1f}× | {seconds / n * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()
