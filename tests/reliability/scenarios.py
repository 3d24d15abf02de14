"""Reliability scenarios: each runs one attack, bounded in count and time, and says what held.

The tests in this package run these functions and assert on the :class:`Outcome`;
``bench/reliability.py`` runs the same functions and publishes the counts in
``docs/RELIABILITY.md``. So the published figures and the kept attacks are one code path.

Every generation goes through :class:`~abby_core.pipeline.ImageService`, the path the
bot and the CLI use.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from abby_core.errors import AbbyError, QuotaExceeded, StorageUnavailable
from abby_core.generation import GeneratedImage, ImageGenerator, Provider
from abby_core.generation.base import ImageToImageRequest, TextToImageRequest, UpscaleRequest
from abby_core.pipeline import GenerationResult, ImageService
from abby_core.storage import StorageBackend, StorageManager
from abby_core.storage.keys import GLOBAL_LEDGER_KEY, USERS_LEDGER_PREFIX, USERS_PREFIX, user_from_key

ROOT = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")


def user(n: int) -> str:
    """A valid Discord-like user id, distinct for every ``n``."""
    return str(700_000_000_000_000_000 + n)


# -- what a scenario reports ---------------------------------------------------------------


@dataclass
class Outcome:
    """What one scenario tried, the counts, and every invariant checked (held or not)."""

    scenario: str
    backend: str
    tried: str
    attempts: int = 0
    successes: int = 0
    refusals: int = 0
    errors: int = 0
    drift_bytes: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)

    def check(self, name: str, condition: bool, detail: object = "") -> bool:
        (self.held if condition else self.failed).append(name if condition else f"{name}: {detail}")
        return condition

    def count(self, results: Iterable[object]) -> None:
        """Tally gathered results: a value is a success, QuotaExceeded a refusal, others errors."""
        for r in results:
            self.attempts += 1
            if isinstance(r, QuotaExceeded):
                self.refusals += 1
            elif isinstance(r, BaseException):
                self.errors += 1
            else:
                self.successes += 1


# -- providers -----------------------------------------------------------------------------


def noise_png(side: int, seed: int | None = None) -> bytes:
    """A PNG of random pixels: incompressible, so its size is stable, and unique."""
    raw = os.urandom(side * side * 3) if seed is None else hashlib.shake_256(str(seed).encode()).digest(side * side * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), raw).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class FixedProvider(Provider):
    """Hands out pre-made, unique PNGs after a short await: measures storage, not rendering."""

    name = "fixed"

    def __init__(self, images: Sequence[bytes], *, delay: float = 0.01) -> None:
        self._images = itertools.cycle(images)
        self.delay = delay
        self.calls = 0

    async def _next(self) -> GeneratedImage:
        self.calls += 1
        await asyncio.sleep(self.delay)
        data = next(self._images)
        return GeneratedImage(data, "image/png", 1, 1, 1, self.name, "SUCCESS", "fixed test image")

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        return await self._next()

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        return await self._next()

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        return await self._next()


def service_with(manager: StorageManager, provider: Provider) -> ImageService:
    return ImageService(manager, ImageGenerator(provider=provider))


# -- the truth in storage, read directly -------------------------------------------------------


@dataclass
class Audit:
    """Objects and ledger documents as stored, and every disagreement between them."""

    objects: dict[str, int]
    committed: dict[str, dict[str, int]]  # user -> key -> size, from the user ledgers
    counts: dict[str, tuple[str, int]]  # user -> (day, count)
    user_holds: int
    global_totals: dict[str, int]
    global_holds: int

    @property
    def orphans(self) -> list[str]:
        """Objects no ledger entry accounts for."""
        known = {k for keys in self.committed.values() for k in keys}
        return sorted(set(self.objects) - known)

    @property
    def ghosts(self) -> list[str]:
        """Ledger entries whose object does not exist (or has another size)."""
        return sorted(
            k for keys in self.committed.values() for k, size in keys.items() if self.objects.get(k) != size
        )

    @property
    def stored_bytes(self) -> int:
        return sum(self.objects.values())

    def global_mismatch(self) -> dict[str, tuple[int, int]]:
        """Users whose total in the global document differs from their stored bytes."""
        truth: Counter[str] = Counter()
        for key, size in self.objects.items():
            truth[user_from_key(key) or "?"] += size
        users = set(truth) | {u for u, t in self.global_totals.items() if t}
        return {u: (self.global_totals.get(u, 0), truth[u]) for u in users if self.global_totals.get(u, 0) != truth[u]}


def audit(backend: StorageBackend) -> Audit:
    objects = {o.key: o.size for o in backend.list_objects(USERS_PREFIX)}
    committed: dict[str, dict[str, int]] = {}
    counts: dict[str, tuple[str, int]] = {}
    holds = 0
    for info in backend.list_objects(USERS_LEDGER_PREFIX):
        found = backend.read_doc(info.key)
        if found is None:
            continue
        doc = json.loads(found[0])
        uid = str(doc["user_id"])
        committed[uid] = {k: int(v[0]) for k, v in doc["objects"].items()}
        counts[uid] = (str(doc["day"]), int(doc["count"]))
        holds += len(doc["reservations"])
    found = backend.read_doc(GLOBAL_LEDGER_KEY)
    glob = json.loads(found[0]) if found else {"users": {}, "reservations": {}}
    return Audit(
        objects,
        committed,
        counts,
        holds,
        {u: int(v[0]) for u, v in glob["users"].items()},
        len(glob["reservations"]),
    )


def check_consistent(out: Outcome, backend: StorageBackend) -> Audit:
    """The invariants every scenario ends with: objects and ledgers agree, nothing held."""
    a = audit(backend)
    out.check("no object without a committed ledger entry", not a.orphans, a.orphans[:3])
    out.check("no ledger entry without its object", not a.ghosts, a.ghosts[:3])
    out.check("no reservation left in flight", a.user_holds == 0 and a.global_holds == 0,
              (a.user_holds, a.global_holds))
    out.check("global totals equal the stored bytes", not a.global_mismatch(), a.global_mismatch())
    return a


async def check_stored_bytes(out: Outcome, manager: StorageManager, results: Iterable[object]) -> int:
    """Every success's object holds exactly the bytes the provider returned (sha256)."""
    bad = 0
    ok = [r for r in results if isinstance(r, GenerationResult)]
    for r in ok:
        stored = await manager.get_image(r.stored.user_id, r.stored.key)
        if hashlib.sha256(stored).digest() != hashlib.sha256(r.image.data).digest():
            bad += 1
    out.check("every success stored with the exact bytes (sha256)", bad == 0, f"{bad} of {len(ok)} differ")
    return bad


