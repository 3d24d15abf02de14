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
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from abby_core.errors import AbbyError, QuotaExceeded, SaveOutcomeUnknown, StorageUnavailable
from abby_core.generation import GeneratedImage, ImageGenerator, OfflineProvider, Provider
from abby_core.generation.base import ImageToImageRequest, TextToImageRequest, UpscaleRequest
from abby_core.pipeline import GenerationResult, ImageService
from abby_core.storage import StorageBackend, StorageManager
from abby_core.storage.documents import GlobalLedger, ShardLedger, UserLedger
from abby_core.storage.keys import (
    GLOBAL_LEDGER_KEY,
    SHARDS_LEDGER_PREFIX,
    USERS_LEDGER_PREFIX,
    USERS_PREFIX,
    user_from_key,
)
from abby_core.storage.rules import PURGE_MARGIN
from abby_core.storage.usage_rules import recorded_shard, shard_snapshot

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
    input_limits = OfflineProvider.input_limits

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


class GatedProvider(FixedProvider):
    """A :class:`FixedProvider` whose first ``passing`` generations pass; the others wait at
    ``gate`` (``waiting``: how many do) until the test opens it."""

    def __init__(self, images: Sequence[bytes], *, passing: int) -> None:
        super().__init__(images, delay=0)
        self.passing = passing
        self.gate = asyncio.Event()
        self.waiting = 0

    async def _next(self) -> GeneratedImage:
        if self.calls >= self.passing:
            self.waiting += 1
            await self.gate.wait()
        return await super()._next()


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
    shards_behind: list[str]  # shards whose snapshot in the global document is not the shard document's

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
        doc = UserLedger.model_validate_json(found[0])
        committed[doc.user_id] = {k: e.size for k, e in doc.objects.items()}
        counts[doc.user_id] = (doc.day.isoformat(), doc.count)
        holds += len(doc.holds)
    found = backend.read_doc(GLOBAL_LEDGER_KEY)
    glob = GlobalLedger.model_validate_json(found[0]) if found else GlobalLedger(shards={})
    shards: dict[str, ShardLedger] = {}
    for info in backend.list_objects(SHARDS_LEDGER_PREFIX):
        read = backend.read_doc(info.key)
        if read is not None:
            shard = ShardLedger.model_validate_json(read[0])
            shards[shard.shard] = shard
    # Each member's total as their shard records it, and each shard as the global document records it.
    totals = {u: snap.bytes for shard in shards.values() for u, snap in shard.users.items()}
    totals.update({u: snap.bytes for u, snap in glob.users.items()})  # a global document not moved yet
    behind = sorted(k for k, shard in shards.items() if recorded_shard(glob, k) != shard_snapshot(shard))
    behind += sorted(k for k in glob.shards if k not in shards)
    global_holds = len(glob.holds) + sum(len(s.holds) for s in glob.users.values())
    return Audit(objects, committed, counts, holds, totals, global_holds, behind)


def check_consistent(out: Outcome, backend: StorageBackend) -> Audit:
    """The invariants every scenario ends with: objects and ledgers agree, nothing held."""
    a = audit(backend)
    out.check("no object without a committed ledger entry", not a.orphans, a.orphans[:3])
    out.check("no ledger entry without its object", not a.ghosts, a.ghosts[:3])
    out.check("no reservation left in flight", a.user_holds == 0 and a.global_holds == 0,
              (a.user_holds, a.global_holds))
    out.check("global totals equal the stored bytes", not a.global_mismatch(), a.global_mismatch())
    out.check("the global document records every shard as stored", not a.shards_behind, a.shards_behind)
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


_STORAGE_CALLS = ("put_object", "get_object", "head_object", "delete_objects", "list_objects", "read_doc",
                  "write_doc", "delete_doc")


