"""What the storage benchmarks share: timing, progress, limits no run reaches, small PNGs, a SeaweedFS.

Imported by the scripts in ``bench/`` after they put the repository on ``sys.path``. The
SeaweedFS fixture is imported only when a server is started: it imports pytest, which a
spawned worker process has no need of.
"""

from __future__ import annotations

import contextlib
import io
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from abby_core.storage import StorageBackend, StorageManager

MS = 1000.0
# Limits no run can reach: a benchmark measures the protocol, never a refusal.
HUGE_MB = 10_000_000
HUGE_DAILY = 100_000_000


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * MS


def percentile(values: list[float], percent: int) -> float:
    """The ``percent``-th percentile of ``values`` (the one value when there is one; NaN for none)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


async def timed(coro: Any) -> tuple[Any, float]:
    """Await ``coro``; its result and how long it took, in seconds."""
    start = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - start


def progress(message: str) -> None:
    """A progress line on stderr (tables go to stdout)."""
    print(message, file=sys.stderr, flush=True)


def build_manager(
    backend: StorageBackend,
    workers: int = 8,
    *,
    escrow: bool = False,
    estimate: int = 20_000,
    clock: Callable[[], datetime] | None = None,
) -> StorageManager:
    """A manager over ``backend`` whose limits no benchmark reaches; ``estimate`` is the hold per
    image, ``clock`` the manager's (default: the real one)."""
    return StorageManager(
        backend,
        None,
        clock,
        max_global_storage_mb=HUGE_MB,
        max_user_storage_mb=HUGE_MB,
        max_user_daily_gens=HUGE_DAILY,
        image_gen_size_mb=estimate / 1_000_000,
        max_workers=workers,
        escrow=escrow,
    )


def noise_png(size: int, seed: int = 7) -> bytes:
    """A valid PNG of random pixels, close to ``size`` bytes (noise does not compress)."""
    side = max(1, round((size / 3) ** 0.5))
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def seaweedfs(data_dir: Path) -> Iterator[Any]:
    """A SeaweedFS ``weed mini`` on 127.0.0.1 with its data in ``data_dir``, stopped on exit."""
    from tests.fixtures.seaweedfs import SeaweedFS

    server = SeaweedFS(data_dir=data_dir)
    progress(f"starting SeaweedFS in {data_dir}")
    server.start()
    try:
        yield server
    finally:
        progress("stopping SeaweedFS")
        server.stop()
