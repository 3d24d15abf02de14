"""What only a real S3 server can show: links, privacy, lifecycle, conditional writes."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from abby_core.errors import StorageUnavailable
from abby_core.storage import StorageManager
from abby_core.storage.s3 import LIFECYCLE_RULE_ID, S3Backend
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

    short = backend_on(seaweedfs, presigned_url_ttl_seconds=1)
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


