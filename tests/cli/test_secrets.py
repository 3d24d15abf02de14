"""No command prints a secret, in text or JSON, on success or failure."""

from __future__ import annotations

import pytest

from tests.cli.conftest import USER, Invoke, one_json
from tests.fixtures.fake_stability import FakeStability

STABILITY_SECRET = "sk-RECOGNISABLE-stability-4f9a8b7c6d5e"
S3_SECRET = "RECOGNISABLE-s3-secret-1a2b3c4d5e6f"
S3_ACCESS = "RECOGNISABLEACCESSKEY"
GOOD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.RECOGN.RECOGNISABLEtokenPartThree1234567890"
BAD_TOKEN = "RECOGNISABLE-not-a-token"
SECRETS = (STABILITY_SECRET, S3_SECRET, S3_ACCESS, "RECOGN", "RECOGNISABLE")


def _scan(*results: object) -> None:
    for result in results:
        text = result.stdout + result.stderr  # type: ignore[attr-defined]
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in: {text[:400]!r}"


@pytest.mark.parametrize("token", [GOOD_TOKEN, BAD_TOKEN])
def test_no_secret_in_any_output(
    abby: Invoke, stability: FakeStability, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    # A key the fake server refuses, S3 credentials that are set but unused, and a token.
    monkeypatch.setenv("STABILITY_API_KEY", STABILITY_SECRET)
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("S3_ACCESS_KEY_ID", S3_ACCESS)
    monkeypatch.setenv("DISCORD_TOKEN", token)
    results = [
        abby("doctor"), abby("doctor", "--json"), abby("doctor", "--settings"), abby("doctor", "--settings", "--json"),
        abby("imagine", "a cat", "--user", USER), abby("imagine", "a cat", "--user", USER, "--json"),
        abby("imagine", "a cat", "--user", USER, "--provider", "offline", "--json"),
        abby("quota", USER), abby("gallery", USER, "--json"), abby("storage", "init"),
    ]
    refused = one_json(results[5])
    assert refused["error"]["code"] == "generation_auth"  # the key really was used and refused
    doctor = {c["name"]: c["status"] for c in one_json(results[1])["checks"]}
    assert doctor["stability"] == "fail"
    assert doctor["discord_token"] == ("ok" if token == GOOD_TOKEN else "fail")
    settings = one_json(results[3])["settings"]
    assert settings["STABILITY_API_KEY"] == settings["S3_SECRET_ACCESS_KEY"] == settings["DISCORD_TOKEN"] == "********"
    _scan(*results)


def test_no_secret_in_config_errors(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABILITY_API_KEY", STABILITY_SECRET)
    monkeypatch.setenv("DISCORD_TOKEN", GOOD_TOKEN)
    monkeypatch.setenv("MAX_USER_STORAGE_MB", "-4")
    results = [abby("quota", USER), abby("quota", USER, "--json"), abby("doctor"), abby("doctor", "--json")]
    assert all(r.exit_code == 2 for r in results)
    checks = one_json(results[3])["checks"]
    assert checks[0]["name"] == "config" and checks[0]["status"] == "fail"
    assert "MAX_USER_STORAGE_MB" in checks[0]["detail"]
    assert {c["status"] for c in checks[1:]} == {"skip"}
    _scan(*results)
