"""Usage events: what recording costs a generation, and what reading 90 days costs.

    python bench/bench_events.py [--generations 200] [--rounds 10] [--events 100000] [--s3]
                                 [--provider instant|offline]

Prints two tables from one run:

1. Overhead of recording: ``--generations`` generations through ``ImageService.imagine``
   with a provider that returns one small pre-made PNG at once (``--provider instant``, the
   worst case: the generation is nothing but storage work), or with the offline renderer
   (``--provider offline``: a real 1024×1024 image drawn and encoded on the CPU, the
   shortest generation a server can actually make), on filesystem storage in a
   temporary folder, with and without an :class:`EventLog` (the same manager, users and
   provider). The two are interleaved in ``--rounds`` rounds, alternating which goes first,
   so drift (growing ledger documents, a busy machine) hits both alike. An event is written
   in the background (one extra PUT on a worker thread), so the time per ``imagine`` call is
   reported, and the wall time per generation including the final wait for events still in
   flight. With ``--s3`` the same runs on a SeaweedFS ``weed mini`` started for the purpose.
2. Reading 90 days: ``--events`` events spread evenly over 90 days, each one stored as its
   own raw object by ``EventLog.record`` (a fake clock per day), each finished day folded by
   the real ``EventLog.compact``; the last day is today and stays raw, as it is in the middle
   of a day. ``summary(days=90)`` is then timed with today empty and with today's events,
   and the storage reads it makes are counted by wrapping the backend. With ``--s3`` the same
   stored objects (the daily summaries, then today's raw events) are copied to SeaweedFS
   and timed there too.

Timings come from one process on one machine; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.analytics import EventLog, UsageEvent  # noqa: E402
from abby_core.analytics.log import DAILY_PREFIX, RAW_PREFIX  # noqa: E402
from abby_core.generation import GeneratedImage, ImageGenerator, OfflineProvider, Provider  # noqa: E402
from abby_core.generation.base import ImageToImageRequest, TextToImageRequest, UpscaleRequest  # noqa: E402
from abby_core.pipeline import ImageService  # noqa: E402
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager  # noqa: E402

MS = 1000.0
DAYS = 90
USERS = 300  # distinct members over the 90 days (each day's summary lists the day's members)
GEN_USERS = 20  # members the overhead runs cycle through
WARM_UP = 5
SUMMARY_REPEATS = 5
OVERHEAD_TARGET = 0.02
SUMMARY_TARGET_S = 1.0
TODAY = date(2026, 6, 30)
NOON = datetime.min.time().replace(hour=12)


def small_png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


class InstantProvider(Provider):
    """Returns the same small PNG at once: the generation costs only Abby's own work."""

    name = "instant"
    input_limits = OfflineProvider.input_limits

    def __init__(self, png: bytes) -> None:
        self.png = png

    def _image(self, seed: int) -> GeneratedImage:
        return GeneratedImage(self.png, "image/png", seed or 1, 64, 64, self.name, "SUCCESS", "bench image")

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        return self._image(request.seed)

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        return self._image(request.seed)

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        return self._image(0)


def member(n: int) -> str:
    return str(810_000_000_000_000_000 + n)


# -- table 1: overhead of recording -----------------------------------------------------------


@dataclass
class Arm:
    calls: list[float]
    walls: list[float]  # per batch: wall time including the wait for events in flight
    count: int = 0

    @property
    def wall_per_gen(self) -> float:
        return sum(self.walls) / self.count


async def batch(service: ImageService, arm: Arm, count: int, start: int) -> None:
    began = time.perf_counter()
    for i in range(start, start + count):
        t0 = time.perf_counter()
        await service.imagine(member(i % GEN_USERS), f"a lighthouse at dawn, number {i}")
        arm.calls.append(time.perf_counter() - t0)
    await service.flush_events()
    arm.walls.append(time.perf_counter() - began)
    arm.count += count


