"""Quota ledger at scale: does one generation cost more in a big store than in an empty one?

    python bench/bench_ledger_scale.py [--members 10,1000,10000] [--images 10,1000,5000]
        [--backends filesystem,seaweedfs] [--escrow off,on] [--samples 30] [--size 200000] [--quick]

Everything goes through the public API (``StorageManager``: ``reserve`` + ``save_image``,
``get_quota_status``), so the script measures any ledger layout unchanged. For each backend
(a folder in a temporary directory; a SeaweedFS ``weed mini`` started here, a bucket per
store) it prints:

1. Members: one generation (``reserve`` + ``save_image`` of a ``--size`` PNG) for a new
   member of a store that already has N members, against the same for a new member of an
   empty store (a fresh one beside it), then ``get_quota_status`` of that member. The two
   stores take turns in the same ``--samples`` rounds (empty, big, empty, big, ...) after
   3 warm-up rounds: p50, p90 and their ratios, with ``STORAGE_ESCROW`` off and on.
2. History: the same for one member who already keeps M images, against a member of an
   empty store who had none when the rounds began.
3. The ledger after each filled store's rounds: its documents by kind (the key with its
   numbers replaced by ``#``, so a new layout's documents show up by themselves), how many,
   the largest, and the bytes and writes one generation in the big store made to that kind
   (mean over the rounds, counted by wrapping the backend's ``write_doc``).

A store grows from one N (or M) to the next, and the rounds' own generations count towards
the next one. It is filled through the same API, a tiny PNG per generation, 32 at once, with
escrow on (the global document is then written once per slice, not twice per generation).
A member's history is spread over past days, as a real one is: the images a step adds are
dated 100 a day (``HISTORY_PER_DAY``), the first ones (images / 100) days ago, the last ones
today, through managers whose clock is moved back (the manager's injectable clock); so the
images older than a day have moved into the catalogue as they would have, and the member's
document is in its steady state when the rounds begin. The members of the members store
each store one image, now.
Progress goes to stderr, tables to stdout. ``--quick``: 10 and 1,000 members, 10 and 1,000
images, the filesystem only, 10 rounds. Timings come from one process on one machine:
compare the ratios, measured in the same rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager  # noqa: E402
from bench._common import (  # noqa: E402
    MS,
    build_manager,
    median_ms,
    noise_png,
    percentile,
    progress,
    seaweedfs,
    timed,
)

WARMUP = 3
FILL_TASKS = 32
FILL_ESTIMATE = 1_500_000  # the fill's hold estimate: a lease slice covers thousands of tiny images
TINY = noise_png(100)  # a valid PNG of a few hundred bytes
HISTORY_PER_DAY = 100  # a filled history: this many images a day, up to today
QUICK = {"members": [10, 1_000], "images": [10, 1_000], "backends": ["filesystem"], "samples": 10}


def member(n: int) -> str:
    """The ``n``-th member of a store (a Discord-style snowflake)."""
    return str(820_000_000_000_000_000 + n)


def kind_of(key: str) -> str:
    """A ledger key with its ids, dates, counters and shard names (a path segment of hex
    digits, ``af``) replaced by ``#``: ``ledger/users/#.json``, ``ledger/shards/#.json``."""
    return re.sub(r"(?<=/)[0-9a-f]+(?=[./]|$)|[0-9a-f]*[0-9][0-9a-f]*", "#", key)


@dataclass
class Store:
    """One place a ledger lives (a folder, a bucket); ``open`` gives a fresh backend on it."""

    open: Callable[[], StorageBackend]
    members: int = 0  # members who have stored an image
    images: int = 0  # images of member(0), for the history store

    def new_member(self) -> str:
        self.members += 1
        return member(self.members - 1)


