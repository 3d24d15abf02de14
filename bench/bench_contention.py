"""Contention benchmark: raw uploads against Abby's quota protocol as writers are added.

    python bench/bench_contention.py [--seconds 8] [--size 20000] [--big 1500000] [--quick] [--big-only]

Starts its own SeaweedFS (``weed mini`` on 127.0.0.1, in a temporary folder), runs every
row against it, stops it, and prints:

1. For 1x1, 1x8, 2x8, 4x8 and 8x8 writers (OS processes x asyncio tasks), each row run for
   ``--seconds``: operations per second and p99 latency of a raw ``put_object`` of
   ``--size`` random bytes (``S3Backend.put_object`` on a worker thread), and of Abby's
   ``reserve`` + ``save_image`` of the same bytes, twice: with every generation writing the
   one global ledger document (``STORAGE_ESCROW=false``, the default) and with escrow
   (each process leases slices of the global budget). Every task has a member of its own.
   The last columns compare escrow with raw: throughput and p99 ratios.
2. For each Abby mode and row: how evenly the processes shared the work (generations
   finished by the slowest and the fastest process), compare-and-swap races lost
   (``ledger.conflicts``, summed over processes), the storage requests behind one
   generation by kind, counted by wrapping the backend's methods (retries after lost races
   included), and the sizes of one member's document and of the global document at the end.
3. One writer, ``--big`` images: raw ``put_object`` against ``save_image`` without and with
   escrow (the reservation made before each save is not timed), interleaved, mean and
   median latency, ratios to raw, and the size the member's document reached (every
   commit rewrites it). ``--big-only`` runs just this table.

Processes are spawned once and reused; for each row they get ready (clients built, one
warm-up operation per task, so members' documents exist), then all start at one shared
wall-clock time. A row counts the operations finished by tasks that stop starting new
ones at the deadline; ops/s = operations / (last finish - shared start). ``--quick`` runs
1x1, 1x8 and 2x8 for 2 s each (a smoke run). Progress goes to stderr, tables to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.config import S3Settings  # noqa: E402
from abby_core.errors import AbbyError  # noqa: E402
from abby_core.storage import StorageManager, keys  # noqa: E402
from abby_core.storage.s3 import S3Backend  # noqa: E402
from bench._common import MS, build_manager, percentile, progress, seaweedfs  # noqa: E402

ROWS = ((1, 1), (1, 8), (2, 8), (4, 8), (8, 8))
QUICK_ROWS = ((1, 1), (1, 8), (2, 8))
MAX_OPS_PER_TASK = 1_000_000  # every loop also stops at its deadline
READY_TIMEOUT = 180.0  # spawning and importing on a busy machine
DONE_MARGIN = 180.0  # beyond a row's duration, for its last operations and clean-up
IDLE_TIMEOUT = 3600.0  # a worker whose parent went silent this long exits
START_MARGIN = 0.5  # between "all ready" and the shared start
BIG_WARMUP = 2
REQUEST_METHODS = ("put_object", "get_object", "head_object", "delete_objects", "list_objects", "read_doc", "write_doc")


# -- worker side ---------------------------------------------------------------------------
def payload(size: int) -> bytes:
    """Incompressible bytes, the same in every process (raw and Abby upload identical data)."""
    return random.Random(size).randbytes(size)


def member(row: int, process: int, task: int) -> str:
    """A member of one's own for every task of every row (a Discord-style snowflake)."""
    return str(700_000_000_000_000_000 + row * 100_000 + process * 1_000 + task)


