"""The shared generation queue: first come first served across processes, ``capacity`` at once,
and the tickets of a dead process stop counting once they are no longer renewed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from abby_core.storage import StorageBackend
from abby_core.storage.keys import QUEUE_PREFIX
from abby_core.storage.queue import GenerationQueue, QueueTicket, after
from tests.fixtures.clocks import Ticks


def _now() -> datetime:
    return datetime.now(UTC)


def test_places_follow_the_order_of_joining_across_processes(make_backend: Callable[..., StorageBackend]) -> None:
    backend = make_backend()
    first, second = (GenerationQueue(backend, capacity=2, clock=_now) for _ in range(2))
    tickets = []
    for n in range(5):
        tickets.append((first, second)[n % 2].join())
    assert [first.place(t) for t in tickets] == [0, 0, 1, 2, 3]
    assert [second.place(t) for t in tickets] == [0, 0, 1, 2, 3]  # the same queue for both
    assert first.waiting() == 3
    second.leave(tickets[1])
    assert [first.place(t) for t in (tickets[0], *tickets[2:])] == [0, 0, 1, 2]
    first.leave(tickets[0])
    first.leave(tickets[2])
    assert [second.place(t) for t in tickets[3:]] == [0, 0]
    assert second.waiting() == 0


def test_a_dead_process_tickets_expire_and_are_deleted(make_backend: Callable[..., StorageBackend]) -> None:
    backend = make_backend()
    dead = GenerationQueue(backend, capacity=1, clock=_now, lease_seconds=60)
    ghost = dead.join()
    ticks = Ticks()
    later = GenerationQueue(backend, capacity=1, clock=_now, lease_seconds=60, monotonic=ticks)
    mine = later.join()
    assert later.place(mine) == 1  # first seen now: it counts for a whole lease
    ticks.now = 60.0
    later.renew(mine)
    assert later.place(mine) == 1  # unchanged for exactly a lease: not yet
    ticks.now = 61.0
    # The dead process's ticket was never renewed: past its lease it no longer holds the slot.
    assert later.place(mine) == 0
    assert [o.key for o in backend.list_objects(QUEUE_PREFIX)] == [mine.key]
    assert ghost.key not in later.live()


def test_a_renewed_ticket_stays_while_an_abandoned_one_expires(make_backend: Callable[..., StorageBackend]) -> None:
    backend = make_backend()
    ticks = Ticks()
    queue = GenerationQueue(backend, capacity=1, clock=_now, lease_seconds=4, monotonic=ticks)
    kept, abandoned, waiting = queue.join(), queue.join(), queue.join()
    assert [queue.place(t) for t in (kept, abandoned, waiting)] == [0, 1, 2]
    ticks.now = 2.5
    queue.renew(kept)
    queue.renew(waiting)
    assert queue.live() == [kept.key, abandoned.key, waiting.key]
    ticks.now = 5.1
    # ``abandoned`` has looked the same for over 4 s; the others for 2.6 s.
    assert queue.live() == [kept.key, waiting.key]
    assert queue.place(waiting) == 1
    queue.leave(kept)
    assert queue.place(waiting) == 0


@pytest.mark.parametrize(
    ("newest", "now", "joined"),
    [
        (None, datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)),
        (  # the newest ticket was named by a clock 90 s ahead: just after it
            f"{QUEUE_PREFIX}20260101T120130000000Z-aa.json",
            datetime(2026, 1, 1, 12, tzinfo=UTC),
            datetime(2026, 1, 1, 12, 1, 30, 1, tzinfo=UTC),
        ),
        (  # an older newest ticket: our own clock
            f"{QUEUE_PREFIX}20260101T115930000000Z-aa.json",
            datetime(2026, 1, 1, 12, tzinfo=UTC),
            datetime(2026, 1, 1, 12, tzinfo=UTC),
        ),
        (f"{QUEUE_PREFIX}not-a-time.json", datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)),
    ],
)
def test_a_new_ticket_is_named_after_the_newest(newest: str | None, now: datetime, joined: datetime) -> None:
    assert after(newest, now) == joined


def test_a_ticket_lost_while_its_owner_was_away_comes_back_at_its_place(
    make_backend: Callable[..., StorageBackend],
) -> None:
    backend = make_backend()
    queue = GenerationQueue(backend, capacity=1, clock=_now)
    first, second = queue.join(), queue.join()
    backend.delete_doc(first.key)  # swept as expired while its process could not reach storage
    assert queue.place(second) == 0
    assert queue.place(first) == 0  # written again under its old key: still first in line
    assert queue.place(second) == 1


def test_capacity_and_lease_are_checked(make_backend: Callable[..., StorageBackend]) -> None:
    with pytest.raises(ValueError):
        GenerationQueue(make_backend(), capacity=0, clock=_now)


# -- clocks that disagree (docs/SCALING.md: up to 2 minutes apart are safe) ----------------------


def _running(*pairs: tuple[GenerationQueue, QueueTicket]) -> int:
    return sum(1 for queue, ticket in pairs if queue.place(ticket) == 0)


@pytest.mark.parametrize("offset", [90, -90, 120, -120])
def test_a_skewed_process_never_takes_a_running_ticket_s_place(
    make_backend: Callable[..., StorageBackend], offset: int
) -> None:
    """Capacity 1: process A on a true clock runs; process B, ``offset`` seconds off, waits."""
    backend = make_backend()
    a = GenerationQueue(backend, capacity=1, clock=_now)
    b = GenerationQueue(backend, capacity=1, clock=lambda: _now() + timedelta(seconds=offset))
    first = a.join()
    assert a.place(first) == 0
    second = b.join()
    assert b.place(second) == 1  # neither judged A's live ticket dead nor jumped ahead of it
    assert set(b.live()) == {first.key, second.key}
    third = a.join()
    assert a.place(third) == 2
    assert _running((a, first), (b, second), (a, third)) == 1
    a.leave(first)
    assert [b.place(second), a.place(third)] == [0, 1]


@pytest.mark.parametrize("offset", [90, -90])
def test_a_newcomer_never_overtakes_a_running_ticket_whatever_its_clock(
    make_backend: Callable[..., StorageBackend], offset: int
) -> None:
    backend = make_backend()
    runner = GenerationQueue(backend, capacity=1, clock=lambda: _now() + timedelta(seconds=offset))
    newcomer = GenerationQueue(backend, capacity=1, clock=_now)
    running = runner.join()
    assert runner.place(running) == 0
    late = newcomer.join()
    assert newcomer.place(late) == 1
    assert runner.place(running) == 0
    assert _running((runner, running), (newcomer, late)) == 1
