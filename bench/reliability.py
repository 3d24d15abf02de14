"""Reliability figures: run every load, fault and hostile-input scenario once and publish the counts.

    python bench/reliability.py [--out docs/RELIABILITY.md]

Starts its own SeaweedFS servers (one shared, one it stops and restarts) and its own
fake Stability server, all on 127.0.0.1, and runs the scenarios the tests in
``tests/reliability/`` keep (the same functions: ``tests/reliability/scenarios.py``).
Every scenario is bounded in count and time; the whole run takes about a minute.
Writes a Markdown report: one row per scenario with what was tried and what held.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.generation import OfflineProvider  # noqa: E402
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager  # noqa: E402
from abby_core.storage.s3 import S3Backend  # noqa: E402
from tests.fixtures.fake_stability import FakeStability  # noqa: E402
from tests.fixtures.seaweedfs import SeaweedFS  # noqa: E402
from tests.reliability import scenarios  # noqa: E402
from tests.reliability.conftest import child_config  # noqa: E402
from tests.reliability.scenarios import ESTIMATE_MB, FixedProvider, Outcome, noise_png  # noqa: E402
from tests.storage.conftest import s3_settings  # noqa: E402

LAG_TARGET_MS = 50
T = "tests/reliability/"


class Storages:
    """Fresh folders and buckets on demand."""

    def __init__(self, workdir: Path, server: SeaweedFS) -> None:
        self.workdir, self.server, self.n = workdir, server, 0

    def make(self, kind: str) -> StorageBackend:
        self.n += 1
        backend: StorageBackend
        if kind == "filesystem":
            backend = FilesystemBackend(self.workdir / f"root-{self.n}")
        else:
            s = self.server
            backend = S3Backend(s3_settings(s.endpoint, s.access_key, s.secret_key))
        backend.ensure_ready(cleanup_days=7)
        return backend

    def config(self, backend: StorageBackend) -> dict[str, Any]:
        return child_config(backend, self.server if isinstance(backend, S3Backend) else None)


async def with_manager(backend: StorageBackend, run: Any, **options: Any) -> Outcome:
    manager = StorageManager(backend, **options)
    try:
        out: Outcome = await run(manager)
        return out
    finally:
        await manager.aclose()


def merge(name: str, backend: str, tried: str, parts: list[Outcome]) -> Outcome:
    out = Outcome(name, backend, tried)
    for p in parts:
        out.attempts += p.attempts
        out.successes += p.successes
        out.refusals += p.refusals
        out.errors += p.errors
        out.drift_bytes += p.drift_bytes
        out.held += [f"{p.scenario}: {h}" for h in p.held]
        out.failed += [f"{p.scenario}: {f}" for f in p.failed]
    return out


async def hostile(workdir: Path) -> list[Outcome]:
    from tests.reliability.test_hostile import CASES, CONFIG_CASES, OK, run_case

    out = Outcome("hostile input, end to end", "filesystem",
                  f"{len(CASES)} prompts, attachments, user ids and keys through ImageService / StorageManager")
    kinds: Counter[str] = Counter()
    for i, (name, attack, expected) in enumerate(CASES):
        held, detail = await run_case(attack, expected, workdir / f"hostile-{i}")
        out.attempts += 1
        if not held:
            out.errors += 1 if "crashed" in detail else 0
            out.check(name, False, detail)
            continue
        out.held.append(f"{name}: {detail[:120]}")
        if expected is OK:
            out.successes += 1
        else:
            out.refusals += 1
            kinds[expected.__name__] += 1
    out.figures["refused as"] = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    out.tests = [f"{T}test_hostile.py::test_hostile_input"]

    from abby_core.config import load_settings
    from abby_core.errors import ConfigError

    tried = f"{len(CONFIG_CASES)} bad values not tried by tests/core/test_config.py"
    conf = Outcome("hostile configuration", "-", tried)
    for name, env in CONFIG_CASES:
        conf.attempts += 1
        try:
            load_settings(env_file=None, **env)
        except ConfigError as exc:
            conf.refusals += 1
            conf.check(name, next(iter(env)) in str(exc), str(exc))
        else:
            conf.check(name, False, "accepted")
    conf.tests = [f"{T}test_hostile.py::test_hostile_configuration", "tests/core/test_config.py (60 more)"]
    return [out, conf]


async def key_entropy(workdir: Path) -> Outcome:
    out = Outcome("image key suffix entropy", "filesystem", "800 reservations; Shannon entropy of each hex digit")
    manager = StorageManager(storage_root=workdir / "entropy", max_user_daily_gens=1000, image_gen_size_mb=0.001)
    try:
        suffixes = [(await manager.reserve(scenarios.user(77))).key_stem.rsplit("-", 1)[1] for _ in range(800)]
    finally:
        await manager.aclose()
    per_digit = []
    for position in range(len(suffixes[0])):
        counts = Counter(s[position] for s in suffixes)
        per_digit.append(-sum(n / 800 * math.log2(n / 800) for n in counts.values()))
    out.attempts = len(suffixes)
    out.figures.update(hex_digits=len(suffixes[0]), min_bits_per_digit=round(min(per_digit), 3),
                       estimated_bits=round(sum(per_digit), 1), nominal_bits=4 * len(per_digit))
    out.check("all suffixes distinct", len(set(suffixes)) == len(suffixes))
    out.check("every digit uniform (no fixed or clock nibble)", min(per_digit) > 3.85, per_digit)
    out.check("nominal entropy >= 64 bits", 4 * len(per_digit) >= 64)
    out.tests = [f"{T}test_security.py::test_key_suffix_has_at_least_64_random_bits"]
    return out


async def run(workdir: Path) -> tuple[list[Outcome], dict[str, Any]]:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("abby").setLevel(logging.CRITICAL)  # the damage scenarios log rebuilds on purpose
    shared = SeaweedFS(data_dir=workdir / "seaweedfs")
    dedicated = SeaweedFS(data_dir=workdir / "seaweedfs-outage")
    fake = FakeStability()
    shared.start()
    dedicated.start()
    await fake.start()
    st = Storages(workdir, shared)
    results: list[Outcome] = []
    lag: dict[str, Any] = {}

    def add(out: Outcome, *tests: str) -> None:
        out.tests = list(tests)
        results.append(out)
        mark = "ok" if not out.failed else f"{len(out.failed)} FAILED"
        print(f"  {out.scenario} [{out.backend}]: {mark}", flush=True)

    try:
        for kind in ("filesystem", "seaweedfs"):
            b = st.make(kind)
            add(await scenarios.two_processes(b, st.config(b), backend_name=kind),
                f"{T}test_load.py::test_two_processes_full_generations_exact")
            add(await with_manager(
                st.make(kind), lambda m, k=kind: scenarios.many_users(m, backend_name=k),
                max_user_daily_gens=5, image_gen_size_mb=ESTIMATE_MB, max_global_storage_mb=60 * ESTIMATE_MB,
            ), f"{T}test_load.py::test_fifty_users_under_a_small_global_limit")
            fixed = FixedProvider([noise_png(64) for _ in range(50)], delay=0.02)
            out = await with_manager(
                st.make(kind), lambda m, k=kind, p=fixed: scenarios.loop_lag(m, p, backend_name=k),
                max_user_daily_gens=5,
            )
            lag[kind] = out.figures
            add(out, f"{T}test_load.py::test_storage_does_not_block_the_event_loop")
        out = await with_manager(
            st.make("filesystem"),
            lambda m: scenarios.loop_lag(m, OfflineProvider(), backend_name="filesystem"),
            max_user_daily_gens=5,
        )
        lag["filesystem, offline renderer"] = out.figures
        add(out, f"{T}test_load.py::test_offline_renderer_does_not_block_the_event_loop",
            f"{T}test_load.py::test_offline_rendering_runs_off_the_loop_thread")

        add(await scenarios.storage_outage(dedicated), f"{T}test_faults.py::test_s3_outage_mid_burst_then_recovery")
        add(await scenarios.one_shot_outage(dedicated),
            f"{T}test_faults.py::test_one_shot_cli_runs_through_an_s3_outage_are_charged_as_printed")
        for kind in ("filesystem", "seaweedfs"):
            add(await with_manager(st.make(kind), lambda m, k=kind: scenarios.provider_faults(m, fake, backend_name=k)),
                f"{T}test_faults.py::test_provider_faults_refund_and_name_the_error")
            b = st.make(kind)
            add(await scenarios.killed_holder(b, st.config(b), backend_name=kind),
                f"{T}test_faults.py::test_process_killed_while_holding_reservations")
            add(await with_manager(st.make(kind), lambda m, k=kind: scenarios.lifecycle_deletions(m, backend_name=k)),
                f"{T}test_faults.py::test_lifecycle_deletions_are_reconciled")
        parts = []
        for damage in scenarios.LEDGER_DAMAGE:
            for which in ("user", "global"):
                parts.append(await with_manager(
                    st.make("filesystem"),
                    lambda m, d=damage, w=which: scenarios.ledger_damage(m, d, w, backend_name="filesystem"),
                    max_user_daily_gens=3,
                ))
        damaged = merge("ledger damaged or deleted", "filesystem",
                        f"{len(scenarios.LEDGER_DAMAGE)} kinds of damage x (user, global): "
                        + ", ".join(scenarios.LEDGER_DAMAGE), parts)
        add(damaged, f"{T}test_faults.py::test_damaged_ledger_is_rebuilt_and_logged",
            f"{T}test_faults.py::test_damaged_ledger_on_s3")
        add(await scenarios.disk_full(workdir / "disk-full"),
            f"{T}test_faults.py::test_disk_full_and_read_only_root_leave_nothing")
        for out in await hostile(workdir):
            add(out, *out.tests)
        out = await key_entropy(workdir)
        add(out, *out.tests)
    finally:
        await fake.stop()
        dedicated.stop()
        shared.stop()
    return results, lag


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _figures(out: Outcome) -> str:
    return "; ".join(f"{k}: {v}" for k, v in out.figures.items() if k != "message") or "-"


def report(results: list[Outcome], lag: dict[str, Any], seconds: float) -> str:
    now = datetime.now(UTC)
    held = sum(len(o.held) for o in results)
    failed = sum(len(o.failed) for o in results)
    lines = [
        "# Reliability",
        "",
        "What Abby's core was put through, and what held. Generated by `python bench/reliability.py`;",
        "every scenario here is also kept as a test in `tests/reliability/` (same code:",
        "`tests/reliability/scenarios.py`), so a regression fails CI, not just this page.",
        "",
        f"- Date: {now:%Y-%m-%d %H:%M} UTC; run time {seconds:.0f} s",
        f"- Machine: {os.cpu_count()} cores ({_cpu()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "- Servers: SeaweedFS `weed mini` (S3) and the fake Stability API, on 127.0.0.1",
        f"- Invariants checked: {held + failed}, held: {held}, failed: {failed}",
        "",
        "Counts: *attempts* are generations or calls tried; *successes* stored an image; *refusals* are",
        "quota refusals or hostile input refused with the right error; *errors* are everything else",
        "(for fault scenarios, the expected clear errors). *Drift* is bytes reconcile had to correct.",
        "",
        "| Scenario | Backend | What was tried | Attempts | Successes | Refusals | Errors | Drift (bytes) "
        "| Figures | Held |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for o in results:
        verdict = f"{len(o.held)}/{len(o.held) + len(o.failed)}" + ("" if not o.failed else " **FAILED**")
        lines.append(
            f"| {o.scenario} | {o.backend} | {o.tried} | {o.attempts} | {o.successes} | {o.refusals} | "
            f"{o.errors} | {o.drift_bytes} | {_figures(o)} | {verdict} |"
        )
    lines += ["", "## Event-loop lag with 50 generations in flight", "",
              f"Target: under {LAG_TARGET_MS} ms. A ticker sleeps 5 ms and records how late it wakes.", "",
              "| Storage, provider | Ticks | Max lag (ms) | p99 lag (ms) | Median (ms) | Target met |",
              "|---|---:|---:|---:|---:|---|"]
    for name, f in lag.items():
        met = "yes" if f["max_lag_ms"] is not None and f["max_lag_ms"] < LAG_TARGET_MS else "no"
        label = name if "offline" in name else f"{name}, pre-made bytes after 20 ms"
        row = f"{f['ticks']} | {f['max_lag_ms']} | {f['p99_lag_ms']} | {f['median_lag_ms']}"
        lines.append(f"| {label} | {row} | {met} |")
    lines += [
        "",
        "The offline renderer used to draw on the event loop: 50 generations stalled it for about 1.4 s.",
        "It now renders in a worker thread (`abby_core/generation/offline.py`).",
        "",
        "## Every check, per scenario",
        "",
    ]
    for o in results:
        lines.append(f"### {o.scenario} ({o.backend})")
        lines.append("")
        lines.append("Kept by: " + ", ".join(f"`{t}`" for t in o.tests))
        lines.append("")
        lines += [f"- held: {h}" for h in o.held] + [f"- **FAILED**: {f}" for f in o.failed]
        if "message" in o.figures:
            lines.append(f"- message shown during the outage: \"{o.figures['message']}\"")
        lines.append("")
    lines += [
        "## Covered by other tests (not repeated here)",
        "",
        "- Two processes x 50 bare reserve+save for one user with 5 left, one folder and one bucket: "
        "`tests/storage/test_multiprocess.py`.",
        "- Image write failing with ENOSPC, EROFS, EACCES; read-only ledger; storage root that is a file; "
        "keys that leave the root: `tests/storage/test_filesystem.py`.",
        "- Unreachable S3 server, wrong credentials, anonymous GET/LIST of images and ledgers, tampered, "
        "lengthened and expired links: `tests/storage/test_s3_seaweedfs.py`.",
        "- Corrupt user ledger, deleted ledgers, one lifecycle deletion, expired reservations: "
        "`tests/storage/test_manager.py`.",
        "- Every numeric variable negative, zero, huge, non-numeric and empty; TTL bounds; unknown backend: "
        "`tests/core/test_config.py`.",
        "- Secrets in logs, errors and reprs on core paths: `tests/reliability/test_security.py` "
        "(the CLI's `--json` output and the bot have their own tests).",
        "",
    ]
    return "\n".join(lines)


#: Everything after this line of the report is written by hand and kept when it is rewritten.
KEEP = "<!-- Written by hand from here on: bench/reliability.py keeps it when it rewrites the page. -->"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "RELIABILITY.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="abby-reliability-") as tmp:
        results, lag = asyncio.run(run(Path(tmp)))
    text = report(results, lag, time.perf_counter() - started)
    out = Path(args.out)
    kept = out.read_text(encoding="utf-8") if out.exists() else ""
    if KEEP in kept:  # the sections written by hand (mutation testing) stay as they are
        text = text.rstrip("\n") + "\n\n" + kept[kept.index(KEEP) :]
    out.write_text(text, encoding="utf-8")
    for name, f in lag.items():
        print(f"loop lag [{name}]: max {f['max_lag_ms']} ms, p99 {f['p99_lag_ms']} ms (target < {LAG_TARGET_MS} ms)")
    failed = sum(len(o.failed) for o in results)
    print(f"wrote {args.out}: {len(results)} scenarios, {failed} failed checks")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
