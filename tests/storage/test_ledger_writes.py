"""How the ledger writes its documents: what it compares with, and the order in which a user
update drops the holds another process left behind (their uploads first)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from abby_core.storage import StorageBackend, StorageManager, keys
from abby_core.storage.documents import (
    CreditSource,
    Entry,
    GlobalLedger,
    Hold,
    Lease,
    MemberRecord,
    Snapshot,
    SnapshotHold,
    UserLedger,
)
from abby_core.storage.ledger import Ledger
from abby_core.storage.rules import PURGE_MARGIN
from tests.reliability.crashpoints import CrashPoints
from tests.storage.conftest import Clock

ALICE = "111111111111111111"
WHEN = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)


class Recording(CrashPoints):
    """Passes every call through (never interrupting) and records the writes that landed, in order."""

    def __init__(self, inner: StorageBackend) -> None:
        super().__init__(inner)
        self.writes: list[tuple[str, Any]] = []

    def put_object(self, key: str, data: bytes, content_type: str) -> None:
        self.writes.append(("put_object", key))
        super().put_object(key, data, content_type)

    def delete_objects(self, keys: Sequence[str]) -> None:
        self.writes.append(("delete_objects", list(keys)))
        super().delete_objects(keys)

    def write_doc(self, key: str, body: bytes, *, etag: str | None) -> str:
        tag = super().write_doc(key, body, etag=etag)  # a lost race raises: not recorded
        self.writes.append(("write_doc", (key, body)))
        return tag


def _user_doc() -> UserLedger:
    doc = UserLedger(user_id=ALICE, day=date(2026, 11, 25), count=3, bonus=1, credits=4, credits_spent=1)
    doc.objects["images/users/111111111111111111/20261125T120000-aaaa.png"] = Entry(size=1234, created=WHEN)
    doc.objects["images/users/111111111111111111/20261125T120001-bbbb.webp"] = Entry(
        size=99, created=WHEN.astimezone(timezone_plus_two())
    )
    doc.holds["c0ffee"] = Hold(bytes=1_500_000, expires=WHEN, day=date(2026, 11, 25), stem="images/x/y", credit=True)
    doc.holds["dead"] = Hold(bytes=0, expires=WHEN, day=date(2026, 11, 25), stem="images/x/z", void=True)
    doc.credit_log = {
        "sku:1": CreditSource(credits=5, refunded=True, removed=1, claims=["c0ffee"]),
        "sku:2": CreditSource(refunded=True),
    }
    return doc


def timezone_plus_two() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_every_document_serialises_to_what_it_was_read_from() -> None:
    """An update compares a document with its own last write as stored: that is exact only if
    parsing and serialising again gives the same bytes, for every kind of document."""
    glob = GlobalLedger(
        users={ALICE: Snapshot(version=7, bytes=10, holds={"c0ffee": SnapshotHold(bytes=5, expires=WHEN)})},
        leases={"lease-1": Lease(bytes=3_000_000, expires=WHEN, owner="host:12")},
    )
    member = MemberRecord(
        user_id=ALICE,
        blocked=True,
        grants={date(2026, 11, 25): 2},
        resets={date(2026, 11, 24): WHEN},
        deleted={"images/users/1/a.png": date(2026, 11, 25)},
    )
    for doc in (_user_doc(), glob, member, UserLedger(user_id=ALICE, day=date(2026, 11, 25))):
        body = doc.model_dump_json(by_alias=True).encode()
        again = type(doc).model_validate_json(body).model_dump_json(by_alias=True).encode()
        assert again == body, type(doc).__name__


def test_an_unchanged_document_is_not_written_again(make_backend: Callable[..., StorageBackend]) -> None:
    backend = Recording(make_backend())
    ledger = Ledger(backend)
    key = keys.user_ledger_key(ALICE)

    def touch(doc: UserLedger) -> None:
        doc.count += 1

    ledger.update(key, UserLedger, touch, create=_user_doc)
    ledger.update(key, UserLedger, touch, create=_user_doc)
    assert len(backend.writes) == 2  # created, then changed from the cached copy
    ledger.update(key, UserLedger, lambda doc: None, create=_user_doc)
    assert len(backend.writes) == 2  # nothing changed: nothing written

    # A document laid out differently (another version's writer, by hand) reads the same and
    # is not rewritten for its layout alone; a real change is written in this ledger's layout.
    stored = backend.read_doc(key)
    assert stored is not None
    loose = UserLedger.model_validate_json(stored[0]).model_dump_json(by_alias=True, indent=2).encode()
    backend.inner.write_doc(key, loose, etag=stored[1])
    fresh = Ledger(backend)
    fresh.update(key, UserLedger, lambda doc: None, create=_user_doc)
    assert len(backend.writes) == 2
    fresh.update(key, UserLedger, touch, create=_user_doc)
    assert len(backend.writes) == 3
    written = backend.writes[-1][1][1]
    assert written == UserLedger.model_validate_json(written).model_dump_json(by_alias=True).encode()


async def test_a_hold_another_process_left_is_dropped_after_its_upload(
    make_backend: Callable[..., StorageBackend], clock: Clock
) -> None:
    """A process whose cached copy of the member's document predates another process's hold
    still drops that hold once it has expired, and deletes its upload before the write."""
    inner = make_backend()
    backend = Recording(inner)
    mine = StorageManager(backend, reservation_ttl_seconds=60, clock=clock)
    other = StorageManager(inner, reservation_ttl_seconds=60, clock=clock)
    try:
        first = await mine.reserve(ALICE)  # this process now holds a cached copy
        await mine.release(first)
        gone = await other.reserve(ALICE)  # the other process reserves, uploads, and dies
        upload = keys.image_key(gone.key_stem, "image/png")
        inner.put_object(upload, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")
        clock.advance(seconds=60 + PURGE_MARGIN.total_seconds() + 1)

        backend.writes.clear()
        await mine.reserve(ALICE)
        doc = UserLedger.model_validate_json(inner.read_doc(keys.user_ledger_key(ALICE))[0])  # type: ignore[index]
        assert gone.id not in doc.holds
        assert inner.head_object(upload) is None
        deleted = next(i for i, (what, arg) in enumerate(backend.writes) if what == "delete_objects" and upload in arg)
        dropped = next(
            i
            for i, (what, arg) in enumerate(backend.writes)
            if what == "write_doc" and arg[0] == keys.user_ledger_key(ALICE) and gone.id.encode() not in arg[1]
        )
        assert deleted < dropped, backend.writes
    finally:
        await mine.aclose()
        await other.aclose()
