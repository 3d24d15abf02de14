"""The archive (STORAGE_ARCHIVE) over every backend: archive, limits, restore, delete, prune, repair."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from abby_core.config import load_settings
from abby_core.errors import (
    ConfigError,
    GlobalStorageFull,
    ImageNotFound,
    InvalidKey,
    StorageUnavailable,
    UserStorageFull,
)
from abby_core.storage import StorageBackend, StorageManager, keys
from abby_core.storage.archive import shrink
from abby_core.storage.documents import ArchiveLedger
from tests.storage.conftest import Clock

USER = "123456789012345678"
OTHER = "223456789012345678"


def photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A PNG with gradients and noise (photographic-like: it shrinks, but not to nothing)."""
    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 255 // w + rng.randrange(40)) % 256, (y * 255 // h) % 256, rng.randrange(256))
                 for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def _make(manager: StorageManager, uid: str, count: int, *, seed: int = 0) -> list[str]:
    made = []
    for n in range(count):
        res = await manager.reserve(uid)
        made.append((await manager.save_image(res, photo(seed + n))).key)
    return made


def _archive_doc(backend: StorageBackend, uid: str) -> ArchiveLedger | None:
    raw = backend.read_doc(keys.archive_ledger_key(uid))
    return ArchiveLedger.model_validate_json(raw[0]) if raw else None


