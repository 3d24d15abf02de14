"""Storage fixtures: one manager factory, parametrized over every backend.

``filesystem`` and ``moto`` are fast and in-process; ``seaweedfs`` is a real S3 server.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from abby_core.config import S3Settings
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager
from abby_core.storage.s3 import S3Backend
from tests.fixtures.clocks import Clock, day_safe_now
from tests.fixtures.seaweedfs import SeaweedFS

BACKENDS = ["filesystem", "moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)]


def s3_settings(endpoint: str | None, access: str | None, secret: str | None, **extra: Any) -> S3Settings:
    from pydantic import SecretStr

    values: dict[str, Any] = {
        "endpoint_url": endpoint,
        "public_endpoint_url": None,
        "bucket": f"abby-test-{uuid.uuid4().hex[:10]}",
        "access_key_id": access,
        "secret_access_key": SecretStr(secret) if secret else None,
        "region": "us-east-1",
        "timeout_seconds": 10,
        "max_attempts": 3,
    }
    values.update(extra)
    return S3Settings(**values)


#: Local time zones far from UTC on either side of its midnight: a rule that takes the local
#: day for the UTC day gets the date wrong in one of them within hours of midnight UTC.
LOCAL_ZONES = ["Pacific/Chatham", "America/St_Johns"]


@pytest.fixture(params=LOCAL_ZONES)
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the process's local time zone (``TZ``) set to one far from UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        # Without the zone's data the process would silently stay in UTC and prove nothing.
        assert datetime.now().astimezone().utcoffset() != timedelta(0), f"no time zone data for {request.param}"
        yield str(request.param)
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.fixture
def clock() -> Clock:
    # Near real "now", so S3 LastModified (set by the server) and the ledger agree on the day,
    # and clear of midnight, so a test that moves it by minutes stays in one day.
    return Clock(day_safe_now())


_MOTO_PUT = threading.Lock()


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws
    from moto.s3.responses import S3Response

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # moto checks a PutObject's If-Match / If-None-Match and then writes, unlocked: two threads
    # can both pass the check. S3 decides the condition and the write as one step; so must the
    # stand-in, or a lost update in moto reads as one in the ledger.
    put_object = S3Response.put_object

    def atomic_put_object(self: Any) -> Any:
        with _MOTO_PUT:
            return put_object(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put_object)
    with mock_aws():
        yield


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_backend(
    backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., StorageBackend]:
    """Build a fresh, ready backend of the parametrized kind (new folder or bucket each call)."""
    made: list[StorageBackend] = []

    def build(**extra: Any) -> StorageBackend:
        backend: StorageBackend
        if backend_kind == "filesystem":
            backend = FilesystemBackend(tmp_path / f"root-{len(made)}")
        elif backend_kind == "moto":
            request.getfixturevalue("moto_env")
            backend = S3Backend(s3_settings(None, None, None, **extra))
        else:
            server: SeaweedFS = request.getfixturevalue("seaweedfs")
            backend = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key, **extra))
        backend.ensure_ready(cleanup_days=7)
        made.append(backend)
        return backend

    return build


@pytest.fixture
async def make_manager(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> AsyncIterator[Callable[..., StorageManager]]:
    managers: list[StorageManager] = []

    def build(backend: StorageBackend | None = None, **limits: Any) -> StorageManager:
        limits.setdefault("clock", clock)
        manager = StorageManager(backend or make_backend(), **limits)
        managers.append(manager)
        return manager

    yield build
    for manager in managers:
        await manager.aclose()
