"""What only a real S3 server can show: links, privacy, lifecycle, conditional writes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from abby_core.errors import StorageUnavailable
from abby_core.storage import StorageManager
from abby_core.storage.s3 import EVENTS_LIFECYCLE_RULE_ID, LIFECYCLE_RULE_ID, S3Backend
from abby_core.storage.s3_client import redact
from tests.fixtures.seaweedfs import SeaweedFS
from tests.storage.conftest import Clock, s3_settings
from tests.storage.test_manager import ALICE, BOB, png

pytestmark = pytest.mark.seaweedfs


def backend_on(server: SeaweedFS, **extra: object) -> S3Backend:
    backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key, **extra))
    backend.ensure_ready(cleanup_days=7)
    return backend


@pytest.fixture
async def manager(seaweedfs: SeaweedFS, clock: Clock):  # type: ignore[no-untyped-def]
    m = StorageManager(backend_on(seaweedfs), clock=clock)
    yield m
    await m.aclose()


async def test_presigned_link_serves_the_same_bytes_inline(manager: StorageManager) -> None:
    data = png()
    stored = await manager.save_image(await manager.reserve(ALICE), data)
    assert stored.url is not None and stored.path is None
    response = httpx.get(stored.url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    query = dict(parse_qsl(urlsplit(stored.url).query))
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "3600"


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_tampered_expired_and_anonymous_requests_are_refused(
    manager: StorageManager, seaweedfs: SeaweedFS
) -> None:
    stored = await manager.save_image(await manager.reserve(ALICE), png())
    other = await manager.save_image(await manager.reserve(BOB), png(color=(9, 9, 9)))
    assert stored.url is not None and other.url is not None
    # Alice's link with Bob's key in the path: the signature covers the path.
    swapped = stored.url.replace(stored.key, other.key)
    assert httpx.get(swapped).status_code == 403
    assert httpx.get(_with_query(stored.url, **{"X-Amz-Expires": "604800"})).status_code == 403
    signature = dict(parse_qsl(urlsplit(stored.url).query))["X-Amz-Signature"]
    forged = _with_query(stored.url, **{"X-Amz-Signature": signature[:-4] + "0000"})
    assert httpx.get(forged).status_code == 403
    bucket = manager.backend.bucket  # type: ignore[attr-defined]
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}/{stored.key}").status_code == 403
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}?list-type=2").status_code == 403
    assert httpx.get(f"{seaweedfs.endpoint}/{bucket}/ledger/global.json").status_code == 403

    short = backend_on(seaweedfs)
    url, _ = short.link(stored.key, content_type="image/png", ttl=1)
    assert url is not None
    time.sleep(2.2)
    assert httpx.get(url).status_code == 403


async def test_links_are_signed_for_the_public_endpoint(seaweedfs: SeaweedFS, clock: Clock) -> None:
    public = seaweedfs.endpoint.replace("127.0.0.1", "localhost")
    backend = backend_on(seaweedfs, public_endpoint_url=public)
    manager = StorageManager(backend, clock=clock)
    try:
        stored = await manager.save_image(await manager.reserve(ALICE), png())
        assert stored.url is not None and stored.url.startswith(public + "/")
        assert httpx.get(stored.url).status_code == 200
        # Rewriting the host of a signed link breaks it: why links must be signed for it.
        assert httpx.get(stored.url.replace("localhost", "127.0.0.1")).status_code == 403
    finally:
        await manager.aclose()


def test_ensure_bucket_installs_lifecycle_and_keeps_other_rules(seaweedfs: SeaweedFS) -> None:
    backend = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    first = backend.ensure_ready(cleanup_days=7)
    assert first.created and first.private and first.conditional_writes
    assert backend.lifecycle_days() == 7
    backend.client.put_bucket_lifecycle_configuration(
        Bucket=backend.bucket,
        LifecycleConfiguration={
            "Rules": [
                {"ID": "operator-temp", "Status": "Enabled", "Filter": {"Prefix": "temp/"}, "Expiration": {"Days": 1}},
                *backend.client.get_bucket_lifecycle_configuration(Bucket=backend.bucket)["Rules"],
            ]
        },
    )
    again = backend.ensure_ready(cleanup_days=3)
    assert not again.created
    rules = backend.client.get_bucket_lifecycle_configuration(Bucket=backend.bucket)["Rules"]
    ids = sorted(r["ID"] for r in rules)
    assert ids == sorted(["operator-temp", LIFECYCLE_RULE_ID])
    ours = next(r for r in rules if r["ID"] == LIFECYCLE_RULE_ID)
    assert ours["Expiration"]["Days"] == 3 and ours["Filter"]["Prefix"] == "images/"


@pytest.fixture(params=["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
def fresh_s3(request: pytest.FixtureRequest) -> S3Backend:
    """An S3 backend on a new (not yet created) bucket: moto in-process, or the real server."""
    if request.param == "moto":
        request.getfixturevalue("moto_env")
        return S3Backend(s3_settings(None, None, None))
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    return S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))


def _rules(backend: S3Backend) -> dict[str, dict[str, Any]]:
    rules = backend.client.get_bucket_lifecycle_configuration(Bucket=backend.bucket)["Rules"]
    assert len(rules) == len({r["ID"] for r in rules})
    return {r["ID"]: r for r in rules}


def _expiry(rule: dict[str, Any]) -> tuple[str, int, str]:
    return rule["Filter"]["Prefix"], rule["Expiration"]["Days"], rule["Status"]


def test_events_backstop_rule_is_installed_beside_the_images_rule(fresh_s3: S3Backend) -> None:
    backend = fresh_s3
    report = backend.ensure_ready(cleanup_days=7, events_days=97)
    rules = _rules(backend)
    assert set(rules) == {LIFECYCLE_RULE_ID, EVENTS_LIFECYCLE_RULE_ID}
    assert _expiry(rules[LIFECYCLE_RULE_ID]) == ("images/", 7, "Enabled")
    assert _expiry(rules[EVENTS_LIFECYCLE_RULE_ID]) == ("events/", 97, "Enabled")
    assert report.lifecycle_days == 7 and backend.lifecycle_days() == 7  # what `abby doctor` reads
    assert any(EVENTS_LIFECYCLE_RULE_ID in note and "97 days" in note for note in report.notes)

    # Twice: the same two rules, no copies.
    backend.ensure_ready(cleanup_days=7, events_days=97)
    assert _rules(backend) == rules

    # A new retention replaces our events rule only; without events_days it is left alone.
    backend.ensure_ready(cleanup_days=3, events_days=37)
    assert _expiry(_rules(backend)[EVENTS_LIFECYCLE_RULE_ID]) == ("events/", 37, "Enabled")
    plain = backend.ensure_ready(cleanup_days=7)
    assert not any(EVENTS_LIFECYCLE_RULE_ID in note for note in plain.notes)
    after = _rules(backend)
    assert _expiry(after[LIFECYCLE_RULE_ID]) == ("images/", 7, "Enabled")
    assert _expiry(after[EVENTS_LIFECYCLE_RULE_ID]) == ("events/", 37, "Enabled")


def test_events_backstop_keeps_foreign_rules(fresh_s3: S3Backend) -> None:
    backend = fresh_s3
    backend.ensure_ready(cleanup_days=7)
    foreign = {"ID": "operator-temp", "Status": "Enabled", "Filter": {"Prefix": "temp/"}, "Expiration": {"Days": 1}}
    backend.client.put_bucket_lifecycle_configuration(
        Bucket=backend.bucket,
        LifecycleConfiguration={"Rules": [foreign, *_rules(backend).values()]},
    )
    backend.ensure_ready(cleanup_days=7, events_days=97)
    backend.ensure_ready(cleanup_days=7, events_days=97)
    rules = _rules(backend)
    assert set(rules) == {"operator-temp", LIFECYCLE_RULE_ID, EVENTS_LIFECYCLE_RULE_ID}
    assert _expiry(rules["operator-temp"]) == ("temp/", 1, "Enabled")
    assert _expiry(rules[EVENTS_LIFECYCLE_RULE_ID]) == ("events/", 97, "Enabled")


def test_events_days_must_be_positive(fresh_s3: S3Backend) -> None:
    with pytest.raises(ValueError, match="events_days"):
        fresh_s3.ensure_ready(cleanup_days=7, events_days=0)


async def test_manager_asks_for_retention_plus_the_margin(fresh_s3: S3Backend, clock: Clock) -> None:
    manager = StorageManager(fresh_s3, clock=clock, events_retention_days=30)
    try:
        await manager.ensure_ready()
    finally:
        await manager.aclose()
    assert _expiry(_rules(fresh_s3)[EVENTS_LIFECYCLE_RULE_ID]) == ("events/", 37, "Enabled")


def test_missing_bucket_without_create_names_the_fix(seaweedfs: SeaweedFS) -> None:
    backend = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    with pytest.raises(StorageUnavailable, match="abby storage init"):
        backend.ensure_ready(cleanup_days=7, create=False)


async def test_wrong_credentials_are_a_clear_storage_error(seaweedfs: SeaweedFS, clock: Clock) -> None:
    good = backend_on(seaweedfs)
    bad = S3Backend(s3_settings(seaweedfs.endpoint, seaweedfs.access_key, "wrong-secret-value", bucket=good.bucket))
    manager = StorageManager(bad, clock=clock)
    try:
        with pytest.raises(StorageUnavailable) as refused:
            await manager.reserve(ALICE)
        assert "S3_SECRET_ACCESS_KEY" in str(refused.value)
        assert "wrong-secret-value" not in str(refused.value)
    finally:
        await manager.aclose()


async def test_unreachable_server_refuses_instead_of_counting_zero(clock: Clock) -> None:
    backend = S3Backend(s3_settings("http://127.0.0.1:9", "k", "s", timeout_seconds=1, max_attempts=1))
    manager = StorageManager(backend, clock=clock)
    try:
        with pytest.raises(StorageUnavailable, match="could not be reached"):
            await manager.reserve(ALICE)
        with pytest.raises(StorageUnavailable):
            await manager.get_quota_status(ALICE)
    finally:
        await manager.aclose()


def test_server_honours_conditional_writes(seaweedfs: SeaweedFS) -> None:
    assert backend_on(seaweedfs).check_conditional_writes() is True


async def test_thousands_of_keys_are_deleted_in_batches(
    seaweedfs: SeaweedFS, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_on(seaweedfs)
    keys = [f"images/users/{ALICE}/20260101T000000Z-{i:08x}.png" for i in range(2100)]
    for key in keys:
        backend.client.put_object(Bucket=backend.bucket, Key=key, Body=b"x")
    calls: list[int] = []
    real = backend.client.delete_objects

    def counting(**kwargs: object) -> object:
        calls.append(len(kwargs["Delete"]["Objects"]))  # type: ignore[index]
        return real(**kwargs)

    monkeypatch.setattr(backend.client, "delete_objects", counting)
    manager = StorageManager(backend, clock=clock)
    try:
        clock.advance(days=8)
        report = await manager.cleanup_old_files()
    finally:
        await manager.aclose()
    assert report.objects == 2100
    assert calls == [1000, 1000, 100]
    assert list(backend.list_objects(f"images/users/{ALICE}/")) == []


# -- credentials in the endpoint URL -----------------------------------------------------------

PASSWORD = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://abby:s3cr3t-pw@127.0.0.1:8333", "http://***@127.0.0.1:8333"),
        ("https://abby@s3.example.org", "https://***@s3.example.org"),
        ("http://abby:p@ss/w#rd@host:9000/", "http://***@host:9000/"),  # raw @ / # in the password
        ("abby:s3cr3t-pw@host:8333", "***@host:8333"),
        ("http://127.0.0.1:8333", "http://127.0.0.1:8333"),
        (None, "AWS S3"),
    ],
)
def test_redact_hides_the_userinfo(url: str | None, shown: str) -> None:
    assert redact(url) == shown


def _client_error(status: int, code: str, operation: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def test_no_message_or_location_shows_the_endpoint_password() -> None:
    endpoint = f"http://abby:{PASSWORD}@127.0.0.1:9"
    backend = S3Backend(s3_settings(endpoint, "k", "s", timeout_seconds=1, max_attempts=1))
    assert PASSWORD not in backend.location and "***@127.0.0.1:9" in backend.location
    failures: list[Exception] = [
        _client_error(503, "ServiceUnavailable"),
        _client_error(500, "InternalError"),
        _client_error(403, "AccessDenied"),
        _client_error(404, "NoSuchBucket"),
        _client_error(418, "Teapot"),
        ReadTimeoutError(endpoint_url=endpoint),
        EndpointConnectionError(endpoint_url=endpoint),
    ]
    messages = [str(backend._translate(exc, "read the image")) for exc in failures]
    # And for real: nothing listens on port 9.
    with pytest.raises(StorageUnavailable) as unreachable:
        backend.get_object("images/users/1/x.png")
    messages.append(str(unreachable.value))
    assert "could not be reached" in unreachable.value.message
    assert "***@127.0.0.1:9" in unreachable.value.message
    assert [m for m in messages if PASSWORD in m or "abby:" in m] == []


def test_an_invalid_endpoint_is_refused_without_quoting_the_password() -> None:
    # A URL the settings refuse at load: the backend must still refuse it on its own.
    bad = s3_settings(None, "k", "s").model_copy(update={"endpoint_url": f"http://abby:{PASSWORD}@bad host:1"})
    backend = S3Backend(bad)
    with pytest.raises(StorageUnavailable) as refused:
        backend.put_object("images/users/1/x.png", b"x", "image/png")
    assert "not a valid endpoint URL" in refused.value.message
    assert PASSWORD not in refused.value.message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_credentials_in_the_endpoint_stay_out_of_reports_and_links(seaweedfs: SeaweedFS) -> None:
    endpoint = seaweedfs.endpoint.replace("http://", f"http://abby:{PASSWORD}@")
    backend = S3Backend(s3_settings(endpoint, seaweedfs.access_key, seaweedfs.secret_key))
    report = backend.ensure_ready(cleanup_days=7)
    assert report.private is True
    assert PASSWORD not in report.location and all(PASSWORD not in note for note in report.notes)
    backend.put_object("images/users/1/x.png", b"bytes", "image/png")
    url, _ = backend.link("images/users/1/x.png", content_type="image/png", ttl=60)
    assert url is not None and url.startswith(seaweedfs.endpoint + "/")  # no userinfo at all
    assert PASSWORD not in url
    response = httpx.get(url)
    assert (response.status_code, response.content) == (200, b"bytes")


# -- the privacy probe -------------------------------------------------------------------------


class _AnonymousStub:
    """An unsigned client whose GET answers what the test says."""

    def __init__(self, error: ClientError | None) -> None:
        self.error = error
        self.closed = False

    def get_object(self, **_: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"Body": b"probe"}

    def close(self) -> None:
        self.closed = True


def _probe_with(backend: S3Backend, monkeypatch: pytest.MonkeyPatch, error: ClientError | None) -> _AnonymousStub:
    stub = _AnonymousStub(error)
    monkeypatch.setattr(backend, "_anonymous_client", lambda: stub)
    return stub


@pytest.mark.parametrize(
    ("status", "code"), [(403, "AccessDenied"), (401, "Unauthorized"), (403, "AllAccessDisabled"), (403, "")]
)
def test_only_a_refusal_means_private(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, status: int, code: str
) -> None:
    backend = backend_on(seaweedfs)
    stub = _probe_with(backend, monkeypatch, _client_error(status, code))
    assert backend.anonymous_read_refused() is True
    assert stub.closed
    assert list(backend.list_objects("temp/privacy-probe-")) == []


@pytest.mark.parametrize(
    ("status", "code", "said"),
    [
        (503, "ServiceUnavailable", "having trouble"),
        (500, "InternalError", "having trouble"),
        (502, "", "having trouble"),
        (404, "NoSuchKey", "NoSuchKey"),  # the probe was just written: a 404 proves nothing
        (301, "PermanentRedirect", "PermanentRedirect"),
    ],
)
def test_server_trouble_is_not_called_private(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, status: int, code: str, said: str
) -> None:
    backend = backend_on(seaweedfs)
    stub = _probe_with(backend, monkeypatch, _client_error(status, code))
    with pytest.raises(StorageUnavailable, match="check that the bucket is private") as unverified:
        backend.anonymous_read_refused()
    assert said in unverified.value.message
    assert stub.closed
    assert list(backend.list_objects("temp/privacy-probe-")) == []
    # ensure_ready (``abby storage init``) fails too instead of reporting a private bucket.
    with pytest.raises(StorageUnavailable, match="check that the bucket is private"):
        backend.ensure_ready(cleanup_days=7)


def test_a_readable_bucket_is_reported_public(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_on(seaweedfs)
    _probe_with(backend, monkeypatch, None)
    report = backend.ensure_ready(cleanup_days=7)
    assert report.private is False
    assert any("anonymous users can read" in note for note in report.notes)


def test_the_real_anonymous_client_is_refused(seaweedfs: SeaweedFS) -> None:
    assert backend_on(seaweedfs).anonymous_read_refused() is True


# -- sweeping unfinished multipart uploads -----------------------------------------------------


def _start_upload(backend: S3Backend, key: str) -> str:
    upload = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=key)
    backend.client.upload_part(
        Bucket=backend.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"part"
    )
    return str(upload["UploadId"])


def _uploads(backend: S3Backend) -> list[str]:
    return [u["UploadId"] for u in backend.client.list_multipart_uploads(Bucket=backend.bucket).get("Uploads", [])]


class _FailingPaginator:
    def __init__(self, error: ClientError) -> None:
        self.error = error

    def paginate(self, **_: Any) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("status", "code"), [(501, "NotImplemented"), (405, "MethodNotAllowed"), (403, "AccessDenied")]
)
def test_sweep_tolerates_servers_and_credentials_without_upload_listing(
    seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch, status: int, code: str
) -> None:
    backend = backend_on(seaweedfs)
    upload = _start_upload(backend, "images/users/1/big.png")
    error = _client_error(status, code, "ListMultipartUploads")
    monkeypatch.setattr(backend.client, "get_paginator", lambda _name: _FailingPaginator(error))
    assert backend.sweep_partial_writes(datetime.now(UTC) + timedelta(hours=1)) == 0
    monkeypatch.undo()
    assert _uploads(backend) == [upload]


def test_sweep_reports_server_trouble(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = backend_on(seaweedfs)
    error = _client_error(503, "ServiceUnavailable", "ListMultipartUploads")
    monkeypatch.setattr(backend.client, "get_paginator", lambda _name: _FailingPaginator(error))
    with pytest.raises(StorageUnavailable, match="list unfinished uploads"):
        backend.sweep_partial_writes(datetime.now(UTC) + timedelta(hours=1))


def test_sweep_aborts_every_stale_upload_and_keeps_objects(seaweedfs: SeaweedFS) -> None:
    backend = backend_on(seaweedfs)
    backend.put_object("images/users/1/kept.png", b"kept", "image/png")
    for i in range(3):
        _start_upload(backend, f"images/users/{i}/big.png")
    _start_upload(backend, "temp/elsewhere.bin")
    assert len(_uploads(backend)) == 4
    assert backend.sweep_partial_writes(datetime.now(UTC) + timedelta(hours=1)) == 4
    assert _uploads(backend) == []
    assert backend.get_object("images/users/1/kept.png") == b"kept"
    assert [o.key for o in backend.list_objects("")] == ["images/users/1/kept.png"]