async def check_reconcile(out: Outcome, manager: StorageManager) -> None:
    report = await manager.reconcile()
    out.drift_bytes += sum(abs(found - before) for before, found in report.drift.values())
    out.check("reconcile finds no drift", not report.drift, report.drift)


def today_images(backend: StorageBackend, uid: str, now: datetime | None = None) -> int:
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return sum(1 for o in backend.list_objects(f"{USERS_PREFIX}{uid}/") if o.key.rsplit("/", 1)[-1].startswith(day))


# -- load and concurrency ----------------------------------------------------------------------


async def many_users(
    manager: StorageManager, *, backend_name: str, users: int = 50, per_user: int = 4, room: int = 60
) -> Outcome:
    """``users`` x ``per_user`` concurrent generations against a global limit with room for ~``room``.

    The manager must be built with ``image_gen_size_mb=ESTIMATE_MB`` and
    ``max_global_storage_mb=room * ESTIMATE_MB``. One image in five is larger than
    the estimate, so saves also grow their hold under contention.
    """
    out = Outcome(
        "many users, small global limit",
        backend_name,
        f"{users} users x {per_user} concurrent generations, global room for about {room} images",
    )
    small = [noise_png(40) for _ in range(users * per_user)]
    large = [noise_png(56) for _ in range(users * per_user // 5)]
    images = [*small]
    for i, img in enumerate(large):
        images[i * 5] = img
    service = service_with(manager, FixedProvider(images, delay=0.005))
    calls = [service.imagine(user(u), f"image {u}-{i}") for u in range(users) for i in range(per_user)]
    started = time.perf_counter()
    results = await asyncio.gather(*calls, return_exceptions=True)
    out.figures["seconds"] = round(time.perf_counter() - started, 2)
    out.count(results)
    foreign = [r for r in results if isinstance(r, BaseException) and not isinstance(r, QuotaExceeded)]
    out.check("every failure is a quota refusal", not foreign, [repr(r) for r in foreign[:3]])
    limit = manager.global_limit_bytes
    a = check_consistent(out, manager.backend)
    out.figures["global bytes / limit"] = f"{a.stored_bytes} / {limit}"
    out.check("global usage never over the limit", a.stored_bytes <= limit, (a.stored_bytes, limit))
    out.check("the limit was reached (the test is not vacuous)", out.refusals > 0, out.refusals)
    await check_stored_bytes(out, manager, results)
    await check_reconcile(out, manager)
    return out


ESTIMATE_MB = 0.008  # above a 40x40 noise PNG (~4.9 kB), below a 56x56 one (~9.5 kB)


async def loop_lag(
    manager: StorageManager, provider: Provider, *, backend_name: str, generations: int = 50, interval: float = 0.005
) -> Outcome:
    """Event-loop lag while ``generations`` are in flight: a ticker sleeps ``interval`` and records overshoot."""
    out = Outcome(
        f"event loop lag ({provider.name} provider)",
        backend_name,
        f"{generations} generations in flight; a ticker sleeps {interval * 1000:.0f} ms and records the overshoot",
    )
    service = service_with(manager, provider)
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - start - interval)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    try:
        results = await asyncio.gather(
            *(service.imagine(user(i), f"lag {i}") for i in range(generations)), return_exceptions=True
        )
    finally:
        done.set()
        await tick
    seconds = time.perf_counter() - started
    out.count(results)
    lags.sort()
    out.figures.update(
        ticks=len(lags),
        seconds=round(seconds, 2),
        max_lag_ms=round(lags[-1] * 1000, 1) if lags else None,
        p99_lag_ms=round(lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000, 1) if lags else None,
        median_lag_ms=round(statistics.median(lags) * 1000, 2) if lags else None,
    )
    out.check("every generation succeeded", out.successes == generations, [repr(r) for r in results][:3])
    # Structural, not timed: the loop kept turning (a blocked loop ticks a handful of times).
    expected = seconds / (interval * 20)
    out.check("the ticker kept ticking during the run", len(lags) >= max(5, expected), (len(lags), expected))
    out.check("no tick was delayed by a second or more", not lags or lags[-1] < 1.0, lags[-1:] if lags else [])
    return out


# -- child processes -----------------------------------------------------------------------------


def spawn(config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.worker", json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def two_processes(
    backend: StorageBackend, config: dict[str, Any], *, backend_name: str, attempts: int = 50, daily: int = 5
) -> Outcome:
    """Two OS processes, ``attempts`` concurrent full generations each (offline renderer), one user."""
    uid = user(4242)
    out = Outcome(
        "two processes, full generations",
        backend_name,
        f"2 processes x {attempts} concurrent ImageService.imagine for one user with {daily} left (offline renderer)",
    )
    config = dict(config, mode="imagine", user=uid, daily=daily, attempts=attempts, start_at=time.time() + 4.0)
    procs = [spawn(config) for _ in range(2)]
    reports = []
    for proc in procs:
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=120)
        out.check("worker exited cleanly", proc.returncode == 0, stderr[-500:])
        reports.append(json.loads(stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {})
    out.attempts = 2 * attempts
    out.successes = sum(r.get("granted", 0) for r in reports)
    out.refusals = sum(r.get("refused", 0) for r in reports)
    out.errors = sum(len(r.get("errors", [])) for r in reports)
    out.check("exactly the daily limit succeeded", out.successes == daily, out.successes)
    out.check("every other attempt was refused", out.refusals == 2 * attempts - daily, out.refusals)
    out.check("no errors", out.errors == 0, [r.get("errors") for r in reports])
    stored = [item for r in reports for item in r.get("stored", [])]
    bad = [key for key, digest in stored if hashlib.sha256(backend.get_object(key)).hexdigest() != digest]
    out.check("every success stored with the exact bytes (sha256)", not bad and len(stored) == daily, bad)
    check_consistent(out, backend)
    return out


# -- small helpers -------------------------------------------------------------------------------


async def timed(call: Awaitable[_T]) -> tuple[_T | BaseException, float]:
    start = time.perf_counter()
    try:
        value: _T | BaseException = await call
    except Exception as exc:  # the scenario classifies it
        value = exc
    return value, time.perf_counter() - start


def describe(exc: BaseException) -> str:
    code = getattr(exc, "code", "-") if isinstance(exc, AbbyError) else "foreign"
    return f"{type(exc).__name__}[{code}]: {exc}"


def unavailable_ok(exc: BaseException) -> bool:
    return isinstance(exc, StorageUnavailable) and exc.code == "storage_unavailable" and len(str(exc)) > 20


Maker = Callable[..., StorageManager]