class Requests:
    """Counts and times the backend's calls, from many threads at once."""

    def __init__(self, backend: S3Backend) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        for name in REQUEST_METHODS:
            setattr(backend, name, self._wrap(name, getattr(backend, name)))

    @staticmethod
    def label(name: str, key: str) -> str:
        if name in ("read_doc", "write_doc"):
            if key == keys.GLOBAL_LEDGER_KEY:
                return f"{name} global"
            if key.startswith(keys.USERS_LEDGER_PREFIX):
                return f"{name} user"
            if key.startswith(keys.SHARDS_LEDGER_PREFIX):
                return f"{name} shard"
            if key.startswith(keys.CATALOGUE_PREFIX):
                return f"{name} catalogue"
            return f"{name} other"
        return name

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = self.label(name, args[0] if args and isinstance(args[0], str) else "")
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
                return iter(list(result)) if name == "list_objects" else result
            finally:
                with self._lock:
                    self.count[label] += 1
                    self.seconds[label] += time.perf_counter() - start

        return timed

    def reset(self) -> None:
        with self._lock:
            self.count.clear()
            self.seconds.clear()

    def snapshot(self) -> dict[str, tuple[int, float]]:
        with self._lock:
            return {k: (n, self.seconds[k]) for k, n in self.count.items()}


async def timed_loop(deadline: float, op: Callable[[int], Awaitable[None]]) -> tuple[list[float], int, str]:
    """Run ``op(i)`` until the wall-clock deadline: latencies of the successes, errors, last error."""
    latencies: list[float] = []
    errors, last = 0, ""
    for i in range(MAX_OPS_PER_TASK):
        if time.time() >= deadline:
            break
        start = time.perf_counter()
        try:
            await op(i)
        except AbbyError as exc:
            errors, last = errors + 1, f"{type(exc).__name__}: {exc}"
            continue
        latencies.append(time.perf_counter() - start)
    return latencies, errors, last


async def contention_phase(index: int, spec: dict[str, Any], inbox: Any, outbox: Any) -> dict[str, Any]:
    """One process's part of a row: ``spec['tasks']`` writers, raw or Abby, from the shared start."""
    mode, tasks, row = spec["mode"], spec["tasks"], spec["row"]
    data = payload(spec["size"])
    backend = S3Backend(S3Settings(**spec["settings"]))
    requests = Requests(backend)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=tasks, thread_name_prefix="bench-raw")
    manager = build_manager(backend, tasks, escrow=mode == "escrow", estimate=spec["size"])
    users = [member(row, index, t) for t in range(tasks)]

    def make_op(task: int) -> Callable[[int], Awaitable[None]]:
        if mode == "raw":

            async def raw(i: int) -> None:
                key = f"bench/raw/{row}/{index}-{task}-{i}.png"
                await loop.run_in_executor(pool, backend.put_object, key, data, "image/png")

            return raw

        async def abby(i: int) -> None:
            reservation = await manager.reserve(users[task], size_bytes=len(data))
            await manager.save_image(reservation, data, content_type="image/png")

        return abby

    try:
        # Warm-up outside the clock: connections open, members' documents exist.
        await asyncio.gather(*(make_op(t)(-1) for t in range(tasks)))
        outbox.put(("ready", index, None))
        start_at = inbox.get(timeout=READY_TIMEOUT)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        conflicts_before = manager.ledger.conflicts
        requests.reset()
        results = await asyncio.gather(*(timed_loop(start_at + spec["seconds"], make_op(t)) for t in range(tasks)))
        finished = time.time()
        counted = requests.snapshot()
        conflicts = manager.ledger.conflicts - conflicts_before
        docs: dict[str, int] = {}
        if mode != "raw":
            for name, key in (("user", keys.user_ledger_key(users[0])), ("global", keys.GLOBAL_LEDGER_KEY)):
                found = backend.read_doc(key)
                docs[name] = len(found[0]) if found else 0
    finally:
        await manager.aclose()
        pool.shutdown()
    return {
        "start": start_at,
        "end": finished,
        "latencies": [x for lat, _, _ in results for x in lat],
        "errors": sum(e for _, e, _ in results),
        "last_error": next((m for _, _, m in results if m), ""),
        "conflicts": conflicts,
        "requests": counted,
        "docs": docs,
    }


