"""The shared generation queue: first come first served across processes, ``capacity`` at once,
and the tickets of a dead process stop counting once they are no longer renewed."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from abby_core.storage import StorageBackend
from abby_core.storage.keys import QUEUE_PREFIX
from abby_core.storage.queue import GenerationQueue


def _now() -> datetime:
    return datetime.now(UTC)


def test_places_follow_the_order_of_joining_across_processes(make_backend: Callable[..., StorageBackend]) -> None:
    backend = make_backend()
    first, second = (GenerationQueue(backend, capacity=2, clock=_now) for _ in range(2))
    tickets = []
    for n in range(5):
        tickets.append((first, second)[n % 2].join())
        time.sleep(0.002)  # distinct join times
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
    later = GenerationQueue(backend, capacity=1, clock=lambda: _now() + timedelta(seconds=61), lease_seconds=60)
    mine = later.join()
    # The dead process's ticket was never renewed: past its lease it no longer holds the slot.
    assert later.place(mine) == 0
    assert [o.key for o in backend.list_objects(QUEUE_PREFIX)] == [mine.key]
    assert ghost.key not in later.live()


@pytest.mark.slow
def test_a_renewed_ticket_stays_while_an_abandoned_one_expires(make_backend: Callable[..., StorageBackend]) -> None:
    backend = make_backend()
    queue = GenerationQueue(backend, capacity=1, clock=_now, lease_seconds=4)
    kept, abandoned, waiting = queue.join(), queue.join(), queue.join()
    assert [queue.place(t) for t in (kept, abandoned, waiting)] == [0, 1, 2]
    time.sleep(2.5)
    queue.renew(kept)
    queue.renew(waiting)
    time.sleep(2.6)
    # ``abandoned`` was last written over 4 s ago; the others 2.6 s ago.
    assert queue.live() == [kept.key, waiting.key]
    assert queue.place(waiting) == 1
    queue.leave(kept)
    assert queue.place(waiting) == 0


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
