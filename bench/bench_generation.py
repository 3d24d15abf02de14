"""Benchmark the Stability client against the fake server (no internet).

1. 50 concurrent ``text_to_image`` calls while the server answers after 1 s:
   wall time must stay near 1 s (target <= 1.3 s), i.e. the pool does not serialize.
2. Client overhead per call: sequential calls with an instant server, through
   ``ImageGenerator`` versus a bare ``httpx`` POST of the same multipart request.

Run: ``python -m bench.bench_generation`` (or ``python bench/bench_generation.py``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from abby_core.generation import ImageGenerator
from tests.fixtures.fake_stability import API_KEY, FakeStability

CONCURRENCY = 50
SERVER_DELAY = 1.0
SEQUENTIAL = 300
PATH = "/v2beta/stable-image/generate/core"
FIELDS = {"prompt": "a red fox in the snow", "aspect_ratio": "1:1", "seed": "0", "output_format": "png"}
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Accept": "image/*"}
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


async def concurrent_client(url: str) -> float:
    async with ImageGenerator(API_KEY, url) as gen:
        await gen.text_to_image("warm-up")
        started = time.perf_counter()
        results = await asyncio.gather(*(gen.text_to_image(f"a fox #{i}") for i in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    assert len(results) == CONCURRENCY and all(r.finish_reason == "SUCCESS" for r in results)
    return elapsed


async def concurrent_bare(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, limits=LIMITS, timeout=60) as client:
        await client.post(PATH, data=FIELDS, files={"none": ""}, headers=HEADERS)
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post(PATH, data=FIELDS, files={"none": ""}, headers=HEADERS) for _ in range(CONCURRENCY))
        )
        elapsed = time.perf_counter() - started
    assert all(r.status_code == 200 for r in responses)
    return elapsed


async def sequential_client(url: str) -> list[float]:
    times = []
    async with ImageGenerator(API_KEY, url) as gen:
        await gen.text_to_image("warm-up")
        for i in range(SEQUENTIAL):
            started = time.perf_counter()
            await gen.text_to_image(f"a red fox in the snow {i}")
            times.append(time.perf_counter() - started)
    return times


async def sequential_bare(url: str) -> list[float]:
    times = []
    async with httpx.AsyncClient(base_url=url, limits=LIMITS, timeout=60) as client:
        await client.post(PATH, data=FIELDS, files={"none": ""}, headers=HEADERS)
        for _ in range(SEQUENTIAL):
            started = time.perf_counter()
            response = await client.post(PATH, data=FIELDS, files={"none": ""}, headers=HEADERS)
            _ = response.content
            times.append(time.perf_counter() - started)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> int:
    with FakeStability.threaded(delay=SERVER_DELAY) as slow:
        client_wall = asyncio.run(concurrent_client(slow.url))
        bare_wall = asyncio.run(concurrent_bare(slow.url))
    with FakeStability.threaded() as fast:
        bare = asyncio.run(sequential_bare(fast.url))
        ours = asyncio.run(sequential_client(fast.url))
    bare_med, ours_med = statistics.median(bare), statistics.median(ours)
    rows = [
        ("50 concurrent text_to_image, server 1 s", f"{client_wall:.3f} s", "target <= 1.3 s"),
        ("50 concurrent bare httpx POST, server 1 s", f"{bare_wall:.3f} s", "reference"),
        (f"per call, median of {SEQUENTIAL} sequential: ImageGenerator", ms(ours_med), ""),
        (f"per call, median of {SEQUENTIAL} sequential: bare httpx", ms(bare_med), ""),
        ("client overhead per call (median difference)", ms(ours_med - bare_med),
         "validation, image header probe, result object"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | value      | note")
    print(f"|{'-' * (width + 2)}|------------|------")
    for name, value, note in rows:
        print(f"| {name.ljust(width)} | {value.ljust(10)} | {note}")
    return 0 if client_wall <= 1.3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
