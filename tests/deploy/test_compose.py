"""The deployment files: docker-compose.yml, the storage init scripts, the policy, the
Dockerfile, the systemd unit, the Windows service scripts and ``.env.example``.

Nothing here needs Docker. ``minio/init.sh`` runs against a fake ``mc`` that keeps the
server's state in a JSON file; ``minio/seaweedfs/init.sh`` runs for real against the
SeaweedFS test server.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import SecretStr

from abby_core.config import VARIABLES, S3Settings, load_settings
from abby_core.storage.s3 import S3Backend

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
POLICY = ROOT / "minio" / "abby-policy.json"
MINIO_INIT = ROOT / "minio" / "init.sh"
SEAWEEDFS_INIT = ROOT / "minio" / "seaweedfs" / "init.sh"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
UNIT = ROOT / "infra" / "abby.service"
INSTALL_PS1 = ROOT / "infra" / "windows" / "install-service.ps1"
UNINSTALL_PS1 = ROOT / "infra" / "windows" / "uninstall-service.ps1"
DEV_SEAWEEDFS = ROOT / "infra" / "dev-seaweedfs.sh"
ENV_EXAMPLE = ROOT / ".env.example"
SHELL_SCRIPTS = [MINIO_INIT, SEAWEEDFS_INIT, DEV_SEAWEEDFS]

ALIASES = sorted(VARIABLES)
STORAGE_ADMIN_VARS = (
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "SEAWEEDFS_ADMIN_ACCESS_KEY",
    "SEAWEEDFS_ADMIN_SECRET_KEY",
)
ABBY_SERVICES = {"minio": "abby", "seaweedfs": "abby-seaweedfs"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# -- docker-compose.yml --------------------------------------------------------------


def test_compose_has_both_storage_profiles_and_nothing_outside_them(services: dict[str, Any]) -> None:
    expected = {
        "minio": ["minio", "minio-scale"],
        "minio-init": ["minio", "minio-scale"],
        "abby": ["minio"],
        "abby-shard-0": ["minio-scale"],
        "abby-shard-1": ["minio-scale"],
        "seaweedfs": ["seaweedfs"],
        "seaweedfs-init": ["seaweedfs"],
        "seaweedfs-storage-init": ["seaweedfs"],
        "abby-seaweedfs": ["seaweedfs"],
    }
    assert set(services) == set(expected)
    for name, profiles in expected.items():
        # A service without a profile would start with either storage.
        assert services[name].get("profiles") == profiles, name


def test_the_scale_profile_runs_two_shards_of_one_bot_on_one_bucket(services: dict[str, Any]) -> None:
    single = services["abby"]["environment"]
    shards = [services[f"abby-shard-{i}"]["environment"] for i in (0, 1)]
    scale_out = ("SHARD_", "STORAGE_ESCROW", "GENERATION_QUEUE")
    for i, env in enumerate(shards):
        assert (env["SHARD_COUNT"], env["SHARD_IDS"]) == ("2", str(i))
        # One budget and one queue for both processes, without a hot global document.
        assert (env["STORAGE_ESCROW"], env["GENERATION_QUEUE"]) == ("true", "shared")
        # The same storage and the same blanked admin credentials as the single bot.
        assert {k: v for k, v in env.items() if not k.startswith(scale_out)} == single
        assert services[f"abby-shard-{i}"]["depends_on"] == services["abby"]["depends_on"]


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither image nor build"
            continue
        if "build" in service:
            assert image == "abby:local", name
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag.lower() != "latest", f"{name}: {image}"
        assert "latest" not in image.lower(), f"{name}: {image}"


def test_minio_service(services: dict[str, Any]) -> None:
    minio = services["minio"]
    assert re.fullmatch(r"quay\.io/minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"])
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    env = _env(minio)
    assert env["MINIO_ROOT_USER"].startswith("${MINIO_ROOT_USER")
    assert env["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD")
    assert any(v.split(":")[0] == "minio-data" and v.endswith(":/data") for v in minio["volumes"])
    published = [str(p) for p in minio["ports"]]
    # Only the S3 API is published; the console (9001) stays commented out.
    assert published == ["${S3_HOST_PORT:-9000}:9000"]
    assert "9001" not in " ".join(published)


def test_minio_init_service(services: dict[str, Any]) -> None:
    init = services["minio-init"]
    assert re.fullmatch(r"quay\.io/minio/mc:RELEASE\.[0-9TZ-]+", init["image"])
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert init["entrypoint"] == ["/bin/sh", "/init/init.sh"]
    assert "./minio:/init:ro" in init["volumes"]
    env = _env(init)
    assert env["MINIO_URL"] == "http://minio:9000"
    for name in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_BUCKET", "STORAGE_CLEANUP_DAYS"):
        assert env[name].startswith("${" + name), name
    assert init.get("restart") == "no"


def test_seaweedfs_services(services: dict[str, Any]) -> None:
    server, init = services["seaweedfs"], services["seaweedfs-init"]
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", server["image"])
    assert init["image"] == server["image"]
    assert server["command"][0] in {"mini", "server"}
    assert "-admin.ui=false" in server["command"]
    assert [str(p) for p in server["ports"]] == ["${S3_HOST_PORT:-9000}:8333"]
    assert "/healthz" in " ".join(server["healthcheck"]["test"])
    assert init["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    assert init["entrypoint"] == ["/bin/sh", "/init/seaweedfs/init.sh"]
    assert _env(init)["WEED_MASTER"] == "seaweedfs:9333"
    storage_init = services["seaweedfs-storage-init"]
    assert storage_init["command"] == ["storage", "init"]
    assert storage_init["depends_on"] == {"seaweedfs-init": {"condition": "service_completed_successfully"}}
    assert services["abby-seaweedfs"]["depends_on"] == {
        "seaweedfs-storage-init": {"condition": "service_completed_successfully"}
    }


@pytest.mark.parametrize("profile", sorted(ABBY_SERVICES))
def test_abby_service(services: dict[str, Any], profile: str) -> None:
    abby = services[ABBY_SERVICES[profile]]
    assert abby["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}
    assert abby["env_file"] == ".env"
    assert abby["restart"] == "unless-stopped"
    assert abby["command"] == ["run"]
    env = _env(abby)
    assert env["STORAGE_BACKEND"] == "s3"
    endpoint = {"minio": "http://minio:9000", "seaweedfs": "http://seaweedfs:8333"}[profile]
    assert env["S3_ENDPOINT_URL"] == endpoint
    assert env["S3_PUBLIC_ENDPOINT_URL"].startswith("${S3_PUBLIC_ENDPOINT_URL")
    # The bot never gets the storage root credentials, not even through env_file.
    for name in STORAGE_ADMIN_VARS:
        assert env.get(name) == "", name
    assert not any("MINIO_ROOT" in value or "SEAWEEDFS_ADMIN" in value for value in env.values())
    # The bot's S3 credentials come from .env (the application user), not overridden here.
    assert "S3_ACCESS_KEY_ID" not in env and "S3_SECRET_ACCESS_KEY" not in env
    assert "ports" not in abby  # the bot serves nothing
    assert abby["volumes"] == ["abby-data:/var/lib/abby"]


def test_abby_waits_for_minio_init(services: dict[str, Any]) -> None:
    assert services["abby"]["depends_on"] == {"minio-init": {"condition": "service_completed_successfully"}}


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {
        volume.split(":")[0]
        for service in services.values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert used == declared


def test_compose_variables_are_in_env_example() -> None:
    example = _example_names()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text(encoding="utf-8")))
    assert used - example == set()


# -- the policy ------------------------------------------------------------------------


def test_policy_is_least_privilege() -> None:
    policy = json.loads(POLICY.read_text(encoding="utf-8"))
    actions: set[str] = set()
    resources: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        stmt_actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        stmt_resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in stmt_actions:
            assert "*" not in action, action
        actions.update(stmt_actions)
        resources.update(stmt_resources)
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
    }
    assert resources == {"arn:aws:s3:::abby-images", "arn:aws:s3:::abby-images/*"}
    assert not any(a.startswith(("admin:", "iam:", "kms:")) for a in actions)


# -- minio/init.sh against a fake mc -----------------------------------------------------

FAKE_MC = r'''
"""A stand-in for mc: the subset minio/init.sh uses, with the server in a JSON file."""
import json, os, sys

STATE = os.environ["FAKE_MC_STATE"]
args = sys.argv[1:]
state = json.load(open(STATE)) if os.path.exists(STATE) else {
    "aliases": {}, "buckets": {}, "policies": {}, "users": {}, "changes": [], "calls": []}
state["calls"].append(args)

def save():
    with open(STATE, "w") as f:
        json.dump(state, f)

def die(msg, code=1):
    save()
    print("mc: <ERROR> " + msg, file=sys.stderr)
    sys.exit(code)

def bucket(target):
    alias, _, name = target.partition("/")
    if alias not in state["aliases"]:
        die("alias " + alias + " not set")
    if name not in state["buckets"]:
        die("bucket " + name + " does not exist")
    return state["buckets"][name]

def change(what):
    state["changes"].append(what)

if os.environ.get("FAKE_MC_DOWN"):
    die("server unreachable")
if args[:2] == ["alias", "set"]:
    name, url, user, password = args[2:6]
    if (user, password) != (os.environ["FAKE_MC_ROOT_USER"], os.environ["FAKE_MC_ROOT_PASSWORD"]):
        die("access denied")
    state["aliases"][name] = url
elif args[:2] == ["mb", "--ignore-existing"]:
    alias, _, name = args[2].partition("/")
    if name not in state["buckets"]:
        state["buckets"][name] = {"anonymous": "download", "rules": []}
        change("bucket created " + name)
elif args[:3] == ["anonymous", "set", "none"]:
    b = bucket(args[3])
    if b["anonymous"] != "none":
        b["anonymous"] = "none"
        change("bucket made private")
elif args[:4] == ["ilm", "rule", "ls", "--json"]:
    b = bucket(args[4])
    if not b["rules"]:
        die("Unable to get lifecycle: lifecycle configuration not set")
    print(json.dumps({"status": "success", "target": args[4], "config": {"Rules": b["rules"]}}, indent=1))
elif args[:2] == ["ilm", "import"]:
    b = bucket(args[2])
    rules = json.loads(sys.stdin.read())["Rules"]
    if rules != b["rules"]:
        b["rules"] = rules
        change("lifecycle replaced")
elif args[:3] == ["admin", "policy", "create"]:
    name, path = args[4], args[5]
    doc = json.load(open(path))
    if state["policies"].get(name) != doc:
        state["policies"][name] = doc
        change("policy written " + name)
elif args[:3] == ["admin", "user", "info"]:
    user = state["users"].get(args[4])
    if user is None:
        die("user " + args[4] + " not found")
    print(json.dumps({"status": "success", "accessKey": args[4],
                      "policyName": ",".join(user["policies"]), "userStatus": "enabled"}, indent=1))
elif args[:3] == ["admin", "user", "add"]:
    key, secret = args[4], args[5]
    user = state["users"].setdefault(key, {"secret": None, "policies": []})
    if user["secret"] != secret:
        change("user secret set " + key)
        user["secret"] = secret
elif args[:3] == ["admin", "policy", "attach"] and args[5] == "--user":
    policy, key = args[4], args[6]
    if policy not in state["policies"] or key not in state["users"]:
        die("no such policy or user")
    if policy not in state["users"][key]["policies"]:
        state["users"][key]["policies"].append(policy)
        change("policy attached " + policy)
else:
    die("fake mc does not know: " + " ".join(args), 2)
save()
'''


class FakeMinio:
    """Runs minio/init.sh with only ``sh``, ``mc``, ``rm`` and ``sleep`` on PATH."""

    def __init__(self, tmp_path: Path) -> None:
        self.state_file = tmp_path / "mc-state.json"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        mc = bin_dir / "mc"
        mc.write_text(f"#!{sys.executable}\n{FAKE_MC}", encoding="utf-8")
        mc.chmod(0o755)
        # What the minio/mc image (ubi-micro) has besides mc; no sed, grep or cat.
        for tool in ("rm", "sleep"):
            found = shutil.which(tool)
            assert found is not None
            (bin_dir / tool).symlink_to(found)
        self.path = str(bin_dir)
        self.env = {
            "PATH": self.path,
            "TMPDIR": str(tmp_path),
            "FAKE_MC_STATE": str(self.state_file),
            "FAKE_MC_ROOT_USER": "rootuser",
            "FAKE_MC_ROOT_PASSWORD": "rootpassword",
            "MINIO_ROOT_USER": "rootuser",
            "MINIO_ROOT_PASSWORD": "rootpassword",
            "S3_ACCESS_KEY_ID": "abby-app",
            "S3_SECRET_ACCESS_KEY": "app-secret-123",
            "INIT_RETRY_DELAY": "0",
        }

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", str(MINIO_INIT)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text(encoding="utf-8"))


@pytest.fixture
def fake_minio(tmp_path: Path) -> FakeMinio:
    return FakeMinio(tmp_path)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_as_posix_sh(script: Path) -> None:
    assert script.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    result = subprocess.run(["/bin/sh", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "set -eu" in script.read_text(encoding="utf-8")


def test_shared_shell_helpers_parse_and_are_sourced_by_both_scripts() -> None:
    lib = ROOT / "minio" / "lib.sh"
    result = subprocess.run(["/bin/sh", "-n", str(lib)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert '. "$HERE/lib.sh"' in MINIO_INIT.read_text(encoding="utf-8")
    assert '. "$HERE/../lib.sh"' in SEAWEEDFS_INIT.read_text(encoding="utf-8")


def test_minio_init_first_run_sets_up_everything(fake_minio: FakeMinio) -> None:
    out = _ok(fake_minio.run())
    state = fake_minio.state
    bucket = state["buckets"]["abby-images"]
    assert bucket["anonymous"] == "none"
    assert bucket["rules"] == [
        {"ID": "abby-images-expiry", "Status": "Enabled", "Filter": {"Prefix": "images/"},
         "Expiration": {"Days": 7}},
        # ANALYTICS_RETENTION_DAYS (90) + 7: a backstop behind the bot's daily prune.
        {"ID": "abby-events-expiry", "Status": "Enabled", "Filter": {"Prefix": "events/"},
         "Expiration": {"Days": 97}},
    ]
    assert state["policies"]["abby-app"] == json.loads(POLICY.read_text(encoding="utf-8"))
    assert state["users"] == {"abby-app": {"secret": "app-secret-123", "policies": ["abby-app"]}}
    assert "==> MinIO is ready" in out
    # The root credentials only ever go to `mc alias set`.
    for call in state["calls"]:
        if call[:2] != ["alias", "set"]:
            assert "rootpassword" not in call


def test_minio_init_second_run_changes_nothing(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    first = fake_minio.state
    out = _ok(fake_minio.run())
    second = fake_minio.state
    assert second["changes"] == first["changes"]
    assert {k: v for k, v in second.items() if k != "calls"} == {
        k: v for k, v in first.items() if k != "calls"
    }
    new_calls = second["calls"][len(first["calls"]):]
    assert not any(call[:2] == ["ilm", "import"] for call in new_calls)
    assert not any(call[:3] == ["admin", "policy", "attach"] for call in new_calls)
    assert "already in place" in out and "already attached" in out


def _days(fake_minio: FakeMinio) -> dict[str, int]:
    rules = fake_minio.state["buckets"]["abby-images"]["rules"]
    assert len(rules) == len({rule["ID"] for rule in rules})
    return {rule["ID"]: rule["Expiration"]["Days"] for rule in rules}


def test_minio_init_follows_a_new_cleanup_days_with_one_rule(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    _ok(fake_minio.run(STORAGE_CLEANUP_DAYS="30"))
    assert _days(fake_minio) == {"abby-images-expiry": 30, "abby-events-expiry": 97}
    # 3 is a prefix of 30: it must still be seen as a change.
    _ok(fake_minio.run(STORAGE_CLEANUP_DAYS="3"))
    assert _days(fake_minio) == {"abby-images-expiry": 3, "abby-events-expiry": 97}


def test_minio_init_follows_a_new_analytics_retention(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    _ok(fake_minio.run(ANALYTICS_RETENTION_DAYS="30"))
    assert _days(fake_minio) == {"abby-images-expiry": 7, "abby-events-expiry": 37}
    out = _ok(fake_minio.run(ANALYTICS_RETENTION_DAYS="30"))
    assert "already in place" in out
    _ok(fake_minio.run())
    assert _days(fake_minio) == {"abby-images-expiry": 7, "abby-events-expiry": 97}
    # 2 + 7 = 9 is a prefix of 97: it must still be seen as a change.
    _ok(fake_minio.run(ANALYTICS_RETENTION_DAYS="2"))
    assert _days(fake_minio) == {"abby-images-expiry": 7, "abby-events-expiry": 9}


def test_minio_init_checks_each_rule_for_its_own_days(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    state = fake_minio.state
    rules = state["buckets"]["abby-images"]["rules"]
    # The days swapped between the two rules: both numbers are present, neither rule is right.
    rules[0]["Expiration"], rules[1]["Expiration"] = rules[1]["Expiration"], rules[0]["Expiration"]
    fake_minio.state_file.write_text(json.dumps(state), encoding="utf-8")
    out = _ok(fake_minio.run())
    assert "already in place" not in out
    assert _days(fake_minio) == {"abby-images-expiry": 7, "abby-events-expiry": 97}
    # A disabled rule, or one on another prefix, is not ours either.
    for broken in ({"Status": "Disabled"}, {"Filter": {"Prefix": "other/"}}):
        state = fake_minio.state
        state["buckets"]["abby-images"]["rules"][1].update(broken)
        fake_minio.state_file.write_text(json.dumps(state), encoding="utf-8")
        assert "already in place" not in _ok(fake_minio.run())
        assert fake_minio.state["buckets"]["abby-images"]["rules"][1]["Status"] == "Enabled"
        assert fake_minio.state["buckets"]["abby-images"]["rules"][1]["Filter"] == {"Prefix": "events/"}


def test_minio_init_replaces_duplicate_rules_with_ours(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    state = fake_minio.state
    extra = {"ID": "hand-made", "Status": "Enabled", "Filter": {"Prefix": "images/"}, "Expiration": {"Days": 9}}
    state["buckets"]["abby-images"]["rules"] = [extra, dict(extra, ID="another")]
    fake_minio.state_file.write_text(json.dumps(state), encoding="utf-8")
    _ok(fake_minio.run())
    rules = fake_minio.state["buckets"]["abby-images"]["rules"]
    assert [rule["ID"] for rule in rules] == ["abby-images-expiry", "abby-events-expiry"]


def test_minio_init_scopes_the_policy_to_another_bucket(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run(S3_BUCKET="team.images-2"))
    state = fake_minio.state
    assert set(state["buckets"]) == {"team.images-2"}
    text = json.dumps(state["policies"]["abby-app"])
    assert "abby-images" not in text
    assert set(re.findall(r"arn:aws:s3:::[^\"]+", text)) == {
        "arn:aws:s3:::team.images-2",
        "arn:aws:s3:::team.images-2/*",
    }


def test_minio_init_follows_a_new_app_secret(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    _ok(fake_minio.run(S3_SECRET_ACCESS_KEY="rotated-secret-456"))
    assert fake_minio.state["users"]["abby-app"]["secret"] == "rotated-secret-456"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S3_ACCESS_KEY_ID": "rootuser"}, "must not be MINIO_ROOT_USER"),
        ({"S3_SECRET_ACCESS_KEY": "short"}, "at least 8"),
        ({"MINIO_ROOT_PASSWORD": ""}, "MINIO_ROOT_PASSWORD"),
        ({"S3_BUCKET": "Bad_Bucket"}, "S3_BUCKET"),
        ({"STORAGE_CLEANUP_DAYS": "0"}, "STORAGE_CLEANUP_DAYS"),
        ({"STORAGE_CLEANUP_DAYS": "7d"}, "STORAGE_CLEANUP_DAYS"),
        ({"ANALYTICS_RETENTION_DAYS": "0"}, "ANALYTICS_RETENTION_DAYS"),
        ({"ANALYTICS_RETENTION_DAYS": "90d"}, "ANALYTICS_RETENTION_DAYS"),
        ({"ANALYTICS_RETENTION_DAYS": "3651"}, "ANALYTICS_RETENTION_DAYS"),
    ],
)
def test_minio_init_refuses_bad_settings_before_calling_mc(
    fake_minio: FakeMinio, env: dict[str, str], message: str
) -> None:
    result = fake_minio.run(**env)
    assert result.returncode != 0
    assert message in result.stderr
    assert not fake_minio.state_file.exists()  # mc was never called


def test_minio_init_gives_up_after_bounded_retries(fake_minio: FakeMinio) -> None:
    result = fake_minio.run(FAKE_MC_DOWN="1", INIT_RETRIES="3")
    assert result.returncode != 0
    assert "did not answer after 3 tries" in result.stderr
    assert len(fake_minio.state["calls"]) == 3


def test_minio_init_fails_when_a_step_fails(fake_minio: FakeMinio) -> None:
    _ok(fake_minio.run())
    # Wrong root password: alias set keeps failing, the job must not report success.
    result = fake_minio.run(MINIO_ROOT_PASSWORD="wrongpassword", INIT_RETRIES="2")
    assert result.returncode != 0
    assert "MinIO is ready" not in result.stdout


# -- minio/seaweedfs/init.sh against the real SeaweedFS -----------------------------------


def _s3(endpoint: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _weed_master(seaweedfs: Any) -> str:
    # The leader's address carries its gRPC port ("host:port.grpc"), which `weed mini`
    # may have moved when port + 10000 did not fit.
    status = httpx.get(f"http://127.0.0.1:{seaweedfs.ports['master.port']}/cluster/status", timeout=10)
    return str(status.json()["Leader"])


def _weed(master: str, command: str) -> str:
    result = subprocess.run(
        ["weed", "shell", f"-master={master}"], input=command + "\n",
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.seaweedfs
def test_seaweedfs_init_twice_against_a_real_server(seaweedfs: Any, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    bucket, user, policy = f"deploy-{suffix}", f"abby-{suffix}", f"abby-app-{suffix}"
    app_key, app_secret = f"app{suffix}", f"secret-{suffix}-0123456789"
    master = _weed_master(seaweedfs)
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "WEED_MASTER": master,
        "S3_BUCKET": bucket,
        "S3_ACCESS_KEY_ID": app_key,
        "S3_SECRET_ACCESS_KEY": app_secret,
        "ABBY_S3_USER": user,
        "ABBY_POLICY_NAME": policy,
        "INIT_RETRIES": "10",
        "INIT_RETRY_DELAY": "1",
    }

    def run_init() -> str:
        result = subprocess.run(
            ["/bin/sh", str(SEAWEEDFS_INIT)], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = run_init()
    assert "created" in first and "policy " + policy + " attached" in first

    admin = _s3(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key)
    app = _s3(seaweedfs.endpoint, app_key, app_secret)
    admin.head_bucket(Bucket=bucket)

    # Private: no anonymous reads or listings.
    admin.put_object(Bucket=bucket, Key="images/users/1/probe.png", Body=b"x")
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}/images/users/1/probe.png", timeout=10).status_code == 403
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}", timeout=10).status_code == 403

    # The application user can do what Abby does, in its bucket only.
    app.put_object(Bucket=bucket, Key="images/users/1/a.png", Body=b"png", ContentType="image/png")
    app.put_object(Bucket=bucket, Key="ledger/users/1.json", Body=b"{}", IfNoneMatch="*")
    assert app.get_object(Bucket=bucket, Key="images/users/1/a.png")["Body"].read() == b"png"
    assert app.list_objects_v2(Bucket=bucket, Prefix="images/")["KeyCount"] == 2
    app.get_bucket_location(Bucket=bucket)
    link = app.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "images/users/1/a.png", "ResponseContentType": "image/png"}
    )
    assert httpx.get(link, timeout=10).status_code == 200
    app.delete_object(Bucket=bucket, Key="images/users/1/a.png")
    other = f"other-{suffix}"
    admin.create_bucket(Bucket=other)
    admin.put_object(Bucket=other, Key="secret", Body=b"x")
    for denied in (
        lambda: app.get_object(Bucket=other, Key="secret"),
        lambda: app.create_bucket(Bucket=f"mine-{suffix}"),
    ):
        with pytest.raises(ClientError) as info:
            denied()
        assert info.value.response["Error"]["Code"] == "AccessDenied"

    # What `abby storage init` does, with the application's least-privilege credentials:
    # it may not change bucket policy or ACLs, but installs the lifecycle rule and proves
    # the bucket private and conditional writes honoured.
    backend = S3Backend(
        S3Settings(
            endpoint_url=seaweedfs.endpoint, public_endpoint_url=None, bucket=bucket,
            access_key_id=app_key, secret_access_key=SecretStr(app_secret), region="us-east-1",
            timeout_seconds=10, max_attempts=2,
        )
    )
    report = backend.ensure_ready(cleanup_days=7, create=False, events_days=97)
    assert (report.created, report.private, report.lifecycle_days, report.conditional_writes) == (
        False, True, 7, True
    )
    assert backend.lifecycle_days() == 7

    def snapshot() -> dict[str, Any]:
        identities = json.loads(_weed(master, "s3.iam.export"))["identities"]
        return {
            "user": [i for i in identities if i["name"] == user],
            "policy": json.loads(_weed(master, f"s3.policy -get -name {policy}")),
            "anonymous": _weed(master, f"s3.anonymous.get -bucket {bucket}"),
            "buckets": sorted(line.split()[0] for line in _weed(master, "s3.bucket.list").splitlines() if line),
            "rules": admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"],
        }

    before = snapshot()
    assert before["policy"]["Statement"][0]["Resource"] in (
        f"arn:aws:s3:::{bucket}", [f"arn:aws:s3:::{bucket}"]
    )
    assert "Access: none" in before["anonymous"]

    second = run_init()
    assert "created" not in second and f"policy {policy} attached" not in second
    assert "exists with this access key" in second and "already private" in second
    after = snapshot()
    assert after == before
    assert {rule["ID"]: rule["Expiration"] for rule in after["rules"]} == {
        "abby-images-expiry": {"Days": 7},
        "abby-events-expiry": {"Days": 97},
    }
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}/images/users/1/probe.png", timeout=10).status_code == 403


@pytest.mark.seaweedfs
def test_seaweedfs_init_fails_when_the_server_is_unreachable(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "WEED_MASTER": "127.0.0.1:1",
        "S3_ACCESS_KEY_ID": "abby-app",
        "S3_SECRET_ACCESS_KEY": "app-secret-123",
        "INIT_RETRIES": "2",
        "INIT_RETRY_DELAY": "0",
        "WEED_TIMEOUT": "3",
    }
    result = subprocess.run(
        ["/bin/sh", str(SEAWEEDFS_INIT)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "did not answer after 2 tries" in result.stderr


# -- Dockerfile, .dockerignore -------------------------------------------------------------


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")]
    instructions = [i for i in instructions if i[0].isupper()]
    froms = [rest for op, *rest in instructions if op == "FROM"]
    assert froms and all(f[0].split()[0] == "python:3.11-slim" for f in froms)
    assert "latest" not in text.lower()
    users = [rest[0].strip() for op, *rest in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    # The last USER comes before the entrypoint: the bot runs as that user.
    assert text.rindex("\nUSER ") < text.index("\nENTRYPOINT ")
    assert 'ENTRYPOINT ["abby"]' in text
    assert 'CMD ["run"]' in text
    assert "pip wheel --no-deps" in text
    assert "[test]" not in text and "-e ." not in text


def test_dockerignore_keeps_secrets_and_tests_out() -> None:
    entries = {
        line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", "tests"} <= entries
    # The package itself must stay in the build context.
    assert not entries & {"abby_core", "abby_discord", "abby_cli", "pyproject.toml", "*"}


# -- systemd -------------------------------------------------------------------------------


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["User"] == "abby" and service["Group"] == "abby"
    assert service["ExecStart"].split() == ["/opt/abby/venv/bin/abby", "run"]
    assert service["EnvironmentFile"].lstrip("-") == "/etc/abby/abby.env"
    assert service["Restart"] == "on-failure"
    for option, value in {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
    }.items():
        assert service[option] == value, option
    assert service["StateDirectory"] == "abby"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


# -- Windows (NSSM) ----------------------------------------------------------------------


def test_windows_install_script() -> None:
    text = INSTALL_PS1.read_text(encoding="utf-8")
    for expected in (
        "#Requires -RunAsAdministrator",
        "$ErrorActionPreference = 'Stop'",
        "STORAGE_BACKEND=filesystem",
        '"STORAGE_ROOT=$StorageRoot"',
        r"'C:\opt\tdos\apps\abby\shared'",
        r"'C:\opt\tdos\apps\abby\shared\logs'",
        r"Scripts\abby.exe",
        "AppParameters run",
        "AppDirectory $AppDirectory",
        "AppEnvironmentExtra",
        "AppRotateFiles 1",
        "AppRotateOnline 1",
        "AppRotateBytes $RotateBytes",
        "AppStdout",
        "AppStderr",
        "Get-Service -Name $ServiceName",  # re-running updates instead of failing
        "Invoke-Nssm set $ServiceName Application $AbbyExe",
    ):
        assert expected in text, expected
    # PowerShell reads "$name:" as a scope or drive qualifier: a parse error in a string.
    for script in (INSTALL_PS1, UNINSTALL_PS1):
        bad = [m for m in re.findall(r"\$(\w+):", script.read_text(encoding="utf-8")) if m not in {"script", "env"}]
        assert bad == [], script.name
    params = re.search(r"param\((.*?)\n\)", text, re.S)
    assert params is not None
    for name in ("ServiceName", "AppDirectory", "VenvPath", "StorageRoot", "LogDirectory", "NssmPath"):
        assert re.search(rf"\${name} = '", params.group(1)), name


def test_windows_uninstall_script() -> None:
    text = UNINSTALL_PS1.read_text(encoding="utf-8")
    assert "remove $ServiceName confirm" in text
    assert "Get-Service -Name $ServiceName" in text  # nothing to do when not installed


# -- .env.example and the docs -------------------------------------------------------------


def _example_names() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"(?:# )?([A-Z][A-Z0-9_]*)=", line)  # documented, maybe left unset
        if match:
            names.add(match.group(1))
    return names


def test_env_example_lists_every_setting() -> None:
    missing = set(ALIASES) - _example_names()
    assert missing == set()


def test_env_example_has_the_compose_only_variables() -> None:
    assert {
        "COMPOSE_PROFILES", "S3_HOST_PORT", "ABBY_S3_USER", *STORAGE_ADMIN_VARS
    } <= _example_names()


def test_env_example_is_valid_and_has_no_real_secrets() -> None:
    settings = load_settings(env_file=ENV_EXAMPLE)
    assert settings.storage.backend == "filesystem"
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if re.match(r"[A-Z][A-Z0-9_]*=", line)
    )
    for name in ("S3_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD", "SEAWEEDFS_ADMIN_SECRET_KEY"):
        assert values[name].startswith("change-me"), name
    assert values["STABILITY_API_KEY"] == ""
    assert values["S3_ACCESS_KEY_ID"] != values["MINIO_ROOT_USER"]


@pytest.mark.parametrize("doc", ["DEPLOYMENT.md", "DEPLOYMENT_NSSM.md"])
def test_docs_only_name_real_variables(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    known = set(ALIASES) | _example_names()
    prefixes = ("S3_", "STORAGE_", "MAX_", "IMAGE_", "STABILITY_", "DISCORD_", "PRESIGNED_", "QUOTA_")
    mentioned = {name for name in re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", text) if name.startswith(prefixes)}
    assert mentioned - known == set()


def test_deployment_doc_explains_the_public_endpoint() -> None:
    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    assert "S3_PUBLIC_ENDPOINT_URL" in text and "SignatureDoesNotMatch" in text


def test_service_managers_do_not_restart_on_a_configuration_error() -> None:
    unit = (ROOT / "infra" / "abby.service").read_text(encoding="utf-8")
    assert "RestartPreventExitStatus=2" in unit.splitlines()
    script = (ROOT / "infra" / "windows" / "install-service.ps1").read_text(encoding="utf-8")
    assert "Invoke-Nssm set $ServiceName AppExit 2 Exit" in script