async def big_phase(index: int, spec: dict[str, Any], inbox: Any, outbox: Any) -> dict[str, Any]:
    """One writer, big images: raw put_object, then reserve (untimed) + save_image, with and without escrow, in turn."""
    data = payload(spec["size"])
    backend = S3Backend(S3Settings(**spec["settings"]))
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-raw")
    plain = build_manager(backend, 1, estimate=spec["size"])
    escrow = build_manager(backend, 1, escrow=True, estimate=spec["size"])
    user = member(spec["row"], index, 0)
    raw: list[float] = []
    save: list[float] = []
    escrowed: list[float] = []
    floor: list[float] = []
    probe = {"key": f"ledger/bench-probe-{index}.json", "tag": None}

    def write_like_commit() -> float:
        """A conditional write of a copy of the member's document: what the commit costs at least."""
        found = backend.read_doc(keys.user_ledger_key(user))
        body = found[0] if found else b"{}"
        start = time.perf_counter()
        probe["tag"] = backend.write_doc(probe["key"], body, etag=probe["tag"])
        return time.perf_counter() - start

    async def timed_save(manager: StorageManager) -> float:
        reservation = await manager.reserve(user, size_bytes=len(data))
        before_save = time.perf_counter()
        await manager.save_image(reservation, data, content_type="image/png")
        return time.perf_counter() - before_save

    async def pair(i: int) -> None:
        start = time.perf_counter()
        await loop.run_in_executor(pool, backend.put_object, f"bench/big/{i}.png", data, "image/png")
        middle = time.perf_counter()
        plain_save = await timed_save(plain)
        escrow_save = await timed_save(escrow)
        commit_floor = await loop.run_in_executor(pool, write_like_commit)
        if i >= 0:
            raw.append(middle - start)
            save.append(plain_save)
            escrowed.append(escrow_save)
            floor.append(commit_floor)

    try:
        for i in range(-BIG_WARMUP, 0):
            await pair(i)
        outbox.put(("ready", index, None))
        start_at = inbox.get(timeout=READY_TIMEOUT)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        _, errors, last = await timed_loop(start_at + spec["seconds"], pair)
        finished = time.time()
        found = backend.read_doc(keys.user_ledger_key(user))
    finally:
        await plain.aclose()
        await escrow.aclose()
        pool.shutdown()
    return {
        "start": start_at,
        "end": finished,
        "raw": raw,
        "save": save,
        "escrow": escrowed,
        "floor": floor,
        "errors": errors,
        "last_error": last,
        "doc_bytes": len(found[0]) if found else 0,
        "doc_images": found[0].count(b'"created"') if found else 0,
    }


def worker_main(index: int, inbox: Any, outbox: Any) -> None:
    """A spawned process: run phases as the parent sends them, until it sends ``None``."""
    logging.disable(logging.WARNING)
    while True:
        try:
            spec = inbox.get(timeout=IDLE_TIMEOUT)
        except queue.Empty:
            return
        if spec is None:
            return
        if not isinstance(spec, dict):
            continue  # a start time left over from a phase that failed
        phase = big_phase if spec["mode"] == "big" else contention_phase
        try:
            outbox.put(("done", index, asyncio.run(phase(index, spec, inbox, outbox))))
        except Exception as exc:
            outbox.put(("failed", index, f"{type(exc).__name__}: {exc}"))


