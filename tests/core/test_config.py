"""Settings: defaults, the .env file, sections, and one clear message for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from abby_core.config import VARIABLES, load_settings
from abby_core.errors import ConfigError


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings(env_file=None)
    assert (s.storage.backend, s.storage.root, s.storage.max_global_storage_mb) == ("filesystem", Path("shared"), 5000)
    assert (s.storage.max_user_storage_mb, s.storage.max_user_daily_gens, s.storage.cleanup_days) == (500, 5, 7)
    assert s.storage.image_gen_size_mb == 1.5 and s.storage.image_gen_bytes == 1_500_000
    assert (s.s3.endpoint_url, s.s3.bucket, s.s3.region, s.storage.link_ttl_seconds) == (
        None,
        "abby-images",
        "us-east-1",
        3600,
    )
    assert s.api.stability_api_key is None and s.api.stability_api_host == "https://api.stability.ai"
    assert s.discord.token is None and s.api.provider == "stability"


def test_environment_and_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "MAX_USER_DAILY_GENS=9\nSTORAGE_BACKEND=s3\nS3_ENDPOINT_URL=http://minio:9000/\nADMIN_ROLE_IDS=1, 2\n"
    )
    monkeypatch.setenv("MAX_USER_DAILY_GENS", "7")  # the environment wins over .env
    s = load_settings(env_file=env)
    assert s.storage.max_user_daily_gens == 7
    assert s.storage.backend == "s3" and s.s3.endpoint_url == "http://minio:9000"
    assert s.discord.admin_role_ids == (1, 2)


def test_quota_tiers_parse() -> None:
    s = load_settings(env_file=None, QUOTA_TIERS="111:20:2000, 222:10:750.5")
    assert [(t.role_id, t.daily_gens, t.storage_mb) for t in s.storage.quota_tiers] == [
        (111, 20, 2000.0),
        (222, 10, 750.5),
    ]


def test_store_and_scale_out_settings_parse() -> None:
    s = load_settings(
        env_file=None,
        PREMIUM_TIERS="1111:50:5000",
        CREDIT_PACKS="2222:20, 3333:100",
        STORAGE_ESCROW="true",
        GENERATION_QUEUE="shared",
    )
    assert [(t.sku_id, t.daily_gens, t.storage_mb) for t in s.storage.premium_tiers] == [(1111, 50, 5000.0)]
    assert s.discord.premium_tiers == s.storage.premium_tiers
    assert [(p.sku_id, p.credits) for p in s.discord.credit_packs] == [(2222, 20), (3333, 100)]
    assert s.discord.sells and s.storage.escrow and s.discord.generation_queue == "shared"
    assert not load_settings(env_file=None).discord.sells


def test_a_sku_is_a_pack_or_a_subscription_not_both() -> None:
    with pytest.raises(ConfigError, match="both PREMIUM_TIERS"):
        load_settings(env_file=None, PREMIUM_TIERS="1111:50:5000", CREDIT_PACKS="1111:20")


NUMERIC = [
    "MAX_GLOBAL_STORAGE_MB",
    "MAX_USER_STORAGE_MB",
    "MAX_USER_DAILY_GENS",
    "STORAGE_CLEANUP_DAYS",
    "IMAGE_GEN_SIZE_MB",
    "PRESIGNED_URL_TTL_SECONDS",
    "RESERVATION_TTL_SECONDS",
    "S3_TIMEOUT_SECONDS",
    "S3_MAX_ATTEMPTS",
    "STABILITY_TIMEOUT_SECONDS",
    "IMAGE_STORE_QUALITY",
    "MAX_CONCURRENT_GENERATIONS",
]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["-1", "0", "1e12", "lots", ""])
def test_bad_numbers_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **{name: value})
    message = str(refused.value)
    assert name in message and "must be" in message
    assert len(refused.value.problems) == 1


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("PRESIGNED_URL_TTL_SECONDS", "604801", "604800"),
        ("PRESIGNED_URL_TTL_SECONDS", "0", "from 1"),
        ("STORAGE_BACKEND", "ftp", "'filesystem' or 's3'"),
        ("IMAGE_PROVIDER", "midjourney", "'stability', 'comfyui', 'automatic1111' or 'offline'"),
        ("S3_ENDPOINT_URL", "minio:9000", "http"),
        ("S3_BUCKET", "Bad_Bucket", "bucket name"),
        ("QUOTA_TIERS", "1:2", "ROLE_ID:DAILY_GENS:STORAGE_MB"),
        ("PREMIUM_TIERS", "1:2", "SKU_ID:DAILY_GENS:STORAGE_MB"),
        ("PREMIUM_TIERS", "5:0:10", "1 to 100000 daily gens"),
        ("CREDIT_PACKS", "5:2:3", "SKU_ID:CREDITS"),
        ("CREDIT_PACKS", "5:1.5", "not a number"),
        ("CREDIT_PACKS", "5:0", "1 to 100000 credits"),
        ("GENERATION_QUEUE", "global", "'shared' (one queue for every process)"),
        ("STORAGE_ESCROW", "maybe", "true or false"),
        ("ADMIN_ROLE_IDS", "abc", "role ids"),
        ("LOG_LEVEL", "LOUD", "DEBUG"),
    ],
)
def test_bad_values_say_what_is_allowed(name: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **{name: value})
    assert name in str(refused.value) and hint in str(refused.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, MAX_USER_DAILY_GENS="x", STORAGE_BACKEND="nope", STORAGE_CLEANUP_DAYS="-3")
    assert len(refused.value.problems) == 3


def test_reservation_size_must_fit_the_limits() -> None:
    with pytest.raises(ConfigError, match="IMAGE_GEN_SIZE_MB"):
        load_settings(env_file=None, IMAGE_GEN_SIZE_MB=10, MAX_USER_STORAGE_MB=5)


def test_secrets_never_show() -> None:
    secrets = {
        "STABILITY_API_KEY": "sk-SECRET-stability-1234",
        "S3_SECRET_ACCESS_KEY": "SECRET-s3-5678",
        "DISCORD_TOKEN": "SECRET.discord.token",
    }
    s = load_settings(env_file=None, **secrets)
    shown = repr(s) + str(s) + repr(s.api) + repr(s.s3) + repr(s.discord) + str(s.model_dump())
    assert not any(value in shown for value in secrets.values())
    assert s.api.stability_api_key is not None
    assert s.api.stability_api_key.get_secret_value() == secrets["STABILITY_API_KEY"]
    with pytest.raises(ConfigError) as refused:  # a bad secret is named, never shown
        load_settings(env_file=None, S3_SECRET_ACCESS_KEY=987654321987)
    assert "S3_SECRET_ACCESS_KEY" in str(refused.value)
    assert "987654321987" not in str(refused.value)


def test_empty_optional_values_mean_unset() -> None:
    s = load_settings(env_file=None, S3_ENDPOINT_URL="", STABILITY_API_KEY="  ", DISCORD_GUILD_ID="")
    assert s.s3.endpoint_url is None and s.api.stability_api_key is None and s.discord.guild_id is None


def test_every_variable_has_a_description() -> None:
    assert len(VARIABLES) > 70
    for name, (_, info) in VARIABLES.items():
        assert info.alias and info.alias.isupper(), name
        assert info.description, name


def test_shards_default_to_automatic_and_parse() -> None:
    s = load_settings(env_file=None)
    assert (s.discord.shard_count, s.discord.shard_ids) == (None, ())
    s = load_settings(env_file=None, SHARD_COUNT="", SHARD_IDS="")
    assert (s.discord.shard_count, s.discord.shard_ids) == (None, ())
    s = load_settings(env_file=None, SHARD_COUNT="4", SHARD_IDS=" 1, 3 ")
    assert (s.discord.shard_count, s.discord.shard_ids) == (4, (1, 3))
    assert load_settings(env_file=None, SHARD_COUNT="2").discord.shard_ids == ()


@pytest.mark.parametrize(
    ("env", "name", "hint"),
    [
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT", "from 1 to 1000"),
        ({"SHARD_COUNT": "1001"}, "SHARD_COUNT", "from 1 to 1000"),
        ({"SHARD_COUNT": "two"}, "SHARD_COUNT", "whole number"),
        ({"SHARD_IDS": "0"}, "SHARD_IDS", "needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "2"}, "SHARD_IDS", "below SHARD_COUNT (2)"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,x"}, "SHARD_IDS", "separated by commas"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "-1"}, "SHARD_IDS", "separated by commas"),
        ({"SHARD_COUNT": "3", "SHARD_IDS": "1,1"}, "SHARD_IDS", "twice"),
    ],
)
def test_bad_shards_name_the_variable(env: dict[str, str], name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **env)
    assert name in str(refused.value) and hint in str(refused.value)
    assert len(refused.value.problems) == 1
