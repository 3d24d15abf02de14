"""The dashboard over a real filesystem store in ``tmp_path``, driven through ``httpx.ASGITransport``.

``make_app(**env)`` builds the app from settings made only of ``env`` (plus the token and the
store's folder); ``client`` is a browser-like client (it keeps cookies) on the default app;
``admin`` is the same client signed in with the token. Discord is never reached: the
``DiscordAPI`` gets an ``httpx.MockTransport`` (``discord_handler`` decides its answers; by
default every request fails as if Discord were unreachable).
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette

from abby_core.analytics import EventLog, UsageEvent
from abby_core.config import load_settings
from abby_core.storage import FilesystemBackend, StorageManager, StoredImage
from abby_dashboard import DiscordAPI, create_app
from tests.fixtures.clocks import Clock, day_safe_now

TOKEN = "correct-horse-battery-staple-42"
BASE_URL = "http://127.0.0.1:8765"
ALICE, BOB = "111111111111111111", "222222222222222222"
Handler = Callable[[httpx.Request], httpx.Response]
MakeApp = Callable[..., Starlette]


def png(side: int = 64, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, format="PNG")
    return buf.getvalue()


def csrf_of(page: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def usage(clock: Clock, user_id: str = ALICE, outcome: str = "ok", **extra: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "time": clock(), "user_id": user_id, "kind": "imagine", "provider": "stability", "outcome": outcome,
        "bytes_stored": 1000 if outcome == "ok" else 0, "latency_seconds": 2.0,
        "credits": 3.0 if outcome == "ok" else None,
    }
    values.update(extra)
    return UsageEvent(**values)


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no network in tests", request=request)


@pytest.fixture
def clock() -> Clock:
    # Near real "now": the filesystem's modification times and the ledger agree on the day.
    return Clock(day_safe_now())


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
async def storage(store_root: Path, clock: Clock) -> AsyncIterator[StorageManager]:
    manager = StorageManager(FilesystemBackend(store_root), clock=clock, max_user_daily_gens=5)
    await manager.ensure_ready(create=True)
    yield manager
    await manager.aclose()


@pytest.fixture
def events(storage: StorageManager, clock: Clock) -> EventLog:
    return EventLog(storage.backend, clock=clock)


@pytest.fixture
def discord_handler() -> list[Handler]:
    """Replace ``discord_handler[0]`` to answer the dashboard's Discord requests."""
    return [unreachable]


@pytest.fixture
async def make_app(
    storage: StorageManager, events: EventLog, clock: Clock, store_root: Path, discord_handler: list[Handler]
) -> AsyncIterator[MakeApp]:
    clients: list[httpx.AsyncClient] = []

    def make(**env: Any) -> Starlette:
        values: dict[str, Any] = {"DASHBOARD_TOKEN": TOKEN, "STORAGE_ROOT": str(store_root)}
        values.update(env)
        section = load_settings(env_file=None, **{k: v for k, v in values.items() if v is not None}).dashboard
        http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: discord_handler[0](request)))
        clients.append(http)
        return create_app(section, storage, events, DiscordAPI(section, client=http), clock=clock)

    yield make
    for http in clients:
        await http.aclose()


def browser_client(app: Starlette, base_url: str = BASE_URL) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def app(make_app: MakeApp) -> Starlette:
    return make_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_client(app) as http:
        yield http


async def sign_in(http: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    page = await http.get("/login")
    return await http.post("/login", data={"csrf_token": csrf_of(page.text), "token": token})


@pytest.fixture
async def admin(client: httpx.AsyncClient) -> httpx.AsyncClient:
    response = await sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    return client


async def store_image(storage: StorageManager, user_id: str, data: bytes | None = None) -> StoredImage:
    reservation = await storage.reserve(user_id)
    return await storage.save_image(reservation, data or png(), content_type="image/png")