async def test_cleanup_archives_old_images_instead_of_deleting(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(archive=True, cleanup_days=7)
    made = await _make(manager, USER, 3)
    fresh = await _make(manager, OTHER, 1)
    originals = sum(len(photo(n)) for n in range(3))
    clock.advance(days=8)
    report = await manager.cleanup_old_files()
    assert report.archive is not None
    assert (report.objects, report.archive.archived, report.archive.deleted) == (4, 4, 0)
    assert report.archive.archived_bytes < report.archive.original_bytes
    assert await manager.list_images(USER) == []
    archived = await manager.list_archived(USER)
    assert sorted(a.original_key for a in archived) == sorted(made)
    assert {a.content_type for a in archived} == {"image/webp"}
    assert all(a.key.startswith(f"archive/users/{USER}/") and a.link for a in archived)
    assert sum(a.size for a in archived) < originals
    status = await manager.get_quota_status(USER)
    assert status.user_bytes == 0 and status.global_bytes == 0
    # The day's count is untouched: archiving is not deleting a generation.
    assert status.daily_used == 0  # a new day (clock moved) and nothing made today
    assert [a.original_key for a in await manager.list_archived(OTHER)] == fresh
    stats = await manager.stats()
    assert stats.archive is not None and stats.archive.objects == 4 and stats.archive.users == 2
    again = await manager.archive_old()
    assert again.archived == 0 and again.failed == 0


async def test_archiving_off_cleanup_deletes_as_before(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(cleanup_days=7)
    await _make(manager, USER, 2)
    clock.advance(days=8)
    report = await manager.cleanup_old_files()
    assert report.archive is None and report.objects == 2
    assert await manager.list_archived(USER) == []


async def test_a_full_archive_deletes_the_image_as_before(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    one = len(shrink(photo(0), quality=60)[0])
    manager = make_manager(archive=True, max_user_archive_mb=(one * 2.5) / 1_000_000)
    await _make(manager, USER, 4)
    clock.advance(days=8)
    report = await manager.archive_old()
    assert (report.archived, report.deleted) == (2, 2)
    assert len(await manager.list_archived(USER)) == 2
    assert await manager.list_images(USER) == []
    doc = _archive_doc(manager.backend, USER)
    assert doc is not None and doc.bytes <= int(one * 2.5)
    # The oldest were archived first (kept), the newer ones deleted.
    made = sorted(o.key for o in manager.backend.list_objects(keys.archive_prefix(USER)))
    assert len(made) == 2


async def test_restore_brings_an_image_back_within_the_quota(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(archive=True, max_user_daily_gens=1)
    await _make(manager, USER, 1)
    clock.advance(days=8)
    await manager.archive_old()
    await _make(manager, USER, 1, seed=9)  # today's only generation: the daily limit is reached
    [archived] = await manager.list_archived(USER)
    restored = await manager.restore_archived(USER, archived.name)
    assert restored.key == keys.restored_stem(archived.key) + ".webp"
    assert await manager.get_image(USER, restored.name) == await _bytes_of(manager, restored.key)
    assert await manager.list_archived(USER) == []
    status = await manager.get_quota_status(USER)
    assert status.daily_used == 1  # the restore used no generation
    assert status.user_bytes == sum(i.size for i in await manager.list_images(USER))
    assert status.global_bytes == status.user_bytes
    assert manager.backend.head_object(archived.key) is None


async def _bytes_of(manager: StorageManager, key: str) -> bytes:
    return manager.backend.get_object(key)


async def test_restore_refused_when_the_member_or_the_server_is_full(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    archived_size = len(shrink(photo(0), quality=60)[0])
    limit = archived_size * 10
    for full, error in (("user", UserStorageFull), ("global", GlobalStorageFull)):
        manager = make_manager(archive=True, max_user_storage_mb=limit / 1_000_000,
                               max_global_storage_mb=limit / 1_000_000, image_gen_size_mb=0.001)
        await _make(manager, USER, 1)
        clock.advance(days=8)
        await manager.archive_old()
        filler = limit - archived_size // 2
        res = await manager.reserve(USER if full == "user" else OTHER, size_bytes=filler)
        await manager.save_image(res, b"x" * filler)
        [archived] = await manager.list_archived(USER)
        assert archived.size == archived_size
        with pytest.raises(error):
            await manager.restore_archived(USER, archived.name)
        status = await manager.get_quota_status(USER)
        assert status.in_flight == 0 and status.global_bytes == filler
        assert [a.key for a in await manager.list_archived(USER)] == [archived.key]
        assert [i.key for i in await manager.list_images(USER)] == ([res.key_stem + ".png"] if full == "user" else [])


async def test_delete_and_keys_are_checked(make_manager: Callable[..., StorageManager], clock: Clock) -> None:
    manager = make_manager(archive=True)
    await _make(manager, USER, 1)
    clock.advance(days=8)
    await manager.archive_old()
    [archived] = await manager.list_archived(USER)
    with pytest.raises(InvalidKey):
        await manager.delete_archived(OTHER, archived.key)
    with pytest.raises(InvalidKey):
        await manager.restore_archived(USER, "../../ledger/global.json")
    assert (await manager.archived_link(USER, archived.name)).key == archived.key
    assert await manager.get_archived(USER, archived.name) == manager.backend.get_object(archived.key)
    assert await manager.delete_archived(USER, archived.name) == archived.size
    assert await manager.list_archived(USER) == []
    with pytest.raises(ImageNotFound):
        await manager.delete_archived(USER, archived.name)


async def test_the_archive_is_pruned_after_archive_days(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(archive=True, archive_days=40)
    await _make(manager, USER, 2)
    clock.advance(days=8)
    await manager.archive_old()  # the copies are dated by storage (now), 8 days before the clock
    clock.advance(days=29)
    assert (await manager.cleanup_old_files()).archive.pruned == 0  # type: ignore[union-attr]
    clock.advance(days=4)
    report = await manager.cleanup_old_files()
    assert report.archive is not None and report.archive.pruned == 2
    assert await manager.list_archived(USER) == []
    assert list(manager.backend.list_objects(keys.ARCHIVE_USERS_PREFIX)) == []


async def test_the_archive_document_is_rebuilt_and_repaired(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    manager = make_manager(archive=True)
    await _make(manager, USER, 2)
    clock.advance(days=8)
    await manager.archive_old()
    before = sorted(a.key for a in await manager.list_archived(USER))
    backend = manager.backend
    backend.delete_doc(keys.archive_ledger_key(USER))
    manager.ledger.forget()
    assert sorted(a.key for a in await manager.list_archived(USER)) == before
    raw = backend.read_doc(keys.archive_ledger_key(USER))
    assert raw is None  # reading rebuilds without writing
    backend.write_doc(keys.archive_ledger_key(USER), b"{not json", etag=None)
    manager.ledger.forget()
    assert sorted(a.key for a in await manager.list_archived(USER)) == before
    doc = _archive_doc(backend, USER)
    assert doc is not None and sorted(doc.entries) == before
    # Drift: a copy deleted behind the app's back is dropped by reconcile.
    backend.delete_objects([before[0]])
    report = await manager.reconcile()
    assert report.archive_drift and report.archived_objects == 1
    assert [a.key for a in await manager.list_archived(USER)] == before[1:]


async def test_half_done_states_are_finished_by_reconcile(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    """Both states at once: an archive stopped before deleting the original, and a restore
    stopped before deleting the archived copy. Reconcile keeps exactly one of each."""
    manager = make_manager(archive=True)
    first, second = await _make(manager, USER, 2)
    clock.advance(days=8)
    await manager.archive_old()
    archived = {a.original_key: a for a in await manager.list_archived(USER)}
    # An archive that stopped after recording the copy: the original is back in place
    # (dated by storage before the clock's archive time, so it is the older state).
    backend = manager.backend
    backend.put_object(first, photo(0), "image/png")
    await manager.reconcile()
    assert first not in manager.accounts.user(USER).objects and backend.head_object(first) is None
    assert backend.head_object(archived[first].key) is not None
    # A restore that stopped after its commit: the archived copy is still there.
    clock.advance(seconds=30)
    restored = await manager.restore_archived(USER, archived[second].name)
    backend.put_object(archived[second].key, b"copy", "image/webp")
    manager.archiver.update(USER, lambda d: d.entries.__setitem__(
        archived[second].key, _entry(archived[second])))
    await manager.reconcile()
    assert backend.head_object(archived[second].key) is None
    assert [i.key for i in await manager.list_images(USER)] == [restored.key]
    assert [a.key for a in await manager.list_archived(USER)] == [archived[first].key]


async def test_restore_after_an_archive_stopped_before_the_ledger_forgot_the_original(
    make_manager: Callable[..., StorageManager], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive deleted the original, then storage failed before the quota document forgot
    it: the document still lists an image that is gone. A restore must look at the object,
    not the listing, or it takes the image for "already back" and deletes the only copy."""
    manager = make_manager(archive=True)
    [original] = await _make(manager, USER, 1)
    clock.advance(days=30)
    forget = manager.accounts.forget_objects

    def unavailable(uid: str, gone: list[str]) -> None:
        monkeypatch.setattr(manager.accounts, "forget_objects", forget)
        raise StorageUnavailable("Storage did not answer (test).")

    monkeypatch.setattr(manager.accounts, "forget_objects", unavailable)
    with pytest.raises(StorageUnavailable):
        await manager.archive_old(7)
    backend = manager.backend
    assert backend.head_object(original) is None and original in manager.accounts.user(USER).objects
    [archived] = await manager.list_archived(USER)
    restored = await manager.restore_archived(USER, archived.name)
    assert backend.head_object(restored.key) is not None, "restore reported success; the image is gone"
    assert await manager.get_image(USER, restored.name) == backend.get_object(restored.key)
    assert [i.key for i in await manager.list_images(USER)] == [restored.key]
    assert await manager.list_archived(USER) == [] and backend.head_object(archived.key) is None
    status = await manager.get_quota_status(USER)
    assert status.user_bytes == restored.size == status.global_bytes and status.in_flight == 0
    assert set(manager.accounts.user(USER).objects) == {restored.key}


async def test_tidy_keeps_the_archived_copy_of_an_image_listed_but_gone(
    make_manager: Callable[..., StorageManager], clock: Clock
) -> None:
    """Both states by the documents, one by storage: a restore committed but kept its archived
    copy, and the restored object is gone while the quota document still lists it (a delete
    stopped before its last step, landing between reconcile's pass over the images and its
    pass over the archive). The archived copy is the only copy left: the archive's pass keeps
    it, and the next reconcile drops the listing."""
    manager = make_manager(archive=True)
    await _make(manager, USER, 1)
    clock.advance(days=8)
    await manager.archive_old()
    [archived] = await manager.list_archived(USER)
    clock.advance(seconds=30)
    copy = manager.backend.get_object(archived.key)
    restored = await manager.restore_archived(USER, archived.name)
    backend = manager.backend
    backend.put_object(archived.key, copy, "image/webp")  # the restore stopped before deleting it
    manager.archiver.update(USER, lambda d: d.entries.__setitem__(archived.key, _entry(archived)))
    backend.delete_objects([restored.key])  # and the restored object went, the listing stayed
    assert restored.key in manager.accounts.user(USER).objects
    manager.archiver.tidy()
    assert backend.get_object(archived.key) == copy
    await manager.reconcile()
    assert backend.get_object(archived.key) == copy
    assert [a.key for a in await manager.list_archived(USER)] == [archived.key]
    assert manager.accounts.user(USER).objects == {} and await manager.list_images(USER) == []


async def test_one_reconcile_settles_an_archive_stopped_before_recording_its_copy(
    make_manager: Callable[..., StorageManager], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archived copy was put, then storage failed before the archive document recorded
    it: the original stays, the copy is nobody's. One reconcile adopts the copy and settles
    the image in one state, as it settles a recorded one (the archived, written last)."""
    manager = make_manager(archive=True)
    await _make(manager, USER, 2)
    clock.advance(days=8)
    record = manager.archiver._record
    recorded: list[str] = []
    refused: list[str] = []

    def second_unavailable(uid: str, key: str, entry: Any) -> bool:
        if recorded and not refused:  # the second image to be archived (the document exists)
            refused.append(entry.original)
            raise StorageUnavailable("Storage did not answer (test).")
        recorded.append(entry.original)
        return record(uid, key, entry)

    monkeypatch.setattr(manager.archiver, "_record", second_unavailable)
    report = await manager.archive_old()
    monkeypatch.undo()
    [first], [second] = recorded, refused  # the second to be archived is refused
    backend = manager.backend
    copies = sorted(o.key for o in backend.list_objects(keys.archive_prefix(USER)))
    assert report.failed == 1 and backend.head_object(second) is not None and len(copies) == 2
    assert [a.original_key for a in await manager.list_archived(USER)] == [first]
    await manager.reconcile()
    assert backend.head_object(second) is None and await manager.list_images(USER) == []
    assert sorted(a.key for a in await manager.list_archived(USER)) == copies
    assert manager.accounts.user(USER).objects == {}
    assert (await manager.get_quota_status(USER)).global_bytes == 0


def _entry(image: Any) -> Any:
    from abby_core.storage.documents import ArchiveEntry

    return ArchiveEntry(size=4, original=image.original_key, created=image.created_at, archived=image.archived_at)


def test_settings_of_the_archive() -> None:
    settings = load_settings(env_file=None, STORAGE_ARCHIVE="on", ARCHIVE_DAYS="30", MAX_USER_ARCHIVE_MB="50")
    assert settings.storage.archive and settings.storage.archive_days == 30
    assert settings.storage.max_user_archive_bytes == 50_000_000
    assert not load_settings(env_file=None, STORAGE_ARCHIVE="off").storage.archive
    assert load_settings(env_file=None, STORAGE_ARCHIVE="true").storage.archive
    assert load_settings(env_file=None).storage.archive_quality == 60
    with pytest.raises(ConfigError, match="STORAGE_ARCHIVE"):
        load_settings(env_file=None, STORAGE_ARCHIVE="sometimes")
    with pytest.raises(ConfigError, match="ARCHIVE_QUALITY"):
        load_settings(env_file=None, ARCHIVE_QUALITY="101")
    with pytest.raises(ConfigError, match="restore request"):
        load_settings(env_file=None, STORAGE_BACKEND="s3", S3_ARCHIVE_STORAGE_CLASS="DEEP_ARCHIVE")
    with pytest.raises(ConfigError, match="only applies with STORAGE_BACKEND=s3"):
        load_settings(env_file=None, S3_ARCHIVE_STORAGE_CLASS="STANDARD_IA")
    s3 = load_settings(env_file=None, STORAGE_BACKEND="s3", S3_ARCHIVE_STORAGE_CLASS="glacier_ir")
    assert s3.storage.archive_storage_class == "GLACIER_IR"


def test_archive_keys_follow_one_pattern() -> None:
    image = f"images/users/{USER}/20261125T101010Z-ab12cd34ef56ab78.png"
    archived = keys.archived_key(image, "image/webp")
    assert archived == f"archive/users/{USER}/20261125T101010Z-ab12cd34ef56ab78.webp"
    assert keys.restored_stem(archived) == image.removesuffix(".png")
    assert keys.check_archived_key(USER, archived.rsplit("/", 1)[1]) == archived
    for bad in ("../x.webp", f"archive/users/{USER}/../../ledger/global.json", f"archive/users/{OTHER}/x.webp", ""):
        with pytest.raises(InvalidKey):
            keys.check_archived_key(USER, bad)
    assert keys.user_from_archived_key(image) is None


def test_shrink_keeps_the_aspect_and_caps_the_long_side() -> None:
    data = photo(3, (1216, 832))
    out, content_type = shrink(data, quality=60)
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == "WEBP" and img.size == (1024, 701)
    assert content_type == "image/webp" and len(out) < len(data) / 3
    tiny = photo(1, (8, 8))
    assert shrink(b"not an image", quality=60) == (b"not an image", "image/png")
    kept, _ = shrink(tiny, quality=100)
    assert len(kept) <= len(tiny)


async def test_the_s3_archive_lifecycle_rule(make_backend: Callable[..., StorageBackend], backend_kind: str) -> None:
    if backend_kind == "filesystem":
        backend = make_backend()
        report = backend.ensure_ready(cleanup_days=9, archive_days=92)
        assert any("archive/" in n for n in report.notes)
        return
    backend = make_backend()
    backend.ensure_ready(cleanup_days=9, events_days=97, archive_days=92)
    rules = {r["ID"]: r for r in backend.client.get_bucket_lifecycle_configuration(  # type: ignore[attr-defined]
        Bucket=backend.bucket)["Rules"]}  # type: ignore[attr-defined]
    assert rules["abby-archive-expiry"]["Filter"]["Prefix"] == "archive/"
    assert rules["abby-archive-expiry"]["Expiration"]["Days"] == 92
    assert rules["abby-images-expiry"]["Expiration"]["Days"] == 9


async def test_an_s3_storage_class_keeps_the_original_bytes(moto_env: None, clock: Clock) -> None:
    """S3_ARCHIVE_STORAGE_CLASS: the archived copy is the original, copied on the server in that class."""
    from abby_core.storage.s3 import S3Backend
    from tests.storage.conftest import s3_settings

    backend = S3Backend(s3_settings(None, None, None))
    backend.ensure_ready(cleanup_days=7)
    manager = StorageManager(
        backend, clock=clock, archive=True, cleanup_days=7, archive_storage_class="STANDARD_IA"
    )
    try:
        [made] = await _make(manager, USER, 1, seed=40)
        original = backend.get_object(made)
        clock.advance(days=8)
        report = await manager.cleanup_old_files()
        assert report.archive is not None and report.archive.archived == 1
        [archived] = await manager.list_archived(USER)
        assert archived.size == len(original)  # not re-encoded
        head = backend.client.head_object(Bucket=backend.bucket, Key=archived.key)
        assert head["StorageClass"] == "STANDARD_IA"
        doc = _archive_doc(backend, USER)
        assert doc is not None and [e.storage_class for e in doc.entries.values()] == ["STANDARD_IA"]
        restored = await manager.restore_archived(USER, archived.key)
        assert backend.get_object(restored.key) == original
        assert await manager.list_archived(USER) == []
    finally:
        await manager.aclose()


async def test_the_gallery_the_archive_and_a_restore_make_links_in_one_place(
    make_manager: Callable[..., StorageManager], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # abby_core.storage.links owns "a stored image with a fresh link": change it, and every
    # image handed back (archived, restored, in the gallery) changes with it.
    from abby_core.storage import links

    manager = make_manager(archive=True, cleanup_days=7)
    await _make(manager, USER, 2)
    clock.advance(days=8)
    await manager.cleanup_old_files()

    def stand_in(backend: StorageBackend, key: str, *, ttl: int, may_fail: bool = False) -> tuple[str, None]:
        return f"linked:{key}:{ttl}", None

    monkeypatch.setattr(links, "link", stand_in)
    archived = await manager.list_archived(USER)
    restored = await manager.restore_archived(USER, archived[0].name)
    gallery = await manager.list_images(USER)
    ttl = manager.link_ttl
    assert [a.url for a in archived] == [f"linked:{a.key}:{ttl}" for a in archived]
    assert (restored.url, restored.path, restored.user_id) == (f"linked:{restored.key}:{ttl}", None, USER)
    assert [(g.key, g.url, g.user_id) for g in gallery] == [(restored.key, f"linked:{restored.key}:{ttl}", USER)]