# -- parent side ---------------------------------------------------------------------------
class Workers:
    """Spawned processes, started once, each with its own inbox and one shared outbox."""

    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(count)]
        self.processes = [
            ctx.Process(target=worker_main, args=(i, self.inboxes[i], self.outbox), daemon=True) for i in range(count)
        ]
        for p in self.processes:
            p.start()

    def _collect(self, kind: str, count: int, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        got: list[Any] = []
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"only {len(got)} of {count} processes answered {kind!r} in {timeout:.0f} s")
            try:
                what, index, body = self.outbox.get(timeout=left)
            except queue.Empty:
                continue
            if what == "failed":
                raise RuntimeError(f"worker {index} failed: {body}")
            if what == kind:
                got.append(body)
        return got

    def run(self, spec: dict[str, Any], processes: int) -> list[dict[str, Any]]:
        """Run one phase on the first ``processes`` workers from a shared start; their results."""
        for inbox in self.inboxes[:processes]:
            inbox.put(spec)
        self._collect("ready", processes, READY_TIMEOUT)
        start_at = time.time() + START_MARGIN
        for inbox in self.inboxes[:processes]:
            inbox.put(start_at)
        return self._collect("done", processes, spec["seconds"] + DONE_MARGIN)

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.processes:
            p.join(timeout=15)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def p99(values: list[float]) -> float:
    return percentile(values, 99)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in results for x in r["latencies"]]
    window = max(r["end"] for r in results) - results[0]["start"]
    requests: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for r in results:
        for label, (n, seconds) in r["requests"].items():
            requests[label][0] += n
            requests[label][1] += seconds
    return {
        "ops": len(latencies),
        "rate": len(latencies) / window,
        "p99": p99(latencies),
        "errors": sum(r["errors"] for r in results),
        "last_error": next((r["last_error"] for r in results if r["last_error"]), ""),
        "conflicts": sum(r["conflicts"] for r in results),
        "requests": dict(requests),
        "docs": results[0]["docs"],
        "per_process": sorted(len(r["latencies"]) for r in results),
    }


def requests_per_op(row: dict[str, Any]) -> float:
    return sum(n for n, _ in row["requests"].values()) / max(row["ops"], 1)


Row = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]


def print_tables(rows: list[Row], big: dict[str, Any], args: Any) -> None:
    if rows:
        print_rows(rows, args)
    print_big(big, args)


