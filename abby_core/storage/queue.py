"""One generation queue for every bot process sharing the storage (``GENERATION_QUEUE=shared``).

::

    ticket = queue.join()              # a place at the back of the queue
    while (place := queue.place(ticket)) > 0:
        ...                            # tell the member their place; wait a moment
    ...                                # generate (among the first ``capacity`` tickets)
    queue.leave(ticket)

Each waiting or running generation is one small object, ``ledger/queue/{joined}-{id}.json``,
named by the time it joined, so a listing sorted by key is the queue, first come first
served. The first ``capacity`` live tickets may run (``MAX_CONCURRENT_GENERATIONS`` for the
whole bot, however many processes); a ticket's place is how many tickets beyond those are
ahead of it, plus one.

A ticket lives while it is renewed: its owner rewrites it every ``lease / 4`` (``renew``).
Whether it still is, each process judges by what it saw change (:mod:`.liveness`), never by
a time another clock wrote (the ticket's body, or the storage server's modification time):
a ticket whose version (``ObjectInfo.version``) this process has seen unchanged for longer
than ``lease`` of its own monotonic clock has stopped being renewed, and whoever lists the
queue deletes it. A process that dies leaves tickets that stop being renewed; a process
that just started waits a whole ``lease`` before it deletes a ticket it has never seen change.

A new ticket is named after the newest ticket in the queue when it joins, even if the
joiner's clock is behind: a ticket never sorts ahead of one that was already listed, so a
running generation keeps its place whatever the clocks say. The queue is not a lock: a
ticket whose join listed the queue just before another ticket landed and started may still
sort ahead of it (a window of one write's latency, whatever the clocks).

What it costs: a listing and a write to join, a write to leave, a listing per waiting
member per poll, and a rewrite per ticket per ``lease / 4``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from abby_core.errors import StorageError
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import QUEUE_PREFIX
from abby_core.storage.liveness import Sighting, abandoned, observe

__all__ = ["AsyncGenerationQueue", "GenerationQueue", "QueueTicket"]

log = logging.getLogger("abby.storage.queue")
LEASE_SECONDS = 60.0
_STAMP = "%Y%m%dT%H%M%S%f"
_T = TypeVar("_T")


class TicketDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(default=1, alias="schema")
    owner: str = Field(min_length=1, max_length=200)
    renewed: AwareDatetime  # for operators only: written by the owner's clock
    # Random per write, so every renewal changes the stored bytes (and the version listings show).
    write: str = Field(default_factory=lambda: secrets.token_hex(4), max_length=16)


def after(newest: str | None, now: datetime) -> datetime:
    """When a new ticket says it joined: ``now``, or just after the ``newest`` key listed if
    that names a later time (the joiner's clock is behind), so it sorts last."""
    if newest is not None:
        stamp = newest.removeprefix(QUEUE_PREFIX).split("Z-", 1)[0]
        try:
            listed = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
        except ValueError:
            return now
        return max(now, listed + timedelta(microseconds=1))
    return now


@dataclass(frozen=True)
class QueueTicket:
    """Our place in the queue: its key (which orders it) and the owner that wrote it."""

    key: str
    owner: str


class GenerationQueue:
    """A first-come, first-served queue of generations in ``backend``, ``capacity`` running at once.

    Synchronous and thread-safe (the state is in the storage); the bot runs it on worker
    threads through :class:`AsyncGenerationQueue`.
    """

    def __init__(
        self,
        backend: StorageBackend,
        *,
        capacity: int,
        clock: Callable[[], datetime],
        lease_seconds: float = LEASE_SECONDS,
        owner: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or lease_seconds <= 0:
            raise ValueError("capacity must be at least 1 and lease_seconds positive")
        self.backend = backend
        self.capacity = capacity
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.monotonic = monotonic
        self._seen: dict[str, Sighting] = {}
        self._seen_lock = threading.Lock()

    def join(self) -> QueueTicket:
        """Take a place at the back of the queue (after every ticket listed now)."""
        newest = max(self.live(), default=None)
        joined = after(newest, self.clock().astimezone(UTC))
        key = f"{QUEUE_PREFIX}{joined:{_STAMP}}Z-{secrets.token_hex(6)}.json"
        self._write(key, self.clock(), etag=None)
        return QueueTicket(key, self.owner)

    def place(self, ticket: QueueTicket) -> int:
        """0 when ``ticket`` may run (it is among the first ``capacity`` live tickets), else its
        place among the waiting (1: next). A ticket that is no longer there (it expired while
        its owner was away) joins again at its old place in the order: it keeps its key."""
        live = self.live()
        if ticket.key not in live:
            self._write(ticket.key, self.clock(), etag=None, exists_ok=True)
            live = sorted([*live, ticket.key])
        index = live.index(ticket.key)
        return 0 if index < self.capacity else index - self.capacity + 1

    def live(self) -> list[str]:
        """The live tickets' keys in queue order; abandoned ones are deleted on the way.

        A ticket is abandoned when this process has seen the same version of it for longer
        than ``lease`` (its monotonic clock): a ticket first seen now counts for a lease.
        """
        listed = list(self.backend.list_objects(QUEUE_PREFIX))
        now = self.monotonic()
        lease = self.lease.total_seconds()
        with self._seen_lock:
            seen = {o.key: observe(self._seen.get(o.key), o.version or f"{o.last_modified}", now) for o in listed}
            self._seen = seen
        dead = [key for key, sighting in seen.items() if abandoned(sighting, now, lease)]
        for key in dead:
            try:
                self.backend.delete_doc(key)
            except StorageError as exc:
                log.debug("Could not delete the abandoned queue ticket %s (%s).", key, exc)
        return sorted(key for key in seen if key not in dead)

    def waiting(self) -> int:
        """How many generations wait for a turn, in every process."""
        return max(0, len(self.live()) - self.capacity)

    def renew(self, ticket: QueueTicket) -> None:
        """Keep ``ticket`` alive (call every ``lease / 4`` at least)."""
        self._write(ticket.key, self.clock(), etag=None, exists_ok=True)

    def leave(self, ticket: QueueTicket) -> None:
        """Give up the place (the generation ended, or its member gave up waiting)."""
        self.backend.delete_doc(ticket.key)

    def _write(self, key: str, now: datetime, *, etag: str | None, exists_ok: bool = False) -> None:
        body = TicketDocument(owner=self.owner, renewed=now.astimezone(UTC)).model_dump_json(by_alias=True).encode()
        try:
            self.backend.write_doc(key, body, etag=etag)
        except ConditionFailed:
            if not exists_ok:
                raise
            found = self.backend.read_doc(key)
            if found is not None:
                self.backend.write_doc(key, body, etag=found[1])


class AsyncGenerationQueue:
    """:class:`GenerationQueue` for the event loop: each call runs on the loop's default executor."""

    def __init__(self, queue: GenerationQueue, *, poll_seconds: float = 1.0) -> None:
        self.queue = queue
        self.poll_seconds = poll_seconds

    @property
    def capacity(self) -> int:
        return self.queue.capacity

    @property
    def renew_every(self) -> float:
        return self.queue.lease.total_seconds() / 4

    async def join(self) -> QueueTicket:
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, self.queue.join)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            try:
                ticket = await job
            except Exception:
                raise asyncio.CancelledError from None
            await self.leave(ticket)
            raise

    async def place(self, ticket: QueueTicket) -> int:
        return await self._run(self.queue.place, ticket)

    async def waiting(self) -> int:
        return await self._run(self.queue.waiting)

    async def renew(self, ticket: QueueTicket) -> None:
        await self._run(self.queue.renew, ticket)

    async def leave(self, ticket: QueueTicket) -> None:
        """Leave, logging a storage failure (the ticket then expires by itself)."""
        try:
            await asyncio.shield(self._run(self.queue.leave, ticket))
        except StorageError as exc:
            log.warning("Could not leave the generation queue (%s); the place expires by itself.", exc)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))