async def overhead(
    backend: StorageBackend, generations: int, rounds: int, provider: str = "instant"
) -> tuple[Arm, Arm, int, float]:
    """Without events, with events, events stored (warm-up left out), and one bare ``record`` (median)."""
    backend.ensure_ready(cleanup_days=7)
    manager = StorageManager(
        backend, max_user_daily_gens=1_000_000, max_user_storage_mb=100_000, max_global_storage_mb=1_000_000
    )
    made: Provider = InstantProvider(small_png()) if provider == "instant" else OfflineProvider(seed_source=lambda: 7)
    generator = ImageGenerator(provider=made)
    plain = ImageService(manager, generator)
    logged = ImageService(manager, generator, events=EventLog(backend))
    without, with_ = Arm([], []), Arm([], [])
    try:
        for service in (plain, logged):  # warm-up: connections, first documents, imports
            await batch(service, Arm([], []), WARM_UP, 0)
        per_round = [generations // rounds + (1 if r < generations % rounds else 0) for r in range(rounds)]
        done = 0
        for r, count in enumerate(per_round):
            order = [(plain, without), (logged, with_)]
            for service, arm in order if r % 2 == 0 else reversed(order):
                await batch(service, arm, count, done)
            done += count
        stored = sum(1 for _ in backend.list_objects(RAW_PREFIX)) - WARM_UP
        record = await asyncio.to_thread(bare_record, logged.events)
    finally:
        await manager.aclose()
    return without, with_, stored, record


def bare_record(log: EventLog | None, count: int = 50) -> float:
    """Median time of one ``EventLog.record`` on its own (the write an event adds), sequential."""
    assert log is not None
    times = []
    for i in range(count):
        event = UsageEvent(
            time=datetime.now(UTC),
            user_id=member(i),
            kind="imagine",
            provider="instant",
            outcome="ok",
            bytes_stored=1000,
            latency_seconds=0.001,
        )
        t0 = time.perf_counter()
        assert log.record(event)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead_rows(label: str, without: Arm, with_: Arm, stored: int, record: float) -> Iterator[str]:
    rows = (("without events", without), ("with EventLog", with_))
    for name, arm in rows:
        yield (
            f"| {label} | {name} | {arm.count} | {statistics.mean(arm.calls) * MS:.2f} ms "
            f"| {statistics.median(arm.calls) * MS:.2f} ms | {arm.wall_per_gen * MS:.2f} ms |"
        )
    mean = statistics.mean(with_.calls) / statistics.mean(without.calls) - 1
    median = statistics.median(with_.calls) / statistics.median(without.calls) - 1
    wall = with_.wall_per_gen / without.wall_per_gen - 1
    verdict = "met" if max(mean, wall) < OVERHEAD_TARGET else "**not met**"
    yield (
        f"| {label} | overhead (with / without − 1) | | **{mean:+.1%}** | {median:+.1%} | **{wall:+.1%}** "
        f"(target < 2 %: {verdict}) |"
    )
    yield (
        f"| {label} | one `EventLog.record` alone (median of 50) | | {record * MS:.2f} ms | | "
        f"{stored} of {with_.count} events stored |"
    )


# -- table 2: reading 90 days -----------------------------------------------------------------


class Reads:
    """Counts the backend's read calls (and the entries listings return) by wrapping its methods."""

    METHODS = ("get_object", "read_doc", "head_object", "list_objects")

    def __init__(self, backend: StorageBackend) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        for name in self.METHODS:
            setattr(backend, name, self._wrap(name, getattr(backend, name)))

    def _bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counts[name] += by

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._bump(name)
            result = fn(*args, **kwargs)
            if name == "list_objects":
                listed = list(result)
                self._bump("listed entries", len(listed))
                return iter(listed)
            return result

        return counted

    def take(self) -> Counter[str]:
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts


def fixed_clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at


def day_events(day: date, count: int, rng: random.Random) -> list[UsageEvent]:
    """``count`` events spread over ``day``: mostly images, some refusals and failures."""
    events = []
    start = datetime.combine(day, datetime.min.time(), UTC)
    for _ in range(count):
        roll = rng.random()
        outcome = "ok" if roll < 0.88 else "daily_limit" if roll < 0.95 else "generation_timeout"
        ok = outcome == "ok"
        events.append(
            UsageEvent(
                time=start + timedelta(seconds=rng.uniform(0, 86_399)),
                user_id=member(int(rng.paretovariate(1.2)) % USERS),
                guild_id=str(820_000_000_000_000_000 + rng.randrange(3)),
                kind=rng.choice(("imagine", "imagine", "imagine", "img2img", "upscale")),
                provider=rng.choice(("stability", "comfyui")),
                outcome=outcome,
                bytes_stored=rng.randrange(200_000, 1_500_000) if ok else 0,
                latency_seconds=rng.lognormvariate(1.0, 0.5) if outcome != "daily_limit" else None,
                credits=3.0 if ok else None,
            )
        )
    return events


def record_day(backend: StorageBackend, day: date, count: int, rng: random.Random, pool: ThreadPoolExecutor) -> None:
    """Store a day's events as raw objects, through ``EventLog.record`` with the clock on that day."""
    log = EventLog(backend, clock=fixed_clock(datetime.combine(day, NOON, UTC)))
    recorded = list(pool.map(log.record, day_events(day, count, rng)))
    assert all(recorded), "an event was not recorded"


@dataclass
class Built:
    record_s: float
    compact_s: float
    past_events: int
    today_events: int
    daily_doc_bytes: list[int]


def build(backend: StorageBackend, total: int, *, today: bool) -> Built:
    """Days 1–89 recorded raw and compacted (finished); day 90, today, recorded raw if ``today``."""
    rng = random.Random(2026)
    per_day = [total // DAYS + (1 if d < total % DAYS else 0) for d in range(DAYS)]
    first = TODAY - timedelta(days=DAYS - 1)
    compactor = EventLog(backend, clock=fixed_clock(datetime.combine(TODAY, NOON, UTC)))
    record_s = compact_s = 0.0
    past = 0
    with ThreadPoolExecutor(8) as pool:
        for offset, count in enumerate(per_day[:-1]):
            day = first + timedelta(days=offset)
            t0 = time.perf_counter()
            record_day(backend, day, count, rng, pool)
            t1 = time.perf_counter()
            report = compactor.compact(day)
            compact_s += time.perf_counter() - t1
            record_s += t1 - t0
            assert report.status == "compacted" and report.events == count, report
            past += count
        today_count = per_day[-1] if today else 0
        if today:
            t0 = time.perf_counter()
            record_day(backend, TODAY, today_count, rng, pool)
            record_s += time.perf_counter() - t0
    sizes = [info.size for info in backend.list_objects(DAILY_PREFIX)]
    return Built(record_s, compact_s, past, today_count, sizes)


def add_today(backend: StorageBackend, total: int) -> int:
    """Record today's share of the events (the same share ``build`` leaves for today)."""
    count = total // DAYS  # the last day never gets a remainder event in ``build``
    with ThreadPoolExecutor(8) as pool:
        record_day(backend, TODAY, count, random.Random(90), pool)
    return count


@dataclass
class Timed:
    times: list[float]
    reads: Counter[str]
    events: int


def time_summary(backend: StorageBackend, reads: Reads) -> Timed:
    log = EventLog(backend, clock=fixed_clock(datetime.combine(TODAY, NOON, UTC)))
    times = []
    counts: Counter[str] = Counter()
    events = 0
    for _ in range(SUMMARY_REPEATS):
        reads.take()
        t0 = time.perf_counter()
        found = log.summary(days=DAYS)
        times.append(time.perf_counter() - t0)
        counts = reads.take()
        events = found.events
    return Timed(times, counts, events)


def reads_text(counts: Counter[str]) -> str:
    parts = [
        f"{counts['read_doc']} `read_doc`",
        f"{counts['get_object']} `get_object`",
        f"{counts['list_objects']} `list_objects` ({counts['listed entries']} entries)",
    ]
    if counts["head_object"]:
        parts.append(f"{counts['head_object']} `head_object`")
    return ", ".join(parts)


def summary_row(label: str, window: str, t: Timed) -> str:
    median = statistics.median(t.times)
    verdict = "met" if median < SUMMARY_TARGET_S else "**not met**"
    return (
        f"| {label} | {window} | {t.events:,} | **{median * MS:.0f} ms** ({verdict}) "
        f"| {min(t.times) * MS:.0f}–{max(t.times) * MS:.0f} ms | {reads_text(t.reads)} |"
    )


def copy_summaries(source: StorageBackend, target: StorageBackend) -> None:
    """The daily summaries of ``source``, written to ``target`` (to time the same reads on S3)."""
    target.ensure_ready(cleanup_days=7)
    for info in source.list_objects(DAILY_PREFIX):
        found = source.read_doc(info.key)
        assert found is not None
        target.write_doc(info.key, found[0], etag=None)


def copy_raw(source: StorageBackend, target: StorageBackend) -> None:
    """The raw events of ``source``, written to ``target``."""
    raw = [info.key for info in source.list_objects(RAW_PREFIX)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: target.put_object(key, source.get_object(key), "application/json"), raw))


# -- main ----------------------------------------------------------------------------------------


def start_seaweedfs(data_dir: Path) -> Any:
    from tests.fixtures.seaweedfs import SeaweedFS

    server = SeaweedFS(data_dir=data_dir)
    server.start()
    return server


def s3_backend(server: Any) -> StorageBackend:
    from abby_core.storage.s3 import S3Backend
    from tests.storage.conftest import s3_settings

    return S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200, help="generations with and without events (each)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the two")
    parser.add_argument("--events", type=int, default=100_000, help="events over the 90 days")
    parser.add_argument("--s3", action="store_true", help="also on a SeaweedFS weed mini started here")
    parser.add_argument(
        "--provider", choices=("instant", "offline"), default="instant",
        help="instant: a ready 64x64 PNG (worst case); offline: the real offline renderer",
    )
    args = parser.parse_args()
    if args.generations < args.rounds or args.events < DAYS:
        parser.error("need at least one generation per round and one event per day")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abby-bench-events-") as tmp:
        work = Path(tmp)
        server = start_seaweedfs(work / "seaweedfs") if args.s3 else None
        try:
            results = [
                (
                    "filesystem",
                    *asyncio.run(
                        overhead(FilesystemBackend(work / "overhead"), args.generations, args.rounds, args.provider)
                    ),
                )
            ]
            if server is not None:
                runs = overhead(s3_backend(server), args.generations, args.rounds, args.provider)
                results.append(("SeaweedFS", *asyncio.run(runs)))

            fs = FilesystemBackend(work / "days")
            fs.ensure_ready(cleanup_days=7)
            built = build(fs, args.events, today=False)
            fs_reads = Reads(fs)
            empty_today = time_summary(fs, fs_reads)
            today_count = add_today(fs, args.events)
            with_today = time_summary(fs, fs_reads)
            s3_times: list[Timed] = []
            if server is not None:
                s3 = s3_backend(server)
                copy_summaries(fs, s3)
                s3_reads = Reads(s3)
                s3_times.append(time_summary(s3, s3_reads))
                copy_raw(fs, s3)
                s3_times.append(time_summary(s3, s3_reads))
        finally:
            if server is not None:
                server.stop()

    print(
        f"\nRecording events: {args.generations} generations each way, {args.rounds} interleaved rounds "
        f"({'instant provider, 64×64 PNG' if args.provider == 'instant' else 'offline renderer, 1024×1024'}, "
        f"{GEN_USERS} members)\n"
    )
    print(
        "| storage | run | generations | mean per `imagine` | median per `imagine` "
        "| wall per generation incl. waiting for events |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for label, without, with_, stored, record in results:
        for row in overhead_rows(label, without, with_, stored, record):
            print(row)

    mean_doc = statistics.mean(built.daily_doc_bytes)
    print(
        f"\nReading 90 days: {args.events:,} events over {DAYS} days ({args.events // DAYS:,}–"
        f"{-(-args.events // DAYS):,} a day, {USERS} members), each recorded as a raw object by "
        f"`EventLog.record` ({built.record_s:.0f} s, 8 threads) and each finished day folded by "
        f"`EventLog.compact` ({built.compact_s:.0f} s for {DAYS - 1} days); today's "
        f"{today_count:,} events stay raw. Daily summaries: {len(built.daily_doc_bytes)}, "
        f"{mean_doc / 1024:.1f} KiB on average. `summary(days=90)`, median of {SUMMARY_REPEATS}.\n"
    )
    print("| storage | window | events in window | `summary(days=90)` | range | storage reads per call |")
    print("|---|---|---:|---:|---:|---|")
    past = f"{DAYS - 1} compacted days"
    print(summary_row("filesystem", f"{past} + today empty", empty_today))
    print(summary_row("filesystem", f"{past} + today's {today_count:,} raw events", with_today))
    if s3_times:
        print(summary_row("SeaweedFS", f"{past} + today empty", s3_times[0]))
        print(summary_row("SeaweedFS", f"{past} + today's {today_count:,} raw events", s3_times[1]))
    print(f"\n(whole run: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
