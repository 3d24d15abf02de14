"""Reliability fixtures: a ready backend of each kind and the config a child process needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager
from abby_core.storage.s3 import S3Backend
from tests.fixtures.seaweedfs import SeaweedFS
from tests.storage.conftest import s3_settings

BACKENDS = ["filesystem", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)]


def child_config(backend: StorageBackend, server: SeaweedFS | None) -> dict[str, Any]:
    """What ``tests.reliability.worker`` needs to open the same storage."""
    if isinstance(backend, FilesystemBackend):
        return {"backend": "filesystem", "root": str(backend.root)}
    assert server is not None and isinstance(backend, S3Backend)
    return {
        "backend": "s3",
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "bucket": backend.bucket,
    }


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(backend_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> StorageBackend:
    """A fresh, ready folder or bucket."""
    made: StorageBackend
    if backend_name == "filesystem":
        made = FilesystemBackend(tmp_path / "shared")
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        made = S3Backend(s3_settings(server.endpoint, server.access_key, server.secret_key))
    made.ensure_ready(cleanup_days=7)
    return made


@pytest.fixture
def config(backend: StorageBackend, backend_name: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("seaweedfs") if backend_name == "seaweedfs" else None
    return child_config(backend, server)


@pytest.fixture
async def managers(backend: StorageBackend) -> AsyncIterator[Callable[..., StorageManager]]:
    """Build managers on the fixture's backend; all are closed after the test."""
    made: list[StorageManager] = []

    def build(**options: Any) -> StorageManager:
        manager = StorageManager(backend, **options)
        made.append(manager)
        return manager

    yield build
    for manager in made:
        await manager.aclose()
