"""Storage benchmark on a real SeaweedFS: is the quota check flat, and what does it cost?

    python bench/bench_storage.py [--rounds 30] [--objects 20000]

Prints three tables:
1. ``get_quota_status``, ``reserve`` and ``reserve`` + ``save_image`` (which commits) with
   100 and with N objects already in the bucket, next to a naive quota check that lists
   the bucket and sums the sizes (what a global limit needs without a ledger), and the
   sizes of the two ledger documents a check reads.
2. ``save_image`` against a raw boto3 ``put_object`` of the same 1.5 MB bytes on the same
   server.
3. The storage requests one ``reserve`` and one ``save_image`` make, counted and timed by
   wrapping the backend's methods (hold: user + global document writes; upload; commit;
   global snapshot; presigned link, which is local).

Timings are medians of ``--rounds`` runs in one process; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.storage import StorageManager, keys  # noqa: E402
from abby_core.storage.s3 import S3Backend  # noqa: E402
from bench._common import median_ms, seaweedfs, timed  # noqa: E402
from tests.fixtures.seaweedfs import SeaweedFS  # noqa: E402
from tests.storage.conftest import s3_settings  # noqa: E402

PAYLOAD = os.urandom(1_500_000)


def fill(backend: S3Backend, count: int, users: int = 200) -> None:
    """``count`` small images spread over ``users`` users, as they would be after weeks."""

    def put(i: int) -> None:
        uid = 900_000_000_000_000_000 + i % users
        key = f"images/users/{uid}/20260101T000000Z-{i:016x}.png"
        backend.client.put_object(Bucket=backend.bucket, Key=key, Body=b"\x89PNG" + b"x" * 2000)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))


class Requests:
    """Counts and times every backend call made while ``recording`` is set (one call at a time)."""

    METHODS = (
        "put_object",
        "get_object",
        "head_object",
        "delete_objects",
        "list_objects",
        "read_doc",
        "write_doc",
        "delete_doc",
        "link",
    )

    def __init__(self, backend: S3Backend) -> None:
        self.calls: list[tuple[str, float]] = []
        self.recording = False
        self._lock = threading.Lock()
        for name in self.METHODS:
            setattr(backend, name, self._wrap(name, getattr(backend, name)))

    @staticmethod
    def label(name: str, key: str) -> str:
        if name in ("read_doc", "write_doc", "delete_doc"):
            if key == keys.GLOBAL_LEDGER_KEY:
                return f"{name} global"
            if key.startswith(keys.USERS_LEDGER_PREFIX):
                return f"{name} user"
            if key.startswith(keys.SHARDS_LEDGER_PREFIX):
                return f"{name} shard"
            if key.startswith(keys.CATALOGUE_PREFIX):
                return f"{name} catalogue"
            if key.startswith(keys.MEMBERS_PREFIX):
                return f"{name} member"
        return name

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            key = args[0] if args and isinstance(args[0], str) else ""
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
                if name == "list_objects":  # a generator: time the listing itself
                    result = list(result)
                return iter(result) if name == "list_objects" else result
            finally:
                if self.recording:
                    with self._lock:
                        self.calls.append((self.label(name, key), time.perf_counter() - start))

        return timed

    def take(self) -> list[tuple[str, float]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def naive_check(backend: S3Backend) -> float:
    start = time.perf_counter()
    total = sum(o.size for o in backend.list_objects("images/users/"))
    assert total > 0
    return time.perf_counter() - start


def doc_size(backend: S3Backend, key: str) -> int:
    found = backend.read_doc(key)
    return len(found[0]) if found else 0


async def scenario(server: SeaweedFS, objects: int, rounds: int) -> dict[str, float]:
    backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))
    backend.ensure_ready(cleanup_days=7)
    fill(backend, objects)
    manager = StorageManager(
        backend, max_user_daily_gens=10_000, max_user_storage_mb=100_000, max_global_storage_mb=1_000_000
    )
    await manager.reconcile()  # the ledger learns about the existing objects once, at start
    for _ in range(3):  # warm the connection pool
        await manager.save_image(await manager.reserve("800000000000000001"), PAYLOAD)
    user = "800000000000000002"
    status, reserve, total = [], [], []
    for _ in range(rounds):
        _, t_status = await timed(manager.get_quota_status(user))
        reservation, t_reserve = await timed(manager.reserve(user))
        _, t_save = await timed(manager.save_image(reservation, PAYLOAD))
        status.append(t_status)
        reserve.append(t_reserve)
        total.append(t_reserve + t_save)
    naive = [naive_check(backend) for _ in range(min(rounds, 5))]
    sizes = {
        "user_doc": doc_size(backend, keys.user_ledger_key(user)),
        "global_doc": doc_size(backend, keys.GLOBAL_LEDGER_KEY),
    }
    await manager.aclose()
    return {
        "status": median_ms(status),
        "reserve": median_ms(reserve),
        "total": median_ms(total),
        "naive": median_ms(naive),
        **sizes,
    }


async def put_vs_save(server: SeaweedFS, rounds: int) -> dict[str, Any]:
    backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))
    backend.ensure_ready(cleanup_days=7)
    requests = Requests(backend)
    manager = StorageManager(backend, max_user_daily_gens=10_000, max_user_storage_mb=100_000)
    user = "800000000000000003"
    raw, save, reserve = [], [], []
    reserve_calls: list[list[tuple[str, float]]] = []
    save_calls: list[list[tuple[str, float]]] = []
    for i in range(rounds + 3):
        start = time.perf_counter()
        backend.client.put_object(
            Bucket=backend.bucket, Key=f"images/raw/{i}.png", Body=PAYLOAD, ContentType="image/png"
        )
        t_raw = time.perf_counter() - start
        requests.recording = True
        reservation, t_reserve = await timed(manager.reserve(user))
        r_calls = requests.take()
        _, t_save = await timed(manager.save_image(reservation, PAYLOAD))
        s_calls = requests.take()
        requests.recording = False
        if i >= 3:  # warm-up
            raw.append(t_raw)
            save.append(t_save)
            reserve.append(t_reserve)
            reserve_calls.append(r_calls)
            save_calls.append(s_calls)
    await manager.aclose()
    return {
        "raw": median_ms(raw),
        "save": median_ms(save),
        "reserve": median_ms(reserve),
        "ratios": sorted(s / r for s, r in zip(save, raw, strict=True)),
        "reserve_calls": reserve_calls,
        "save_calls": save_calls,
        "save_samples": save,
        "reserve_samples": reserve,
        "conflicts": manager.ledger.conflicts,
    }


def breakdown(per_op: list[list[tuple[str, float]]], totals: list[float]) -> Iterator[str]:
    """One table row per kind of request: calls per operation and median time per call."""
    order: list[str] = []
    counts: dict[str, list[int]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    for calls in per_op:
        seen: dict[str, int] = defaultdict(int)
        for label, t in calls:
            if label not in order:
                order.append(label)
            seen[label] += 1
            times[label].append(t)
        for label in order:
            counts[label].append(seen[label])
    for label in order:
        n = counts[label] + [0] * (len(per_op) - len(counts[label]))
        yield f"| {label} | {statistics.median(n):g} ({min(n)}–{max(n)}) | {median_ms(times[label]):.1f} ms |"
    outside = [total - sum(t for _, t in calls) for calls, total in zip(per_op, totals, strict=True)]
    yield f"| outside requests (thread hop, JSON, validation) | | {median_ms(outside):.1f} ms |"
    yield f"| whole call | | {median_ms(totals):.1f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--objects", type=int, default=20_000)
    args = parser.parse_args()
    # The filled objects were put behind the ledger's back on purpose; its warnings are noise here.
    logging.disable(logging.WARNING)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, seaweedfs(Path(tmp)) as server:
        small = asyncio.run(scenario(server, 100, args.rounds))
        large = asyncio.run(scenario(server, args.objects, args.rounds))
        compare = asyncio.run(put_vs_save(server, args.rounds))
    n = f"{args.objects:,}"
    print(f"\nQuota check cost on SeaweedFS (median of {args.rounds}; 1.5 MB images)\n")
    print(
        "| objects in bucket | get_quota_status | reserve | reserve + save_image + commit | naive list-and-sum check |"
    )
    print("|---:|---:|---:|---:|---:|")
    for label, r in (("100", small), (n, large)):
        print(f"| {label} | {r['status']:.1f} ms | {r['reserve']:.1f} ms | {r['total']:.1f} ms | {r['naive']:.1f} ms |")
    print(
        f"| ratio {n} / 100 | {large['status'] / small['status']:.2f}x "
        f"| {large['reserve'] / small['reserve']:.2f}x | {large['total'] / small['total']:.2f}x "
        f"(target <= 1.2x) | {large['naive'] / small['naive']:.1f}x |"
    )
    print(
        f"\nLedger documents read by a check: user {small['user_doc']:,} B / {large['user_doc']:,} B, "
        f"global {small['global_doc']:,} B / {large['global_doc']:,} B (100 / {n} objects)"
    )

    ratios = compare["ratios"]
    print(f"\nsave_image against a raw put_object of the same bytes (median of {args.rounds})\n")
    print("| operation | time |")
    print("|---|---:|")
    print(f"| raw boto3 put_object (1.5 MB) | {compare['raw']:.1f} ms |")
    print(f"| save_image (upload + commit + global snapshot + link) | {compare['save']:.1f} ms |")
    print(f"| ratio of medians | {compare['save'] / compare['raw']:.2f}x (target <= 1.3x) |")
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"| per-round ratio: median (middle half) | {statistics.median(ratios):.2f}x ({q1:.2f}x–{q3:.2f}x) |")
    print(f"| reserve (before the provider call) | {compare['reserve']:.1f} ms |")
    print(f"\nLost compare-and-swap races: {compare['conflicts']}")

    print(f"\nRequests per call (median count (min–max); median time per request; {args.rounds} calls)\n")
    print("| reserve: request | per call | time each |")
    print("|---|---:|---:|")
    for row in breakdown(compare["reserve_calls"], compare["reserve_samples"]):
        print(row)
    print("\n| save_image: request | per call | time each |")
    print("|---|---:|---:|")
    for row in breakdown(compare["save_calls"], compare["save_samples"]):
        print(row)
    print(f"\n(whole run: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
