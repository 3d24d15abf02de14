"""Endpoint URLs are checked when settings load, and credentials in them are never shown."""

from __future__ import annotations

import pytest

from abby_core.config import describe_settings, load_settings, redact_url
from abby_core.errors import ConfigError

URL_VARIABLES = ["S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL", "STABILITY_API_HOST"]


@pytest.mark.parametrize("variable", URL_VARIABLES)
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://[::1", "brackets"),
        ("http://::1]", "brackets"),
        ("http://[::1]]", "brackets"),
        ("http://::1", "in brackets"),
        ("http://[not-ipv6]:9000", "IPv6"),
        ("http://[::1]x", "after the IPv6"),
        ("http://exa mple.com", "space"),
        ("http://exam\tple.com", "space"),
        ("http://exa\x00mple.com", "control"),
        ("http://:23333", "no host"),
        ("http://user:pw@:80", "no host"),
        ("http://%zz", "%"),
        ("http://host/a%2", "%"),
        ("http://host:0", "port"),
        ("http://host:65536", "port"),
        ("http://host:99999", "port"),
        ("http://host:port", "port"),
        ("http://host:", "no port"),
        ("http://exa_mple.com", "host name"),
        ("http://-minio:9000", "host name"),
        ("http://bücher.example", "xn--bcher-kva.example"),
        ("ftp://minio:9000", "http"),
        ("minio:9000", "http"),
    ],
)
def test_bad_endpoint_urls_fail_at_load_naming_the_variable(variable: str, url: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **{variable: url})
    (problem,) = refused.value.problems
    assert problem.startswith(variable) and why in problem


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://minio:9000/", "http://minio:9000"),
        ("  https://api.stability.ai  ", "https://api.stability.ai"),
        ("http://127.0.0.1:65535", "http://127.0.0.1:65535"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://[fe80::1%25eth0]:9000", "http://[fe80::1%25eth0]:9000"),
        ("https://s3.eu-west-1.amazonaws.com", "https://s3.eu-west-1.amazonaws.com"),
        ("http://user:p%40ss@minio:9000/prefix", "http://user:p%40ss@minio:9000/prefix"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_good_endpoint_urls_load(url: str, kept: str) -> None:
    settings = load_settings(env_file=None, S3_ENDPOINT_URL=url, STABILITY_API_HOST=url)
    assert settings.s3.endpoint_url == kept and settings.api.stability_api_host == kept


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:9000/x", "http://***@host:9000/x"),
        ("https://key@host", "https://***@host"),
        ("http://a:b@c@host/p@q?x=@y", "http://***@host/p@q?x=@y"),
        ("http://host:9000/a@b", "http://host:9000/a@b"),
        ("http://host", "http://host"),
        ("user:pw@host", "***@host"),
        ("http://user:pw@[::1", "http://***@[::1"),
        (None, ""),
        ("", ""),
    ],
)
def test_redact_url(url: str | None, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_and_errors_never_show_endpoint_credentials() -> None:
    settings = load_settings(
        env_file=None,
        S3_ENDPOINT_URL="http://minio:hunter2@minio:9000",
        S3_PUBLIC_ENDPOINT_URL="https://cdn:hunter2@images.example.com",
    )
    assert settings.s3.endpoint_url == "http://minio:hunter2@minio:9000"  # the client still gets it
    shown = describe_settings(settings)
    assert shown["S3_ENDPOINT_URL"] == "http://***@minio:9000"
    assert shown["S3_PUBLIC_ENDPOINT_URL"] == "https://***@images.example.com"
    assert "hunter2" not in str(shown)
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, S3_ENDPOINT_URL="http://minio:hunter2@minio:0")
    assert "hunter2" not in str(refused.value) and "***@minio:0" in str(refused.value)