def _on_thread_watch(call: Any, name: str, loop_thread: int, on_loop: list[str]) -> Any:
    """``call``, noting ``name`` in ``on_loop`` whenever it runs on the thread ``loop_thread``."""

    def watched(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == loop_thread:
            on_loop.append(name)
        return call(*args, **kwargs)

    return watched


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
    on_loop: list[str] = []  # storage calls made on the event loop's own thread
    backend = manager.backend
    for name in _STORAGE_CALLS:
        setattr(backend, name, _on_thread_watch(getattr(backend, name), name, threading.get_ident(), on_loop))

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
        for name in _STORAGE_CALLS:
            delattr(backend, name)
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
    # How long a tick waited is a figure (bench/reliability.py prints it), not a pass mark: a
    # machine loaded by other work delays ticks too. What blocks the loop is a storage call
    # made on its thread, and none may be.
    out.check("no storage call ran on the event loop's thread", not on_loop, sorted(set(on_loop)))
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


async def one_shot_outage(server: Any, *, runs: int = 40, stop_after: int = 6, parallel: int = 8) -> Outcome:
    """``runs`` one-shot ``abby imagine --provider offline --json`` processes, one member each;
    the S3 server is stopped after ``stop_after`` of them succeeded, then started again.

    Whatever each run printed must be what its member is charged, once storage is back and
    without anyone running reconcile: ``ok`` is stored and counted once, a failure is nothing,
    and an "outcome unknown" is all or nothing.
    """
    from abby_core.storage.s3 import S3Backend
    from tests.storage.conftest import Clock, s3_settings

    out = Outcome(
        "one-shot CLI runs, S3 stopped mid-way",
        "seaweedfs (dedicated)",
        f"{runs} 'abby imagine --provider offline --json' processes, one member each; the server stops "
        f"after {stop_after} succeed, then restarts",
    )
    settings = s3_settings(server.endpoint, server.access_key, server.secret_key)
    backend = S3Backend(settings)
    await asyncio.to_thread(backend.ensure_ready, cleanup_days=7)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("S3_", "STORAGE_", "AWS_"))},
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": server.endpoint,
        "S3_BUCKET": settings.bucket,
        "S3_ACCESS_KEY_ID": server.access_key,
        "S3_SECRET_ACCESS_KEY": server.secret_key,
        "S3_TIMEOUT_SECONDS": "2",
        "S3_MAX_ATTEMPTS": "1",
    }
    limit = asyncio.Semaphore(parallel)
    printed: dict[str, dict[str, Any]] = {}

    async def run(n: int) -> None:
        uid = user(9400 + n)
        async with limit:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "abby_cli", "imagine", f"outage run {n}", "--user", uid,
                "--provider", "offline", "--json",
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            stdout, _ = await asyncio.wait_for(proc.communicate(), 180)
        lines = stdout.decode().strip().splitlines()
        printed[uid] = json.loads(lines[-1]) if lines else {"ok": False, "error": {"code": "no output"}}

    tasks = [asyncio.create_task(run(n)) for n in range(runs)]
    for _ in range(6000):  # at most 60 s
        if sum(1 for p in printed.values() if p.get("ok")) >= stop_after:
            break
        await asyncio.sleep(0.01)
    await asyncio.to_thread(server.stop)
    await asyncio.gather(*tasks)
    await asyncio.to_thread(server.start)
    told = Counter("ok" if p.get("ok") else p["error"]["code"] for p in printed.values())
    out.figures["what the runs printed"] = dict(told)
    out.attempts, out.successes = runs, told["ok"]
    out.errors = runs - told["ok"]
    out.check("the outage cut the runs in the middle", 0 < told["ok"] < runs, dict(told))
    storage_codes = ("storage_unavailable", "save_outcome_unknown")
    odd = {u: p["error"] for u, p in printed.items() if not p.get("ok") and p["error"]["code"] not in storage_codes}
    out.check("every failure is storage_unavailable (or save_outcome_unknown)", not odd, odd)
    # Another process, later than any hold's lifetime, reads what each member is charged.
    later = datetime.now(UTC) + timedelta(minutes=18)
    same_day = later.date() == datetime.now(UTC).date()
    manager = StorageManager(S3Backend(settings), clock=Clock(later))
    wrong: dict[str, str] = {}
    try:
        for uid, p in printed.items():
            status = await manager.get_quota_status(uid)
            images = await manager.list_images(uid)
            charged = (status.daily_used if same_day else len(images), len(images), status.user_bytes > 0)
            unknown = not p.get("ok") and p["error"]["code"] == "save_outcome_unknown"
            if p.get("ok") and charged != (1, 1, True):
                wrong[uid] = f"printed ok, charged {charged}"
            elif not p.get("ok") and not unknown and charged != (0, 0, False):
                wrong[uid] = f"printed {p['error']['code']}, charged {charged}"
            elif unknown and charged not in ((0, 0, False), (1, 1, True)):
                wrong[uid] = f"printed 'unknown', half charged {charged}"
        out.check("what each run printed is what its member is charged (no reconcile)", not wrong, wrong)
        await check_reconcile(out, manager)
    finally:
        await manager.aclose()
    return out


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
    """A clear storage refusal: unavailable, or (a commit whose answer was lost) outcome unknown."""
    codes = ("storage_unavailable", "save_outcome_unknown")
    return isinstance(exc, StorageUnavailable) and exc.code in codes and len(str(exc)) > 20


