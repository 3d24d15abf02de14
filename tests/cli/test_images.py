"""``abby quota``, ``abby gallery`` and ``abby delete``."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import USER, Invoke, one_json

QUOTA_KEYS = {
    "user_id", "daily_used", "daily_limit", "resets_at", "user_bytes", "user_limit_bytes",
    "global_bytes", "global_limit_bytes",
}


def _make(abby: Invoke, n: int) -> list[dict[str, object]]:
    made = []
    for i in range(n):
        result = abby("imagine", f"picture {i}", "--user", USER, "--provider", "offline", "--json")
        assert result.exit_code == 0, result.output
        made.append(one_json(result))
    return made


def test_quota_fresh_user(abby: Invoke) -> None:
    result = abby("quota", USER, "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert set(obj) >= QUOTA_KEYS
    assert (obj["user_id"], obj["daily_used"], obj["daily_limit"], obj["user_bytes"]) == (USER, 0, 5, 0)
    assert obj["user_limit_bytes"] == 500_000_000 and obj["global_limit_bytes"] == 5_000_000_000
    assert obj["resets_at"].endswith("T00:00:00+00:00")
    text = abby("quota", USER)
    assert text.exit_code == 0 and "0/5 today · 0.0 of 500 MB · resets 00:00 UTC" in text.stdout


def test_quota_follows_generations(abby: Invoke) -> None:
    made = _make(abby, 2)
    obj = one_json(abby("quota", USER, "--json"))
    assert obj["daily_used"] == 2 and obj["daily_left"] == 3
    assert obj["user_bytes"] == sum(int(m["size"]) for m in made) == obj["global_bytes"]  # type: ignore[call-overload]


def test_quota_settings_come_from_env_file(abby: Invoke, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_USER_DAILY_GENS=9\nMAX_USER_STORAGE_MB=50\n")
    obj = one_json(abby("quota", USER, "--json"))
    assert obj["daily_limit"] == 9 and obj["user_limit_bytes"] == 50_000_000


def test_quota_bad_user(abby: Invoke) -> None:
    result = abby("quota", "not-a-user", "--json")
    assert result.exit_code == 1 and one_json(result)["error"]["code"] == "invalid_user"


def test_gallery_shape_and_limit(abby: Invoke) -> None:
    made = _make(abby, 3)
    result = abby("gallery", USER, "--json")
    assert result.exit_code == 0
    obj = one_json(result)
    assert obj["count"] == 3 and obj["user_id"] == USER
    assert {i["key"] for i in obj["images"]} == {m["key"] for m in made}
    for image in obj["images"]:
        assert {"key", "size", "created_at", "path"} <= set(image) and "url" not in image
        assert Path(image["path"]).stat().st_size == image["size"]
    limited = one_json(abby("gallery", USER, "--limit", "1", "--json"))
    assert limited["count"] == 1 and limited["images"][0]["key"] == obj["images"][0]["key"]
    text = abby("gallery", USER)
    assert all(str(image["path"]) in text.stdout for image in obj["images"])


def test_gallery_empty(abby: Invoke) -> None:
    obj = one_json(abby("gallery", USER, "--json"))
    assert obj["images"] == [] and obj["count"] == 0
    assert "no images" in abby("gallery", USER).stdout


def test_delete_frees_quota(abby: Invoke) -> None:
    made = _make(abby, 2)
    target = made[0]
    name = str(target["key"]).rsplit("/", 1)[-1]
    result = abby("delete", USER, name, "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert obj["freed_bytes"] == target["size"] and obj["key"] == name
    assert obj["quota"]["user_bytes"] == made[1]["size"]
    assert not Path(str(target["path"])).exists()
    again = abby("delete", USER, name, "--json")
    assert again.exit_code == 1 and one_json(again)["error"]["code"] == "image_not_found"


def test_delete_refuses_other_users_and_traversal(abby: Invoke) -> None:
    made = _make(abby, 1)
    other = abby("delete", "223456789012345678", str(made[0]["key"]), "--json")
    assert other.exit_code == 1 and one_json(other)["error"]["code"] == "invalid_key"
    sneaky = abby("delete", USER, "../../ledger/global.json", "--json")
    assert sneaky.exit_code == 1 and one_json(sneaky)["error"]["code"] == "invalid_key"
    assert Path(str(made[0]["path"])).exists()
