"""Regenerate docs/img/dashboard-{overview,member,storage}.png: the dashboard in headless Chromium.

    python scripts/dashboard_screenshots.py

Serves the same seeded dashboard as the browser tests (``tests/dashboard/serve.py``: a folder
store with a week of usage, three members with images, a cleanup and a reconcile on record)
behind the fake Discord, signs in with Discord as an admin, and saves a screenshot 1280 pixels
wide of the overview, a member's page and the storage page (each under 300 KB). Needs ``/usr/bin/chromium`` and
``/usr/bin/chromedriver`` (``sh scripts/system-test-deps.sh``).
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dashboard.serve import ADA, MIRA, Site, seeded_site  # noqa: E402
from tests.fixtures.browser import Browser, start_chromium  # noqa: E402
from tests.fixtures.fake_discord_oauth import FakeDiscordOAuth  # noqa: E402

TARGET = ROOT / "docs" / "img"
STORE = Path(tempfile.gettempdir()) / "abby-dashboard-demo" / "shared"  # the location the storage page shows
MAX_BYTES = 300_000
WIDTH = 1280
# name: (path, viewport height, what must be true before the shot)
SHOTS = {
    "overview": ("/", 1600, "return Array.from(document.querySelectorAll('canvas')).every(c => Chart.getChart(c));"),
    "member": (f"/members/{MIRA.id}", 1080,
               "return Array.from(document.querySelectorAll('#images img')).every(i => i.complete && i.naturalWidth);"),
    "storage": ("/storage", 1120, "return true;"),
}


def sign_in(browser: Browser, site: Site) -> None:
    site.fake.sign_in(int(ADA.id))
    browser.get(site.url + "/login")
    browser.click("#discord-sign-in")
    browser.click("#authorize")
    browser.wait_for_url(lambda url: url == site.url + "/")


def save(png: bytes, target: Path) -> int:
    """Write ``png`` to ``target``, as a 256-colour PNG when the full-colour one is too large."""
    data = png
    if len(data) > MAX_BYTES:
        with Image.open(io.BytesIO(png)) as image:
            out = io.BytesIO()
            image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, format="PNG", optimize=True)
            data = out.getvalue()
    target.write_bytes(data)
    return len(data)


def shoot(browser: Browser, site: Site, name: str) -> None:
    path, height, ready = SHOTS[name]
    metrics = {"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    browser.get(site.url + path)
    browser.wait_for("main h1")
    WebDriverWait(browser.driver, 10, poll_frequency=0.05).until(lambda driver: driver.execute_script(ready))
    errors = browser.console_errors()
    if errors:
        raise SystemExit(f"console errors on {path}: {errors}")
    size = save(browser.driver.get_screenshot_as_png(), TARGET / f"dashboard-{name}.png")
    print(f"saved docs/img/dashboard-{name}.png ({WIDTH}×{height}, {size // 1000} KB)")


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(STORE.parent, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, FakeDiscordOAuth.threaded() as fake, \
                seeded_site(STORE, fake) as site:
            browser = Browser(start_chromium(Path(tmp) / "chromium"))
            try:
                sign_in(browser, site)
                for name in SHOTS:
                    shoot(browser, site, name)
            finally:
                browser.close()
    finally:
        shutil.rmtree(STORE.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