Maker = Callable[..., StorageManager]


# -- faults --------------------------------------------------------------------------------------


async def storage_outage(server: Any, *, users: int = 8, per_user: int = 4, stop_after: int = 6) -> Outcome:
    """Stop the S3 server in the middle of a burst, restart it, and keep using the SAME manager.

    ``server`` is a dedicated :class:`tests.fixtures.seaweedfs.SeaweedFS`; it is stopped
    and started again on the same ports and data directory.
    """
    from abby_core.storage.s3 import S3Backend
    from tests.storage.conftest import s3_settings

    out = Outcome(
        "S3 server stopped mid-burst, then restarted",
        "seaweedfs (dedicated)",
        f"{users * per_user} generations; the server stops after {stop_after} succeed; "
        "5 more during the outage; restart on the same ports and data",
    )
    backend = S3Backend(
        s3_settings(server.endpoint, server.access_key, server.secret_key, timeout_seconds=1, max_attempts=1)
    )
    await asyncio.to_thread(backend.ensure_ready, cleanup_days=7)
    manager = StorageManager(backend, max_user_daily_gens=per_user + 1, image_gen_size_mb=ESTIMATE_MB)
    provider = GatedProvider([noise_png(40) for _ in range(64)], passing=stop_after)
    service = service_with(manager, provider)
    try:
        tasks = [
            asyncio.create_task(timed(service.imagine(user(u), f"outage {u}-{i}")))
            for i in range(per_user)
            for u in range(users)
        ]
        # The outage cuts the burst: the first generations are saved, the rest are reserved and
        # rendering (held at the provider) when the server stops.
        for _ in range(6000):  # a bounded wait for the condition, at most a minute
            saved = sum(t.done() and not isinstance(t.result()[0], BaseException) for t in tasks)
            if saved >= stop_after and provider.waiting == len(tasks) - stop_after:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(server.stop)
        provider.gate.set()
        burst = [await t for t in tasks]
        during = [await timed(service.imagine(user(u), "during the outage")) for u in range(5)]
        status_during, _ = await timed(manager.get_quota_status(user(0)))
        results = [r for r, _ in burst + during]
        out.count(results)
        failures = [r for r in results if isinstance(r, BaseException)]
        out.check("the burst was cut in the middle", 0 < sum(not isinstance(r, BaseException) for r, _ in burst)
                  < len(burst), out.successes)
        odd = [describe(r) for r in failures if not unavailable_ok(r)]
        out.check("every failure is StorageUnavailable (code storage_unavailable) with a clear message", not odd, odd)
        out.check("status during the outage is refused, not zero", isinstance(status_during, StorageUnavailable),
                  status_during)
        slowest = max(seconds for _, seconds in during)
        out.figures["slowest refusal during outage (ms)"] = round(slowest * 1000, 1)
        out.check("refusals during the outage are quick (< 10 s)", slowest < 10, slowest)
        if failures:
            out.figures["message"] = str(failures[-1])
        await asyncio.to_thread(server.start)
        # The same manager, no restart: the first call works and settles what the outage left.
        first, _ = await timed(manager.get_quota_status(user(0)))
        out.check("the same manager works again after the restart", not isinstance(first, BaseException), first)
        check_consistent(out, backend)
        await check_reconcile(out, manager)
        told_ok = Counter(r.stored.user_id for r in results if isinstance(r, GenerationResult))
        unknown = Counter(
            user(u) for u in range(users) for r, _ in burst[u::users] if isinstance(r, SaveOutcomeUnknown)
        )
        stored = Counter(user_from_key(key) for key in audit(backend).objects)
        off = {u: (told_ok[u], unknown[u], stored[u]) for u in set(told_ok) | set(stored) | set(unknown)
               if not told_ok[u] <= stored[u] <= told_ok[u] + unknown[u]}
        out.check("images stored == successes reported, per user (a failure leaves no image; "
                  "an unknown outcome is all or nothing)", not off, off)
        wrong = {}
        for u in range(users):
            status = await manager.get_quota_status(user(u))
            made = today_images(backend, user(u))
            if (status.daily_used, status.in_flight) != (made, 0):
                wrong[user(u)] = (status.daily_used, status.in_flight, made)
        out.check("daily_used == images that exist today, nothing in flight", not wrong, wrong)
        after, _ = await timed(service.imagine(user(0), "after the restart"))
        out.check("a new generation succeeds", isinstance(after, GenerationResult), after)
        await check_stored_bytes(out, manager, [r for r in results if isinstance(r, GenerationResult)])
    finally:
        await manager.aclose()
    return out


