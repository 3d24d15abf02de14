"""The headless-browser harness works: pages load, forms submit, console errors are caught.

A small page server on 127.0.0.1 (its own thread, since Selenium blocks) plays the site under test.
"""

from __future__ import annotations

import html
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.fixtures import browser as browser_module
from tests.fixtures.browser import Browser, browser  # noqa: F401
from tests.fixtures.fake_discord_oauth import CLIENT_ID, CLIENT_SECRET, FakeDiscordOAuth, fake_discord_oauth  # noqa: F401

HEAD = (
    '<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>'
    '<link rel=icon href="data:,"></head>'
)
PAGES = {
    "/": HEAD.format(title="Form") + """<body>
<button id=counter type=button>Clicked 0 times</button>
<p id=later></p>
<form method=post action=/submit><input name=name id=name><button id=send type=submit>Send</button></form>
<script>
  let clicks = 0;
  const counter = document.getElementById("counter");
  counter.addEventListener("click", () => { clicks += 1; counter.textContent = `Clicked ${clicks} times`; });
  setTimeout(() => { document.getElementById("later").textContent = "ready"; }, 150);
</script></body></html>""",
    "/broken": HEAD.format(title="Broken") + """<body><p id=done>loaded</p>
<script>console.log("just information"); console.warn("a warning"); console.error("deliberate failure 42");</script>
</body></html>""",
    "/throws": HEAD.format(title="Throws") + """<body><p id=done>loaded</p>
<script>throw new Error("uncaught boom");</script></body></html>""",
}


class _Pages(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        pass

    def _send(self, body: str, *, cookie: str | None = None) -> None:
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/callback":  # stands in for the dashboard's OAuth2 redirect receiver
            query = urllib.parse.parse_qs(url.query)
            rows = "".join(
                f"<dd id={name}>{html.escape(query.get(name, [''])[0])}</dd>" for name in ("code", "state", "error")
            )
            self._send(HEAD.format(title="Callback") + f"<body><dl id=callback>{rows}</dl></body></html>")
        elif url.path in PAGES:
            self._send(PAGES[url.path])
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        name = html.escape(form.get("name", [""])[0])
        self._send(HEAD.format(title="Result") + f"<body><p id=result>Hello, {name}</p></body></html>", cookie="seen=1")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_loads_clicks_submits_and_reads(browser: Browser, site: str) -> None:  # noqa: F811
    browser.get(site + "/")
    assert browser.title == "Form"
    browser.wait_for_text("#later", "ready")
    browser.click("#counter")
    browser.click("#counter")
    assert browser.wait_for_text("#counter", "Clicked 2 times").text == "Clicked 2 times"
    browser.fill("#name", "Ann <b>")
    browser.click("#send")
    browser.wait_for_url("/submit")
    assert browser.text("#result") == "Hello, Ann <b>"
    assert [c["name"] for c in browser.cookies()] == ["seen"]
    browser.assert_no_console_errors()


def test_console_errors_are_caught(browser: Browser, site: str) -> None:  # noqa: F811
    browser.get(site + "/broken")
    browser.wait_for("#done")
    errors = browser.console_errors()
    assert len(errors) == 1
    assert "deliberate failure 42" in errors[0].message and errors[0].source == "console-api"
    assert {e.level for e in browser.console()} >= {"INFO", "WARNING", "SEVERE"}
    with pytest.raises(AssertionError, match="deliberate failure 42"):
        browser.assert_no_console_errors()
    browser.assert_no_console_errors(ignore=["deliberate failure"])

    browser.get(site + "/throws")
    browser.wait_for("#done")
    uncaught = [e for e in browser.console_errors() if "uncaught boom" in e.message]
    assert uncaught and uncaught[0].source == "javascript"

    browser.get(site + "/missing")
    assert any(e.source == "network" and "404" in e.message for e in browser.console_errors())


def test_reset_forgets_cookies_and_console(browser: Browser, site: str) -> None:  # noqa: F811
    assert browser.console() == [] and browser.url == "about:blank"  # the fixture reset it
    browser.get(site + "/")
    browser.fill("#name", "x")
    browser.click("#send")
    browser.wait_for("#result")
    browser.get(site + "/broken")
    assert browser.cookies() and browser.console_errors()
    browser.reset()
    browser.get(site + "/")
    assert browser.cookies() == [] and browser.console_errors() == []


def test_waits_fail_with_a_readable_message(browser: Browser, site: str) -> None:  # noqa: F811
    browser.get(site + "/")
    with pytest.raises(AssertionError, match=r"no element '#nowhere' within 0.2s; the page is http://127"):
        browser.wait_for("#nowhere", timeout=0.2)
    with pytest.raises(AssertionError, match="a URL matching"):
        browser.wait_for_url("/never", timeout=0.2)


def test_screenshot_has_the_window_width(browser: Browser, site: str, tmp_path: Path) -> None:  # noqa: F811
    browser.get(site + "/")
    saved = browser.screenshot(tmp_path / "shots" / "form.png")
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.width == 1280


def test_missing_chromium_fails_naming_the_install_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser_module, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.fail.Exception, match=re.escape("run `sh scripts/system-test-deps.sh`")):
        browser_module.start_chromium(tmp_path / "profile")


# --- the fake Discord consent page, in a real browser ------------------------------------------


@pytest.fixture
def discord(fake_discord_oauth: FakeDiscordOAuth, site: str) -> FakeDiscordOAuth:  # noqa: F811
    fake_discord_oauth.add_app(CLIENT_ID, CLIENT_SECRET, [site + "/callback"], name="Abby Dashboard")
    fake_discord_oauth.add_user(101, "ann", global_name="Ann")
    fake_discord_oauth.add_guild(7001, "Home", owner_id=101)
    return fake_discord_oauth


def _authorize_url(fake: FakeDiscordOAuth, site: str) -> str:
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": CLIENT_ID, "scope": "identify guilds",
        "redirect_uri": site + "/callback", "state": "xyz", "prompt": "none",
    }, quote_via=urllib.parse.quote)
    return f"{fake.url}/oauth2/authorize?{query}"


def test_authorize_on_the_fake_consent_page(browser: Browser, discord: FakeDiscordOAuth, site: str) -> None:  # noqa: F811
    discord.sign_in(101)
    browser.get(_authorize_url(discord, site))
    assert browser.text("#app-name") == "Abby Dashboard"
    assert "Ann" in browser.text("#signed-in-as")
    browser.click("#authorize")
    browser.wait_for_url(site + "/callback")
    code, state = browser.text("#code"), browser.find("#state").text
    assert code and state == "xyz"
    browser.assert_no_console_errors()

    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": site + "/callback"}
    answer = httpx.post(discord.api_url + "/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert answer.status_code == 200 and answer.json()["scope"] == "identify guilds"


def test_log_in_then_cancel_on_the_fake(browser: Browser, discord: FakeDiscordOAuth, site: str) -> None:  # noqa: F811
    browser.get(_authorize_url(discord, site))
    browser.fill("#username", "ann")
    browser.click("#log-in")
    browser.click("#cancel")
    browser.wait_for_url(site + "/callback")
    assert browser.text("#error") == "access_denied" and browser.find("#state").text == "xyz"
    assert browser.find("#code").text == ""
    assert discord.signed_in == 101