class Stores:
    """Makes stores of one backend kind: folders under ``work``, or buckets on ``server``."""

    def __init__(self, kind: str, work: Path, server: Any = None) -> None:
        self.kind, self.work, self.server = kind, work, server

    def new(self) -> Store:
        name = f"scale-{uuid.uuid4().hex[:10]}"
        if self.kind == "filesystem":
            folder = self.work / name

            def open_folder() -> StorageBackend:
                return FilesystemBackend(folder)

            opener = open_folder
        else:
            from abby_core.storage.s3 import S3Backend
            from tests.storage.conftest import s3_settings

            settings = s3_settings(
                self.server.endpoint, self.server.access_key, self.server.secret_key, bucket=f"abby-bench-{name}"
            )

            def open_bucket() -> StorageBackend:
                return S3Backend(settings)

            opener = open_bucket
        backend = opener()
        backend.ensure_ready(cleanup_days=7)
        backend.close()
        return Store(opener)


class Writes:
    """Bytes written to each kind of ledger document while recording (wraps ``write_doc``)."""

    def __init__(self, backend: StorageBackend) -> None:
        self.recording = False
        self._written: dict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        write_doc = backend.write_doc

        def recorded(key: str, body: bytes, *, etag: str | None) -> str:
            tag = write_doc(key, body, etag=etag)
            if self.recording:
                with self._lock:
                    self._written[kind_of(key)].append(len(body))
            return tag

        backend.write_doc = recorded  # type: ignore[method-assign]

    def take(self) -> dict[str, list[int]]:
        with self._lock:
            written, self._written = dict(self._written), defaultdict(list)
        return written


async def generation(manager: StorageManager, uid: str, data: bytes) -> None:
    reservation = await manager.reserve(uid, size_bytes=len(data))
    await manager.save_image(reservation, data, content_type="image/png")


def past_days(uids: list[str], per_day: int | None) -> list[tuple[timedelta, list[str]]]:
    """``uids`` by the day their generations are dated, as (days ago, uids): all now without
    ``per_day``; else ``per_day`` a day, the first len/per_day days ago, the last ones today."""
    if per_day is None:
        return [(timedelta(0), uids)]
    chunks = [uids[i : i + per_day] for i in range(0, len(uids), per_day)]
    return [(timedelta(days=len(chunks) - 1 - n), chunk) for n, chunk in enumerate(chunks)]


async def fill(store: Store, uids: list[str], what: str, *, per_day: int | None = None) -> None:
    """One tiny-PNG generation per entry of ``uids``, ``FILL_TASKS`` at once, escrow on.

    With ``per_day`` they are spread over past days (``past_days``): each day's generations
    go through a manager whose clock is the real one moved back that many days, so a
    member's images older than a day move into the catalogue as they would have."""
    if not uids:
        return
    done = 0
    start = time.perf_counter()

    async def one_day(ago: timedelta, day: list[str]) -> None:
        nonlocal done

        def clock() -> datetime:
            return datetime.now(UTC) - ago

        manager = build_manager(store.open(), FILL_TASKS, escrow=True, estimate=FILL_ESTIMATE, clock=clock)
        todo = iter(day)

        async def worker() -> None:
            nonlocal done
            for uid in todo:
                await generation(manager, uid, TINY)
                done += 1

        try:
            await asyncio.gather(*(worker() for _ in range(FILL_TASKS)))
        finally:
            await manager.aclose()

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            rate = done / (time.perf_counter() - start)
            progress(f"    filled {done:,}/{len(uids):,} {what}, {rate:.0f}/s")

    reporter = asyncio.create_task(report())
    try:
        for ago, day in past_days(uids, per_day):
            await one_day(ago, day)
    finally:
        reporter.cancel()
    seconds = time.perf_counter() - start
    progress(f"    filled {len(uids):,} {what} in {seconds:.1f} s ({len(uids) / seconds:.0f}/s)")


@dataclass
class Rounds:
    """Seconds per round for the big and the empty store, and what each big generation wrote."""

    before: int  # members (or images) in the big store when the rounds began
    gen: dict[str, list[float]] = field(default_factory=lambda: {"big": [], "empty": []})
    status: dict[str, list[float]] = field(default_factory=lambda: {"big": [], "empty": []})
    written: list[dict[str, list[int]]] = field(default_factory=list)