async def _unchanged(out: Outcome, manager: StorageManager, uid: str, before: Any, label: str) -> None:
    after = await manager.get_quota_status(uid)
    same = (after.daily_used, after.user_bytes, after.in_flight, after.global_bytes) == (
        before.daily_used, before.user_bytes, 0, before.global_bytes)
    out.check(f"{label}: quota unchanged, nothing in flight", same, (before, after))


async def provider_faults(manager: StorageManager, fake: Any, *, backend_name: str) -> Outcome:
    """Provider 5xx, timeouts, a 429 storm with Retry-After, the content filter, a bad key."""
    from abby_core.errors import (
        ContentFiltered,
        GenerationTimeout,
        GenerationUnavailable,
        ProviderAuthError,
        RateLimited,
    )
    from tests.fixtures.fake_stability import API_KEY, Reply

    out = Outcome("provider faults", backend_name,
                  "5xx, timeouts, a 429 storm with Retry-After, content filter (header and 403), wrong key")
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    storm = [Reply.error(429, headers={"Retry-After": "7"}) for _ in range(4)]
    cases: list[tuple[str, list[Any], type[BaseException], str, dict[str, Any]]] = [
        ("503 on every attempt", [Reply.error(503)] * 4, GenerationUnavailable, "nothing was used", {}),
        ("500 then 502 then success", [Reply.error(500), Reply.error(502)], type(None), "", {}),
        ("read timeout", [Reply(delay=1.5)], GenerationTimeout, "took too long", {"timeout": 0.5}),
        ("429 storm with Retry-After", storm, RateLimited, "busy", {}),
        ("content filter (finish-reason)", [Reply(finish_reason="CONTENT_FILTERED")], ContentFiltered,
         "content filter", {}),
        ("content filter (403)", [Reply.error(403, name="content_moderation")], ContentFiltered, "content filter", {}),
        ("wrong API key (401)", [], ProviderAuthError, "server owner", {"key": "sk-wrong-key-000000"}),
    ]
    uid = user(9000)
    for name, replies, expected, words, opts in cases:
        fake.script("core", *replies)
        generator = ImageGenerator(opts.get("key", API_KEY), fake.url, timeout=opts.get("timeout", 5),
                                   max_retries=3, sleep=fake_sleep)
        service = ImageService(manager, generator)
        before = await manager.get_quota_status(uid)
        objects = len(list(manager.backend.list_objects(USERS_PREFIX)))
        waits.clear()
        result, _ = await timed(service.imagine(uid, "a lighthouse"))
        await generator.aclose()
        out.attempts += 1
        if expected is type(None):
            ok = isinstance(result, GenerationResult)
            out.successes += ok
            out.check(f"{name}: retried, then stored and charged once", ok and
                      (await manager.get_quota_status(uid)).daily_used == before.daily_used + 1, result)
            continue
        out.errors += 1
        out.check(f"{name}: {expected.__name__} with a clear message",
                  type(result) is expected and words in str(result), describe(result) if isinstance(
                      result, BaseException) else result)
        if name.startswith("429"):
            out.figures["429 waits (s)"] = waits[:]
            out.check("429: Retry-After honoured on every retry", waits == [7.0, 7.0, 7.0], waits)
        await _unchanged(out, manager, uid, before, name)
        out.check(f"{name}: no object written", len(list(manager.backend.list_objects(USERS_PREFIX))) == objects)
    check_consistent(out, manager.backend)
    return out


