"""``abby imagine``, ``img2img`` and ``upscale`` through the whole pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import USER, Invoke, one_json, png_file
from tests.fixtures.fake_stability import FakeStability, Reply


def test_readme_first_command_on_a_fresh_machine(tmp_path: Path) -> None:
    """No .env, no key, no server: the console script itself, as a user would run it."""
    script = Path(sys.executable).parent / "abby"
    assert not (tmp_path / ".env").exists() and not (tmp_path / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "imagine", "a lighthouse at dawn", "--user", USER, "--provider", "offline"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    images = list((tmp_path / "shared" / "images" / "users" / USER).glob("*.png"))
    assert len(images) == 1
    assert str(images[0].resolve()) in done.stdout
    assert "1/5 today" in done.stdout and "of 500 MB" in done.stdout and "resets 00:00 UTC" in done.stdout
    assert "seed" in done.stdout


def test_imagine_json_shape_and_out_copy(abby: Invoke, offline: None, tmp_path: Path) -> None:
    result = abby("imagine", "a red fox", "--user", USER, "--seed", "42", "--aspect-ratio", "16:9",
                  "--out", "fox.png", "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert obj["seed"] == 42 and obj["kind"] == "imagine"
    assert obj["key"].startswith(f"images/users/{USER}/") and "url" not in obj
    saved = Path(obj["path"])
    assert saved.is_file() and saved.stat().st_size == obj["size"]
    assert (tmp_path / "fox.png").read_bytes() == saved.read_bytes()
    assert obj["width"] > obj["height"]
    quota = obj["quota"]
    assert quota["daily_used"] == 1 and quota["daily_limit"] == 5 and quota["user_bytes"] == obj["size"]
    assert set(quota) >= {"user_id", "resets_at", "user_limit_bytes", "global_bytes", "global_limit_bytes"}


def test_daily_limit_after_five(abby: Invoke, offline: None) -> None:
    for n in range(1, 6):
        ok = abby("imagine", f"a cat number {n}", "--user", USER, "--json")
        assert ok.exit_code == 0, ok.output
        assert one_json(ok)["quota"]["daily_used"] == n
    refused = abby("imagine", "one more cat", "--user", USER, "--json")
    assert refused.exit_code == 1
    error = one_json(refused)["error"]
    assert error["code"] == "daily_limit" and error["used"] == 5 and error["limit"] == 5
    text = abby("imagine", "one more cat", "--user", USER)
    assert text.exit_code == 1 and "daily_limit" in text.stderr and text.stdout == ""


def test_bad_user_id(abby: Invoke, offline: None) -> None:
    result = abby("imagine", "a cat", "--user", "../12", "--json")
    assert result.exit_code == 1
    assert one_json(result)["error"]["code"] == "invalid_user"


def test_missing_key_with_stability_provider(abby: Invoke) -> None:
    result = abby("imagine", "a cat", "--user", USER, "--provider", "stability", "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "not_configured" and "STABILITY_API_KEY" in error["message"]


def test_invalid_prompt(abby: Invoke, offline: None) -> None:
    result = abby("imagine", "   ", "--user", USER, "--json")
    assert result.exit_code == 1 and one_json(result)["error"]["code"] == "invalid_prompt"


def test_img2img_and_upscale(abby: Invoke, offline: None, tmp_path: Path) -> None:
    source = png_file(tmp_path / "in.png")
    remade = abby("img2img", str(source), "make it blue", "--user", USER, "--strength", "0.4", "--json")
    assert remade.exit_code == 0, remade.output
    obj = one_json(remade)
    assert obj["kind"] == "img2img" and Path(obj["path"]).is_file()
    bigger = abby("upscale", str(source), "--user", USER, "--mode", "fast", "--json")
    assert bigger.exit_code == 0, bigger.output
    up = one_json(bigger)
    assert up["kind"] == "upscale" and up["width"] == 4 * 256 and up["quota"]["daily_used"] == 2
    text = abby("upscale", str(source), "--user", USER)
    assert text.exit_code == 0 and "Saved" in text.stdout and "3/5 today" in text.stdout


def test_unreadable_image_file(abby: Invoke, offline: None, tmp_path: Path) -> None:
    missing = abby("upscale", str(tmp_path / "nope.png"), "--user", USER, "--json")
    assert missing.exit_code == 1
    error = one_json(missing)["error"]
    assert error["code"] == "invalid_image" and "does not exist" in error["message"]
    (tmp_path / "notes.txt").write_text("not an image")
    garbage = abby("img2img", "notes.txt", "a cat", "--user", USER, "--json")
    assert garbage.exit_code == 1 and one_json(garbage)["error"]["code"] == "invalid_image"
    folder = abby("upscale", str(tmp_path), "--user", USER)
    assert folder.exit_code == 1 and "invalid_image" in folder.stderr
    quota = one_json(abby("quota", USER, "--json"))
    assert quota["daily_used"] == 0  # nothing was charged


def test_imagine_with_stability(abby: Invoke, stability: FakeStability) -> None:
    result = abby("imagine", "a lighthouse", "--user", USER, "--style", "photographic", "--json")
    assert result.exit_code == 0, result.output
    obj = one_json(result)
    assert obj["provider"] == "stability" and stability.routes_hit("core") == 1
    assert stability.requests[-1].fields["style_preset"] == "photographic"


def test_generation_errors_are_not_charged(abby: Invoke, stability: FakeStability) -> None:
    stability.script("core", Reply(finish_reason="CONTENT_FILTERED"))
    filtered = abby("imagine", "a lighthouse", "--user", USER, "--json")
    assert filtered.exit_code == 1 and one_json(filtered)["error"]["code"] == "content_filtered"
    stability.script("core", Reply.error(401, "bad key"))
    refused = abby("imagine", "a lighthouse", "--user", USER, "--json")
    assert refused.exit_code == 1 and one_json(refused)["error"]["code"] == "generation_auth"
    stability.script("core", Reply.error(503, "down"))
    down = abby("imagine", "a lighthouse", "--user", USER, "--json")
    assert down.exit_code == 1 and one_json(down)["error"]["code"] == "generation_unavailable"
    assert json.loads(abby("quota", USER, "--json").stdout)["daily_used"] == 0


def test_out_folder_missing_is_refused_before_charging(abby: Invoke, offline: None, tmp_path: Path) -> None:
    result = abby("imagine", "a cat", "--user", USER, "--out", str(tmp_path / "no" / "x.png"), "--json")
    assert result.exit_code == 1 and one_json(result)["error"]["code"] == "invalid_input"
    assert one_json(abby("quota", USER, "--json"))["daily_used"] == 0


def test_a_copy_that_cannot_be_written_does_not_turn_a_charged_image_into_a_failure(
    abby: Invoke, offline: None, tmp_path: Path
) -> None:
    target = tmp_path / "a-folder"
    target.mkdir()  # writing a file over a folder fails after the image was stored
    result = abby("imagine", "a cat", "--user", USER, "--out", str(target), "--json")
    body = one_json(result)
    assert result.exit_code == 0 and body["ok"] is True
    assert "out" not in body and "could not be written" in body["out_error"]
    assert body["key"] and body["quota"]["daily_used"] == 1
    text = abby("imagine", "a dog", "--user", USER, "--out", str(target))
    assert text.exit_code == 0 and "could not be written" in text.stdout + text.stderr


def test_upscale_conservative_and_creative_take_a_prompt(abby: Invoke, offline: None, tmp_path: Path) -> None:
    source = png_file(tmp_path / "in.png")
    for mode in ("conservative", "creative"):
        done = abby("upscale", str(source), "--user", USER, "--mode", mode, "--prompt", "a sunny field", "--json")
        assert done.exit_code == 0, done.output
        assert one_json(done)["kind"] == "upscale"
    missing = abby("upscale", str(source), "--user", USER, "--mode", "creative", "--json")
    error = one_json(missing)["error"]
    assert missing.exit_code == 1 and error["code"] == "invalid_prompt" and "--prompt" in error["message"]
    help_text = abby("upscale", "--help").stdout
    assert all(word in help_text for word in ("fast", "conservative", "creative", "--prompt"))


def test_a_bad_choice_names_the_option_typed(abby: Invoke, offline: None) -> None:
    ratio = abby("imagine", "a cat", "--user", USER, "--aspect-ratio", "7:3", "--json")
    error = one_json(ratio)["error"]
    assert ratio.exit_code == 1 and error["code"] == "invalid_input"
    assert error["message"].startswith("--aspect-ratio must be one of 21:9, 16:9") and "'7:3'" in error["message"]
    assert "aspect_ratio" not in error["message"] and error["option"] == "--aspect-ratio"
    assert error["value"] == "7:3" and "16:9" in error["allowed"]
    style = abby("imagine", "a cat", "--user", USER, "--style", "cubist")
    assert style.exit_code == 1
    assert style.stderr.startswith("✘ invalid_input: --style must be one of 3d-model,") and "'cubist'" in style.stderr
    assert "style_preset" not in style.stderr
    assert "0/5 today" in abby("quota", USER).stdout  # nothing was charged


def test_imagine_is_refused_while_the_user_has_a_generation_running_elsewhere(
    abby: Invoke, offline: None, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from abby_core.storage import FilesystemBackend
    from abby_core.storage.slots import MemberSlots

    # The bot (or another 'abby imagine') on the same storage is generating for this user.
    other = MemberSlots(FilesystemBackend(tmp_path / "shared"), clock=lambda: datetime.now(UTC))
    lease = other.claim(USER)
    assert lease is not None
    refused = abby("imagine", "a second cat", "--user", USER, "--json")
    assert refused.exit_code == 1
    error = one_json(refused)["error"]
    assert error["code"] == "user_busy" and "already has a generation running" in error["message"]
    assert not (tmp_path / "shared" / "images" / "users" / USER).exists(), "nothing was made or charged"
    text = abby("imagine", "a second cat", "--user", USER)
    assert text.exit_code == 1 and "run again when it has finished" in text.stderr

    assert other.release(lease)
    done = abby("imagine", "a cat", "--user", USER, "--json")
    assert done.exit_code == 0, done.output
    assert one_json(done)["quota"]["daily_used"] == 1
    assert other.holder(USER) is None, "the command gave the user's slot back"
