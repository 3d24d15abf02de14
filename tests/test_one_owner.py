"""Each fact has one owner in the core, and every adapter follows it.

The bounds on what an admin, the operator or a member may give (the Discord command,
the dashboard form, the CREDIT_PACKS setting, an uploaded picture) and the table of
image formats. The core refuses past a bound; each adapter offers exactly its range.
The proof that nobody keeps a copy: change the owner in a fresh interpreter, before
anything else is imported, and see every user of the fact change with it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from abby_core.analytics import AuditEvent, EventLog, UsageEvent
from abby_core.config import load_settings
from abby_core.errors import ConfigError, InvalidInput, InvalidKey, StorageUnavailable
from abby_core.generation import ImageGenerator, params
from abby_core.pipeline import ImageService
from abby_core.storage import ArchivedImage, StoredImage, keys, rules
from abby_dashboard import actions
from abby_discord.cogs.admin.cog import Admin
from tests.fixtures.fake_a1111 import FakeA1111
from tests.fixtures.fake_comfyui import FakeComfyUI
from tests.fixtures.fake_discord_oauth import FakeDiscordOAuth
from tests.fixtures.fake_stability import FakeStability
from tests.fixtures.server import FakeServer

_WHEN = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("check", "top", "what"),
    [(rules.check_grant, rules.MAX_GRANT, "extra generations"), (rules.check_credits, rules.MAX_CREDITS, "credits")],
)
def test_the_core_takes_1_to_its_bound_and_names_it(check: object, top: int, what: str) -> None:
    assert callable(check)
    assert check(1) == 1 and check(top) == top
    for bad in (0, -1, top + 1, True, 1.0, "5", None):
        with pytest.raises(InvalidInput, match=f"number of {what} must be a whole number from 1 to {top}"):
            check(bad)


def test_the_discord_grant_command_offers_the_cores_ranges() -> None:
    params = {p.name: p for p in Admin.grant.parameters}
    assert (params["count"].min_value, params["count"].max_value) == (1, rules.MAX_GRANT)
    assert (params["credits"].min_value, params["credits"].max_value) == (1, rules.MAX_CREDITS)


@pytest.mark.parametrize(("typed", "taken"), [(str(rules.MAX_GRANT), True), (str(rules.MAX_GRANT + 1), False)])
def test_the_dashboard_grant_form_takes_the_cores_range(typed: str, taken: bool) -> None:
    form = FormData({"count": typed})
    if taken:
        assert actions._count(form, "grant") == rules.MAX_GRANT
        return
    with pytest.raises(HTTPException) as refused:
        actions._count(form, "grant")
    assert refused.value.status_code == 400
    assert f"from 1 to {rules.MAX_GRANT}, not {typed!r}" in refused.value.detail


def test_a_credit_pack_takes_the_cores_range() -> None:
    top = rules.MAX_CREDITS
    assert load_settings(env_file=None, CREDIT_PACKS=f"5:{top}").discord.credit_packs[0].credits == top
    with pytest.raises(ConfigError, match=f"1 to {top} credits"):
        load_settings(env_file=None, CREDIT_PACKS=f"5:{top + 1}")


def _with_core_changed(script: str) -> Any:
    """Run ``script`` (which changes the core, imports the users of a fact and prints one
    JSON line of what they say) in a fresh interpreter; return what it printed."""
    prelude = textwrap.dedent(
        """
        import json
        from types import SimpleNamespace

        def refused(run, *exc):
            try:
                run()
            except exc or (Exception,) as e:
                return str(getattr(e, "detail", e))
            return None
        """
    )
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_every_adapter_follows_the_cores_bounds() -> None:
    seen = _with_core_changed(
        """
        from abby_core.storage import rules
        rules.MAX_GRANT, rules.MAX_CREDITS = 7, 70
        from abby_core import images
        images.MAX_IMAGE_BYTES = 7 * 1024 * 1024
        from starlette.datastructures import FormData
        from starlette.exceptions import HTTPException
        from abby_core.config import load_settings
        from abby_core.errors import ConfigError, InvalidImage
        from abby_dashboard import actions
        from abby_discord.cogs.admin.cog import Admin
        from abby_discord.cogs.generate.cog import Images, check_attachment

        params = {p.name: p for p in Admin.grant.parameters}
        big = SimpleNamespace(size=images.MAX_IMAGE_BYTES + 1, filename="big.png", content_type="image/png")
        fits = SimpleNamespace(**{**vars(big), "size": images.MAX_IMAGE_BYTES})
        print(json.dumps({
            "upload": refused(lambda: check_attachment(big), InvalidImage),
            "upload-fits": refused(lambda: check_attachment(fits)),
            "described": [c.parameters[0].description for c in (Images.imgimg, Images.upscale)],
            "cog": [params["count"].max_value, params["credits"].max_value],
            "dashboard": refused(lambda: actions._count(FormData({"count": "8"}), "grant"), HTTPException),
            "pack": refused(lambda: load_settings(env_file=None, CREDIT_PACKS="5:71"), ConfigError),
        }))
        """
    )
    assert seen["cog"] == [7, 70], "the /abby-admin grant command has its own bounds"
    assert seen["dashboard"] is not None and "from 1 to 7," in seen["dashboard"], seen
    assert seen["pack"] is not None and "1 to 70 credits" in seen["pack"], seen
    assert seen["upload"] == "`big.png` is 7.1 MiB; images must be 7 MiB or smaller.", seen
    assert seen["upload-fits"] is None
    assert all("(up to 7 MiB)" in text for text in seen["described"]), seen


def test_the_image_formats_have_one_table() -> None:
    seen = _with_core_changed(
        """
        import io
        from PIL import Image
        from abby_core import images
        images.CONTENT_TYPES["png"] = "image/x-png"
        from abby_core.storage import archive, keys

        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format="PNG")
        print(json.dumps({
            "extension": refused(lambda: keys.extension_for("image/x-png")) or keys.extension_for("image/x-png"),
            "old": refused(lambda: keys.extension_for("image/png")),
            "archived": archive._content_type(buf.getvalue()),
            "named": keys.content_type_of("20261207T120000Z-0123abcd.png"),
        }))
        """
    )
    assert seen["extension"] == "png", "the storage keys keep their own table of content types"
    assert seen["old"] is not None, seen
    assert seen["archived"] == "image/x-png", "the archive keeps its own table of content types"
    assert seen["named"] == "image/x-png", seen


class _Recorded(Exception):
    """Raised by a stand-in validator once it has seen what it was called with."""


@pytest.mark.parametrize(
    ("module", "name", "call"),
    [
        ("abby_core.generation.generator", "validate_text_to_image", lambda g, s: g.text_to_image(s, "a cat")),
        ("abby_core.generation.generator", "validate_image_to_image", lambda g, s: g.image_to_image(s, b"x", "a cat")),
        ("abby_core.generation.generator", "validate_upscale", lambda g, s: g.upscale_image(s, b"x")),
        ("abby_core.pipeline", "validate_text_to_image", lambda p, s: p.imagine(s, "1", "a cat")),
        ("abby_core.pipeline", "validate_image_to_image", lambda p, s: p.img2img(s, "1", b"x", "a cat")),
        ("abby_core.pipeline", "validate_upscale", lambda p, s: p.upscale(s, "1", b"x")),
    ],
)
async def test_each_request_default_is_its_validators_alone(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str, call: Any
) -> None:
    """The generator and the service pass on only the options they were given: each
    option's default (aspect ratio, seed, strength, mode, output format) is the validator's."""
    seen: dict[str, Any] = {}

    def recorder(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise _Recorded

    monkeypatch.setattr(importlib.import_module(module), name, recorder)
    owner = ImageGenerator if module.endswith("generator") else ImageService
    fake = SimpleNamespace(input_limits="limits", generate=None, generator=SimpleNamespace(input_limits="limits"))
    with pytest.raises(_Recorded):
        await call(owner, fake)
    assert seen == ({} if name == "validate_text_to_image" else {"limits": "limits"})


@pytest.mark.parametrize(
    ("options", "validator"),
    [
        (params.TextToImageOptions, params.validate_text_to_image),
        (params.ImageToImageOptions, params.validate_image_to_image),
        (params.UpscaleImageOptions, params.validate_upscale),
    ],
)
def test_the_options_types_name_what_the_validators_take(options: Any, validator: Any) -> None:
    taken = {p.name for p in inspect.signature(validator).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert set(options.__optional_keys__) == taken - {"limits"}


def test_a_stored_and_an_archived_image_share_their_link_and_name() -> None:
    assert StoredImage.link is ArchivedImage.link and StoredImage.name is ArchivedImage.name
    when = datetime(2026, 12, 7, tzinfo=UTC)
    stored = StoredImage("images/users/1/a.png", "1", 5, when, "image/png", url=None, path="/x/a.png")
    archived = ArchivedImage("archive/users/1/a.webp", "1", 5, "images/users/1/a.png", when, when, "image/webp",
                             url="https://s3/a.webp", path="/x/a.webp")
    assert (stored.link, stored.name) == ("/x/a.png", "a.png")
    assert (archived.link, archived.name) == ("https://s3/a.webp", "a.webp")


_NAME = "20261207T101010Z-ab12cd34.png"
_KINDS = [
    (keys.check_image_key, keys.USERS_PREFIX, "an image key", "key"),
    (keys.check_archived_key, keys.ARCHIVE_USERS_PREFIX, "an archived image", "archived_key"),
]


@pytest.mark.parametrize(("check", "prefix", "what", "parameter"), _KINDS)
def test_an_image_key_and_an_archived_key_are_checked_alike(check: Any, prefix: str, what: str, parameter: str) -> None:
    assert check("12", _NAME) == check("12", f"{prefix}12/{_NAME}") == f"{prefix}12/{_NAME}"
    for bad in (None, "", "x" * 201):
        with pytest.raises(InvalidKey, match=rf"^That is not {what} of the user\.$") as refused:
            check("12", bad)
        assert (refused.value.parameter, refused.value.value, refused.value.reason) == (parameter, None, "not_a_key")
    for bad in ("../13/" + _NAME, f"{prefix}12/../{_NAME}", "notes.txt", f"{prefix}12/sub/{_NAME}"):
        with pytest.raises(InvalidKey, match=f"is not {what} of the user") as refused:
            check("12", bad)
        assert (refused.value.parameter, refused.value.value, refused.value.reason) == (parameter, bad, "not_a_key")
    with pytest.raises(InvalidKey) as refused:
        check("12", f"{prefix}13/{_NAME}")
    assert (refused.value.parameter, refused.value.reason) == (parameter, "other_user")


def test_who_owns_a_key_is_read_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    owner = keys._owner

    def spy(key: str, prefix: str) -> str | None:
        read.append(prefix)
        return owner(key, prefix)

    monkeypatch.setattr(keys, "_owner", spy)
    for check, prefix, _, _ in _KINDS:
        check("12", _NAME)
        assert read[-1] == prefix


@pytest.mark.parametrize("fault", [StorageUnavailable("disk on fire"), RuntimeError("a bug")])
@pytest.mark.parametrize(
    ("record", "event", "logged"),
    [
        (EventLog.record, UsageEvent(time=_WHEN, kind="imagine", user_id="12", outcome="ok", provider="offline"),
         "Usage event not recorded (imagine ok)"),
        (EventLog.record_audit, AuditEvent(time=_WHEN, actor="cli", action="reconcile"),
         "Audit record not written (reconcile by cli)"),
    ],
)
def test_a_usage_event_and_an_audit_record_are_written_by_one_writer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, record: Any, event: Any, logged: str,
    fault: Exception,
) -> None:
    """Both are one object each, never raise, and log what was lost: one writer does it."""
    written: list[str] = []

    class Broken:
        def put_object(self, key: str, *args: Any) -> None:
            written.append(key)
            raise fault

    write = EventLog._write
    monkeypatch.setattr(EventLog, "_write", lambda self, *a: (written.append("shared"), write(self, *a))[1])
    events = EventLog(Broken(), clock=lambda: _WHEN)  # type: ignore[arg-type]
    assert record(events, event) is False
    assert written[0] == "shared" and len(written) == 2
    assert logged in caplog.text


def test_the_cli_describes_a_stored_and_an_archived_image_in_one_place() -> None:
    from abby_cli.commands.images import image_payload

    stored = StoredImage("images/users/1/a.png", "1", 5, _WHEN, "image/png", path="/x/a.png")
    archived = ArchivedImage("archive/users/1/a.webp", "1", 4, "images/users/1/a.png", _WHEN, _WHEN, "image/webp",
                             url="https://s3/a.webp")
    assert list(image_payload(stored).items()) == [
        ("key", stored.key), ("name", "a.png"), ("size", 5), ("created_at", _WHEN.isoformat()),
        ("content_type", "image/png"), ("path", "/x/a.png"),
    ]
    assert list(image_payload(archived).items()) == [
        ("key", archived.key), ("name", "a.webp"), ("size", 4), ("original_key", "images/users/1/a.png"),
        ("created_at", _WHEN.isoformat()), ("archived_at", _WHEN.isoformat()), ("url", "https://s3/a.webp"),
    ]


@pytest.mark.parametrize(
    ("fake", "path"),
    [(FakeStability, "/v1/user/balance"), (FakeA1111, "/sdapi/v1/options"), (FakeComfyUI, "/system_stats"),
     (FakeDiscordOAuth, "/oauth2/authorize")],
)
def test_every_fake_server_runs_on_one_runner(fake: Any, path: str) -> None:
    """Each fake serves by the one runner: on the caller's loop or threaded, with one ``url``."""
    assert issubclass(fake, FakeServer)
    with fake.threaded() as server:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        answer = httpx.get(server.url + path, timeout=30)
        assert answer.status_code < 500, answer.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + path, timeout=30)


def test_one_clock_stands_still_or_runs_and_the_test_moves_it() -> None:
    from tests.fixtures.clocks import Clock, Ticks

    stopped = Clock(_WHEN)
    assert stopped() == stopped() == stopped.now == _WHEN
    stopped.advance(hours=1)
    stopped.now += timedelta(minutes=1)
    assert stopped() == _WHEN + timedelta(hours=1, minutes=1)
    running = Clock(running=True)
    before = datetime.now(UTC)
    running.set(_WHEN)
    running.advance(days=1)
    seen = running()
    passed = datetime.now(UTC) - before  # real time goes on under a running clock
    assert _WHEN + timedelta(days=1) <= seen <= _WHEN + timedelta(days=1) + passed
    ticks = Ticks(1000.0)
    ticks.advance(2.5)
    assert ticks() == ticks.now == 1002.5 and Ticks()() == 0.0