async def killed_holder(
    backend: StorageBackend, config: dict[str, Any], *, backend_name: str, holds: int = 3, ttl: int = 30
) -> Outcome:
    """A process holding every generation a user has left is killed with SIGKILL."""
    import signal

    from abby_core.errors import DailyLimitExceeded
    from tests.fixtures.clocks import Clock, day_safe_now

    uid = user(6006)
    out = Outcome("process killed holding reservations", backend_name,
                  f"a child reserves {holds} of {holds} generations (TTL {ttl} s) and is killed with SIGKILL")
    proc = spawn(dict(config, mode="hold", user=uid, daily=holds, holds=holds, ttl=ttl))
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        held = json.loads(line)["held"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
    out.check("the child was killed by SIGKILL", proc.returncode == -signal.SIGKILL, proc.returncode)
    clock = Clock(day_safe_now())
    manager = StorageManager(backend, max_user_daily_gens=holds, reservation_ttl_seconds=ttl, clock=clock)
    service = service_with(manager, FixedProvider([noise_png(40) for _ in range(holds)], delay=0))
    try:
        status = await manager.get_quota_status(uid)
        out.figures["in flight after the kill"] = status.in_flight
        out.check("the dead process's holds are visible", status.in_flight == len(held) == holds, status)
        refused, _ = await timed(service.imagine(uid, "before expiry"))
        out.check("before the TTL the user is refused (holds count)", isinstance(refused, DailyLimitExceeded), refused)
        # Expired holds count, and stay in the documents (with anything the dead process
        # uploaded), until clocks can no longer disagree about them: PURGE_MARGIN more.
        clock.advance(seconds=ttl + PURGE_MARGIN.total_seconds())
        results = [r for r, _ in [await timed(service.imagine(uid, f"after expiry {i}")) for i in range(holds)]]
        out.count([refused, *results])
        out.check("after the TTL the user can generate again", all(isinstance(r, GenerationResult) for r in results),
                  [describe(r) for r in results if isinstance(r, BaseException)])
        status = await manager.get_quota_status(uid)
        out.check("in_flight back to 0", status.in_flight == 0, status.in_flight)
        await manager.reconcile()
        check_consistent(out, backend)
    finally:
        await manager.aclose()
    return out


async def lifecycle_deletions(manager: StorageManager, *, backend_name: str, users: int = 3, each: int = 4) -> Outcome:
    """Objects deleted behind the app's back (as a lifecycle rule does): reconcile finds the truth."""
    out = Outcome("objects deleted behind the app's back", backend_name,
                  f"{users} users x {each} images; every second image deleted directly in storage")
    service = service_with(manager, FixedProvider([noise_png(40) for _ in range(users * each)], delay=0))
    results = [await service.imagine(user(u), f"kept {u}-{i}") for u in range(users) for i in range(each)]
    out.count(results)
    gone = [r.stored for r in results[::2]]
    manager.backend.delete_objects([s.key for s in gone])
    expected = {uid: -sum(s.size for s in gone if s.user_id == uid) for uid in {s.user_id for s in gone}}
    report = await manager.reconcile()
    drift = {uid: found - before for uid, (before, found) in report.drift.items()}
    out.drift_bytes = sum(abs(v) for v in drift.values())
    out.check("drift reported per user, in bytes, exactly", drift == expected, (drift, expected))
    truth = audit(manager.backend)
    wrong = {}
    for u in range(users):
        status = await manager.get_quota_status(user(u))
        stored = sum(size for key, size in truth.objects.items() if user_from_key(key) == user(u))
        if status.user_bytes != stored:
            wrong[user(u)] = (status.user_bytes, stored)
    out.check("every user's usage equals what is stored", not wrong, wrong)
    glob = await manager.stats()
    out.check("global usage equals what is stored", glob.global_bytes == truth.stored_bytes,
              (glob.global_bytes, truth.stored_bytes))
    check_consistent(out, manager.backend)
    await check_reconcile(out, manager)
    return out


LEDGER_DAMAGE: dict[str, bytes | None] = {
    "deleted": None,
    "empty file": b"",
    "truncated JSON": b'{"schema": 1, "version": 4, "obj',
    "not JSON": b"\x00\xff garbage \xfe",
    "JSON null": b"null",
    "JSON list": b"[]",
    "empty object": b"{}",
    "future schema": b'{"schema": 3, "version": 1}',
    "current schema, fields missing": b'{"schema": 2, "version": 1}',
    "fields missing": b'{"schema": 1, "version": 7}',
    "fields of the wrong type": b'{"schema": 1, "version": 7, "user_id": 5, "day": [], "count": "many", '
                                b'"bonus": null, "blocked": 0, "objects": [], "reservations": "none", "users": 3}',
}


async def ledger_damage(manager: StorageManager, damage: str, which: str, *, backend_name: str) -> Outcome:
    """A user or the global ledger document damaged: detected, rebuilt from objects, logged, never zero."""
    from abby_core.storage.keys import user_ledger_key

    uid = user(5150)
    out = Outcome(f"{which} ledger {damage}", backend_name, f"the {which} ledger document: {damage}")
    service = service_with(manager, FixedProvider([noise_png(40) for _ in range(4)], delay=0))
    made = [await service.imagine(uid, f"before {i}") for i in range(2)]
    other = await service.imagine(user(5151), "someone else")
    truth_user = sum(r.stored.size for r in made)
    key = user_ledger_key(uid) if which == "user" else GLOBAL_LEDGER_KEY
    body = LEDGER_DAMAGE[damage]
    found = manager.backend.read_doc(key)
    if body is None:
        manager.backend.delete_doc(key)
    else:
        manager.backend.write_doc(key, body, etag=found[1] if found else None)
    manager.ledger.forget()
    status, _ = await timed(manager.get_quota_status(uid))
    out.check("status is not an error", not isinstance(status, BaseException), status)
    if isinstance(status, BaseException):
        out.errors += 1
        return out
    out.check("usage is the truth, not zero", (status.user_bytes, status.daily_used, status.global_bytes) ==
              (truth_user, 2, truth_user + other.stored.size), status)
    result, _ = await timed(service.imagine(uid, "after the damage"))
    out.count([result])
    out.check("the next generation works and counts", isinstance(result, GenerationResult) and
              result.status.daily_used == 3, result if isinstance(result, BaseException) else result.status)
    refused, _ = await timed(service.imagine(uid, "one too many"))
    out.count([refused])
    out.check("the daily limit still holds", isinstance(refused, QuotaExceeded), refused)
    check_consistent(out, manager.backend)
    await check_reconcile(out, manager)
    return out


async def disk_full(root: Path) -> Outcome:
    """The OS refuses writes (ENOSPC, EROFS) at each step of a save on the filesystem backend.

    We run as root, so permissions cannot stop writes: the OS calls are patched to fail
    exactly as a full or read-only disk makes them fail.
    """
    import errno
    from unittest import mock

    from abby_core.storage import FilesystemBackend

    out = Outcome("disk full / read-only storage root", "filesystem",
                  "ENOSPC or EROFS at the ledger commit, at every write after the image, and on the whole root")
    manager = StorageManager(FilesystemBackend(root), max_user_daily_gens=5, image_gen_size_mb=ESTIMATE_MB)
    service = service_with(manager, FixedProvider([noise_png(40) for _ in range(8)], delay=0))
    uid = user(4040)
    real_fsync = os.fsync

    class Refuse:
        """``os.fsync`` that fails with ``code`` after ``after`` calls (``once``: a single time)."""

        def __init__(self, code: int, after: int, once: bool) -> None:
            self.code, self.after, self.once, self.calls, self.failed = code, after, once, 0, False

        def __call__(self, fd: int) -> None:
            self.calls += 1
            if self.calls > self.after and not (self.once and self.failed):
                self.failed = True
                raise OSError(self.code, os.strerror(self.code))
            real_fsync(fd)

    def leftovers() -> list[str]:
        return [p.name for p in root.rglob(".tmp-*")]

    cases = [
        ("ENOSPC at the ledger commit, after the image was written", errno.ENOSPC, 1, "the disk is full"),
        ("ENOSPC at every write after the image (the undo must wait)", errno.ENOSPC, 1, "the disk is full"),
        ("read-only root from the start", errno.EROFS, 0, "read-only"),
    ]
    try:
        await service.imagine(uid, "first, while there is room")
        for i, (name, code, after, words) in enumerate(cases):
            before = await manager.get_quota_status(uid)
            images = [o.key for o in manager.backend.list_objects(USERS_PREFIX)]
            reservation = await manager.reserve(uid) if after else None
            # Case 0 fails one write only; the others keep failing until the disk is "freed".
            patch = mock.patch("os.fsync", Refuse(code, after, once=i == 0))
            with patch:
                if reservation is not None:
                    result, _ = await timed(manager.save_image(reservation, noise_png(40)))
                else:
                    result, _ = await timed(service.imagine(uid, "on a read-only disk"))
            out.count([result])
            out.check(f"{name}: StorageUnavailable naming the cause and STORAGE_ROOT",
                      isinstance(result, StorageUnavailable) and words in str(result) and "STORAGE_ROOT" in str(result),
                      describe(result) if isinstance(result, BaseException) else result)
            out.check(f"{name}: no partial (.tmp-) file left", not leftovers(), leftovers())
            # The disk has room again: the next call finishes any undo that had to wait.
            await _unchanged(out, manager, uid, before, name)
            out.check(f"{name}: no new image", [o.key for o in manager.backend.list_objects(USERS_PREFIX)] == images)
        check_consistent(out, manager.backend)
        await check_reconcile(out, manager)
    finally:
        await manager.aclose()
    return out
