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

A ticket lives while it is renewed: its owner rewrites it every ``lease / 4`` (``renew``),
and the storage's own modification time says when it was last renewed, so no clock but
the storage server's decides it. A process that dies leaves tickets that stop being renewed;
past ``lease`` they no longer count, and whoever lists the queue deletes them.

What it costs: a join and a leave (two writes) per generation, a listing per waiting
member per poll, and a rewrite per ticket per ``lease / 4``. Two processes whose clocks
differ order the tickets they add within that difference of each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
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

__all__ = ["AsyncGenerationQueue", "GenerationQueue", "QueueTicket"]

log = logging.getLogger("abby.storage.queue")
LEASE_SECONDS = 60.0
_T = TypeVar("_T")


class TicketDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(default=1, alias="schema")
    owner: str = Field(min_length=1, max_length=200)
    renewed: AwareDatetime  # for operators; liveness is the object's modification time


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
    ) -> None:
        if capacity < 1 or lease_seconds <= 0:
            raise ValueError("capacity must be at least 1 and lease_seconds positive")
        self.backend = backend
        self.capacity = capacity
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.owner = owner or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def join(self) -> QueueTicket:
        """Take a place at the back of the queue."""
        now = self.clock().astimezone(UTC)
        key = f"{QUEUE_PREFIX}{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(6)}.json"
        self._write(key, now, etag=None)
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
        """The live tickets' keys in queue order; expired ones are deleted on the way."""
        horizon = self.clock() - self.lease
        live: list[str] = []
        dead: list[str] = []
        for obj in self.backend.list_objects(QUEUE_PREFIX):
            (live if obj.last_modified > horizon else dead).append(obj.key)
        for key in dead:
            try:
                self.backend.delete_doc(key)
            except StorageError as exc:
                log.debug("Could not delete the expired queue ticket %s (%s).", key, exc)
        return sorted(live)

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
