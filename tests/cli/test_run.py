"""``abby run``: the bot refuses to start without DISCORD_TOKEN, with one clear line."""

from __future__ import annotations

from tests.cli.conftest import Invoke, one_json


def test_run_without_token(abby: Invoke) -> None:
    result = abby("run")
    assert result.exit_code != 0
    assert "DISCORD_TOKEN" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_run_without_token_json(abby: Invoke) -> None:
    result = abby("run", "--json")
    assert result.exit_code != 0
    error = one_json(result)["error"]
    assert error["code"] == "not_configured" and "DISCORD_TOKEN" in error["message"]