async def rounds(
    big: Store, empty: Store, *, escrow: bool, data: bytes, samples: int, history: bool
) -> Rounds:
    """Interleaved rounds (empty, big): a generation, then ``get_quota_status`` of its member."""
    big_backend = big.open()
    writes = Writes(big_backend)
    managers = {
        "empty": build_manager(empty.open(), escrow=escrow, estimate=len(data)),
        "big": build_manager(big_backend, escrow=escrow, estimate=len(data)),
    }
    result = Rounds(before=big.images if history else big.members)
    try:
        for i in range(-WARMUP, samples):
            for name, store in (("empty", empty), ("big", big)):
                # History: member(0) of each store, the big one's with its M images; members: a new one.
                uid = member(0) if history else store.new_member()
                writes.recording = name == "big"
                _, t_gen = await timed(generation(managers[name], uid, data))
                writes.recording = False
                _, t_status = await timed(managers[name].get_quota_status(uid))
                if history:
                    store.images += 1
                if i >= 0:
                    result.gen[name].append(t_gen)
                    result.status[name].append(t_status)
            written = writes.take()
            if i >= 0:
                result.written.append(written)
    finally:
        for manager in managers.values():
            await manager.aclose()
    return result


def ledger_docs(store: Store) -> dict[str, tuple[int, int]]:
    """Per kind of ledger document: how many there are and the largest, in bytes."""
    backend = store.open()
    try:
        found: dict[str, list[int]] = defaultdict(list)
        for obj in backend.list_objects("ledger/"):
            found[kind_of(obj.key)].append(obj.size)
    finally:
        backend.close()
    return {kind: (len(sizes), max(sizes)) for kind, sizes in sorted(found.items())}


@dataclass
class Step:
    """One N (or M): its rounds per escrow mode and the ledger after them."""

    target: int
    by_escrow: dict[str, Rounds]
    docs: dict[str, tuple[int, int]]


async def table(
    stores: Stores, targets: list[int], modes: list[str], data: bytes, samples: int, *, history: bool
) -> list[Step]:
    """Grow one store through ``targets`` (members, or images of member 0) and measure at each."""
    what = "images" if history else "members"
    big = stores.new()
    steps = []
    for target in targets:
        progress(f"  {what}: filling to {target:,} {'images of one member' if history else what}")
        if history:
            big.members = 1
            todo = [member(0)] * max(0, target - big.images)
            big.images += len(todo)
        else:
            todo = [big.new_member() for _ in range(max(0, target - big.members))]
        await fill(big, todo, what, per_day=HISTORY_PER_DAY if history else None)
        by_escrow = {}
        for mode in modes:
            progress(f"  {what}: {target:,}, escrow {mode}: {samples} rounds")
            by_escrow[mode] = await rounds(
                big, stores.new(), escrow=mode == "on", data=data, samples=samples, history=history
            )
        steps.append(Step(target, by_escrow, ledger_docs(big)))
    return steps


# -- printing ----------------------------------------------------------------------------------


def ratio(big: float, empty: float) -> str:
    return f"{big / empty:.2f}×" if empty > 0 else "–"


def timing_rows(steps: list[Step]) -> Iterator[str]:
    for step in steps:
        for mode, r in step.by_escrow.items():
            g50 = median_ms(r.gen["big"]), median_ms(r.gen["empty"])
            g90 = percentile(r.gen["big"], 90) * MS, percentile(r.gen["empty"], 90) * MS
            s50 = median_ms(r.status["big"]), median_ms(r.status["empty"])
            yield (
                f"| {mode} | {step.target:,} ({r.before:,}) "
                f"| {g50[0]:.1f} ms | {g50[1]:.1f} ms | **{ratio(*g50)}** "
                f"| {g90[0]:.1f} ms | {g90[1]:.1f} ms | {ratio(*g90)} "
                f"| {s50[0]:.1f} ms | {s50[1]:.1f} ms | **{ratio(*s50)}** |"
            )


def written_cell(r: Rounds | None, kind: str) -> str:
    if r is None:
        return "–"
    sizes = [sum(w.get(kind, [])) for w in r.written]
    counts = [len(w.get(kind, [])) for w in r.written]
    if not any(counts):
        return "0"
    return f"{statistics.mean(sizes):,.0f} B ({statistics.mean(counts):.2f} writes)"


