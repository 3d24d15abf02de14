"""Signing in and out, sessions, cookies, security headers, and the start of the Discord flow."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from abby_core.errors import ConfigError
from abby_dashboard.auth import admin_refusal, safe_next
from abby_dashboard.discord_api import PartialGuild
from tests.dashboard.conftest import TOKEN, MakeApp, browser_client, csrf_of, sign_in

OAUTH = {"DISCORD_CLIENT_ID": "123456789", "DISCORD_CLIENT_SECRET": "s3cret", "DISCORD_GUILD_ID": "777"}


async def test_token_sign_in_opens_the_pages(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).status_code == 303
    response = await sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/"
    page = await client.get("/")
    assert page.status_code == 200 and "Sign out" in page.text


async def test_wrong_token_is_refused_then_backs_off(client: httpx.AsyncClient) -> None:
    response = await sign_in(client, token="not-the-token-at-all")
    assert response.status_code == 403 and "not right" in response.text
    assert (await client.get("/")).status_code == 303  # still not signed in
    again = await sign_in(client)  # even the right token waits after a failure
    assert again.status_code == 429 and "wait" in again.text


async def test_a_success_clears_the_backoff(make_app: MakeApp) -> None:
    app = make_app()
    ticks = [0.0]
    app.state.dashboard.guard.clock = lambda: ticks[0]
    async with browser_client(app) as http:
        assert (await sign_in(http, token="x" * 20)).status_code == 403
        ticks[0] = 1.5  # the first failure costs 1 s
        assert (await sign_in(http)).status_code == 303
        assert app.state.dashboard.guard.wait_seconds("127.0.0.1") == 0


async def test_sign_in_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    await client.get("/login")
    response = await client.post("/login", data={"token": TOKEN})
    assert response.status_code == 403
    assert (await client.get("/")).status_code == 303


async def test_pages_redirect_to_login_with_the_way_back(client: httpx.AsyncClient) -> None:
    for path in ("/", "/members", "/members/111111111111111111", "/storage", "/?days=90"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=%2F"), path
    await client.get("/login?next=%2Fstorage")
    assert (await sign_in(client)).headers["location"] == "/storage"


def test_next_only_goes_to_local_paths() -> None:
    assert safe_next("/members?q=1") == "/members?q=1"
    for bad in ("//evil.example", "https://evil.example/", "/\\evil.example", "", None):
        assert safe_next(bad) == "/"


async def test_logout_is_a_post_with_csrf(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/logout")).status_code == 405
    assert (await admin.post("/logout", data={})).status_code == 403
    assert (await admin.get("/")).status_code == 200  # still signed in
    page = await admin.get("/")
    response = await admin.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert (await admin.get("/")).status_code == 303


async def test_cookie_flags_without_https(client: httpx.AsyncClient) -> None:
    response = await sign_in(client)
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("abby_session=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


async def test_cookie_is_secure_with_an_https_public_url(make_app: MakeApp) -> None:
    app = make_app(DASHBOARD_PUBLIC_URL="https://abby.example.org")
    async with browser_client(app, "https://abby.example.org") as http:
        response = await sign_in(http)
    cookie = response.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


async def test_a_forged_cookie_is_not_a_session(make_app: MakeApp) -> None:
    app = make_app(DASHBOARD_SECRET_KEY="k" * 40)
    other = make_app(DASHBOARD_SECRET_KEY="z" * 40)
    async with browser_client(other) as http:
        await sign_in(http)
        stolen = http.cookies["abby_session"]
    async with browser_client(app) as http:
        http.cookies.set("abby_session", stolen)
        assert (await http.get("/")).status_code == 303


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for path in ("/login", "/static/dashboard.js", "/nope"):
        response = await client.get(path)
        csp = response.headers["content-security-policy"]
        assert csp.startswith("default-src 'self'") and "unsafe-inline" not in csp, path
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"


async def test_pages_have_no_inline_script_and_no_outside_assets(admin: httpx.AsyncClient) -> None:
    page = (await admin.get("/?days=7")).text
    assert '<script type="application/json" id="chart-data">' in page
    for tag in page.split("<script")[1:]:
        assert tag.startswith((' type="application/json"', ' src="/static/')), tag[:60]
    assert "http://" not in page.replace("http://127.0.0.1", "") and "https://" not in page
    assert (await admin.get("/static/chart.umd.min.js")).status_code == 200
    assert (await admin.get("/static/chart.js.LICENSE.md")).status_code == 200


def test_the_app_needs_a_sign_in_method(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(DASHBOARD_TOKEN=None)
    assert "DASHBOARD_TOKEN" in str(caught.value) and "DISCORD_CLIENT_ID" in str(caught.value)
    with pytest.raises(ConfigError, match="DISCORD_GUILD_ID"):
        make_app(DASHBOARD_TOKEN=None, DISCORD_CLIENT_ID="1", DISCORD_CLIENT_SECRET="x")
    assert make_app(DASHBOARD_TOKEN=None, **OAUTH) is not None


async def test_login_page_offers_what_is_configured(make_app: MakeApp) -> None:
    async with browser_client(make_app()) as http:
        page = (await http.get("/login")).text
    assert "Sign in with Discord" not in page and 'name="token"' in page
    async with browser_client(make_app(DASHBOARD_TOKEN=None, **OAUTH)) as http:
        page = (await http.get("/login")).text
        assert "Sign in with Discord" in page and 'name="token"' not in page


async def test_discord_sign_in_starts_with_the_documented_redirect(make_app: MakeApp) -> None:
    app = make_app(DISCORD_OAUTH_URL="http://discord.test", DASHBOARD_PUBLIC_URL="https://abby.example.org", **OAUTH)
    async with browser_client(app, "https://abby.example.org") as http:
        response = await http.get("/auth/discord")
        assert response.status_code == 303
        url = urlsplit(response.headers["location"])
        assert (url.scheme, url.netloc, url.path) == ("http", "discord.test", "/oauth2/authorize")
        query = parse_qs(url.query)
        assert query["response_type"] == ["code"] and query["client_id"] == ["123456789"]
        assert query["scope"] == ["identify guilds guilds.members.read"] and query["prompt"] == ["none"]
        assert query["redirect_uri"] == ["https://abby.example.org/auth/callback"]
        # A callback with another state is refused before Discord is asked anything.
        wrong = await http.get("/auth/callback", params={"code": "abc", "state": "forged"})
        assert wrong.status_code == 400 and "sign in again" in wrong.text
        # The state is single use: the real one no longer works either.
        again = await http.get("/auth/callback", params={"code": "abc", "state": query["state"][0]})
        assert again.status_code == 400


async def test_cancelled_discord_sign_in_says_so(make_app: MakeApp) -> None:
    async with browser_client(make_app(**OAUTH)) as http:
        start = await http.get("/auth/discord")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        response = await http.get("/auth/callback", params={"error": "access_denied", "state": state})
    assert response.status_code == 400 and "cancelled" in response.text


async def test_discord_errors_show_on_the_login_page(make_app: MakeApp) -> None:
    async with browser_client(make_app(**OAUTH)) as http:  # Discord unreachable (the default handler)
        start = await http.get("/auth/discord")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        response = await http.get("/auth/callback", params={"code": "abc", "state": state})
    assert response.status_code == 502
    assert "could not be reached" in response.text and "Traceback" not in response.text


def test_admin_rule() -> None:
    member = PartialGuild("777", owner=False, permissions=0)
    assert admin_refusal([PartialGuild("777", owner=True, permissions=0)], 777, None, ()) is None
    assert admin_refusal([PartialGuild("777", owner=False, permissions=0x8)], 777, None, ()) is None
    assert admin_refusal([PartialGuild("777", owner=False, permissions=0x20)], 777, None, ()) is None
    assert "not a member" in (admin_refusal([PartialGuild("1", owner=True, permissions=0x8)], 777, None, ()) or "")
    assert "Manage Server" in (admin_refusal([member], 777, None, ()) or "")
    assert admin_refusal([member], 777, [5, 9], [9]) is None
    assert admin_refusal([member], 777, [5], [9]) is not None
