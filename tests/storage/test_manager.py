"""The StorageManager contract, run against every backend (filesystem, moto, SeaweedFS)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import timedelta

import pytest
from PIL import Image

from abby_core.errors import (
    DailyLimitExceeded,
    GlobalStorageFull,
    ImageNotFound,
    InvalidImage,
    InvalidInput,
    InvalidKey,
    InvalidUser,
    ReservationInvalid,
    UserBlocked,
    UserStorageFull,
)
from abby_core.storage import StorageBackend, StorageManager
from abby_core.storage.keys import GLOBAL_LEDGER_KEY, USERS_PREFIX, user_ledger_key
from abby_core.storage.rules import PURGE_MARGIN
from tests.storage.conftest import Clock

ALICE, BOB = "111111111111111111", "222222222222222222"
MB = 1_000_000


def png(size: int = 64, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def blob(nbytes: int) -> bytes:
    """A PNG-typed payload of an exact size (storage does not decode images)."""
    return b"\x89PNG\r\n\x1a\n" + b"\0" * (nbytes - 8)


async def generate(manager: StorageManager, user: str, data: bytes | None = None):  # type: ignore[no-untyped-def]
    reservation = await manager.reserve(user)
    return await manager.save_image(reservation, data or png())


async def test_save_image_stores_under_user_prefix_and_counts(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager()
    data = png()
    stored = await generate(manager, ALICE, data)
    assert stored.key.startswith(f"{USERS_PREFIX}{ALICE}/") and stored.key.endswith(".png")
    assert stored.size == len(data)
    assert stored.link is not None
    assert await manager.get_image(ALICE, stored.key) == data
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.daily_limit, status.user_bytes, status.global_bytes) == (
        1,
        5,
        len(data),
        len(data),
    )


async def test_sixth_generation_is_refused_with_reset_time(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager()
    for _ in range(5):
        await generate(manager, ALICE)
    with pytest.raises(DailyLimitExceeded) as refused:
        await manager.reserve(ALICE)
    error = refused.value
    assert (error.used, error.limit, error.limit_name) == (5, 5, "daily")
    midnight = (clock.now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert error.resets_at == midnight
    assert "resets at 00:00 UTC" in str(error)
    assert (await manager.get_quota_status(ALICE)).daily_used == 5


async def test_daily_count_resets_at_midnight_utc(make_manager: Callable[..., StorageManager], clock: Clock) -> None:
    manager = make_manager(max_user_daily_gens=2)
    await generate(manager, ALICE)
    await generate(manager, ALICE)
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)
    clock.now = clock.now.replace(hour=23, minute=59, second=59) + timedelta(seconds=1)  # exactly midnight
    assert (await manager.get_quota_status(ALICE)).daily_used == 0
    await generate(manager, ALICE)
    assert (await manager.get_quota_status(ALICE)).daily_used == 1


async def test_release_refunds_and_is_idempotent(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=1)
    reservation = await manager.reserve(ALICE)
    held = await manager.get_quota_status(ALICE)
    assert (held.daily_used, held.user_bytes, held.in_flight) == (1, reservation.bytes, 1)
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)  # the hold counts
    await manager.release(reservation)
    await manager.release(reservation)
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.user_bytes, status.global_bytes, status.in_flight) == (0, 0, 0, 0)
    await generate(manager, ALICE)


async def test_reservation_context_manager_releases_on_failure(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=1)
    with pytest.raises(RuntimeError):
        async with manager.reservation(ALICE):
            raise RuntimeError("the provider failed")
    assert (await manager.get_quota_status(ALICE)).daily_used == 0


async def test_users_are_independent(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await generate(manager, ALICE)
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)
    await generate(manager, BOB)
    assert (await manager.get_quota_status(BOB)).daily_used == 1


async def test_user_storage_limit(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_storage_mb=3, image_gen_size_mb=1, max_user_daily_gens=50)
    await generate(manager, ALICE, blob(1 * MB))
    await generate(manager, ALICE, blob(1 * MB))
    await generate(manager, ALICE, blob(1 * MB))
    with pytest.raises(UserStorageFull) as refused:
        await manager.reserve(ALICE)
    assert (refused.value.used, refused.value.limit) == (3 * MB, 3 * MB)
    assert "3.0 MB of 3.0 MB" in str(refused.value)
    await generate(manager, BOB, blob(1 * MB))  # another user is not affected


async def test_global_storage_limit(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_global_storage_mb=2, max_user_storage_mb=2, image_gen_size_mb=1)
    await generate(manager, ALICE, blob(1 * MB))
    await generate(manager, BOB, blob(1 * MB))
    with pytest.raises(GlobalStorageFull) as refused:
        await manager.reserve("333333333333333333")
    assert refused.value.used == 2 * MB
    status = await manager.get_quota_status("333333333333333333")
    assert (status.daily_used, status.global_bytes) == (0, 2 * MB)  # the refusal held nothing


async def test_image_larger_than_estimate_must_still_fit(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_storage_mb=3, image_gen_size_mb=1)
    await generate(manager, ALICE, blob(int(2.5 * MB)))  # grows the 1 MB hold to 2.5 MB: fits
    reservation = await manager.reserve(ALICE, size_bytes=100)
    with pytest.raises(UserStorageFull):
        await manager.save_image(reservation, blob(1 * MB))
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.user_bytes, status.in_flight) == (1, int(2.5 * MB), 0)
    assert len(await manager.list_images(ALICE)) == 1


async def test_expired_reservation_frees_quota(make_manager: Callable[..., StorageManager], clock: Clock) -> None:
    manager = make_manager(max_user_daily_gens=1, reservation_ttl_seconds=60)
    await manager.reserve(ALICE)  # the holder "dies" and never comes back
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)
    clock.advance(seconds=61)
    # Expired, the dead hold still counts until it can be dropped (its upload may still be
    # stored, and a process whose clock is behind may still commit it): two minutes more.
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)
    clock.advance(seconds=PURGE_MARGIN.total_seconds())
    await generate(manager, ALICE)  # the next write drops it
    await manager.reconcile()
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.in_flight) == (1, 0)
    assert status.global_bytes == status.user_bytes


async def test_save_after_expiry_is_refused_and_costs_nothing(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(max_user_daily_gens=1, reservation_ttl_seconds=60)
    slow = await manager.reserve(ALICE)
    clock.advance(seconds=61 + PURGE_MARGIN.total_seconds())
    fast = await manager.reserve(ALICE)  # the slow one expired and was dropped: its slot was reused
    await manager.save_image(fast, png())
    with pytest.raises(ReservationInvalid):
        await manager.save_image(slow, png())  # its hold may be gone with its upload: never a 2nd image
    assert len(await manager.list_images(ALICE)) == 1
    assert (await manager.get_quota_status(ALICE)).daily_used == 1


@pytest.mark.parametrize("bad", ["../1", "-1", "1e9", "1" * 30, "١٢٣", "", "0", "012", "12 3", None, 1.5, True])
async def test_user_ids_must_be_snowflakes(make_manager: Callable[..., StorageManager], bad: object) -> None:
    manager = make_manager()
    with pytest.raises(InvalidUser) as refused:
        await manager.reserve(bad)
    assert "Discord user id" in str(refused.value)
    assert list(manager.backend.list_objects("")) == []  # nothing written anywhere


async def test_integer_user_ids_are_accepted(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager()
    stored = await generate(manager, int(ALICE))
    assert stored.user_id == ALICE


async def test_save_refuses_empty_or_unknown_content(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager()
    reservation = await manager.reserve(ALICE)
    with pytest.raises(InvalidImage):
        await manager.save_image(reservation, b"")
    with pytest.raises(InvalidImage):
        await manager.save_image(reservation, png(), content_type="image/svg+xml")
    await manager.release(reservation)
    assert (await manager.get_quota_status(ALICE)).daily_used == 0


async def test_gallery_is_newest_first_and_private(make_manager: Callable[..., StorageManager], clock: Clock) -> None:
    manager = make_manager()
    first = await generate(manager, ALICE, png(color=(1, 2, 3)))
    clock.advance(seconds=2)
    await asyncio.sleep(1.1)  # S3 LastModified has one-second resolution
    second = await generate(manager, ALICE, png(color=(4, 5, 6)))
    await generate(manager, BOB)
    gallery = await manager.list_images(ALICE)
    assert [i.key for i in gallery] == [second.key, first.key]
    assert all(i.user_id == ALICE and i.link for i in gallery)
    assert len(await manager.list_images(ALICE, limit=1)) == 1


async def test_delete_frees_quota_and_only_own_images(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager()
    mine = await generate(manager, ALICE)
    theirs = await generate(manager, BOB)
    with pytest.raises(InvalidKey):
        await manager.delete_image(ALICE, theirs.key)
    for hostile in ["../../ledger/global.json", "/etc/passwd", "images/users/111111111111111111/../x.png", "C:\\x"]:
        with pytest.raises(InvalidKey):
            await manager.delete_image(ALICE, hostile)
    with pytest.raises(ImageNotFound):
        await manager.delete_image(ALICE, mine.key.replace(mine.key[-12:-4], "deadbeef"))
    assert await manager.delete_image(ALICE, mine.name) == mine.size  # the file name alone works
    status = await manager.get_quota_status(ALICE)
    assert (status.user_bytes, status.global_bytes) == (0, theirs.size)
    assert status.daily_used == 1  # deleting does not give the generation back
    assert await manager.list_images(ALICE) == []
    assert len(await manager.list_images(BOB)) == 1


async def test_cleanup_removes_old_images_and_frees_quota(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(cleanup_days=7)
    await generate(manager, ALICE)
    await generate(manager, BOB)
    report = await manager.cleanup_old_files()
    assert (report.objects, report.bytes) == (0, 0)  # nothing is old yet
    clock.advance(days=8)
    preview = await manager.cleanup_old_files(dry_run=True)
    assert (preview.objects, preview.users, preview.dry_run) == (2, 2, True)
    assert len(await manager.list_images(ALICE)) == 1
    report = await manager.cleanup_old_files()
    assert (report.objects, report.users) == (2, 2) and report.bytes > 0
    assert await manager.list_images(ALICE) == []
    assert (await manager.get_quota_status(ALICE)).global_bytes == 0


async def test_reconcile_corrects_objects_deleted_behind_our_back(
    make_manager: Callable[..., StorageManager],
) -> None:
    manager = make_manager()
    kept = await generate(manager, ALICE)
    gone = await generate(manager, ALICE)
    manager.backend.delete_objects([gone.key])  # what a lifecycle rule does
    assert (await manager.get_quota_status(ALICE)).user_bytes == kept.size + gone.size  # not yet known
    report = await manager.reconcile()
    assert report.drift == {ALICE: (kept.size + gone.size, kept.size)}
    assert report.drift_bytes == -gone.size
    status = await manager.get_quota_status(ALICE)
    assert (status.user_bytes, status.global_bytes) == (kept.size, kept.size)
    again = await manager.reconcile()
    assert again.drift == {}


async def test_reconcile_does_not_count_images_in_flight_twice(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager()
    reservation = await manager.reserve(ALICE)
    await manager.reconcile()  # runs while the generation is in flight
    stored = await manager.save_image(reservation, png())
    await manager.reconcile()
    status = await manager.get_quota_status(ALICE)
    assert (status.user_bytes, status.global_bytes) == (stored.size, stored.size)


async def test_corrupt_user_ledger_is_rebuilt_not_zeroed(
    make_manager: Callable[..., StorageManager], caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(max_user_daily_gens=3)
    stored = [await generate(manager, ALICE) for _ in range(2)]
    key = user_ledger_key(ALICE)
    found = manager.backend.read_doc(key)
    assert found is not None
    manager.backend.write_doc(key, b"{not json", etag=found[1])
    manager.ledger.forget()
    status = await manager.get_quota_status(ALICE)
    assert status.user_bytes == sum(s.size for s in stored)
    assert status.daily_used == 2  # today's images still count
    assert "corrupt" in caplog.text
    await generate(manager, ALICE)
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE)


async def test_deleted_ledgers_are_rebuilt_from_objects(
    make_manager: Callable[..., StorageManager], caplog: pytest.LogCaptureFixture
) -> None:
    manager = make_manager(max_user_daily_gens=2)
    a = await generate(manager, ALICE)
    b = await generate(manager, BOB)
    manager.backend.delete_doc(user_ledger_key(ALICE))
    manager.backend.delete_doc(GLOBAL_LEDGER_KEY)
    manager.ledger.forget()
    other = make_manager(manager.backend, max_user_daily_gens=2)  # a fresh process
    status = await other.get_quota_status(ALICE)
    assert (status.user_bytes, status.daily_used, status.global_bytes) == (a.size, 1, a.size + b.size)
    assert "missing: rebuilt" in caplog.text
    await generate(other, ALICE)
    with pytest.raises(DailyLimitExceeded):
        await other.reserve(ALICE)


async def test_admin_block_grant_and_reset(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=1)
    await generate(manager, ALICE)
    await manager.grant(ALICE, 2)
    assert (await manager.get_quota_status(ALICE)).daily_limit == 3
    await generate(manager, ALICE)
    await manager.reset_daily(ALICE)
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.daily_limit) == (0, 1)
    await manager.set_blocked(ALICE, True)
    with pytest.raises(UserBlocked):
        await manager.reserve(ALICE)
    assert (await manager.get_quota_status(ALICE)).blocked
    await manager.set_blocked(ALICE, False)
    await generate(manager, ALICE)
    with pytest.raises(InvalidInput):
        await manager.grant(ALICE, 0)


async def test_quota_tiers_by_role(make_manager: Callable[..., StorageManager]) -> None:
    from abby_core.config import QuotaTier

    manager = make_manager(max_user_daily_gens=1, quota_tiers=[QuotaTier(role_id=42, daily_gens=3, storage_mb=900)])
    assert (await manager.get_quota_status(ALICE, role_ids=[42])).daily_limit == 3
    await generate(manager, ALICE)
    with pytest.raises(DailyLimitExceeded):
        await manager.reserve(ALICE, role_ids=[7])
    await manager.reserve(ALICE, role_ids=[42, 7])


async def test_stats_rank_users(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_storage_mb=10, image_gen_size_mb=1)
    await generate(manager, ALICE, blob(2 * MB))
    await generate(manager, BOB, blob(1 * MB))
    await generate(manager, BOB, blob(int(0.5 * MB)))
    stats = await manager.stats()
    assert stats.top_users == [(ALICE, 2 * MB), (BOB, int(1.5 * MB))]
    assert (stats.users, stats.global_bytes, stats.in_flight) == (2, int(3.5 * MB), 0)


async def test_fifty_concurrent_reservations_with_five_left(make_manager: Callable[..., StorageManager]) -> None:
    manager = make_manager(max_user_daily_gens=5)
    results = await asyncio.gather(*(manager.reserve(ALICE) for _ in range(50)), return_exceptions=True)
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, DailyLimitExceeded)]
    odd = [r for r in results if isinstance(r, BaseException) and not isinstance(r, DailyLimitExceeded)]
    assert not odd, [repr(r) for r in odd]  # every refusal is the daily limit
    assert (len(granted), len(refused)) == (5, 45)
    await asyncio.gather(*(manager.save_image(r, png()) for r in granted))
    status = await manager.get_quota_status(ALICE)
    assert (status.daily_used, status.in_flight) == (5, 0)
    assert len(await manager.list_images(ALICE)) == 5


async def test_two_managers_on_one_backend_share_exact_quota(
    make_manager: Callable[..., StorageManager], make_backend: Callable[..., StorageBackend]
) -> None:
    backend = make_backend()
    one, two = make_manager(backend, max_user_daily_gens=4), make_manager(backend, max_user_daily_gens=4)
    results = await asyncio.gather(
        *(m.reserve(ALICE) for m in [one, two] * 10), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    assert len(granted) == 4
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, DailyLimitExceeded)]
    assert others == []
    ledger = backend.read_doc(user_ledger_key(ALICE))
    assert ledger is not None and len(json.loads(ledger[0])["holds"]) == 4


async def test_reconcile_never_adopts_the_upload_of_a_hold_it_drops(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    """A process died between the upload and the commit; its hold is past the purge margin when
    reconcile lists the images. The write that drops the hold deletes the upload first: the
    upload must not then be counted as an image from the older listing."""
    manager = make_manager(reservation_ttl_seconds=60)
    res = await manager.reserve(ALICE)
    manager.backend.put_object(f"{res.key_stem}.png", png(), "image/png")  # uploaded, never committed
    clock.advance(seconds=60 + PURGE_MARGIN.total_seconds() + 1)
    report = await manager.reconcile()
    assert report.drift == {}
    assert list(manager.backend.list_objects(f"{USERS_PREFIX}{ALICE}/")) == []
    status = await manager.get_quota_status(ALICE)
    assert (status.user_bytes, status.daily_used, status.global_bytes) == (0, 0, 0)
