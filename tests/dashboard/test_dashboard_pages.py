"""Every page renders with real data from a filesystem store; thumbnails stay with their member."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from abby_core.analytics import AuditEvent, EventLog
from abby_core.config import load_settings
from abby_core.storage import FilesystemBackend, S3Backend, StorageBackend, StorageManager
from abby_dashboard import DiscordAPI, create_app
from tests.dashboard.conftest import (
    ALICE,
    BOB,
    TOKEN,
    Handler,
    MakeApp,
    browser_client,
    sign_in,
    store_image,
    usage,
)
from tests.storage.conftest import Clock, moto_env, s3_settings  # noqa: F401


def chart_json(page: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert found
    loaded: dict[str, object] = json.loads(found.group(1))
    return loaded


async def test_overview_shows_the_stats_figures(
    admin: httpx.AsyncClient, events: EventLog, storage: StorageManager, clock: Clock
) -> None:
    await store_image(storage, ALICE)
    for _ in range(3):
        events.record(usage(clock))
    events.record(usage(clock, BOB, "daily_limit"))
    events.record(usage(clock, BOB, "generation_timeout", provider="comfyui", latency_seconds=30.0))
    page = await admin.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    text = page.text
    assert "<strong>3</strong> image(s)" in text and "1 refusal(s), 1 failure(s)" in text
    assert "daily_limit" in text and ALICE in text and "comfyui" in text
    assert "<td>100.0%</td>" in text and "<td>25.0%</td>" in text  # comfyui's failure rate, then all providers
    assert 'id="credits">9<' in text and 'of <span class="amount">5.0 GB</span>' in text
    data = chart_json(text)
    days = data["days"]
    assert isinstance(days, dict) and len(days["labels"]) == 30 and days["images"][-1] == 3
    assert days["refusals"][-1] == 1
    assert data["refusals"] == {"labels": ["daily_limit"], "counts": [1]}
    assert data["storage"]["used"] > 0  # type: ignore[index]


async def test_overview_windows_and_projection(admin: httpx.AsyncClient, events: EventLog, clock: Clock) -> None:
    for days, label_count in ((7, 7), (90, 90)):
        page = await admin.get(f"/?days={days}")
        assert page.status_code == 200
        assert len(chart_json(page.text)["days"]["labels"]) == label_count  # type: ignore[index]
    assert "no projection" in (await admin.get("/")).text
    events.record(usage(clock, bytes_stored=50_000_000))
    assert "global limit is reached in about" in (await admin.get("/")).text
    bad = await admin.get("/?days=12")
    assert bad.status_code == 400 and "days must be one of 7, 30, 90" in bad.text


async def test_members_list_and_search_by_id(admin: httpx.AsyncClient, events: EventLog, clock: Clock) -> None:
    events.record(usage(clock, ALICE))
    page = await admin.get("/members")
    assert page.status_code == 200 and f'href="/members/{ALICE}"' in page.text
    assert "search is by user id only" in page.text  # no bot token
    found = await admin.get("/members", params={"q": BOB})
    assert f'href="/members/{BOB}"' in found.text
    by_name = await admin.get("/members", params={"q": "alice"})
    assert "Names can be searched only when DISCORD_TOKEN" in by_name.text


async def test_names_come_from_discord_with_the_bot_token(
    make_app: MakeApp, discord_handler: list[Handler], events: EventLog, clock: Clock
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        user = {"id": ALICE, "username": "alice", "global_name": "Alice A."}
        member: dict[str, object] = {"user": user, "nick": None, "roles": []}
        if request.url.path.endswith("/members/search"):
            return httpx.Response(200, json=[member])
        if request.url.path.endswith(f"/members/{ALICE}"):
            return httpx.Response(200, json=member)
        return httpx.Response(404, json={"message": "Unknown Member", "code": 10007})

    discord_handler[0] = answer
    events.record(usage(clock, ALICE))
    app = make_app(DISCORD_TOKEN="bot-token-value", DISCORD_GUILD_ID="777", DISCORD_API_URL="http://api.test/v10")
    async with browser_client(app) as http:
        await sign_in(http)
        page = await http.get("/members", params={"q": "ali"})
        assert "Alice A." in page.text
        detail = await http.get(f"/members/{BOB}")
        assert "Not a member of the server" in detail.text
    search = next(r for r in seen if r.url.path.endswith("/search"))
    assert str(search.url).startswith("http://api.test/v10/guilds/777/members/search?")
    assert search.url.params["query"] == "ali" and search.headers["authorization"] == "Bot bot-token-value"


async def test_member_page_shows_quota_usage_images_and_actions(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog, clock: Clock
) -> None:
    image = await store_image(storage, ALICE)
    events.record(usage(clock, ALICE))
    await storage.grant(ALICE, 2)
    page = await admin.get(f"/members/{ALICE}")
    assert page.status_code == 200
    text = page.text
    assert "1 of 7 generation(s)" in text and "<th>Extra granted today</th><td>2</td>" in text
    assert f"/members/{ALICE}/images/{image.name}/thumb" in text
    assert f'action="/members/{ALICE}/actions/grant"' in text and 'id="blocked">no<' in text


async def test_member_page_refuses_a_bad_id(admin: httpx.AsyncClient) -> None:
    for bad in ("abc", "12345678901234567890123", "0123"):
        response = await admin.get(f"/members/{bad}")
        assert response.status_code == 400 and "is not a Discord user id" in response.text, bad


async def test_thumbnail_is_small_cached_and_for_admins_only(
    admin: httpx.AsyncClient, app: object, storage: StorageManager
) -> None:
    image = await store_image(storage, ALICE)
    response = await admin.get(f"/members/{ALICE}/images/{image.name}/thumb")
    assert response.status_code == 200 and response.headers["content-type"] == "image/webp"
    assert "private" in response.headers["cache-control"] and "max-age" in response.headers["cache-control"]
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert max(thumb.size) <= 256
    again = await admin.get(f"/members/{ALICE}/images/{image.name}/thumb",
                            headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304
    async with browser_client(app) as anonymous:  # type: ignore[arg-type]
        refused = await anonymous.get(f"/members/{ALICE}/images/{image.name}/thumb")
        assert refused.status_code == 403 and not refused.headers["content-type"].startswith("image/")


async def test_another_members_image_is_refused(admin: httpx.AsyncClient, storage: StorageManager) -> None:
    theirs = await store_image(storage, BOB)
    by_key = await admin.get(f"/members/{ALICE}/images/{theirs.key}/thumb")
    assert by_key.status_code == 403 and not by_key.headers["content-type"].startswith("image/")
    by_name = await admin.get(f"/members/{ALICE}/images/{theirs.name}/thumb")
    assert by_name.status_code == 404
    traversal = await admin.get(f"/members/{ALICE}/images/..%2F{BOB}%2F{theirs.name}/thumb")
    assert traversal.status_code in (403, 404) and not traversal.headers["content-type"].startswith("image/")


async def test_storage_page_shows_limits_lifecycle_and_maintenance(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog, clock: Clock
) -> None:
    await store_image(storage, ALICE)
    page = await admin.get("/storage")
    assert page.status_code == 200
    assert "filesystem" in page.text and "5.0 GB" in page.text and "older than 7 days" in page.text
    assert page.text.count("not recorded yet") == 2
    report = await storage.cleanup_old_files()
    events.record_audit(AuditEvent.of_cleanup(report, actor="maintenance", time=clock(), days=7))
    clock.advance(minutes=1)
    reconciled = await storage.reconcile()
    events.record_audit(AuditEvent.of_reconcile(reconciled, actor="cli", time=clock()))
    page = await admin.get("/storage")
    assert "not recorded yet" not in page.text
    assert "maintenance" in page.text and "checked 1 member(s), 1 image(s)" in page.text and "no drift" in page.text


async def test_storage_trouble_is_a_message_not_a_traceback(admin: httpx.AsyncClient, store_root: Path) -> None:
    shutil.rmtree(store_root / "ledger")
    (store_root / "ledger").write_text("not a folder")
    response = await admin.get(f"/members/{ALICE}")
    assert response.status_code == 503 and "Storage could not be read" in response.text
    assert "Traceback" not in response.text


async def test_storage_page_lists_the_leases_of_bot_processes(
    admin: httpx.AsyncClient, storage: StorageManager, store_root: Path, clock: Clock
) -> None:
    assert 'id="leases"' not in (await admin.get("/storage")).text
    bot = StorageManager(FilesystemBackend(store_root), clock=clock, escrow=True)  # a bot process, escrow on
    try:
        await store_image(bot, ALICE)
        assert bot.escrow is not None
        page = await admin.get("/storage")
        assert 'id="leases"' in page.text and bot.escrow.owner in page.text
        assert "leased by bot processes" in page.text
    finally:
        await bot.aclose()
    assert 'id="leases"' not in (await admin.get("/storage")).text  # given back when the process stops


async def test_overview_projection_beyond_ten_years(admin: httpx.AsyncClient, events: EventLog, clock: Clock) -> None:
    """A trickle against a large limit is not a date (once an OverflowError): it is "not within 10 years"."""
    events.record(usage(clock, bytes_stored=1))
    page = await admin.get("/?days=90")
    assert page.status_code == 200
    assert "the global limit is not reached within 10 years" in page.text and "no projection" not in page.text


@pytest.mark.parametrize("kind", ["filesystem", "moto"])
async def test_the_storage_page_states_how_images_expire_once(
    kind: str, tmp_path: Path, clock: Clock, request: pytest.FixtureRequest
) -> None:
    if kind == "moto":
        request.getfixturevalue("moto_env")
        backend: StorageBackend = S3Backend(s3_settings(None, None, None))
    else:
        backend = FilesystemBackend(tmp_path / "store")
    storage = StorageManager(backend, clock=clock, cleanup_days=9)
    await storage.ensure_ready(create=True)
    section = load_settings(env_file=None, DASHBOARD_TOKEN=TOKEN, STORAGE_ROOT=str(tmp_path)).dashboard
    app = create_app(section, storage, EventLog(storage.backend, clock=clock), DiscordAPI(section), clock=clock)
    try:
        async with browser_client(app) as http:
            await sign_in(http)
            page = (await http.get("/storage")).text
    finally:
        await storage.aclose()
    lifecycle = re.search(r'<ul id="lifecycle">(.*?)</ul>', page, re.S)
    assert lifecycle is not None
    items = re.findall(r"<li>(.*?)</li>", lifecycle.group(1), re.S)
    about_images = [item for item in items if "9 days" in item]
    assert len(about_images) == 1, items  # one fact, said once