def docs_rows(steps: list[Step], modes: list[str]) -> Iterator[str]:
    for step in steps:
        kinds = sorted(set(step.docs) | {k for r in step.by_escrow.values() for w in r.written for k in w})
        for kind in kinds:
            count, largest = step.docs.get(kind, (0, 0))
            cells = [written_cell(step.by_escrow.get(mode), kind) for mode in modes]
            yield f"| {step.target:,} | `{kind}` | {count:,} | {largest:,} B | " + " | ".join(cells) + " |"


def print_backend(label: str, what: str, unit: str, steps: list[Step], modes: list[str], args: Any) -> None:
    print(
        f"\n{label}, {what}: one generation (`reserve` + `save_image`, {args.size:,} B PNG) and "
        f"`get_quota_status`; p50/p90 of {args.samples} interleaved rounds\n"
    )
    print(
        f"| escrow | {unit} (at the first round) | generation p50, big | p50, empty | p50 ratio "
        "| p90, big | p90, empty | p90 ratio | `get_quota_status` p50, big | p50, empty | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in timing_rows(steps):
        print(row)
    print(f"\n{label}, {what}: ledger documents after the rounds (kinds by key, numbers as `#`)\n")
    heads = " | ".join(f"written per generation, escrow {mode}" for mode in modes)
    print(f"| {unit} | kind | documents | largest | {heads} |")
    print("|---:|---|---:|---:|" + "---:|" * len(modes))
    for row in docs_rows(steps, modes):
        print(row)


def header(args: Any, data: bytes) -> str:
    now = datetime.now(UTC)
    return (
        f"Ledger at scale: {now:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; backends {', '.join(args.backends)}; "
        f"escrow {', '.join(args.escrow)}; members {', '.join(f'{n:,}' for n in args.members)}; "
        f"images {', '.join(f'{m:,}' for m in args.images)}; measured PNG {len(data):,} B, fill PNG "
        f"{len(TINY):,} B; {args.samples} rounds after {WARMUP} warm-up"
    )


def numbers(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        for name in chosen:
            if name not in allowed:
                raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
        return chosen

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--members", type=numbers, default=[10, 1_000, 10_000], help="N members (default 10,1000,10000)"
    )
    parser.add_argument("--images", type=numbers, default=[10, 1_000, 5_000], help="M images (default 10,1000,5000)")
    parser.add_argument(
        "--backends", type=names(("filesystem", "seaweedfs")), default=["filesystem", "seaweedfs"],
        help="filesystem,seaweedfs (default both)",
    )
    parser.add_argument("--escrow", type=names(("off", "on")), default=["off", "on"], help="off,on (default both)")
    parser.add_argument("--samples", type=int, default=30, help="measured rounds per row (default 30)")
    parser.add_argument("--size", type=int, default=200_000, help="bytes of the measured image (default 200 KB)")
    parser.add_argument("--quick", action="store_true", help="10/1,000 members and images, filesystem, 10 rounds")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    # A store filled 32 generations at a time logs nothing worth reading here.
    logging.disable(logging.WARNING)
    data = noise_png(args.size)
    started = time.perf_counter()
    results: list[tuple[str, list[Step], list[Step]]] = []
    with tempfile.TemporaryDirectory(prefix="abby-bench-scale-") as tmp:
        work = Path(tmp)
        for kind in args.backends:
            label = {"filesystem": "Filesystem", "seaweedfs": "SeaweedFS"}[kind]
            progress(f"{label}:")
            with seaweedfs(work / "seaweedfs") if kind == "seaweedfs" else contextlib.nullcontext() as server:
                stores = Stores(kind, work, server)
                members = asyncio.run(table(stores, args.members, args.escrow, data, args.samples, history=False))
                history = asyncio.run(table(stores, args.images, args.escrow, data, args.samples, history=True))
            results.append((label, members, history))
    print(header(args, data))
    for label, members, history in results:
        print_backend(label, "members", "members in the store", members, args.escrow, args)
        print_backend(label, "history", "images of the member", history, args.escrow, args)
    print(f"\n(whole run: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
