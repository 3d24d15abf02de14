"""Faults: each leaves nothing half-done, and a failure costs no quota.

Covered elsewhere, not repeated: an image write failing with ENOSPC/EROFS/EACCES and a
read-only ledger (``tests/storage/test_filesystem.py``); an unreachable server and wrong
credentials (``tests/storage/test_s3_seaweedfs.py``); a corrupt user ledger, deleted
user and global ledgers, one lifecycle deletion (``tests/storage/test_manager.py``);
provider 503s, timeouts and the content filter with one retry (``tests/core/test_pipeline.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from abby_core.errors import ContentFiltered, SaveOutcomeUnknown, StorageUnavailable
from abby_core.storage import FilesystemBackend, ObjectInfo, StorageBackend, StorageManager
from tests.fixtures.fake_stability import FakeStability
from tests.fixtures.seaweedfs import SeaweedFS
from tests.reliability import scenarios


@pytest.fixture
def dedicated_seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own, which it may stop and start."""
    server = SeaweedFS(data_dir=tmp_path / "seaweedfs")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.seaweedfs
async def test_s3_outage_mid_burst_then_recovery(dedicated_seaweedfs: SeaweedFS) -> None:
    out = await scenarios.storage_outage(dedicated_seaweedfs)
    assert out.failed == [], "\n".join(out.failed)


async def test_provider_faults_refund_and_name_the_error(
    managers: Callable[..., StorageManager], backend_name: str, fake_stability: FakeStability
) -> None:
    out = await scenarios.provider_faults(managers(), fake_stability, backend_name=backend_name)
    assert out.failed == [], "\n".join(out.failed)


@pytest.mark.slow
async def test_process_killed_while_holding_reservations(
    backend: StorageBackend, backend_name: str, config: dict[str, Any]
) -> None:
    out = await scenarios.killed_holder(backend, config, backend_name=backend_name)
    assert out.failed == [], "\n".join(out.failed)


async def test_lifecycle_deletions_are_reconciled(managers: Callable[..., StorageManager], backend_name: str) -> None:
    out = await scenarios.lifecycle_deletions(managers(), backend_name=backend_name)
    assert out.failed == [], "\n".join(out.failed)


@pytest.mark.parametrize("which", ["user", "global"])
@pytest.mark.parametrize("damage", list(scenarios.LEDGER_DAMAGE))
@pytest.mark.parametrize("backend_name", ["filesystem"], indirect=True)
async def test_damaged_ledger_is_rebuilt_and_logged(
    managers: Callable[..., StorageManager], which: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="abby")
    out = await scenarios.ledger_damage(managers(max_user_daily_gens=3), damage, which, backend_name="filesystem")
    assert out.failed == [], "\n".join(out.failed)
    assert "rebuil" in caplog.text


@pytest.mark.seaweedfs
@pytest.mark.parametrize("which", ["user", "global"])
@pytest.mark.parametrize("backend_name", ["seaweedfs"], indirect=True)
async def test_damaged_ledger_on_s3(managers: Callable[..., StorageManager], which: str) -> None:
    out = await scenarios.ledger_damage(
        managers(max_user_daily_gens=3), "fields missing", which, backend_name="seaweedfs"
    )
    assert out.failed == [], "\n".join(out.failed)


async def test_disk_full_and_read_only_root_leave_nothing(tmp_path: Path) -> None:
    out = await scenarios.disk_full(tmp_path / "shared")
    assert out.failed == [], "\n".join(out.failed)


class Flaky(FilesystemBackend):
    """A folder that can go away (``down``) or lose the answer to a write that landed."""

    down = False
    lose_answer: str | None = None  # key prefix of the next write whose answer is lost
    write_errors_are_definite = False  # like a server: an answer can be lost after the write

    def _gate(self) -> None:
        if self.down:
            raise StorageUnavailable("Could not reach storage: it went away (test).")

    def read_doc(self, key: str) -> tuple[bytes, str] | None:
        self._gate()
        return super().read_doc(key)

    stay_down = True  # after a lost answer
    refuse_next: str | None = None  # key prefix of the next write that fails unsent, storage then down

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        self._gate()
        if self.refuse_next and key.startswith(self.refuse_next):
            self.refuse_next, self.down = None, True
            raise StorageUnavailable("Could not update the quota ledger: connection refused (test).")
        tag = super().write_doc(key, body, etag=etag)
        if self.lose_answer and key.startswith(self.lose_answer):
            self.lose_answer, self.down = None, self.stay_down  # landed, then the server died
            raise StorageUnavailable("Could not update the quota ledger: no answer (test).")
        return tag

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        self._gate()
        super().put_object(key, data, content_type)

    def delete_objects(self, keys: Sequence[str]) -> None:
        self._gate()
        super().delete_objects(keys)

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        self._gate()
        return super().list_objects(prefix)


