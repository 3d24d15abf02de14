"""The real dashboard served by uvicorn on 127.0.0.1, over a seeded folder store, for a real browser.

::

    with FakeDiscordOAuth.threaded() as fake, seeded_site(tmp_path / "store", fake) as site:
        browser.get(site.url + "/")          # sign in as site.people ADA, MIRA's page, ...

:func:`seeded_site` registers the dashboard as an application of the fake Discord (redirect URI
``{url}/auth/callback``), adds the server, its admins and members, fills a filesystem store with
images and three weeks of usage events (past days compacted, as the bot's maintenance leaves them),
records a cleanup and a reconcile, and serves the app built as ``abby dashboard`` builds it: the
real :class:`DiscordAPI` pointed at the fake, names looked up with the fake's bot token.

Selenium blocks, so the server runs on its own thread and event loop (:func:`serve`); tests read
the ledger through ``site.storage`` with ``asyncio.run``. The browser tests and
``scripts/dashboard_screenshots.py`` use the same site.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from PIL import Image, ImageDraw
from starlette.types import ASGIApp

from abby_core.analytics import REFUSAL_CODES, AuditEvent, EventLog, UsageEvent
from abby_core.config import load_settings
from abby_core.storage import FilesystemBackend, QuotaStatus, StorageManager
from abby_dashboard import DiscordAPI, create_app
from tests.fixtures.fake_discord_oauth import CLIENT_ID, CLIENT_SECRET, FakeDiscordOAuth

__all__ = [
    "ADMIN_ROLE_ID", "GUILD_ID", "PEOPLE", "TOKEN", "Person", "Planned", "Site", "listening_socket", "seeded_site",
    "serve", "usage_plan",
]

TOKEN = "browser-test-token-6f1c2a9e"
SECRET_KEY = "browser-test-secret-key-0123456789abcdef"
GUILD_ID = 700000000000000001
ADMIN_ROLE_ID = 900000000000000001
OTHER_ROLE_ID = 900000000000000002
MANAGE_GUILD = 0x20
DAYS = 21  # days with usage, today included
DAILY_GENS, USER_MB, GLOBAL_MB, ESTIMATE_MB = 5, 2, 8, 0.3


@dataclass(frozen=True)
class Person:
    """Someone the fake Discord knows: ``name`` is what the dashboard shows (display name)."""

    id: str
    username: str
    name: str
    roles: tuple[int, ...] = ()
    permissions: int = 0
    member: bool = True


OWNER = Person("300000000000000001", "olive", "Olive")
ADA = Person("300000000000000002", "ada", "Ada", permissions=MANAGE_GUILD)  # signs in for the page tests
ANN = Person("300000000000000003", "ann", "Ann", permissions=MANAGE_GUILD)  # sees the consent page first
ROLF = Person("300000000000000004", "rolf", "Rolf", roles=(ADMIN_ROLE_ID,))  # admin by role only
NOEL = Person("300000000000000005", "noel", "Noel", roles=(OTHER_ROLE_ID,))  # a member, not an admin
OTTO = Person("300000000000000006", "otto", "Otto", member=False)  # not in the server
CASS = Person("300000000000000007", "cass", "Cass", permissions=MANAGE_GUILD)  # cancels on Discord
MIRA = Person("300000000000000011", "mira", "Mira")
BEA = Person("300000000000000012", "bea", "Beatrix")
CY = Person("300000000000000013", "cy", "Cyrus")
PEOPLE = {p.username: p for p in (OWNER, ADA, ANN, ROLF, NOEL, OTTO, CASS, MIRA, BEA, CY)}
STORED = {MIRA: 3, BEA: 2, CY: 1}  # images stored today (each also an "ok" event today)


@dataclass(frozen=True)
class Planned:
    """One seeded usage event, ``days_ago`` days before today."""

    days_ago: int
    user: Person
    outcome: str = "ok"
    provider: str = "stability"
    latency: float | None = 2.0

    @property
    def refused(self) -> bool:
        return self.outcome in REFUSAL_CODES


def usage_plan() -> list[Planned]:
    """Three weeks of usage: three members, two providers, a few refusals and failures."""
    plan: list[Planned] = []
    for ago in range(DAYS - 1, 0, -1):
        plan += [Planned(ago, MIRA, latency=1.6 + 0.5 * i) for i in range(1 + ago * 7 % 5)]
        plan += [Planned(ago, BEA, provider="comfyui", latency=6.0 + i) for i in range(ago * 3 % 4)]
        plan += [Planned(ago, CY, latency=3.1 + i) for i in range(ago % 3)]
        if ago % 6 == 2:
            plan.append(Planned(ago, MIRA, "daily_limit", latency=None))
        if ago % 9 == 3:
            plan.append(Planned(ago, CY, "content_filtered", latency=1.2))
        if ago in (4, 11):
            plan.append(Planned(ago, BEA, "generation_timeout", provider="comfyui", latency=30.0))
        if ago == 15:
            plan.append(Planned(ago, MIRA, "user_storage_full", latency=None))
    for person, count in STORED.items():
        provider = "comfyui" if person is BEA else "stability"
        plan += [Planned(0, person, provider=provider, latency=2.4 + i) for i in range(count)]
    plan.append(Planned(0, CY, "daily_limit", latency=None))
    return plan


def picture(seed: int, side: int = 320) -> bytes:
    """A PNG that looks like a generated image (a gradient, a few shapes, grain): about 100-300 KB."""
    rng = random.Random(seed)
    top = tuple(rng.randrange(40, 220) for _ in range(3))
    bottom = tuple(rng.randrange(20, 200) for _ in range(3))
    image = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(image)
    for y in range(side):
        t = y / (side - 1)
        draw.line([(0, y), (side, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(4):
        x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 10, side // 3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(256) for _ in range(3)))
    grain = Image.frombytes("L", (side, side), rng.randbytes(side * side)).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _log_at(backend: FilesystemBackend, moment: datetime) -> EventLog:
    return EventLog(backend, clock=lambda: moment)


async def _seed(storage: StorageManager, backend: FilesystemBackend, now: datetime) -> None:
    today = datetime.combine(now.date(), datetime.min.time(), UTC)
    for n, planned in enumerate(usage_plan()):
        moment = now if planned.days_ago == 0 else today - timedelta(days=planned.days_ago, hours=-9, minutes=-7 * n)
        ok = planned.outcome == "ok"
        event = UsageEvent(
            time=moment, user_id=planned.user.id, kind="imagine", provider=planned.provider,
            outcome=planned.outcome, bytes_stored=210_000 if ok else 0, latency_seconds=planned.latency,
            credits=3.0 if ok and planned.provider == "stability" else None,
        )
        _log_at(backend, moment).record(event)
    _log_at(backend, now).compact_finished()
    seed = 1
    for person, count in STORED.items():
        for _ in range(count):
            reservation = await storage.reserve(person.id)
            await storage.save_image(reservation, picture(seed), content_type="image/png")
            seed += 1
    log = _log_at(backend, now)
    log.record_audit(AuditEvent(time=now - timedelta(days=1), actor=ADA.id, action="grant", target=MIRA.id,
                                details={"extra": 2}))
    cleanup = await storage.cleanup_old_files()
    log.record_audit(AuditEvent.of_cleanup(cleanup, actor="maintenance", time=now - timedelta(minutes=30),
                                           days=storage.cleanup_days))
    reconcile = await storage.reconcile()
    log.record_audit(AuditEvent.of_reconcile(reconcile, actor="maintenance", time=now - timedelta(minutes=29)))


def _introduce(fake: FakeDiscordOAuth, redirect_uri: str) -> None:
    fake.add_app(CLIENT_ID, CLIENT_SECRET, [redirect_uri], name="Abby Dashboard")
    for person in PEOPLE.values():
        fake.add_user(int(person.id), person.username, global_name=person.name)
    fake.add_guild(GUILD_ID, "Abby's Studio", owner_id=int(OWNER.id))
    for person in PEOPLE.values():
        if person.member and person is not OWNER:
            fake.add_member(GUILD_ID, int(person.id), roles=person.roles, permissions=person.permissions)


def listening_socket() -> socket.socket:
    """A socket bound to 127.0.0.1 on a free port (known before the app is built, for its public URL)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(
    app: ASGIApp, sock: socket.socket | None = None, *, on_stop: Callable[[], Awaitable[None]] | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread of its own; yields ``http://127.0.0.1:{port}``.

    ``on_stop`` runs on the server's event loop once it has stopped (to close what the app used there).
    """
    sock = sock or listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
            if on_stop is not None:
                loop.run_until_complete(on_stop())
        except BaseException as exc:  # reported by the waiting side
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"dashboard-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard did not start on port {port}: {failure or 'timed out'}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass(frozen=True)
class Site:
    """A served, seeded dashboard: its URL and the store behind it (read it to check what actions did)."""

    url: str
    storage: StorageManager
    events: EventLog
    fake: FakeDiscordOAuth
    plan: list[Planned]

    def quota(self, person: Person) -> QuotaStatus:
        """``get_quota_status`` of ``person``, read through a fresh call (not the page)."""
        return asyncio.run(self.storage.get_quota_status(person.id))


@contextlib.contextmanager
def seeded_site(folder: Path, fake: FakeDiscordOAuth) -> Iterator[Site]:
    """The dashboard over a store seeded in ``folder``, signed in through ``fake`` (or with ``TOKEN``)."""
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    _introduce(fake, url + "/auth/callback")
    backend = FilesystemBackend(folder)
    storage = StorageManager(
        backend, max_user_daily_gens=DAILY_GENS, max_user_storage_mb=USER_MB, max_global_storage_mb=GLOBAL_MB,
        image_gen_size_mb=ESTIMATE_MB,
    )
    try:
        asyncio.run(storage.ensure_ready(create=True))
        asyncio.run(_seed(storage, backend, datetime.now(UTC)))
        section = load_settings(
            env_file=None, STORAGE_ROOT=str(folder), DASHBOARD_HOST="127.0.0.1",
            DASHBOARD_PORT=sock.getsockname()[1], DASHBOARD_PUBLIC_URL=url, DASHBOARD_TOKEN=TOKEN,
            DASHBOARD_SECRET_KEY=SECRET_KEY, DISCORD_CLIENT_ID=CLIENT_ID, DISCORD_CLIENT_SECRET=CLIENT_SECRET,
            DISCORD_GUILD_ID=str(GUILD_ID), ADMIN_ROLE_IDS=str(ADMIN_ROLE_ID), DISCORD_TOKEN=fake.bot_token,
            DISCORD_OAUTH_URL=fake.url, DISCORD_API_URL=fake.api_url,
        ).dashboard
        events = EventLog(backend)
        api = DiscordAPI(section)
        app = create_app(section, storage, events, api)
        with serve(app, sock, on_stop=api.aclose) as served:
            assert served == url
            yield Site(url, storage, events, fake, usage_plan())
    finally:
        sock.close()
        asyncio.run(storage.aclose())
