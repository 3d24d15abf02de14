"""Event-loop lag while 50 generations stream live progress from a local GPU server.

    python bench/bench_progress.py [--generations 50] [--interval 0.005]

Each row runs ``--generations`` concurrent ``ImageService.imagine`` calls against a fake
image server (the test suite's ComfyUI or AUTOMATIC1111 fake, in a process of its own as a
real server would be), on filesystem storage in a temporary folder. Every
generation has the bot's own :class:`~abby_discord.progress.ProgressMessage` listening,
with a stand-in for Discord whose edit takes ``--edit-ms``. A ticker on the bot's loop
sleeps ``--interval`` and records how late it wakes: the lag a member's other commands see.
The target is under 50 ms. One run on a shared machine: read it as a shape.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.generation import ImageGenerator, Provider  # noqa: E402
from abby_core.pipeline import ImageService  # noqa: E402
from abby_core.storage import StorageManager  # noqa: E402
from abby_discord.progress import ProgressMessage  # noqa: E402


class _Interaction:
    """Just enough of a discord.Interaction for ProgressMessage: an edit that takes time."""

    def __init__(self, edit_seconds: float) -> None:
        self.edit_seconds = edit_seconds
        self.edits = 0

    async def edit_original_response(self, **_: Any) -> None:
        await asyncio.sleep(self.edit_seconds)
        self.edits += 1


def _serve(kind: str, port_out: Any, stop_in: Any) -> None:
    """Run one fake image server in this (child) process until told to stop."""
    sys.path.insert(0, str(ROOT))

    async def main() -> None:
        if kind == "comfyui":
            from tests.fixtures.fake_comfyui import FakeComfyUI

            fake: Any = FakeComfyUI(step_delay=0.002, previews="JPEG")
        else:
            from tests.fixtures.fake_a1111 import FakeA1111

            fake = FakeA1111(step_delay=0.002)
        await fake.start()
        port_out.put(fake.url)
        await asyncio.get_running_loop().run_in_executor(None, stop_in.get)
        await fake.stop()

    asyncio.run(main())


class _Server:
    """A fake image server in a process of its own, as a real one would be."""

    def __init__(self, kind: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._port, self._stop = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_serve, args=(kind, self._port, self._stop), daemon=True)
        self.url = ""

    def __enter__(self) -> _Server:
        self._process.start()
        self.url = self._port.get(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.put(None)
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()


async def _row(provider: Provider, generations: int, interval: float, edit_seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = StorageManager(storage_root=tmp, max_user_daily_gens=10)
        generator = ImageGenerator(provider=provider)
        service = ImageService(storage, generator)
        interactions = [_Interaction(edit_seconds) for _ in range(generations)]
        listeners = [ProgressMessage(i) for i in interactions]  # type: ignore[arg-type]
        events = 0

        def counting(listener: ProgressMessage) -> Callable[[Any], Any]:
            async def listen(progress: Any) -> None:
                nonlocal events
                events += 1
                await listener(progress)

            return listen

        lags: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            while not done.is_set():
                start = time.perf_counter()
                await asyncio.sleep(interval)
                lags.append(time.perf_counter() - start - interval)

        tick = asyncio.create_task(ticker())
        started = time.perf_counter()
        try:
            results = await asyncio.gather(
                *(
                    service.imagine(str(10**17 + i), f"progress {i}", progress=counting(listener))
                    for i, listener in enumerate(listeners)
                ),
                return_exceptions=True,
            )
        finally:
            done.set()
            await tick
            for listener in listeners:
                await listener.close()
            await generator.aclose()
            await storage.aclose()
        failed = [r for r in results if isinstance(r, BaseException)]
        lags.sort()
        return {
            "ok": generations - len(failed),
            "failed": f"{len(failed)} ({type(failed[0]).__name__})" if failed else "0",
            "seconds": time.perf_counter() - started,
            "events": events,
            "edits": sum(i.edits for i in interactions),
            "max": lags[-1] * 1000,
            "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
            "median": statistics.median(lags) * 1000,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.005, help="ticker sleep, seconds")
    parser.add_argument("--edit-ms", type=float, default=50.0, help="how long a Discord edit takes, ms")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from abby_core.generation.automatic1111 import Automatic1111Provider
    from abby_core.generation.comfyui import ComfyUIProvider

    rows: list[tuple[str, dict[str, Any]]] = []
    with _Server("comfyui") as server:
        print(f"comfyui: {args.generations} generations…", file=sys.stderr)
        provider: Provider = ComfyUIProvider(server.url)
        rows.append(("ComfyUI (fake), previews", asyncio.run(_row(provider, args.generations, args.interval,
                                                                    args.edit_ms / 1000))))
    with _Server("automatic1111") as server:
        print(f"automatic1111: {args.generations} generations…", file=sys.stderr)
        provider = Automatic1111Provider(server.url, steps=args.steps)
        rows.append(("AUTOMATIC1111 (fake), previews", asyncio.run(_row(provider, args.generations, args.interval,
                                                                          args.edit_ms / 1000))))
    print(f"{args.generations} generations streaming progress; ticker {args.interval * 1000:g} ms; "
          f"a Discord edit takes {args.edit_ms:g} ms; target: lag under 50 ms\n")
    print("| server | ok | failed | seconds | progress events | edits | max lag (ms) | p99 (ms) | median (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['ok']} | {r['failed']} | {r['seconds']:.1f} | {r['events']} | {r['edits']} | "
              f"{r['max']:.1f} | {r['p99']:.1f} | {r['median']:.2f} |")


if __name__ == "__main__":
    main()
