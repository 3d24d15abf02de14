"""The dashboard in a real browser: sign-in (Discord and token), every page, the actions, CSRF.

One headless Chromium and one served dashboard (uvicorn on its own thread, see ``serve.py``)
for the module, over a seeded folder store and the fake Discord. Each test signs in afresh (the
browser's cookies are cleared between tests) and acts on its own member where it changes
anything, so the tests do not depend on their order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from abby_core.analytics import AuditAction
from abby_dashboard.formats import human_bytes, percent
from tests.dashboard.serve import (
    ADA,
    ANN,
    BEA,
    CASS,
    CY,
    DAILY_GENS,
    GUILD_ID,
    MIRA,
    NOEL,
    OTTO,
    ROLF,
    TOKEN,
    Person,
    Site,
    seeded_site,
)
from tests.fixtures.browser import WINDOW_SIZE, Browser, browser  # noqa: F401
from tests.fixtures.fake_discord_oauth import FakeDiscordOAuth

# A refused page load is a console line of its own ("Failed to load resource: ... 403"); nothing else may fail.
REFUSED_LOADS = ("status of 400", "status of 403")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("dashboard") / "store"
    with FakeDiscordOAuth.threaded() as fake, seeded_site(folder, fake) as served:
        yield served


def on_dashboard(site: Site, path: str = "/") -> Any:
    """A URL test: the browser is at ``path`` of the dashboard (query ignored)."""
    return lambda url: url.split("?", 1)[0] == site.url + path


def sign_in_with_discord(browser: Browser, site: Site, person: Person) -> None:  # noqa: F811
    """Sign ``person`` in through the fake Discord, authorizing on the consent page when it is shown."""
    site.fake.sign_in(int(person.id))
    browser.get(site.url + "/login")
    browser.click("#discord-sign-in")
    browser.wait_for_url(lambda url: url.startswith(site.fake.url + "/") or not url.startswith(site.url + "/login"))
    if url_is_fake(browser, site):
        browser.click("#authorize")
    browser.wait_for_url(on_dashboard(site))
    assert browser.text(".who") == person.name


def url_is_fake(browser: Browser, site: Site) -> bool:  # noqa: F811
    return browser.url.startswith(site.fake.url + "/")


def wait_js(browser: Browser, script: str, what: str, timeout: float = 5.0) -> Any:  # noqa: F811
    """Wait until ``script`` (a function body that returns) gives something truthy; that value."""
    try:
        return WebDriverWait(browser.driver, timeout, poll_frequency=0.05).until(
            lambda driver: driver.execute_script(script)
        )
    except Exception as exc:
        raise AssertionError(f"{what} not true within {timeout}s on {browser.url}") from exc


def rows(browser: Browser, table: str) -> list[list[str]]:  # noqa: F811
    """The cells' text of a table's body rows (hidden ones too: some tables sit in closed <details>)."""
    found: list[list[str]] = browser.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
        ".map(tr => Array.from(tr.cells).map(td => td.textContent.trim()))",
        table,
    )
    return found


def audit(site: Site, person: Person, action: AuditAction) -> list[Any]:
    return site.events.audit_events(50, action=action, target=person.id)


# --- 1. sign-in with Discord ---------------------------------------------------------------------


def test_admin_signs_in_with_discord(browser: Browser, site: Site) -> None:  # noqa: F811
    site.fake.sign_in(int(ANN.id))
    browser.get(site.url + "/")
    browser.wait_for_url(on_dashboard(site, "/login"))
    assert "next=%2F" in browser.url
    assert browser.text("#discord-sign-in") == "Sign in with Discord"
    browser.click("#discord-sign-in")
    browser.wait_for_url(site.fake.url + "/oauth2/authorize?")
    assert browser.text("#app-name") == "Abby Dashboard"
    assert "Ann" in browser.text("#signed-in-as")
    scopes = [li.get_attribute("data-scope") for li in browser.find_all("#scopes li")]
    assert scopes == ["identify", "guilds", "guilds.members.read"]
    browser.click("#authorize")
    browser.wait_for_url(on_dashboard(site))
    assert browser.text("h1") == "Overview" and browser.text(".who") == "Ann"

    [cookie] = [c for c in browser.cookies() if c["name"] == "abby_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["secure"] is False
    assert cookie["domain"] == "127.0.0.1" and cookie["path"] == "/"
    token_calls = site.fake.requests_to("/api/v10/oauth2/token", "POST")
    assert token_calls and token_calls[-1].form["redirect_uri"] == site.url + "/auth/callback"
    browser.assert_no_console_errors()

    browser.click(".signout button")  # a POST with the CSRF token
    browser.wait_for_url(on_dashboard(site, "/login"))
    browser.get(site.url + "/storage")
    browser.wait_for_url(on_dashboard(site, "/login"))


def test_admin_by_role_signs_in(browser: Browser, site: Site) -> None:  # noqa: F811
    before = len(site.fake.requests_to(f"/api/v10/users/@me/guilds/{GUILD_ID}/member"))
    sign_in_with_discord(browser, site, ROLF)
    assert browser.text("h1") == "Overview"
    # Rolf lacks Manage Server: only his roles made him an admin, so they were read.
    assert len(site.fake.requests_to(f"/api/v10/users/@me/guilds/{GUILD_ID}/member")) == before + 1
    browser.assert_no_console_errors()


# --- 2. refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("person", "reason"),
    [
        (NOEL, "You are a member of the server but lack the Manage Server permission or one of the admin roles"),
        (OTTO, "You are not a member of the Discord server this dashboard looks after."),
    ],
    ids=["member-without-rights", "not-in-the-server"],
)
def test_non_admins_are_refused_with_the_reason(
    browser: Browser, site: Site, person: Person, reason: str  # noqa: F811
) -> None:
    site.fake.sign_in(int(person.id))
    browser.get(site.url + "/login")
    browser.click("#discord-sign-in")
    browser.click("#authorize")
    browser.wait_for_url(on_dashboard(site, "/auth/callback"))
    assert browser.text("h1") == "Not an admin"
    assert reason in browser.text("p.error")
    assert browser.title.startswith("Not an admin")
    assert browser.find_all("header nav") == []  # not signed in: no navigation
    browser.get(site.url + "/")
    browser.wait_for_url(on_dashboard(site, "/login"))
    assert not any(c["name"] == "abby_session" and "actor" in c["value"] for c in browser.cookies())
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


def test_cancel_on_discord_returns_to_the_sign_in_page(browser: Browser, site: Site) -> None:  # noqa: F811
    site.fake.sign_in(int(CASS.id))
    browser.get(site.url + "/login")
    browser.click("#discord-sign-in")
    browser.click("#cancel")
    browser.wait_for_url(on_dashboard(site, "/auth/callback"))
    assert "error=access_denied" in browser.url
    assert browser.text("h1") == "Sign in"
    assert browser.text("p.error") == "Sign-in was cancelled on Discord: nothing was shared."
    assert browser.find("#discord-sign-in").is_displayed()  # ready to try again
    browser.get(site.url + "/")
    browser.wait_for_url(on_dashboard(site, "/login"))
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


# --- 3. sign-in with the token ---------------------------------------------------------------------


def test_token_sign_in_and_a_wrong_token(browser: Browser, site: Site) -> None:  # noqa: F811
    browser.get(site.url + "/members")
    browser.wait_for_url(on_dashboard(site, "/login"))
    browser.fill("#token", TOKEN)
    browser.click(".token-form button")
    browser.wait_for_url(on_dashboard(site, "/members"))  # back where it was going
    assert browser.text("h1") == "Members" and browser.text(".who") == "token sign-in"
    browser.assert_no_console_errors()

    browser.reset()
    browser.get(site.url + "/login")
    browser.fill("#token", "not-the-token-at-all")
    browser.click(".token-form button")
    assert browser.wait_for_text("p.error", "That token is not right.").text == "That token is not right."
    assert browser.find_all(".who") == []
    browser.get(site.url + "/")
    browser.wait_for_url(on_dashboard(site, "/login"))
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


# --- 4. the pages -----------------------------------------------------------------------------------


CHARTS = ("chart-days", "chart-refusals", "chart-members", "chart-latency", "chart-storage")
PAINTED = """
const canvas = document.getElementById(arguments[0]);
if (!canvas || typeof Chart === "undefined" || !Chart.getChart(canvas)) { return null; }
const { width, height } = canvas;
const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
let painted = 0;
for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { painted += 1; } }
return { painted, width, height, labels: Chart.getChart(canvas).data.labels.length };
"""


def test_overview_draws_its_charts_and_tables(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    for chart in CHARTS:
        drawn = wait_js(browser, PAINTED.replace("arguments[0]", repr(chart)), f"{chart} drawn")
        assert drawn["width"] > 100 and drawn["height"] > 100, chart
        assert drawn["painted"] > 1000, f"{chart} is blank: {drawn}"
    # Each chart keeps its container's height (a chart sized by its own parent would grow forever).
    time.sleep(0.3)
    heights = browser.driver.execute_script(
        "return Array.from(document.querySelectorAll('canvas')).map(c => c.getBoundingClientRect().height)"
    )
    assert heights == [300, 260, 260, 300, 300]
    assert wait_js(browser, PAINTED.replace("arguments[0]", "'chart-days'"), "days")["labels"] == 30

    plan = site.plan
    ok = [p for p in plan if p.outcome == "ok"]
    refused = [p for p in plan if p.refused]
    failed = [p for p in plan if p.outcome != "ok" and not p.refused]
    totals = browser.text("p.totals")
    assert browser.text("p.totals strong") == str(len(ok))
    assert f"{len(refused)} refusal(s), {len(failed)} failure(s)" in totals

    images = Counter(p.user.name for p in ok)
    refusals = Counter(p.user.name for p in refused)
    members = {r[0]: r[1:3] for r in rows(browser, "#table-members")}
    assert members == {name: [str(images[name]), str(refusals[name])] for name in (MIRA.name, BEA.name, CY.name)}
    reasons = dict(tuple(r) for r in rows(browser, "#table-refusals"))
    assert reasons == {reason: str(n) for reason, n in Counter(p.outcome for p in refused).items()}
    providers = {r[0]: r[1:3] for r in rows(browser, "#table-providers")}
    for name in ("stability", "comfyui"):
        assert providers[name] == [
            str(sum(p.provider == name for p in ok)), str(sum(p.provider == name for p in failed))
        ]
    per_day = rows(browser, "#table-days")
    assert len(per_day) == 30 and per_day[-1][1] == str(sum(p.days_ago == 0 for p in ok))
    assert sum(int(r[1]) for r in per_day) == len(ok)
    stored = site.quota(MIRA).global_bytes
    assert browser.text("#storage-line").startswith(f"{human_bytes(stored)} of 8.0 MB")
    assert "the global limit is reached in about" in browser.text("#projection")
    browser.assert_no_console_errors()

    browser.click('.windows a[href="/?days=7"]')
    browser.wait_for_url(lambda url: url.endswith("/?days=7"))
    assert wait_js(browser, PAINTED.replace("arguments[0]", "'chart-days'"), "days")["labels"] == 7
    assert browser.text("p.totals strong") == str(sum(p.days_ago < 7 for p in ok))
    browser.assert_no_console_errors()


def test_members_search_by_id_and_by_name(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    browser.click('header nav a[href="/members"]')
    browser.wait_for_url(on_dashboard(site, "/members"))
    listed = [r[0] for r in rows(browser, "#table-members")]
    assert set(listed) == {MIRA.name, BEA.name, CY.name}
    assert browser.find_all("#names-off") == []  # the bot token is set: names are searchable

    browser.fill("#q", CY.id)
    browser.click(".search button")
    browser.wait_for_text("#results", CY.name)
    assert browser.find("#results a").get_attribute("href") == f"{site.url}/members/{CY.id}"

    searches = f"/api/v10/guilds/{GUILD_ID}/members/search"
    before = len(site.fake.requests_to(searches))
    browser.fill("#q", "bea")
    browser.click(".search button")
    browser.wait_for_text("#results", BEA.name)
    assert [a.text for a in browser.find_all("#results a")] == [BEA.name]
    calls = site.fake.requests_to(searches)
    assert len(calls) == before + 1 and calls[-1].query["query"] == "bea"
    assert calls[-1].headers["authorization"] == f"Bot {site.fake.bot_token}"

    browser.fill("#q", "nobody-by-this-name")
    browser.click(".search button")
    assert browser.wait_for_text("p.empty", "Nobody found.")
    browser.assert_no_console_errors()


def test_member_page_shows_quota_history_thumbnails_and_audit(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    browser.get(f"{site.url}/members")
    browser.click(f'#table-members a[href="/members/{MIRA.id}"]')
    browser.wait_for_url(on_dashboard(site, f"/members/{MIRA.id}"))
    assert browser.text("h1") == f"{MIRA.name} {MIRA.id}"
    status = site.quota(MIRA)
    quota = dict(tuple(r) for r in browser.driver.execute_script(
        "return Array.from(document.querySelectorAll('#quota tr')).map(tr => [tr.cells[0].textContent, "
        "tr.cells[1].textContent.trim()])"))
    assert quota["Today"].startswith(f"{status.daily_used} of {DAILY_GENS} generation(s), resets ")
    assert status.daily_used == 3
    assert quota["Extra granted today"] == "0"
    assert quota["Storage"] == (f"{human_bytes(status.user_bytes)} of {human_bytes(status.user_limit_bytes)} "
                                f"({percent(status.user_bytes, status.user_limit_bytes)})")
    assert quota["Blocked"] == "no"

    mine = [p for p in site.plan if p.user == MIRA]
    history = rows(browser, "#history")
    assert sum(int(r[1]) for r in history) == sum(p.outcome == "ok" for p in mine)
    assert sum(int(r[2]) for r in history) == sum(p.refused for p in mine)

    thumbs = browser.find_all("#images img")
    assert len(thumbs) == 3
    for img in thumbs:
        browser.driver.execute_script("arguments[0].scrollIntoView()", img)
    loaded = wait_js(
        browser,
        "const imgs = Array.from(document.querySelectorAll('#images img'));"
        "return imgs.every(i => i.complete && i.naturalWidth > 0) && imgs.map(i => i.naturalWidth);",
        "every thumbnail loaded",
    )
    assert loaded == [256, 256, 256]  # made from 320-pixel images, at most 256 a side

    [grant] = rows(browser, "#audit")
    assert grant[1:] == [ADA.id, "grant", "extra=2"]
    browser.assert_no_console_errors()


def test_storage_page_shows_limits_lifecycle_and_maintenance(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    browser.click('header nav a[href="/storage"]')
    browser.wait_for_url(on_dashboard(site, "/storage"))
    backend = dict(tuple(r) for r in browser.driver.execute_script(
        "return Array.from(document.querySelectorAll('#backend tr')).map(tr => [tr.cells[0].textContent, "
        "tr.cells[1].textContent])"))
    assert backend["Backend"] == "filesystem" and backend["Location"].endswith("store")
    limits = {r[0]: r[1:] for r in rows(browser, "#limits")}
    status = site.quota(MIRA)
    assert limits["Global storage"][0] == "8.0 MB"
    assert limits["Global storage"][1].startswith(f"{human_bytes(status.global_bytes)} (")
    assert limits["Storage per member"][0] == "2.0 MB"
    assert limits["Generations per member per day"][0] == str(DAILY_GENS)
    assert limits["Room held per generation"][0] == "300.0 KB"
    lifecycle = browser.text("#lifecycle")
    assert "Images older than 7 days are removed by cleanup" in lifecycle and lifecycle.count("7 days") == 1
    maintenance = {r[0]: r[1:] for r in rows(browser, "#maintenance")}
    cleanup = site.events.latest_audit("cleanup")
    assert cleanup is not None
    assert maintenance["Last cleanup"][0] == f"{cleanup.time:%Y-%m-%d %H:%M} UTC"
    assert maintenance["Last cleanup"][1:] == ["maintenance", "removed 0 image(s), 0 B, from 0 member(s) (older "
                                               "than 7 days)"]
    reconcile = " ".join(maintenance["Last reconcile"][2].split())
    assert reconcile.startswith("checked 3 member(s), 6 image(s), ") and reconcile.endswith("no drift")
    browser.assert_no_console_errors()


def wrapped(browser: Browser, css: str) -> list[str]:  # noqa: F811
    """The text of the cells matching ``css`` that the browser laid out on more than one line."""
    found: list[str] = browser.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).filter(cell => {"
        "  const range = document.createRange(); range.selectNodeContents(cell);"
        "  return new Set(Array.from(range.getClientRects()).map(r => Math.round(r.bottom))).size > 1;"
        "}).map(cell => cell.textContent)",
        css,
    )
    return found


def test_amounts_never_wrap_between_number_and_unit(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    browser.click('header nav a[href="/storage"]')
    browser.wait_for_url(on_dashboard(site, "/storage"))
    stored = "#top-users tbody td:nth-child(2)"
    assert len(rows(browser, "#top-users")) >= 3
    try:
        for width in (1280, 700, 390):  # a desktop, a half screen, a phone
            browser.driver.set_window_size(width, 900)
            browser.driver.execute_script("return document.body.offsetHeight")  # lay the page out again
            assert wrapped(browser, stored) == [], width
    finally:
        browser.driver.set_window_size(*WINDOW_SIZE)


# --- 5. the actions ---------------------------------------------------------------------------------


def open_member(browser: Browser, site: Site, person: Person) -> None:  # noqa: F811
    browser.get(f"{site.url}/members/{person.id}")
    browser.wait_for("#quota")


def ask(browser: Browser, site: Site, person: Person, action: str) -> None:  # noqa: F811
    """Press an action's button on the member page; the confirmation page is shown."""
    browser.click(f'form[action="/members/{person.id}/actions/{action}"] button')
    browser.wait_for_url(on_dashboard(site, f"/members/{person.id}/actions/{action}"))


