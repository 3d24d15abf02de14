"""Small CLI fixes: bad endpoint URLs, huge input files, --days range, --user everywhere,
random seeds, flags in help, and the operator's wording of quota and configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from abby_cli.commands.generate import read_image
from abby_cli.errors import describe_error
from abby_core import errors
from abby_core.errors import InvalidImage
from tests.cli.conftest import USER, Invoke, one_json, png_file

ROOT = Path(__file__).resolve().parents[2]
BAD_URLS = ["http://[::1", "http://exa mple.com", "http://:23333", "http://%zz", "http://host:0", "http://host:99999"]


# -- endpoint URLs --------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL", "STABILITY_API_HOST"])
@pytest.mark.parametrize("url", BAD_URLS)
def test_doctor_reports_a_bad_endpoint_as_a_config_error(
    abby: Invoke, monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv(variable, url)
    result = abby("doctor", "--json")
    assert result.exit_code == 2, result.output
    obj = one_json(result)
    assert obj["error"]["code"] == "config_error"
    config = obj["checks"][0]
    assert config["name"] == "config" and config["status"] == "fail" and variable in config["detail"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_other_commands_report_a_bad_endpoint_as_a_config_error(
    abby: Invoke, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("S3_ENDPOINT_URL", url)
    result = abby("quota", USER, "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "config_error" and any("S3_ENDPOINT_URL" in p for p in error["problems"])
    text = abby("storage", "stats")
    assert text.exit_code == 2 and "config_error" in text.stderr and "S3_ENDPOINT_URL" in text.stderr


def test_endpoint_credentials_are_never_printed(abby: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_PUBLIC_ENDPOINT_URL", "http://minio:hunter2@localhost:9000")
    shown = abby("doctor", "--settings", "--json")
    assert "hunter2" not in shown.stdout + shown.stderr
    assert one_json(shown)["settings"]["S3_PUBLIC_ENDPOINT_URL"] == "http://***@localhost:9000"
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:hunter2@[::1")
    refused = abby("doctor")
    assert refused.exit_code == 2 and "S3_ENDPOINT_URL" in refused.stdout
    assert "hunter2" not in refused.stdout + refused.stderr


# -- input files ----------------------------------------------------------------------


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(1024**3)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="10 MiB"):
            read_image(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_a_huge_sparse_file_through_the_cli(abby: Invoke, offline: None, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(1024**3)
    for command in (("upscale", str(big)), ("img2img", str(big), "a cat")):
        result = abby(*command, "--user", USER, "--json")
        assert result.exit_code == 1
        error = one_json(result)["error"]
        assert error["code"] == "invalid_image" and "10 MiB" in error["message"]


def test_an_endless_device_is_read_only_up_to_the_limit() -> None:
    # In a child with a memory ceiling: reading /dev/zero whole would end in MemoryError.
    code = (
        "import resource, re\n"
        "from pathlib import Path\n"
        "from abby_cli.commands.generate import read_image\n"
        "from abby_core.errors import InvalidImage\n"
        "vm = int(re.search(r'VmSize:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 1024 * 1024, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    read_image(Path('/dev/zero'))\n"
        "except InvalidImage as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused:") and "10 MiB" in done.stdout


def test_dev_zero_through_the_cli(abby: Invoke, offline: None) -> None:
    result = abby("upscale", "/dev/zero", USER, "--json")
    assert result.exit_code == 1
    error = one_json(result)["error"]
    assert error["code"] == "invalid_image" and "10 MiB" in error["message"]


def test_an_image_just_under_the_limit_is_still_read(tmp_path: Path) -> None:
    source = png_file(tmp_path / "in.png")
    assert read_image(source) == source.read_bytes()
    assert read_image(source, limit=source.stat().st_size) == source.read_bytes()
    with pytest.raises(InvalidImage, match="too large"):
        read_image(source, limit=source.stat().st_size - 1)


# -- cleanup --days -------------------------------------------------------------------


@pytest.mark.parametrize("days", ["3650000", "36501", "-1", "99999999999999999999999"])
def test_cleanup_refuses_days_out_of_range(abby: Invoke, days: str) -> None:
    result = abby("cleanup", "--days", days, "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "usage_error" and "0 to 36500" in error["message"]
    text = abby("cleanup", "--days", days)
    assert text.exit_code == 2 and "0 to 36500" in text.stderr and "internal_error" not in text.stderr


def test_cleanup_accepts_the_largest_days(abby: Invoke) -> None:
    result = abby("cleanup", "--days", "36500", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert one_json(result)["days"] == 36500


# -- the user id, as an argument or with --user ----------------------------------------


def test_user_as_argument_or_option_everywhere(abby: Invoke, offline: None, tmp_path: Path) -> None:
    made = one_json(abby("imagine", "a cat", USER, "--json"))
    assert made["user_id"] == USER
    source = png_file(tmp_path / "in.png")
    assert one_json(abby("img2img", str(source), "a dog", USER, "--json"))["user_id"] == USER
    assert one_json(abby("upscale", str(source), USER, "--json"))["user_id"] == USER
    assert one_json(abby("quota", "--user", USER, "--json"))["daily_used"] == 3
    assert one_json(abby("quota", "-u", USER, USER, "--json"))["daily_used"] == 3
    assert one_json(abby("gallery", "--user", USER, "--json"))["count"] == 3
    deleted = abby("delete", "--user", USER, made["key"], "--json")
    assert one_json(deleted)["key"] == made["key"]
    assert one_json(abby("gallery", USER, "--json"))["count"] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("quota",),
        ("gallery",),
        ("delete",),
        ("delete", "--user", USER),
        ("imagine", "a cat"),
        ("quota", USER, "--user", "987654321098765432"),
        ("gallery", USER, "--user", "987654321098765432"),
        ("delete", USER, "k.png", "--user", "987654321098765432"),
        ("imagine", "a cat", USER, "--user", "987654321098765432"),
    ],
)
def test_missing_or_conflicting_user_is_a_usage_error(abby: Invoke, args: tuple[str, ...]) -> None:
    result = abby(*args, "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "usage_error"
    assert "--user" in error["message"] or "KEY" in error["message"]
    plain = abby(*args)
    assert plain.exit_code == 2 and plain.stdout == ""


# -- seeds ----------------------------------------------------------------------------


def test_without_a_seed_each_run_is_a_new_image(abby: Invoke, offline: None) -> None:
    runs = [one_json(abby("imagine", "the same prompt", USER, "--json")) for _ in range(3)]
    seeds = {run["seed"] for run in runs}
    assert len(seeds) == 3 and 0 not in seeds
    assert len({Path(run["path"]).read_bytes() for run in runs}) == 3
    again = one_json(abby("imagine", "the same prompt", USER, "--seed", str(runs[0]["seed"]), "--json"))
    assert again["seed"] == runs[0]["seed"]
    assert Path(again["path"]).read_bytes() == Path(runs[0]["path"]).read_bytes()


# -- help -----------------------------------------------------------------------------

COMMANDS = [
    (), ("run",), ("imagine",), ("img2img",), ("upscale",), ("quota",), ("gallery",), ("delete",), ("cleanup",),
    ("doctor",), ("storage",), ("storage", "init"), ("storage", "stats"), ("storage", "reconcile"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "abby")
def test_boolean_flags_read_as_flags_in_help(abby: Invoke, command: tuple[str, ...]) -> None:
    result = abby(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout and "<bool>" not in result.stdout


def test_flags_still_work_after_help(abby: Invoke) -> None:
    assert abby("cleanup", "--help").exit_code == 0
    result = abby("cleanup", "--dry-run", "--json")
    assert result.exit_code == 0 and one_json(result)["dry_run"] is True


# -- wording for an operator ----------------------------------------------------------


def test_quota_errors_tell_an_operator_what_to_run() -> None:
    user_full = describe_error(errors.UserStorageFull(used=3_000_000, limit=3_000_000)).message
    assert "abby delete" in user_full and "abby cleanup" in user_full and "3.0 MB of 3.0 MB" in user_full
    assert "button" not in user_full.lower()
    server_full = describe_error(errors.GlobalStorageFull(used=5, limit=5)).message
    assert "abby cleanup" in server_full and "MAX_GLOBAL_STORAGE_MB" in server_full


def test_daily_limit_through_the_cli_names_the_setting(abby: Invoke, offline: None, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_USER_DAILY_GENS=1\n")
    assert abby("imagine", "a cat", USER).exit_code == 0
    refused = abby("imagine", "a cat", USER)
    assert refused.exit_code == 1 and "daily_limit" in refused.stderr
    assert "MAX_USER_DAILY_GENS" in refused.stderr and "button" not in refused.stderr.lower()


def test_user_storage_full_through_the_cli(abby: Invoke, offline: None, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_USER_STORAGE_MB=1\nIMAGE_GEN_SIZE_MB=1\n")
    assert abby("imagine", "a cat", USER).exit_code == 0  # one image fills it
    refused = abby("imagine", "a cat", USER, "--json")
    error = one_json(refused)["error"]
    assert error["code"] == "user_storage_full"
    assert "abby delete" in error["message"] and "button" not in error["message"].lower()


def test_not_configured_points_at_the_offline_provider(abby: Invoke) -> None:
    result = abby("imagine", "a cat", USER, "--json")  # IMAGE_PROVIDER defaults to stability, no key
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "not_configured" and error["setting"] == "STABILITY_API_KEY"
    assert "STABILITY_API_KEY" in error["message"]
    assert "--provider offline" in error["message"] and "IMAGE_PROVIDER=offline" in error["message"]
    text = abby("imagine", "a cat", USER)
    assert "--provider offline" in text.stderr
