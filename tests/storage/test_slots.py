"""Per-member slots shared through storage, run on every backend (filesystem, moto, SeaweedFS).

"Two processes" are two :class:`MemberSlots` instances, each with its own backend object
on the same folder or bucket; where it matters (a race, a kill) they are real child
processes on the filesystem and on SeaweedFS. moto lives inside the test process, so
there a crash is simulated by a claimer that simply stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from abby_core.errors import StorageUnavailable
from abby_core.storage import FilesystemBackend, StorageBackend
from abby_core.storage.backend import ConditionFailed
from abby_core.storage.keys import MemberId, slot_key
from abby_core.storage.rules import CLOCK_BOUND
from abby_core.storage.s3 import S3Backend
from abby_core.storage.slots import (
    LEASE_SECONDS,
    SKEW_SECONDS,
    AsyncMemberSlots,
    MemberSlots,
    SlotDocument,
    SlotHolder,
    SlotLease,
    live_claim,
)
from tests.fixtures.clocks import Clock, day_safe_now

MakeBackend = Callable[..., StorageBackend]
ROOT = Path(__file__).resolve().parents[2]
USER = "424242424242424242"
OTHER = "171717171717171717"
PAST_SKEW = timedelta(seconds=LEASE_SECONDS + SKEW_SECONDS + 1)

# A bot process in miniature: ``hold`` claims USER's slot, says so and waits to be killed;
# ``race`` fires ``attempts`` claims at once from threads at ``start_at`` and counts the wins.
CHILD = """
import json, sys, threading, time
from datetime import UTC, datetime
from abby_core.storage.slots import MemberSlots
from tests.storage.hammer import build_backend

cfg = json.loads(sys.argv[1])
slots = MemberSlots(build_backend(cfg), clock=lambda: datetime.now(UTC), owner=cfg["owner"])
if cfg["mode"] == "hold":
    lease = slots.claim(cfg["user"])
    print(json.dumps({"claim": lease and lease.claim_id}), flush=True)
    time.sleep(120)  # the parent kills us long before
