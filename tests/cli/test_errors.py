"""The one error mapping, configuration errors, usage errors and unexpected errors."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from abby_cli.errors import EXIT_CONFIG, EXIT_STORAGE, EXIT_USER, describe_error
from abby_core import errors
from abby_core.storage import StorageManager
from tests.cli.conftest import USER, Invoke, one_json

EXPECTED_EXIT = {
    "config_error": EXIT_CONFIG, "not_configured": EXIT_CONFIG,
    "storage_unavailable": EXIT_STORAGE, "save_outcome_unknown": EXIT_STORAGE, "ledger_corrupt": EXIT_STORAGE,
    "storage_error": EXIT_STORAGE,
    "reservation_invalid": EXIT_STORAGE,
}


def _instances() -> list[errors.AbbyError]:
    made: list[errors.AbbyError] = []
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is errors.DailyLimitExceeded:
            made.append(cls(used=5, limit=5, resets_at=datetime(2030, 1, 2, tzinfo=UTC)))
        elif cls in (errors.UserStorageFull, errors.GlobalStorageFull):
            made.append(cls(used=2, limit=1))
        elif cls is errors.QuotaExceeded:
            made.append(cls("full", used=1, limit=1))
        elif cls is errors.UserBlocked:
            made.append(cls(USER))
        elif cls is errors.ImageNotFound:
            made.append(cls("x.png"))
        else:
            made.append(cls("a message"))
    return made


def _variants() -> list[errors.AbbyError]:
    """One of every core error, and one per reason for those that advise by reason."""
    made = _instances()
    for name in errors.__all__:
        cls = getattr(errors, name)
        made += [cls("a message", parameter="key", value="x.png", reason=r) for r in getattr(cls, "reasons", ())]
    return made


@pytest.mark.parametrize(
    "exc", _variants(), ids=lambda e: f"{type(e).__name__}-{getattr(e, 'reason', None) or ''}".rstrip("-")
)
def test_every_core_error_keeps_its_code(exc: errors.AbbyError) -> None:
    """The core's message is for logs: the CLI words every class (and reason) for an operator."""
    described = describe_error(exc)
    assert described.code == exc.code
    assert described.message != exc.message and "button" not in described.message.lower()
    assert described.exit_code == EXPECTED_EXIT.get(exc.code, EXIT_USER)


def test_image_not_found_is_the_users_error() -> None:
    assert describe_error(errors.ImageNotFound("k")).exit_code == EXIT_USER


def test_quota_errors_carry_their_numbers() -> None:
    error = describe_error(errors.UserStorageFull(used=3, limit=2)).as_dict()
    assert (error["code"], error["used"], error["limit"]) == ("user_storage_full", 3, 2)
    assert error["limit_name"] == "user_storage"


def test_unexpected_exceptions_are_generic() -> None:
    described = describe_error(RuntimeError("password=hunter2"))
    assert described.code == "internal_error" and "hunter2" not in described.message


