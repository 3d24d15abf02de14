"""One generation at a time per member, and at most N at once for the whole bot.

::

    async with limiter.claim(user_id) as ticket:      # UserBusy at once if they have one running
        await interaction.response.defer(thinking=True)
        await ticket.wait_turn(show_position)        # show_position(2) while 2nd in the queue
        ...                                           # generate

The per-member check is immediate, so a second request is refused before anything
is deferred or reserved. The global queue is first-in, first-out; a waiter hears its
position each time it changes. Plain asyncio: one event loop, no threads, no locks.

With a shared queue (``GENERATION_QUEUE=shared``: an
:class:`~abby_core.storage.queue.AsyncGenerationQueue`), the queue and its
``max_concurrent`` slots are those of every bot process on the same storage: each
ticket is a small object there, its place is read from a listing, and the place a
member is told counts the waiting members of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from abby_core.storage.queue import AsyncGenerationQueue, QueueTicket

__all__ = ["GenerationLimiter", "QueueTimeout", "Ticket", "UserBusy"]

PositionCallback = Callable[[int], Awaitable[object]]


class UserBusy(Exception):
    """The member already has a generation in flight."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} already has a generation in flight")
        self.user_id = user_id


class QueueTimeout(Exception):
    """A generation waited in the queue longer than the limiter allows."""


class Ticket:
    """One member's claim; :meth:`wait_turn` takes a global slot, released on exit."""

    def __init__(self, limiter: GenerationLimiter, user_id: str) -> None:
        self._limiter = limiter
        self.user_id = user_id
        self.running = False
        self.shared: QueueTicket | None = None  # our place in the shared queue
        self.place = 0  # the last place heard from the shared queue

    async def wait_turn(self, on_position: PositionCallback | None = None, *, timeout: float | None = None) -> None:
        """Wait for a global slot; ``on_position(n)`` is awaited whenever the queue position changes.

        Returns at once when a slot is free and nobody is waiting. Raises
        :class:`QueueTimeout` after ``timeout`` seconds (the limiter's default when None).
        """
        await self._limiter._acquire(self, on_position, self._limiter.max_wait if timeout is None else timeout)

    @property
    def position(self) -> int:
        """1-based place in the queue; 0 when running or not queued."""
        return self._limiter.position(self)


class GenerationLimiter:
    """Per-member exclusivity plus a FIFO queue in front of ``max_concurrent`` slots."""

    def __init__(
        self, max_concurrent: int, *, max_wait: float = 600.0, shared: AsyncGenerationQueue | None = None
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self.max_wait = max_wait
        self.shared = shared
        self._active = 0
        self._queue: list[Ticket] = []
        self._users: set[str] = set()
        self._changed = asyncio.Event()

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def busy(self, user_id: object) -> bool:
        return str(user_id) in self._users

    def position(self, ticket: Ticket) -> int:
        if self.shared is not None:
            return 0 if ticket.running else ticket.place
        return self._queue.index(ticket) + 1 if ticket in self._queue else 0

    @contextlib.asynccontextmanager
    async def claim(self, user_id: object) -> AsyncIterator[Ticket]:
        """Hold the member's single slot for the block; raises :class:`UserBusy` if already held."""
        uid = str(user_id)
        if uid in self._users:
            raise UserBusy(uid)
        self._users.add(uid)
        ticket = Ticket(self, uid)
        keeper: asyncio.Task[None] | None = None
        try:
            if self.shared is not None:
                ticket.shared = await self.shared.join()
                keeper = asyncio.create_task(self._keep(ticket.shared))
            yield ticket
        finally:
            if keeper is not None:
                keeper.cancel()
            if ticket.shared is not None and self.shared is not None:
                await self.shared.leave(ticket.shared)
            self._users.discard(uid)
            if ticket.running:
                ticket.running = False
                self._active -= 1
            if ticket in self._queue:
                self._queue.remove(ticket)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _keep(self, place: QueueTicket) -> None:
        """Renew our shared ticket while the claim lasts, so other processes count it."""
        assert self.shared is not None
        while True:
            await asyncio.sleep(self.shared.renew_every)
            try:
                await self.shared.renew(place)
            except Exception as exc:  # storage away: the ticket is written again when it is read
                logging.getLogger("abby.discord").warning("Could not renew a queue ticket: %s", exc)

    async def _acquire_shared(self, ticket: Ticket, on_position: PositionCallback | None, timeout: float) -> None:
        assert self.shared is not None and ticket.shared is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._queue.append(ticket)  # counted as waiting in this process (metrics)
        try:
            while True:
                changed = self._changed
                place = await self.shared.place(ticket.shared)
                if place == 0:
                    ticket.running = True
                    self._active += 1
                    return
                if place != ticket.place and on_position is not None:
                    await on_position(place)
                ticket.place = place
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise QueueTimeout(f"waited {timeout:g}s for a free generation slot")
                # A place frees here or in another process: poll, or wake at once on a local release.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(remaining, self.shared.poll_seconds))
        finally:
            if ticket in self._queue:
                self._queue.remove(ticket)

    async def _acquire(self, ticket: Ticket, on_position: PositionCallback | None, timeout: float) -> None:
        if ticket.running:
            return
        if self.shared is not None:
            await self._acquire_shared(ticket, on_position, timeout)
            return
        if self._active < self.max_concurrent and not self._queue:
            self._active += 1
            ticket.running = True
            return
        self._queue.append(ticket)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        told = 0
        try:
            while True:
                changed = self._changed  # taken first: a change during the callback is not missed
                if self._queue[0] is ticket and self._active < self.max_concurrent:
                    self._queue.pop(0)
                    self._active += 1
                    ticket.running = True
                    self._notify()  # the others move up one place
                    return
                place = self._queue.index(ticket) + 1
                if place != told and on_position is not None:
                    told = place
                    await on_position(place)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise QueueTimeout(f"waited {timeout:g}s for a free generation slot")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        except BaseException:
            if ticket in self._queue:
                self._queue.remove(ticket)
                self._notify()
            raise