def print_rows(rows: list[Row], args: Any) -> None:
    print(f"\nWriters against one SeaweedFS on loopback, {args.seconds:g} s per row, {args.size:,} B images\n")
    print(
        "| writers (processes × tasks) | raw put_object ops/s | p99 "
        "| Abby, global writes ops/s | p99 | Abby, escrow ops/s | p99 | escrow / raw ops | escrow / raw p99 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, raw, abby, escrow in rows:
        print(
            f"| {label} | {raw['rate']:.1f} | {raw['p99'] * MS:.1f} ms "
            f"| {abby['rate']:.1f} | {abby['p99'] * MS:.1f} ms "
            f"| {escrow['rate']:.1f} | {escrow['p99'] * MS:.1f} ms "
            f"| {escrow['rate'] / max(raw['rate'], 1e-9):.0%} | {escrow['p99'] / max(raw['p99'], 1e-9):.2f}× |"
        )
    errors = [
        (label, name, r["last_error"])
        for label, raw, abby, escrow in rows
        for name, r in (("raw", raw), ("global writes", abby), ("escrow", escrow))
        if r["errors"]
    ]
    for label, name, message in errors:
        print(f"\n{label} {name}: last error: {message}")

    for title, index in (("global writes", 2), ("escrow", 3)):
        measured = [(row[0], row[index]) for row in rows]
        labels = sorted({k for _, r in measured for k in r["requests"]})
        print(f"\nRequests per Abby generation ({title}), by kind (count per generation; mean time per request)\n")
        print(
            "| writers | generations per process (min–max) | lost CAS races | "
            + " | ".join(labels)
            + " | user doc | global doc |"
        )
        print("|---|" + "---:|" * (len(labels) + 4))
        for label, r in measured:
            cells = []
            for kind in labels:
                n, seconds = r["requests"].get(kind, (0, 0.0))
                cells.append(f"{n / max(r['ops'], 1):.2f} ({seconds / n * MS:.1f} ms)" if n else "0")
            docs, spread = r["docs"], r["per_process"]
            cells = [f"{spread[0]}–{spread[-1]}", f"{r['conflicts']:,}", *cells]
            cells += [f"{docs['user']:,} B", f"{docs['global']:,} B"]
            print(f"| {label} | " + " | ".join(cells) + " |")


def print_big(big: dict[str, Any], args: Any) -> None:
    raw, save, escrow = big["raw"], big["save"], big["escrow"]
    print(f"\nOne writer, {args.big:,} B images, {len(raw)} interleaved rounds in {args.seconds:g} s\n")
    if not raw:
        print(f"No round finished; {big['errors']} error(s), last: {big['last_error']}")
        return
    print("| operation | mean | p50 | mean / raw | p50 / raw |")
    print("|---|---:|---:|---:|---:|")
    for name, values in (("raw put_object", raw), ("save_image, global writes", save), ("save_image, escrow", escrow)):
        print(
            f"| {name} | {statistics.mean(values) * MS:.1f} ms | {statistics.median(values) * MS:.1f} ms "
            f"| {statistics.mean(values) / statistics.mean(raw):.2f}× "
            f"| {statistics.median(values) / statistics.median(raw):.2f}× |"
        )
    floor = statistics.median(big["floor"])
    print(
        f"\nThe member's document at the end: {big['doc_images']:,} images, {big['doc_bytes']:,} B. "
        f"A conditional write of a copy of it alone (what a commit costs at least): p50 {floor * MS:.1f} ms, "
        f"so save_image can be no faster than raw + that: {1 + floor / statistics.median(raw):.2f}× raw p50."
    )
    if big["errors"]:
        print(f"\n{big['errors']} error(s); last: {big['last_error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each row (default 8)")
    parser.add_argument("--size", type=int, default=20_000, help="image bytes in the contention rows (default 20 KB)")
    parser.add_argument("--big", type=int, default=1_500_000, help="image bytes in the one-writer table (1.5 MB)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per row, rows 1x1, 1x8, 2x8")
    parser.add_argument("--big-only", action="store_true", help="only the one-writer table")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    rows = [] if args.big_only else QUICK_ROWS if args.quick else ROWS
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    measured: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp)) as server:
        workers: Workers | None = None
        try:
            settings = {
                "endpoint_url": server.endpoint,
                "public_endpoint_url": None,
                "bucket": "abby-bench-contention",
                "access_key_id": server.access_key,
                "secret_access_key": server.secret_key,
                "region": "us-east-1",
                "timeout_seconds": 30,
                "max_attempts": 3,
            }
            backend = S3Backend(S3Settings(**settings))
            backend.ensure_ready(cleanup_days=7)
            backend.close()
            count = max([p for p, _ in rows] or [1])
            progress(f"spawning {count} worker processes")
            workers = Workers(count)
            for n, (processes, tasks) in enumerate(rows, start=1):
                label = f"{processes}×{tasks}"
                result = {}
                for mode in ("raw", "abby", "escrow"):
                    what = {"raw": "raw put_object", "abby": "Abby, global writes", "escrow": "Abby, escrow"}[mode]
                    progress(f"[{n}/{len(rows)}] {label} {what}: {args.seconds:g} s")
                    spec = {"mode": mode, "tasks": tasks, "row": n, "seconds": args.seconds}
                    spec |= {"size": args.size, "settings": settings}
                    result[mode] = merge(workers.run(spec, processes))
                    r = result[mode]
                    progress(f"    {r['rate']:.1f} ops/s, p99 {r['p99'] * MS:.1f} ms, errors {r['errors']}")
                measured.append((label, result["raw"], result["abby"], result["escrow"]))
            progress(f"[big] one writer, {args.big:,} B: raw put_object and save_image in turn, {args.seconds:g} s")
            big_spec = {"mode": "big", "tasks": 1, "row": 99, "seconds": args.seconds, "size": args.big}
            big = workers.run(big_spec | {"settings": settings}, 1)[0]
        finally:
            if workers is not None:
                workers.close()
    print_tables(measured, big, args)
    print(f"\n(whole run: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
