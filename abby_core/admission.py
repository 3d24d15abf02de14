"""Who may generate now, for every adapter: one generation at a time per member, at most N at once.

Every generation, from the bot, another bot process or ``abby imagine``, goes through
:meth:`Admission.generate`, so a member is refused the same way wherever they ask::

    result = await admission.generate(
        user_id, make,                     # make(): the ImageService call, run once admitted
        prompt=prompt, role_ids=roles,     # for the precheck
        on_admitted=defer,                 # awaited once nothing can refuse at once any more
        on_position=show_position,         # on_position(2) while 2nd in the queue
        within=840.0,                      # queue and generation share this many seconds
    )

In order: the member's claim in this process (:class:`GenerationLimiter`, immediate), the
member's slot across every process on the storage (:class:`~abby_core.storage.slots.AsyncMemberSlots`),
the :meth:`~abby_core.pipeline.ImageService.precheck` (blocked, limits, prompt, configured),
all refused at once with nothing held; then ``on_admitted``, the wait in the global queue,
and ``make()``. A generation still running after ``within`` seconds is cancelled (its
reservation is released, so it costs nothing) and :class:`GenerationTimeout` is raised.
The slot and the claim are given back on every way out.

The queue is first-in, first-out; a waiter hears its position each time it changes. Plain
asyncio: one event loop, no threads, no locks. With a shared queue
(``GENERATION_QUEUE=shared``: an :class:`~abby_core.storage.queue.AsyncGenerationQueue`),
the queue and its ``max_concurrent`` slots are those of every process on the same storage:
each ticket is a small object there, its place is read from a listing, and the place a
member is told counts the waiting members of every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from abby_core.analytics import EventKind
from abby_core.config import Settings
from abby_core.errors import AbbyError, GenerationTimeout
from abby_core.pipeline import ImageService
from abby_core.storage import MemberId, check_user_id
from abby_core.storage.queue import AsyncGenerationQueue, GenerationQueue, QueueTicket
from abby_core.storage.slots import AsyncMemberSlots, MemberSlots

__all__ = ["Admission", "GenerationLimiter", "QueueTimeout", "Ticket", "UserBusy"]

log = logging.getLogger("abby.admission")
PositionCallback = Callable[[int], Awaitable[object]]
_T = TypeVar("_T")


class UserBusy(AbbyError):
    """The member already has a generation in flight (in this process or another)."""

    code = "user_busy"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"User {user_id} already has a generation in flight.")
        self.user_id = user_id


class QueueTimeout(AbbyError):
    """A generation waited in the queue longer than it was allowed; nothing was held."""

    code = "queue_timeout"


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
                log.warning("Could not renew a queue ticket: %s", exc)

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
                    raise QueueTimeout(f"Waited {timeout:g} s for a free generation slot.")
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
                    raise QueueTimeout(f"Waited {timeout:g} s for a free generation slot.")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        except BaseException:
            if ticket in self._queue:
                self._queue.remove(ticket)
                self._notify()
            raise


class Admission:
    """The one way to a generation: member claim, member slot, precheck, queue, deadline.

    ``slots`` is shared through the storage with every other process (bots and CLI); the
    limiter holds this process's claims and its place in the (local or shared) queue.
    """

    def __init__(self, service: ImageService, limiter: GenerationLimiter, slots: AsyncMemberSlots) -> None:
        self.service = service
        self.limiter = limiter
        self.slots = slots

    @classmethod
    def from_settings(cls, settings: Settings, service: ImageService) -> Admission:
        """``MAX_CONCURRENT_GENERATIONS`` at once, in one queue per process or, with
        ``GENERATION_QUEUE=shared``, one queue for every process on the storage."""
        storage = service.storage
        capacity = settings.discord.max_concurrent_generations
        shared = None
        if settings.discord.generation_queue == "shared":
            shared = AsyncGenerationQueue(GenerationQueue(storage.backend, capacity=capacity, clock=storage.clock))
        slots = AsyncMemberSlots(MemberSlots(storage.backend, clock=storage.clock))
        return cls(service, GenerationLimiter(capacity, shared=shared), slots)

    @contextlib.asynccontextmanager
    async def _member_slot(self, user_id: MemberId) -> AsyncIterator[None]:
        """The member's slot across processes (the limiter keeps it within this one)."""
        lease = await self.slots.claim(user_id)
        if lease is None:
            raise UserBusy(user_id)
        try:
            yield
        finally:
            try:
                await asyncio.shield(self.slots.release(lease))
            except AbbyError as exc:  # it then expires by itself
                log.warning("Could not release the generation slot of member %s: %s", user_id, exc)

    async def generate(
        self,
        user_id: object,
        make: Callable[[], Awaitable[_T]],
        *,
        prompt: str | None = None,
        role_ids: Iterable[int] = (),
        sku_ids: Iterable[int] = (),
        kind: EventKind = "imagine",
        on_admitted: Callable[[], Awaitable[object]] | None = None,
        on_position: PositionCallback | None = None,
        within: float | None = None,
    ) -> _T:
        """Run ``make()`` for ``user_id`` once the member and the bot have room for it.

        Refused at once, with nothing held and ``on_admitted`` not called: :class:`UserBusy`
        (a generation of theirs runs here or in another process), and whatever
        :meth:`~abby_core.pipeline.ImageService.precheck` refuses for ``prompt``, ``role_ids``
        and ``sku_ids``. Then ``on_admitted()`` is awaited and the global queue is waited on
        (``on_position(n)`` on each change of place). ``within`` seconds, counted from this
        call, bound the queue and ``make()`` together: :class:`QueueTimeout` if the queue
        takes them all, :class:`~abby_core.errors.GenerationTimeout` (after cancelling
        ``make()``, which releases its reservation) if the generation does. None: no bound
        but the limiter's own queue wait.
        """
        uid = check_user_id(user_id)
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        async with self.limiter.claim(uid) as ticket, self._member_slot(uid):
            await self.service.precheck(uid, prompt=prompt, role_ids=role_ids, sku_ids=sku_ids, kind=kind)
            if on_admitted is not None:
                await on_admitted()
            await ticket.wait_turn(on_position, timeout=remaining())
            scope = asyncio.timeout(remaining())
            try:
                async with scope:
                    return await make()
            except TimeoutError:
                if not scope.expired():  # make() timed out on its own: not ours to reword
                    raise
                raise GenerationTimeout(
                    f"The generation did not finish within its {within:g} s deadline; it was cancelled and released."
                ) from None