def confirm(browser: Browser, site: Site, person: Person, done: str) -> None:  # noqa: F811
    browser.click("#confirm")
    browser.wait_for_url(on_dashboard(site, f"/members/{person.id}"))
    assert browser.text(".flash") == done


def test_grant_block_unblock_and_reset_in_the_browser(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    who = f"{BEA.name} ({BEA.id})"
    before = site.quota(BEA)
    assert (before.daily_used, before.daily_limit, before.blocked) == (2, DAILY_GENS, False)

    open_member(browser, site, BEA)
    browser.fill("#count", "3")
    ask(browser, site, BEA, "grant")
    assert browser.text("h1") == "Grant extra generations"
    assert browser.text(".question") == f"Give {who} 3 extra generation(s) for today (until midnight UTC)?"
    assert site.quota(BEA).daily_limit == DAILY_GENS  # asking changed nothing
    confirm(browser, site, BEA, f"Granted 3 extra generation(s) to {who} for today.")
    assert site.quota(BEA).daily_limit == DAILY_GENS + 3
    [granted] = audit(site, BEA, "grant")
    assert (granted.actor, granted.details) == (ADA.id, {"extra": 3})
    assert rows(browser, "#audit")[0][1:] == [ADA.id, "grant", "extra=3"]

    ask(browser, site, BEA, "block")
    browser.click(f'a[href="/members/{BEA.id}"]')  # Cancel
    browser.wait_for_url(on_dashboard(site, f"/members/{BEA.id}"))
    assert not site.quota(BEA).blocked and audit(site, BEA, "block") == []

    ask(browser, site, BEA, "block")
    assert browser.text(".question") == f"Block {who} from generating images? Their images stay."
    confirm(browser, site, BEA, f"Blocked {who}.")
    assert site.quota(BEA).blocked and browser.text("#blocked") == "yes"
    assert [e.actor for e in audit(site, BEA, "block")] == [ADA.id]

    ask(browser, site, BEA, "unblock")
    confirm(browser, site, BEA, f"Unblocked {who}.")
    assert not site.quota(BEA).blocked and browser.text("#blocked") == "no"
    assert [e.actor for e in audit(site, BEA, "unblock")] == [ADA.id]

    ask(browser, site, BEA, "reset")
    confirm(browser, site, BEA, f"Reset today's count of {who}.")
    after = site.quota(BEA)
    assert (after.daily_used, after.daily_limit) == (0, DAILY_GENS)  # today's grant went with it
    assert [e.actor for e in audit(site, BEA, "reset")] == [ADA.id]
    browser.assert_no_console_errors()


# --- 6. CSRF in a real browser -----------------------------------------------------------------------


class _Attacker(BaseHTTPRequestHandler):
    """Another site: ``/`` is whatever page the test put in ``server.page``."""

    server: _AttackerServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = self.server.page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _AttackerServer(ThreadingHTTPServer):
    page = ""


@pytest.fixture(scope="module")
def attacker() -> Iterator[_AttackerServer]:
    server = _AttackerServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=server.serve_forever, name="attacker-site", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def forged_form(action: str, token: str | None) -> str:
    field = f'<input type="hidden" name="csrf_token" value="{token}">' if token else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Free images</title>"
        '<link rel=icon href="data:,"></head><body><p>Loading your prize…</p>'
        f'<form id=forged method=post action="{action}">{field}</form>'
        "<script>document.getElementById('forged').submit();</script></body></html>"
    )


