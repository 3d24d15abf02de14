"""One suite over the :class:`StorageBackend` interface, run on every backend.

``make_backend`` (``tests/storage/conftest.py``) is parametrized over the filesystem,
moto and a real SeaweedFS server; every test here must pass on each of them, so the
manager's own suite can trust the interface instead of re-testing each backend.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from abby_core.errors import ImageNotFound, InvalidKey
from abby_core.storage import FilesystemBackend, StorageBackend
from abby_core.storage.backend import ConditionFailed
from abby_core.storage.s3 import S3Backend

MakeBackend = Callable[..., StorageBackend]


def _prefix() -> str:
    """A fresh folder per test, so listings never see another test's objects."""
    return f"images/users/{uuid.uuid4().int % 10**18}/"


# -- objects ---------------------------------------------------------------------------------


def test_put_get_head_round_trip(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _prefix() + "20260101T000000Z-0123abcd.png"
    data = bytes(range(256)) * 40 + b"\x00tail"
    before = datetime.now(UTC) - timedelta(minutes=5)
    backend.put_object(key, data, "image/png")
    assert backend.get_object(key) == data
    info = backend.head_object(key)
    assert info is not None
    assert (info.key, info.size) == (key, len(data))
    assert info.last_modified.tzinfo is not None
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(minutes=5)


def test_put_replaces_the_whole_object(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _prefix() + "a.png"
    backend.put_object(key, b"a much longer first version", "image/png")
    backend.put_object(key, b"short", "image/png")
    assert backend.get_object(key) == b"short"
    info = backend.head_object(key)
    assert info is not None and info.size == 5


def test_empty_object_round_trips(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _prefix() + "empty.png"
    backend.put_object(key, b"", "image/png")
    assert backend.get_object(key) == b""
    info = backend.head_object(key)
    assert info is not None and info.size == 0


def test_get_of_a_missing_key_raises_image_not_found(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _prefix() + "missing.png"
    with pytest.raises(ImageNotFound):
        backend.get_object(key)


def test_head_of_a_missing_key_is_none(make_backend: MakeBackend) -> None:
    backend = make_backend()
    assert backend.head_object(_prefix() + "missing.png") is None


def test_a_folder_of_keys_is_not_an_object(make_backend: MakeBackend) -> None:
    """``images/users/1`` holds objects on disk but is no object itself, as on S3."""
    backend = make_backend()
    prefix = _prefix()
    backend.put_object(prefix + "a.png", b"a", "image/png")
    folder = prefix.rstrip("/")
    assert backend.head_object(folder) is None
    with pytest.raises(ImageNotFound):
        backend.get_object(folder)
    assert backend.read_doc(folder) is None
    backend.delete_objects([folder])
    backend.delete_doc(folder)
    assert backend.get_object(prefix + "a.png") == b"a"


def test_delete_removes_and_missing_keys_are_a_no_op(make_backend: MakeBackend) -> None:
    backend = make_backend()
    prefix = _prefix()
    backend.put_object(prefix + "keep.png", b"k", "image/png")
    backend.put_object(prefix + "gone.png", b"g", "image/png")
    backend.delete_objects([prefix + "gone.png", prefix + "never-was.png", "images/nowhere/x.png"])
    backend.delete_objects([prefix + "gone.png"])  # twice: still fine
    backend.delete_objects([])
    assert backend.head_object(prefix + "gone.png") is None
    assert backend.get_object(prefix + "keep.png") == b"k"


def test_delete_of_more_keys_than_one_s3_batch(make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,500 keys in one call: S3 allows 1,000 per DeleteObjects, so the backend must split.

    Only a few of the keys exist, spread over every batch, so the test stays fast.
    """
    backend = make_backend()
    prefix = _prefix()
    keys = [f"{prefix}{i:05d}.png" for i in range(2500)]
    present = [keys[i] for i in (0, 999, 1000, 1999, 2000, 2499)]
    for key in present:
        backend.put_object(key, b"x", "image/png")
    backend.put_object(prefix + "survivor.png", b"s", "image/png")
    batches: list[int] = []
    if isinstance(backend, S3Backend):
        real = backend.client.delete_objects

        def counting(**kwargs: Any) -> Any:
            batches.append(len(kwargs["Delete"]["Objects"]))
            return real(**kwargs)

        monkeypatch.setattr(backend.client, "delete_objects", counting)
    backend.delete_objects(keys)
    assert [info.key for info in backend.list_objects(prefix)] == [prefix + "survivor.png"]
    if isinstance(backend, S3Backend):
        assert batches == [1000, 1000, 500]


def test_list_objects_by_prefix(make_backend: MakeBackend) -> None:
    backend = make_backend()
    prefix = _prefix()
    other = _prefix()
    objects = {
        prefix + "20260101T000000Z-aaaa0001.png": b"1",
        prefix + "20260101T000000Z-aaaa0002.png": b"22",
        prefix + "20260102T000000Z-bbbb0003.png": b"333",
        prefix + "sub/deeper.png": b"4444",
        other + "20260101T000000Z-cccc0004.png": b"55555",
    }
    for key, data in objects.items():
        backend.put_object(key, data, "image/png")
    backend.write_doc("ledger/users/conformance.json", b"{}", etag=None)

    listed = {info.key: info for info in backend.list_objects(prefix)}
    assert {k: v.size for k, v in listed.items()} == {k: len(v) for k, v in objects.items() if k.startswith(prefix)}
    now = datetime.now(UTC)
    for info in listed.values():
        assert info.last_modified.tzinfo is not None
        assert abs(info.last_modified - now) < timedelta(minutes=5)

    # A prefix that ends inside a file name matches by string, not by folder.
    partial = {info.key for info in backend.list_objects(prefix + "20260101T")}
    assert partial == {prefix + "20260101T000000Z-aaaa0001.png", prefix + "20260101T000000Z-aaaa0002.png"}
    # A prefix that ends inside a folder name.
    folder_partial = {info.key for info in backend.list_objects(prefix[:-3])}
    assert set(objects) - {other + "20260101T000000Z-cccc0004.png"} <= folder_partial
    assert all(key.startswith(prefix[:-3]) for key in folder_partial)
    assert list(backend.list_objects(prefix + "zzz")) == []
    assert list(backend.list_objects("images/users/no-such-user/")) == []


def test_a_listing_tells_a_rewritten_document_apart(make_backend: MakeBackend) -> None:
    """``ObjectInfo.version`` changes with each write of other bytes, however close in time
    (the shared queue judges a ticket's liveness by it, never by a clock)."""
    backend = make_backend()
    key = f"ledger/queue/{uuid.uuid4().hex}.json"
    versions = []
    for n in range(3):
        found = backend.read_doc(key)
        backend.write_doc(key, b'{"n": %d}' % n, etag=None if found is None else found[1])
        (info,) = backend.list_objects(key)
        versions.append(info.version)
    assert all(versions) and len(set(versions)) == 3
    (again,) = backend.list_objects(key)
    assert again.version == versions[-1]  # unchanged when nothing was written


def test_list_objects_hides_nothing_a_document_write_leaves(make_backend: MakeBackend) -> None:
    """Documents are listed by their key only: no lock or temporary files show up."""
    backend = make_backend()
    tag = backend.write_doc("ledger/users/42.json", b'{"a": 1}', etag=None)
    backend.write_doc("ledger/users/42.json", b'{"a": 2}', etag=tag)
    keys = [info.key for info in backend.list_objects("ledger/users/")]
    assert keys == ["ledger/users/42.json"]


# -- documents -------------------------------------------------------------------------------


def _doc_key() -> str:
    return f"ledger/users/{uuid.uuid4().int % 10**18}.json"


def test_read_doc_of_a_missing_doc_is_none(make_backend: MakeBackend) -> None:
    assert make_backend().read_doc(_doc_key()) is None


def test_create_if_missing_only_once(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _doc_key()
    tag = backend.write_doc(key, b'{"v": 1}', etag=None)
    assert backend.read_doc(key) == (b'{"v": 1}', tag)
    with pytest.raises(ConditionFailed):
        backend.write_doc(key, b'{"v": 2}', etag=None)
    assert backend.read_doc(key) == (b'{"v": 1}', tag)


def test_replace_with_the_current_tag_returns_a_new_tag(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _doc_key()
    first = backend.write_doc(key, b'{"v": 1}', etag=None)
    second = backend.write_doc(key, b'{"v": 2}', etag=first)
    assert second != first
    assert backend.read_doc(key) == (b'{"v": 2}', second)
    third = backend.write_doc(key, b'{"v": 3}', etag=second)
    assert backend.read_doc(key) == (b'{"v": 3}', third)


@pytest.mark.parametrize("which", ["stale", "bogus", "quoted-bogus", "empty"])
def test_a_stale_or_bogus_tag_is_refused_and_the_doc_is_intact(make_backend: MakeBackend, which: str) -> None:
    backend = make_backend()
    key = _doc_key()
    stale = backend.write_doc(key, b'{"v": 1}', etag=None)
    current = backend.write_doc(key, b'{"v": 2}', etag=stale)
    tag = {"stale": stale, "bogus": current + "x", "quoted-bogus": '"' + "0" * 32 + '"', "empty": ""}[which]
    with pytest.raises(ConditionFailed):
        backend.write_doc(key, b'{"v": "lost"}', etag=tag)
    assert backend.read_doc(key) == (b'{"v": 2}', current)


def test_a_tag_on_a_missing_doc_is_refused(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _doc_key()
    tag = backend.write_doc(key, b'{"v": 1}', etag=None)
    backend.delete_doc(key)
    with pytest.raises(ConditionFailed):
        backend.write_doc(key, b'{"v": 2}', etag=tag)
    assert backend.read_doc(key) is None
    with pytest.raises(ConditionFailed):
        backend.write_doc(_doc_key(), b'{"v": 1}', etag='"' + "0" * 32 + '"')


def test_delete_doc_then_create_again(make_backend: MakeBackend) -> None:
    backend = make_backend()
    key = _doc_key()
    backend.delete_doc(key)  # missing: a no-op
    backend.write_doc(key, b'{"v": 1}', etag=None)
    backend.delete_doc(key)
    backend.delete_doc(key)
    assert backend.read_doc(key) is None
    tag = backend.write_doc(key, b'{"v": 2}', etag=None)
    assert backend.read_doc(key) == (b'{"v": 2}', tag)


def test_conditional_writes_are_honoured(make_backend: MakeBackend) -> None:
    backend = make_backend()
    assert backend.check_conditional_writes() is True
    assert list(backend.list_objects("ledger/probe-")) == []  # the probe cleans up after itself


# -- sweeping partial writes -----------------------------------------------------------------


def _interrupt_a_write(backend: StorageBackend, key: str) -> tuple[datetime, Callable[[], int]]:
    """Leave what a writer that died mid-write leaves behind.

    Returns when the backend says the debris was made (file mtime; the server's
    ``Initiated``, which moto fixes in 2010) and a counter of such debris. Filesystem:
    the ``.tmp-*`` file of an atomic write (a really killed writer is in
    ``test_filesystem.py``). S3: a multipart upload with one part, never completed.
    """
    if isinstance(backend, FilesystemBackend):
        folder = backend.root.joinpath(*key.split("/")[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        os.write(fd, b"half an image")
        os.close(fd)
        made = datetime.fromtimestamp(os.stat(tmp).st_mtime, UTC)
        return made, lambda: sum(1 for p in backend.root.rglob(".tmp-*") if p.is_file())
    assert isinstance(backend, S3Backend)
    client, bucket = backend.client, backend.bucket
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="image/png")
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"half an image")
    (listed,) = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    return listed["Initiated"], lambda: len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_sweep_partial_writes_removes_only_old_debris(make_backend: MakeBackend) -> None:
    backend = make_backend()
    prefix = _prefix()
    backend.put_object(prefix + "a.png", b"a", "image/png")
    doc = _doc_key()
    tag = backend.write_doc(doc, b"{}", etag=None)
    made, debris = _interrupt_a_write(backend, prefix + "b.png")
    assert debris() == 1
    assert [info.key for info in backend.list_objects(prefix)] == [prefix + "a.png"]

    # Debris younger than the cutoff may be a write still in progress: kept.
    assert backend.sweep_partial_writes(made - timedelta(minutes=1)) == 0
    assert debris() == 1
    assert backend.sweep_partial_writes(made + timedelta(minutes=1)) == 1
    assert debris() == 0
    assert backend.sweep_partial_writes(datetime.now(UTC) + timedelta(hours=1)) == 0

    assert backend.get_object(prefix + "a.png") == b"a"
    assert backend.read_doc(doc) == (b"{}", tag)
    assert backend.head_object(prefix + "b.png") is None


def test_sweep_partial_writes_needs_an_aware_time(make_backend: MakeBackend) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_backend().sweep_partial_writes(datetime.now())  # naive: the point of the test


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_kind", ["filesystem"])  # S3 keys are opaque strings: no folder to leave
@pytest.mark.parametrize(
    "key",
    ["../escape.png", "images/../../escape.png", "/etc/passwd", "/abs.png", "images/./x.png", "C:/x.png", ""],
)
def test_filesystem_refuses_keys_outside_the_root(make_backend: MakeBackend, key: str) -> None:
    backend = make_backend()
    assert isinstance(backend, FilesystemBackend)
    calls: list[Callable[[], object]] = [
        lambda: backend.put_object(key, b"x", "image/png"),
        lambda: backend.get_object(key),
        lambda: backend.head_object(key),
        lambda: backend.delete_objects([key]),
        lambda: backend.read_doc(key),
        lambda: backend.write_doc(key, b"{}", etag=None),
        lambda: backend.delete_doc(key),
        lambda: backend.link(key, content_type="image/png", ttl=60),
    ]
    for call in calls:
        with pytest.raises(InvalidKey):
            call()
    assert not (backend.root.parent / "escape.png").exists()