def test_bad_config_variable_json(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_USER_DAILY_GENS", "lots")
    monkeypatch.setenv("STORAGE_BACKEND", "floppy")
    result = abby("quota", USER, "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "config_error"
    assert len(error["problems"]) == 2
    assert any("MAX_USER_DAILY_GENS" in p for p in error["problems"])
    assert any("STORAGE_BACKEND" in p for p in error["problems"])


def test_bad_config_variable_text_one_line_each(abby: Invoke, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_USER_DAILY_GENS=0\nS3_BUCKET=Bad_Bucket\n")
    result = abby("imagine", "a cat", "--user", USER, "--provider", "offline")
    assert result.exit_code == 2 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 2
    assert "MAX_USER_DAILY_GENS" in lines[0] or "MAX_USER_DAILY_GENS" in lines[1]
    assert not (tmp_path / "shared").exists()


def test_help_works_with_a_bad_config(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_USER_DAILY_GENS", "lots")
    result = abby("quota", "--help")
    assert result.exit_code == 0 and "USER" in result.stdout


def test_usage_error_with_json_is_one_object(abby: Invoke) -> None:
    result = abby("imagine", "a cat", "--json")  # no --user
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "usage_error" and "--user" in error["message"]
    plain = abby("imagine", "a cat")
    assert plain.exit_code == 2 and plain.stdout == "" and "--user" in plain.stderr


def test_unexpected_error_in_a_command(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(self: StorageManager, user_id: object, **kw: object) -> None:
        raise RuntimeError("secret-token-in-foreign-text")

    monkeypatch.setattr(StorageManager, "get_quota_status", boom)
    result = abby("quota", USER, "--json")
    assert result.exit_code == 1
    error = one_json(result)["error"]
    assert error["code"] == "internal_error"
    assert "secret-token" not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    text = abby("quota", USER)
    assert text.exit_code == 1 and "internal_error" in text.stderr and "secret-token" not in text.stderr
    debug = abby("--debug", "quota", USER)
    assert isinstance(debug.exception, RuntimeError)


def test_storage_unavailable_exit_code(abby: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "blocker").write_text("a file where the storage folder should be")
    monkeypatch.setenv("STORAGE_ROOT", str(tmp_path / "blocker" / "shared"))
    result = abby("imagine", "a cat", "--user", USER, "--provider", "offline", "--json")
    assert result.exit_code == 3
    assert one_json(result)["error"]["code"] == "storage_unavailable"


def test_interrupted_command_still_prints_one_json_object(
    abby: Invoke, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abby_core.pipeline import ImageService

    async def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageService, "imagine", interrupted)
    result = abby("imagine", "a cat", "--user", USER, "--json")
    assert result.exit_code == 130
    assert one_json(result) == {"ok": False, "error": {"code": "interrupted", "message": "Interrupted."}}


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("upscale", "in.png", "--user", USER, "--colour", "red"), "--colour"),
        (("quota", USER, "--days", "3"), "--days"),
        (("stats", "--days", "lots"), "lots"),
        (("imagine", "a cat"), "--user"),
        (("frobnicate",), "frobnicate"),
    ],
)
def test_usage_errors_are_one_line(abby: Invoke, args: tuple[str, ...], named: str) -> None:
    """The docs' promise: ``✘ usage_error: message`` on stderr, exit 2; no boxed panel, nothing on stdout."""
    result = abby(*args)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘ usage_error: ") and named in lines[0], result.stderr
    assert not set("╭╰│─") & set(result.stderr)


def test_version(abby: Invoke) -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    result = abby("--version")
    assert result.exit_code == 0 and result.stdout == f"abby {project['version']}\n"
    assert one_json(abby("--version", "--json")) == {"ok": True, "version": project["version"]}


def test_delete_speaks_to_the_operator(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's reader is the operator, not the member: no "your gallery"."""
    monkeypatch.setenv("IMAGE_PROVIDER", "offline")
    bad = abby("delete", USER, "nope.png")
    missing = abby("delete", USER, "20200101T000000Z-00000000.png")
    other = abby("delete", USER, "images/users/223456789012345678/20200101T000000Z-00000000.png")
    for result, code in ((bad, "invalid_key"), (missing, "image_not_found"), (other, "invalid_key")):
        assert result.exit_code == 1 and result.stderr.startswith(f"✘ {code}: "), result.stderr
        assert "your" not in result.stderr.lower() and "you " not in result.stderr.lower(), result.stderr
        assert "this user" in result.stderr and "abby gallery" in result.stderr
    assert "'nope.png'" in bad.stderr and "'20200101T000000Z-00000000.png'" in missing.stderr


def test_ctrl_c_outside_a_command_body_is_an_interruption(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """Doctor runs its checks itself: Ctrl+C there is reported like anywhere else (130, one JSON object)."""
    import abby_cli.commands.doctor as doctor

    async def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(doctor, "_checks", interrupted)
    result = abby("doctor", "--json")
    assert result.exit_code == 130 and one_json(result)["error"]["code"] == "interrupted"
    plain = abby("doctor")
    assert plain.exit_code == 130 and "Interrupted." in plain.stderr