def assert_refused(browser: Browser, site: Site, path: str, message: str) -> None:  # noqa: F811
    browser.wait_for_url(on_dashboard(site, path))
    assert browser.title.startswith("Not allowed")  # the 403 page
    assert message in browser.text("p.error")


def assert_untouched(site: Site, person: Person) -> None:
    status = site.quota(person)
    assert not status.blocked and status.daily_limit == DAILY_GENS
    assert audit(site, person, "block") == []


def test_a_form_on_another_site_is_refused(
    browser: Browser, site: Site, attacker: _AttackerServer  # noqa: F811
) -> None:
    sign_in_with_discord(browser, site, ADA)
    open_member(browser, site, CY)
    leaked = browser.find('input[name="csrf_token"]').get_attribute("value")
    target = f"/members/{CY.id}/actions/block/confirm"

    # Same site (127.0.0.1), another origin: the cookie goes along, even with the token the Origin is refused.
    port = attacker.server_address[1]
    attacker.page = forged_form(site.url + target, leaked)
    browser.get(f"http://127.0.0.1:{port}/")
    assert_refused(browser, site, target, "This form was sent from another site")
    assert_untouched(site, CY)

    # Another site altogether (localhost): SameSite=Lax keeps the session cookie home.
    attacker.page = forged_form(site.url + target, None)
    browser.get(f"http://localhost:{port}/")
    assert_refused(browser, site, target, "Sign in to the dashboard first.")
    assert_untouched(site, CY)

    open_member(browser, site, CY)  # still signed in, nothing changed
    assert browser.text("#blocked") == "no"
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


