"""Storage benchmark on a real SeaweedFS: is the quota check flat, and what does it cost?

    python bench/bench_storage.py [--rounds 30] [--objects 20000]

Prints two tables:
1. reserve + save_image (+ commit) with 100 and with N objects already in the bucket,
   next to a naive quota check that lists the bucket and sums the sizes (what a
   global limit needs without a ledger).
2. save_image (put + ledger commit) against a raw boto3 ``put_object`` of the same
   1.5 MB bytes on the same server.

Timings are medians of ``--rounds`` runs in one process; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.storage import StorageManager  # noqa: E402
from abby_core.storage.s3 import S3Backend  # noqa: E402
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


async def time_generation(manager: StorageManager, user: str, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        reservation = await manager.reserve(user)
        await manager.save_image(reservation, PAYLOAD)
        samples.append(time.perf_counter() - start)
    return samples


def naive_check(backend: S3Backend) -> float:
    start = time.perf_counter()
    total = sum(o.size for o in backend.list_objects("images/users/"))
    assert total > 0
    return time.perf_counter() - start


async def scenario(server: SeaweedFS, objects: int, rounds: int) -> dict[str, float]:
    backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))
    backend.ensure_ready(cleanup_days=7)
    fill(backend, objects)
    manager = StorageManager(
        backend, max_user_daily_gens=10_000, max_user_storage_mb=100_000, max_global_storage_mb=1_000_000
    )
    await manager.reconcile()  # the ledger learns about the existing objects once, at start
    await time_generation(manager, "800000000000000001", 3)  # warm the connection pool
    samples = await time_generation(manager, "800000000000000002", rounds)
    naive = [naive_check(backend) for _ in range(min(rounds, 5))]
    await manager.aclose()
    return {"ours": statistics.median(samples), "naive": statistics.median(naive)}


async def put_vs_save(server: SeaweedFS, rounds: int) -> dict[str, float]:
    backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))
    backend.ensure_ready(cleanup_days=7)
    manager = StorageManager(backend, max_user_daily_gens=10_000, max_user_storage_mb=100_000)
    user = "800000000000000003"
    raw, save, reserve = [], [], []
    for i in range(rounds + 3):
        start = time.perf_counter()
        backend.client.put_object(
            Bucket=backend.bucket, Key=f"images/raw/{i}.png", Body=PAYLOAD, ContentType="image/png"
        )
        t_raw = time.perf_counter() - start
        start = time.perf_counter()
        reservation = await manager.reserve(user)
        t_reserve = time.perf_counter() - start
        start = time.perf_counter()
        await manager.save_image(reservation, PAYLOAD)
        t_save = time.perf_counter() - start
        if i >= 3:  # warm-up
            raw.append(t_raw)
            save.append(t_save)
            reserve.append(t_reserve)
    await manager.aclose()
    return {
        "raw": statistics.median(raw),
        "save": statistics.median(save),
        "reserve": statistics.median(reserve),
        "conflicts": float(manager.ledger.conflicts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--objects", type=int, default=20_000)
    args = parser.parse_args()
    # The filled objects were put behind the ledger's back on purpose; its warnings are noise here.
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedFS(data_dir=Path(tmp))
        server.start()
        try:
            small = asyncio.run(scenario(server, 100, args.rounds))
            large = asyncio.run(scenario(server, args.objects, args.rounds))
            compare = asyncio.run(put_vs_save(server, args.rounds))
        finally:
            server.stop()
    ms = 1000.0
    print(f"\nQuota check cost on SeaweedFS (median of {args.rounds}; 1.5 MB images)\n")
    print("| objects in bucket | reserve + save_image + commit | naive list-and-sum check |")
    print("|---:|---:|---:|")
    print(f"| 100 | {small['ours'] * ms:.1f} ms | {small['naive'] * ms:.1f} ms |")
    print(f"| {args.objects:,} | {large['ours'] * ms:.1f} ms | {large['naive'] * ms:.1f} ms |")
    print(f"| ratio {args.objects:,} / 100 | {large['ours'] / small['ours']:.2f}x (target <= 1.2x) "
          f"| {large['naive'] / small['naive']:.1f}x |")
    print(f"\nsave_image against a raw put_object of the same bytes (median of {args.rounds})\n")
    print("| operation | time |")
    print("|---|---:|")
    print(f"| raw boto3 put_object (1.5 MB) | {compare['raw'] * ms:.1f} ms |")
    print(f"| save_image (put + ledger commit) | {compare['save'] * ms:.1f} ms |")
    print(f"| ratio | {compare['save'] / compare['raw']:.2f}x (target <= 1.3x) |")
    print(f"| reserve (before the provider call) | {compare['reserve'] * ms:.1f} ms |")


if __name__ == "__main__":
    main()