else:
    results, errors = [], []
    def one():
        time.sleep(max(0.0, cfg["start_at"] - time.time()))
        try:
            results.append(slots.claim(cfg["user"]))
        except Exception as exc:
            errors.append(repr(exc))
    threads = [threading.Thread(target=one) for _ in range(cfg["attempts"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print(json.dumps({"wins": [r.claim_id for r in results if r], "refused": results.count(None), "errors": errors}))
"""


@pytest.fixture
def backend(make_backend: MakeBackend) -> StorageBackend:
    return make_backend()


def twin(backend: StorageBackend) -> StorageBackend:
    """A second backend object on the same folder or bucket, as another process would have."""
    if isinstance(backend, FilesystemBackend):
        return FilesystemBackend(backend.root)
    assert isinstance(backend, S3Backend)
    return S3Backend(backend.settings)


@pytest.fixture
def twins(backend: StorageBackend) -> Iterator[tuple[StorageBackend, StorageBackend]]:
    other = twin(backend)
    yield backend, other
    other.close()


def child_config(backend: StorageBackend, **extra: Any) -> dict[str, Any]:
    if isinstance(backend, FilesystemBackend):
        return {"backend": "filesystem", "root": str(backend.root), **extra}
    assert isinstance(backend, S3Backend)
    s = backend.settings
    secret = s.secret_access_key.get_secret_value() if s.secret_access_key else None
    return {
        "backend": "s3",
        "endpoint": s.endpoint_url,
        "access_key": s.access_key_id,
        "secret_key": secret,
        "bucket": backend.bucket,
        **extra,
    }


def spawn(config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(backend: StorageBackend, user: str = USER) -> dict[str, Any]:
    found = backend.read_doc(slot_key(user))
    assert found is not None
    doc: dict[str, Any] = json.loads(found[0])
    return doc


# -- the basic story -----------------------------------------------------------------------------


def test_claim_refuse_release_reclaim(twins: tuple[StorageBackend, StorageBackend], clock: Clock) -> None:
    a = MemberSlots(twins[0], clock=clock, owner="process-a")
    b = MemberSlots(twins[1], clock=clock, owner="process-b")
    assert a.holder(USER) is None

    lease = a.claim(USER)
    assert lease is not None
    assert (lease.user_id, lease.owner) == (USER, "process-a")
    assert lease.expires == clock.now + timedelta(seconds=LEASE_SECONDS)
    assert a.claim(USER) is None  # the same process is refused too: one at a time, full stop
    assert b.claim(USER) is None
    assert b.holder(USER) == SlotHolder(USER, "process-a", lease.claim_id, lease.expires)
    assert b.claim(OTHER) is not None  # other members are not affected

    doc = stored(twins[1])
    assert doc == {
        "schema": 1,
        "owner": "process-a",
        "claim": lease.claim_id,
        "expires": doc["expires"],
        "released": False,
    }
    assert datetime.fromisoformat(doc["expires"].replace("Z", "+00:00")) == lease.expires

    assert a.release(lease) is True
    assert a.release(lease) is False  # twice is harmless
    assert b.holder(USER) is None
    assert stored(twins[0])["released"] is True

    again = b.claim(USER)
    assert again is not None and again.claim_id != lease.claim_id
    assert a.claim(USER) is None
    assert a.renew(lease) is None  # a released lease cannot come back to life


def test_renew_pushes_the_expiry(twins: tuple[StorageBackend, StorageBackend]) -> None:
    clock_a, clock_b = Clock(), Clock()
    a = MemberSlots(twins[0], clock=clock_a, owner="a")
    b = MemberSlots(twins[1], clock=clock_b, owner="b")
    lease = a.claim(USER)
    assert lease is not None

    clock_a.advance(seconds=LEASE_SECONDS - 60)
    renewed = a.renew(lease)
    assert renewed is not None and renewed.claim_id == lease.claim_id
    assert renewed.expires == clock_a.now + timedelta(seconds=LEASE_SECONDS)

    clock_b.now = lease.expires + timedelta(seconds=SKEW_SECONDS + 1)  # the first lease is over...
    assert b.claim(USER) is None  # ...but the renewed one is not
    assert a.release(lease) is True  # the claim id is what counts, not the tag
    assert b.claim(USER) is not None


def test_the_slot_of_a_checked_member_id(backend: StorageBackend, clock: Clock) -> None:
    # The slots take a MemberId: a bad id is refused where it is made (the admission's door,
    # tests/core/test_admission.py), so nothing here ever names a slot from an unchecked id.
    slots = MemberSlots(backend, clock=clock)
    lease = slots.claim(MemberId(int(USER)))
    assert lease is not None and isinstance(lease.user_id, MemberId) and lease.user_id == USER
    assert slot_key(MemberId(USER)) == f"ledger/slots/{USER}.json"
    assert backend.read_doc(f"ledger/slots/{USER}.json") is not None


# -- races --------------------------------------------------------------------------------------


def test_two_instances_racing_one_member_exactly_one_wins(
    twins: tuple[StorageBackend, StorageBackend], clock: Clock
) -> None:
    processes = [MemberSlots(b, clock=clock, owner=f"process-{i}") for i, b in enumerate(twins)]
    start = threading.Barrier(100, timeout=60)

    def one(i: int) -> SlotLease | None:
        start.wait()
        return processes[i % 2].claim(USER)

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(one, range(100), timeout=120))
    wins = [r for r in results if r is not None]
    assert len(wins) == 1
    holder = processes[0].holder(USER)
    assert holder is not None and holder.claim_id == wins[0].claim_id


@pytest.mark.slow
# moto lives inside the test process, so only backends a second process can reach take part.
@pytest.mark.parametrize(
    "backend_kind", ["filesystem", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)], indirect=True
)
def test_two_real_processes_racing_exactly_one_wins(backend: StorageBackend, backend_kind: str, clock: Clock) -> None:
    start_at = time.time() + 4.0  # both processes fire together, after their imports
    procs = [
        spawn(child_config(backend, mode="race", owner=f"child-{i}", user=USER, attempts=50, start_at=start_at))
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["errors"] for r in results] == [[], []]
    wins = [w for r in results for w in r["wins"]]
    assert len(wins) == 1
    assert sum(r["refused"] for r in results) == 99
    holder = MemberSlots(backend, clock=clock).holder(USER)
    assert holder is not None and holder.claim_id == wins[0]


# -- expiry and takeover ------------------------------------------------------------------------


def test_an_expired_claim_is_taken_over(
    twins: tuple[StorageBackend, StorageBackend], caplog: pytest.LogCaptureFixture
) -> None:
    clock_a, clock_b = Clock(), Clock()
    a = MemberSlots(twins[0], clock=clock_a, owner="a")
    b = MemberSlots(twins[1], clock=clock_b, owner="b")
    lease = a.claim(USER)
    assert lease is not None

    clock_b.now = lease.expires  # expired by the holder's reckoning, not yet by b's margin
    assert b.claim(USER) is None
    clock_b.now = lease.expires + timedelta(seconds=SKEW_SECONDS)
    assert b.claim(USER) is None
    clock_b.now += timedelta(seconds=1)
    assert b.holder(USER) is None
    with caplog.at_level(logging.INFO, logger="abby.storage.slots"):
        taken = b.claim(USER)
    assert taken is not None and taken.owner == "b"
    assert "expired claim of a" in caplog.text
    assert a.holder(USER) == SlotHolder(USER, "b", taken.claim_id, taken.expires)


def test_release_never_removes_a_newer_claim(twins: tuple[StorageBackend, StorageBackend]) -> None:
    clock_a, clock_b = Clock(), Clock()
    a = MemberSlots(twins[0], clock=clock_a, owner="a")
    b = MemberSlots(twins[1], clock=clock_b, owner="b")
    lease = a.claim(USER)
    assert lease is not None
    clock_b.advance(seconds=PAST_SKEW.total_seconds())
    newer = b.claim(USER)
    assert newer is not None

    assert a.renew(lease) is None  # a long job learns it lost the slot
    assert a.release(lease) is False
    after = stored(twins[0])
    assert (after["claim"], after["owner"], after["released"]) == (newer.claim_id, "b", False)
    assert b.holder(USER) is not None
    assert b.release(newer) is True


def test_release_that_races_a_takeover_leaves_the_takeover(
    twins: tuple[StorageBackend, StorageBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The takeover lands between release's read and its write: If-Match refuses the write."""
    clock_a, clock_b = Clock(), Clock()
    a = MemberSlots(twins[0], clock=clock_a, owner="a")
    b = MemberSlots(twins[1], clock=clock_b, owner="b")
    lease = a.claim(USER)
    assert lease is not None
    clock_b.advance(seconds=PAST_SKEW.total_seconds())

    real_read = twins[0].read_doc
    taken: list[SlotLease | None] = []

    def read_then_lose_the_race(key: str) -> tuple[bytes, str] | None:
        found = real_read(key)
        if not taken:
            taken.append(b.claim(USER))
        return found

    monkeypatch.setattr(twins[0], "read_doc", read_then_lose_the_race)
    assert a.release(lease) is False
    assert taken[0] is not None
    after = stored(twins[1])
    assert (after["claim"], after["released"]) == (taken[0].claim_id, False)


def test_a_killed_process_holds_the_slot_until_its_claim_expires(
    backend: StorageBackend, backend_kind: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    if backend_kind == "moto":
        # moto lives inside this process: the "crashed" claimer is an instance that stops.
        dead = MemberSlots(twin(backend), clock=lambda: datetime.now(UTC), owner="child")
        assert dead.claim(USER) is not None
        del dead
    else:
        proc = spawn(child_config(backend, mode="hold", owner="child", user=USER))
        try:
            seen = MemberSlots(backend, clock=lambda: datetime.now(UTC))
            deadline = time.monotonic() + 60
            while seen.holder(USER) is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None, proc.communicate(timeout=10)[1]
            proc.send_signal(signal.SIGKILL)
            out, _err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert json.loads(out.splitlines()[0])["claim"]

    survivor = MemberSlots(backend, clock=clock, owner="survivor")
    holder = survivor.holder(USER)
    assert holder is not None and holder.owner == "child"
    assert survivor.claim(USER) is None
    clock.now = holder.expires + timedelta(seconds=SKEW_SECONDS - 1)
    assert survivor.claim(USER) is None  # still within the clock-skew margin
    clock.now = holder.expires + timedelta(seconds=SKEW_SECONDS + 1)
    with caplog.at_level(logging.INFO, logger="abby.storage.slots"):
        lease = survivor.claim(USER)
    assert lease is not None and lease.owner == "survivor"
    assert "expired claim of child" in caplog.text


# -- damage and failures ------------------------------------------------------------------------

MALFORMED = [
    b"",
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"schema": 1}',
    b'{"schema": 1, "owner": "x", "claim": "c", "expires": "2026-11-25T12:00:00"}',  # no time zone
    b'{"schema": 9, "owner": "x", "claim": "c", "expires": "2999-01-01T00:00:00Z"}',
    b'{"schema": 1, "owner": "x", "claim": "c", "expires": "2999-01-01T00:00:00Z", "extra": 1}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_document_counts_as_expired_and_is_replaced(
    backend: StorageBackend, clock: Clock, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    backend.write_doc(slot_key(USER), body, etag=None)
    slots = MemberSlots(backend, clock=clock, owner="a")
    assert slots.holder(USER) is None
    with caplog.at_level(logging.WARNING, logger="abby.storage.slots"):
        lease = slots.claim(USER)
    assert lease is not None
    assert "unreadable slot document" in caplog.text
    assert stored(backend)["claim"] == lease.claim_id
    assert slots.claim(USER) is None


def test_a_lease_whose_document_was_damaged_is_no_longer_ours(backend: StorageBackend, clock: Clock) -> None:
    slots = MemberSlots(backend, clock=clock)
    lease = slots.claim(USER)
    assert lease is not None
    backend.write_doc(slot_key(USER), b"{broken", etag=lease.etag)
    assert slots.renew(lease) is None
    assert slots.release(lease) is False
    assert slots.claim(USER) is not None


def test_storage_failures_are_the_projects_errors(
    backend: StorageBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = MemberSlots(backend, clock=clock)
    lease = slots.claim(USER)
    assert lease is not None

    def down(*_args: object, **_kwargs: object) -> None:
        raise StorageUnavailable("The storage is unreachable.")

    monkeypatch.setattr(backend, "read_doc", down)
    for step in (lambda: slots.claim(OTHER), lambda: slots.holder(USER), lambda: slots.release(lease)):
        with pytest.raises(StorageUnavailable):
            step()


def test_a_claim_whose_answer_was_lost_is_found_by_reading_back(
    backend: StorageBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "write_errors_are_definite", False)
    real_write = backend.write_doc

    def lands_then_fails(key: str, body: bytes, *, etag: str | None) -> str:
        real_write(key, body, etag=etag)
        raise StorageUnavailable("The connection dropped before the answer.")

    monkeypatch.setattr(backend, "write_doc", lands_then_fails)
    slots = MemberSlots(backend, clock=clock)
    lease = slots.claim(USER)
    assert lease is not None
    assert slots.holder(USER) == SlotHolder(USER, lease.owner, lease.claim_id, lease.expires)
    assert slots.release(lease) is True
    monkeypatch.setattr(backend, "write_doc", real_write)
    assert slots.claim(USER) is not None


def test_a_write_that_did_not_land_raises(
    backend: StorageBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "write_errors_are_definite", False)

    def fails(key: str, body: bytes, *, etag: str | None) -> str:
        raise StorageUnavailable("The storage is unreachable.")

    monkeypatch.setattr(backend, "write_doc", fails)
    slots = MemberSlots(backend, clock=clock)
    with pytest.raises(StorageUnavailable):
        slots.claim(USER)
    assert slots.holder(USER) is None


def test_endless_lost_races_end_in_storage_unavailable(
    backend: StorageBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def always_lost(key: str, body: bytes, *, etag: str | None) -> str:
        nonlocal calls
        calls += 1
        raise ConditionFailed(key)

    monkeypatch.setattr(backend, "write_doc", always_lost)
    with pytest.raises(StorageUnavailable):
        MemberSlots(backend, clock=clock).claim(USER)
    assert 1 < calls <= 20


# -- the async wrapper --------------------------------------------------------------------------


async def test_async_wrapper_round_trip(backend: StorageBackend, clock: Clock) -> None:
    slots = AsyncMemberSlots(MemberSlots(backend, clock=clock, owner="bot"))
    lease = await slots.claim(USER)
    assert lease is not None
    assert await slots.claim(USER) is None
    holder = await slots.holder(USER)
    assert holder is not None and holder.owner == "bot"
    renewed = await slots.renew(lease)
    assert renewed is not None
    assert await slots.release(renewed) is True
    assert await slots.holder(USER) is None


async def test_a_cancelled_claim_gives_the_slot_back(
    backend: StorageBackend, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, go_on = threading.Event(), threading.Event()
    real_write = backend.write_doc

    def slow_write(key: str, body: bytes, *, etag: str | None) -> str:
        entered.set()
        assert go_on.wait(30)
        return real_write(key, body, etag=etag)

    monkeypatch.setattr(backend, "write_doc", slow_write)
    with ThreadPoolExecutor(max_workers=2) as pool:
        slots = AsyncMemberSlots(MemberSlots(backend, clock=clock), executor=pool)
        task = asyncio.create_task(slots.claim(USER))
        assert await asyncio.to_thread(entered.wait, 30)
        task.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await slots.holder(USER) is None
        assert stored(backend)["released"] is True


# -- clocks that disagree ---------------------------------------------------------------------

#: Discord's answer window: a generation (and its slot) may last this long.
ANSWER_WINDOW = timedelta(minutes=15)


@pytest.mark.parametrize("offset", [90, 120, -90, -120])
def test_a_skewed_process_never_takes_over_a_claim_within_the_answer_window(
    twins: tuple[StorageBackend, StorageBackend], offset: int
) -> None:
    """The holder on one clock, the other process ``offset`` seconds off (docs/SCALING.md: up
    to 2 minutes apart are safe): until the holder's answer window is over, the slot is its."""
    holder_clock = Clock(day_safe_now())
    other_clock = Clock(holder_clock.now + timedelta(seconds=offset))
    a = MemberSlots(twins[0], clock=holder_clock, owner="a")
    b = MemberSlots(twins[1], clock=other_clock, owner="b")
    lease = a.claim(USER)
    assert lease is not None
    other_clock.advance(seconds=ANSWER_WINDOW.total_seconds())
    assert b.holder(USER) is not None
    assert b.claim(USER) is None
    assert a.release(lease) is True


@pytest.mark.parametrize(
    ("released", "now", "live"),
    [
        (False, timedelta(seconds=LEASE_SECONDS), True),
        (False, timedelta(seconds=LEASE_SECONDS + SKEW_SECONDS), True),
        (False, timedelta(seconds=LEASE_SECONDS + SKEW_SECONDS, microseconds=1), False),
        (True, timedelta(0), False),
    ],
)
def test_a_claim_is_live_until_its_expiry_plus_the_clock_bound(released: bool, now: timedelta, live: bool) -> None:
    start = datetime(2026, 11, 25, 12, tzinfo=UTC)
    doc = SlotDocument(owner="a", claim="c", expires=start + timedelta(seconds=LEASE_SECONDS), released=released)
    assert live_claim(doc, start + now, timedelta(seconds=SKEW_SECONDS)) is live
    assert timedelta(seconds=SKEW_SECONDS) >= CLOCK_BOUND