def test_an_action_without_the_csrf_field_is_refused(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    open_member(browser, site, CY)
    ask(browser, site, CY, "block")
    removed = browser.driver.execute_script(
        "const field = document.querySelector('form.confirm input[name=csrf_token]'); field.remove(); return true;"
    )
    assert removed
    browser.click("#confirm")
    assert_refused(browser, site, f"/members/{CY.id}/actions/block/confirm", "The form has expired")
    assert_untouched(site, CY)

    # The first step (asking) is checked too.
    open_member(browser, site, CY)
    browser.driver.execute_script(
        "document.querySelector('form[action$=\"/actions/block\"] input[name=csrf_token]').remove();"
    )
    browser.click(f'form[action="/members/{CY.id}/actions/block"] button')
    assert_refused(browser, site, f"/members/{CY.id}/actions/block", "The form has expired")
    assert_untouched(site, CY)
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


def test_an_action_without_a_session_is_refused(browser: Browser, site: Site) -> None:  # noqa: F811
    sign_in_with_discord(browser, site, ADA)
    open_member(browser, site, CY)
    ask(browser, site, CY, "block")
    browser.driver.delete_all_cookies()  # the session is gone (expired, or another browser)
    assert browser.cookies() == []
    browser.click("#confirm")
    assert_refused(browser, site, f"/members/{CY.id}/actions/block/confirm", "Sign in to the dashboard first.")
    assert_untouched(site, CY)
    browser.get(f"{site.url}/members/{CY.id}")
    browser.wait_for_url(on_dashboard(site, "/login"))
    browser.assert_no_console_errors(ignore=REFUSED_LOADS)


def test_screenshots_helper_module_is_importable() -> None:
    """``scripts/dashboard_screenshots.py`` builds the same site: it must at least import."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "dashboard_screenshots.py"
    spec = importlib.util.spec_from_file_location("dashboard_screenshots", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)
