"""The dashboard's overview over 90 days of usage: does it render in under a second?

    python bench/bench_dashboard.py [--events-per-day 1100] [--days 90] [--rounds 10]

Fills a filesystem store in a temporary folder with ``--days`` days of usage events
(``--events-per-day`` each, 300 members, three providers, a share of refusals and failures).
Every finished day is folded with the same ``Tally`` that ``EventLog.compact`` uses and stored
as its daily summary, as the daily maintenance leaves it; today's events are recorded one by one
with ``EventLog.record`` and stay raw, as they are in the middle of a day. A few members get
stored images so the storage figures are not empty. Then ``GET /?days=90`` is timed through the
ASGI app (``httpx.ASGITransport``, signed in with the token) ``--rounds`` times and a table of
first / median / max is printed, with the page size.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abby_core.analytics import DailySummary, EventLog, Tally, UsageEvent  # noqa: E402
from abby_core.analytics.log import daily_key  # noqa: E402
from abby_core.config import load_settings  # noqa: E402
from abby_core.storage import FilesystemBackend, StorageManager  # noqa: E402
from abby_dashboard import DiscordAPI, create_app  # noqa: E402

MS = 1000.0
TOKEN = "bench-token-0123456789"
MEMBERS = 300
PROVIDERS = ("stability", "comfyui", "automatic1111")
OUTCOMES = ["ok"] * 85 + ["daily_limit"] * 6 + ["blocked_prompt"] * 3 + ["user_storage_full"] * 2 + [
    "generation_timeout"] * 3 + ["provider_unreachable"]
TARGET_S = 1.0


def member(n: int) -> str:
    return str(810_000_000_000_000_000 + n)


def event(rng: random.Random, when: datetime) -> UsageEvent:
    outcome = rng.choice(OUTCOMES)
    ok = outcome == "ok"
    return UsageEvent(
        time=when, user_id=member(rng.randrange(MEMBERS)), kind=rng.choice(("imagine", "imagine", "img2img")),
        provider=rng.choice(PROVIDERS), outcome=outcome, bytes_stored=rng.randrange(300_000, 1_500_000) if ok else 0,
        latency_seconds=rng.uniform(1.0, 12.0) if outcome != "daily_limit" else None,
        credits=3.0 if ok else None,
    )


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def fill(backend: FilesystemBackend, log: EventLog, now: datetime, days: int, per_day: int) -> int:
    rng = random.Random(12)
    for offset in range(days - 1, 0, -1):  # finished days: one summary each
        day = (now - timedelta(days=offset)).date()
        tally = Tally()
        noon = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
        for _ in range(per_day):
            tally.add(event(rng, noon))
        summary = DailySummary(day=day, compacted_at=noon + timedelta(days=1), tally=tally)
        backend.write_doc(daily_key(day), summary.model_dump_json().encode(), etag=None)
    for _ in range(per_day):  # today: raw events, as recorded
        assert log.record(event(rng, now))
    return days * per_day


async def store_images(storage: StorageManager) -> None:
    data = png()
    for n in range(20):
        reservation = await storage.reserve(member(n))
        await storage.save_image(reservation, data, content_type="image/png")


async def run(days: int, per_day: int, rounds: int) -> None:
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as folder:
        backend = FilesystemBackend(folder)
        backend.ensure_ready(cleanup_days=7)
        log = EventLog(backend, clock=lambda: now)
        began = time.perf_counter()
        total = fill(backend, log, now, days, per_day)
        filled = time.perf_counter() - began
        storage = StorageManager(backend, clock=lambda: now)
        await store_images(storage)
        section = load_settings(env_file=None, DASHBOARD_TOKEN=TOKEN).dashboard
        api = DiscordAPI(section)
        app = create_app(section, storage, log, api, clock=lambda: now)
        times: list[float] = []
        size = 0
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=section.public_url) as http:
                login = await http.get("/login")
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
                assert csrf is not None
                signed = await http.post("/login", data={"csrf_token": csrf.group(1), "token": TOKEN})
                assert signed.status_code == 303, signed.text
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    page = await http.get("/", params={"days": str(days)})
                    times.append(time.perf_counter() - t0)
                    assert page.status_code == 200, page.text[:200]
                    size = len(page.content)
        finally:
            await api.aclose()
            await storage.aclose()
    print(f"{total:,} events over {days} days ({per_day:,} a day, {MEMBERS} members; {days - 1} daily summaries, "
          f"today's {per_day:,} raw), filled in {filled:.1f} s; page {size / 1000:.0f} KB\n")
    print(f"| GET /?days={days} | first | median | max | target |")
    print("|---|---:|---:|---:|---|")
    verdict = "met" if max(times) < TARGET_S else "**not met**"
    print(f"| filesystem, {rounds} rounds | {times[0] * MS:.0f} ms | {statistics.median(times) * MS:.0f} ms "
          f"| {max(times) * MS:.0f} ms | < 1 s: {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--events-per-day", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.days, args.events_per_day, args.rounds))


if __name__ == "__main__":
    main()