@pytest.fixture
async def flaky(tmp_path: Path) -> AsyncIterator[tuple[Flaky, StorageManager]]:
    backend = Flaky(tmp_path / "shared")
    manager = StorageManager(backend, max_user_daily_gens=3, settle_seconds=1)
    yield backend, manager
    backend.down = False
    await manager.aclose()


USER = scenarios.user(31337)


async def test_commit_that_landed_but_lost_its_answer_is_found_and_reported(
    flaky: tuple[Flaky, StorageManager],
) -> None:
    backend, manager = flaky
    reservation = await manager.reserve(USER)
    backend.lose_answer = "ledger/users/"  # the commit lands; its answer never comes back
    backend.stay_down = False  # ...but storage answers the next request
    stored = await manager.save_image(reservation, scenarios.noise_png(40))
    status = await manager.get_quota_status(USER)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (1, stored.size, 0)
    assert [o.key for o in backend.list_objects("images/")] == [stored.key]


async def test_a_commit_whose_answer_is_lost_in_an_outage_is_reported_as_unknown(
    flaky: tuple[Flaky, StorageManager],
) -> None:
    backend, manager = flaky
    reservation = await manager.reserve(USER)
    backend.lose_answer = "ledger/users/"  # the commit lands, then storage stays away
    with pytest.raises(SaveOutcomeUnknown):
        await manager.save_image(reservation, scenarios.noise_png(40))
    backend.down = False
    # It had landed: the one outcome the member was told is possible, with nothing half-done.
    status = await manager.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (1, 0)
    assert [i.key for i in await manager.list_images(USER)] == [o.key for o in backend.list_objects("images/")]


async def test_a_commit_refused_in_an_outage_costs_nothing(flaky: tuple[Flaky, StorageManager]) -> None:
    backend, manager = flaky
    service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
    reservation = await manager.reserve(USER)
    backend.refuse_next = "ledger/users/"  # the commit never reaches storage, which then stays away
    with pytest.raises(StorageUnavailable):
        await manager.save_image(reservation, scenarios.noise_png(40))
    backend.down = False  # storage is back: the same manager finishes the void first
    status = await manager.get_quota_status(USER)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (0, 0, 0)
    assert list(backend.list_objects("images/")) == []
    assert (await service.imagine(USER, "after")).status.daily_used == 1


async def test_stored_image_is_not_reported_as_a_failure(
    flaky: tuple[Flaky, StorageManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, manager = flaky
    service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
    real_save = manager.save_image

    async def save_then_storage_goes(*args: Any, **kwargs: Any) -> Any:
        stored = await real_save(*args, **kwargs)
        backend.down = True
        return stored

    monkeypatch.setattr(manager, "save_image", save_then_storage_goes)
    result = await service.imagine(USER, "saved just before the outage")
    assert result.status.daily_used == 1 and result.status.user_bytes == result.stored.size
    backend.down = False
    assert (await manager.get_quota_status(USER)).daily_used == 1


async def test_provider_error_is_not_hidden_by_a_failed_release(flaky: tuple[Flaky, StorageManager]) -> None:
    backend, manager = flaky

    class Refusing(scenarios.FixedProvider):
        async def text_to_image(self, request: Any) -> Any:
            backend.down = True  # storage goes away while the provider works
            raise ContentFiltered("The image was blocked by the content filter.")

    service = scenarios.service_with(manager, Refusing([b""]))
    with pytest.raises(ContentFiltered):
        await service.imagine(USER, "a cat")
    backend.down = False
    status = await manager.get_quota_status(USER)
    assert (status.daily_used, status.in_flight) == (0, 0)


@pytest.mark.slow
async def test_one_shot_cli_runs_through_an_s3_outage_are_charged_as_printed(dedicated_seaweedfs: SeaweedFS) -> None:
    out = await scenarios.one_shot_outage(dedicated_seaweedfs)
    assert out.failed == [], "\n".join(out.failed)
