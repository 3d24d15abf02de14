"""One generation at a time per member, across every bot process sharing the storage.

::

    lease = slots.claim(user_id)        # None: the member has a generation running somewhere
    if lease is None:
        ...                             # refuse at once
    try:
        ...                             # generate; call slots.renew(lease) on a long job
    finally:
        slots.release(lease)

Each member's slot is one small document, ``ledger/slots/{user_id}.json``::

    {"schema": 1, "owner": "4242-9f2c...", "claim": "<random hex>",
     "expires": "2026-11-25T12:16:00Z", "released": false}

Every change is a conditional write, so the storage decides who wins a race:

* a claim creates the document only if it is missing (``If-None-Match: *``), or replaces
  a free one (released, expired or unreadable) only if it is still the version that was
  read (``If-Match``). Two processes claiming at once: one write lands, the other
  re-reads, finds a live claim and is refused.
* ``release`` and ``renew`` replace the document only while it still holds *their*
  claim id, again with ``If-Match``: a late release never removes a newer claim that
  another process made after ours expired. The backend has no conditional delete, so a
  release leaves the document marked ``released`` (a few dozen bytes per member).
* a process that dies holding a slot writes nothing more; its claim ends when it
  expires (16 minutes by default: Discord's 15-minute answer window plus a margin).

A claim is expired when the *claimer's* clock is past ``expires`` plus ``skew_seconds``
(``CLOCK_BOUND``, 2 minutes): ``expires`` was written by the holder's clock, so a process
whose clock is up to that much ahead of the holder's still sees the claim live for the
whole lease, and the lease outlasts Discord's answer window, the longest a generation
holds its slot. A dead process's slot therefore frees 18 minutes after its last claim. A slot
document that cannot be read as one is treated as expired and replaced (logged).
Storage failures are :class:`~abby_core.errors.StorageUnavailable`, from the backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from abby_core.errors import StorageError, StorageUnavailable
from abby_core.storage.backend import ConditionFailed, StorageBackend
from abby_core.storage.keys import MemberId, slot_key
from abby_core.storage.rules import CLOCK_BOUND

__all__ = ["AsyncMemberSlots", "MemberSlots", "SlotDocument", "SlotHolder", "SlotLease", "live_claim"]

log = logging.getLogger("abby.storage.slots")

#: Discord's 15 minutes to answer an interaction, plus a minute.
LEASE_SECONDS = 960
#: How far apart the clocks of two bot processes may be.
SKEW_SECONDS = CLOCK_BOUND.total_seconds()
# Each lost race is followed by a fresh read, which nearly always shows the winner's live
# claim; this many in a row means the storage is misbehaving.
_MAX_ATTEMPTS = 8
_T = TypeVar("_T")


class SlotDocument(BaseModel):
    """``ledger/slots/{user_id}.json``: who holds the member's slot, and until when."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    owner: str = Field(min_length=1, max_length=200)
    claim: str = Field(min_length=1, max_length=64)
    expires: AwareDatetime
    released: bool = False


@dataclass(frozen=True)
class SlotHolder:
    """A live claim on a member's slot: which process holds it, and until when."""

    user_id: MemberId
    owner: str
    claim_id: str
    expires: datetime


@dataclass(frozen=True)
class SlotLease(SlotHolder):
    """Our own claim, as returned by :meth:`MemberSlots.claim` and :meth:`MemberSlots.renew`."""

    etag: str


def default_owner() -> str:
    """A name for this process that no other process shares: its pid and a random part."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class MemberSlots:
    """Per-member slots in ``backend``, shared by every process that uses the same storage.

    Synchronous and thread-safe (all state is in the storage); the bot runs it on worker
    threads (see :class:`AsyncMemberSlots`). ``owner`` names this process in the slot
    documents, for operators; exclusivity rests on each claim's random id, so two
    instances with the same owner still exclude each other.
    """

    def __init__(
        self,
        backend: StorageBackend,
        *,
        clock: Callable[[], datetime],
        lease_seconds: float = LEASE_SECONDS,
        skew_seconds: float = SKEW_SECONDS,
        owner: str | None = None,
    ) -> None:
        if lease_seconds <= 0 or skew_seconds < 0:
            raise ValueError("lease_seconds must be positive and skew_seconds not negative")
        self.backend = backend
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.skew = timedelta(seconds=skew_seconds)
        self.owner = owner or default_owner()

    # -- the public steps ------------------------------------------------------------------
    def claim(self, uid: MemberId) -> SlotLease | None:
        """Take the member's slot, or return ``None`` when a live claim holds it.

        A live claim of this same instance refuses too: one generation per member, full
        stop. A released, expired or unreadable document is replaced. Raises
        :class:`~abby_core.errors.StorageUnavailable` when the storage fails; a write whose
        answer was lost is checked by reading the document again.
        """
        key = slot_key(uid)
        for _ in range(_MAX_ATTEMPTS):
            found = self.backend.read_doc(key)
            now = self.clock()
            tag: str | None = None
            previous: SlotDocument | None = None
            if found is not None:
                body, tag = found
                previous = _parse(body)
                if previous is not None and self._live(previous, now):
                    return None
            doc = SlotDocument(owner=self.owner, claim=uuid.uuid4().hex, expires=now + self.lease)
            try:
                new_tag = self._write(key, doc, tag)
            except ConditionFailed:
                continue  # another process changed it since our read: decide again
            if found is not None and previous is None:
                log.warning("Replaced the unreadable slot document %s with a new claim.", key)
            elif previous is not None and not previous.released:
                log.info("Took over the expired claim of %s on %s.", previous.owner, key)
            return SlotLease(uid, doc.owner, doc.claim, doc.expires, new_tag)
        raise StorageUnavailable("The generation slots are too busy (too many writers at once); nothing was changed.")

    def renew(self, lease: SlotLease) -> SlotLease | None:
        """Push our claim's expiry to ``lease_seconds`` from now; ``None`` if it is no longer ours.

        It is no longer ours once released or taken over (it expired and another process
        claimed the slot). A claim that expired but that nobody took over is renewed.
        """
        key = slot_key(lease.user_id)
        for _ in range(_MAX_ATTEMPTS):
            current = self._ours(key, lease)
            if current is None:
                return None
            doc, tag = current
            doc.expires = self.clock() + self.lease
            try:
                new_tag = self._write(key, doc, tag)
            except ConditionFailed:
                continue
            return SlotLease(lease.user_id, doc.owner, doc.claim, doc.expires, new_tag)
        raise StorageUnavailable("The generation slots are too busy (too many writers at once); nothing was changed.")

    def release(self, lease: SlotLease) -> bool:
        """Free the member's slot if ``lease`` still holds it; return whether it did.

        ``False`` (nothing written) when the slot was already released or another claim
        replaced ours. The document stays, marked released: without a conditional delete,
        removing it could remove a claim made a moment after our read.
        """
        key = slot_key(lease.user_id)
        for _ in range(_MAX_ATTEMPTS):
            current = self._ours(key, lease)
            if current is None:
                return False
            doc, tag = current
            doc.released = True
            try:
                self._write(key, doc, tag)
            except ConditionFailed:
                continue
            return True
        raise StorageUnavailable("The generation slots are too busy (too many writers at once); nothing was changed.")

    def holder(self, uid: MemberId) -> SlotHolder | None:
        """The live claim on the member's slot (ours or another process's), or ``None``.

        ``None`` exactly when :meth:`claim` would take the slot (barring a race).
        """
        found = self.backend.read_doc(slot_key(uid))
        if found is None:
            return None
        doc = _parse(found[0])
        if doc is None or not self._live(doc, self.clock()):
            return None
        return SlotHolder(uid, doc.owner, doc.claim, doc.expires)

    # -- helpers ------------------------------------------------------------------------------
    def _live(self, doc: SlotDocument, now: datetime) -> bool:
        return live_claim(doc, now, self.skew)

    def _ours(self, key: str, lease: SlotLease) -> tuple[SlotDocument, str] | None:
        found = self.backend.read_doc(key)
        if found is None:
            return None
        doc = _parse(found[0])
        if doc is None or doc.released or doc.claim != lease.claim_id:
            return None
        return doc, found[1]

    def _write(self, key: str, doc: SlotDocument, etag: str | None) -> str:
        """Write ``doc`` conditionally; when the answer was lost, read back whether it landed."""
        body = doc.model_dump_json(by_alias=True).encode()
        try:
            return self.backend.write_doc(key, body, etag=etag)
        except StorageError as exc:
            if self.backend.write_errors_are_definite:
                raise
            try:
                found = self.backend.read_doc(key)
            except StorageError:
                raise exc from None
            if found is not None and found[0] == body:
                return found[1]  # it landed (each body holds a random claim id: it is ours)
            raise


def live_claim(doc: SlotDocument, now: datetime, skew: timedelta) -> bool:
    """Whether a claim still holds the slot at ``now`` (the looker's clock): not released, and
    not past ``expires`` (the holder's clock) by more than ``skew``."""
    return not doc.released and now <= doc.expires + skew


def _parse(body: bytes) -> SlotDocument | None:
    try:
        return SlotDocument.model_validate_json(body)
    except ValidationError:
        return None


class AsyncMemberSlots:
    """:class:`MemberSlots` for the event loop: each call runs on ``executor``'s threads.

    ``executor`` is ``None`` for the loop's default one. A ``claim`` whose caller is
    cancelled waits for its worker and releases the slot it took, so an abandoned
    request never holds a member's slot until it expires.
    """

    def __init__(self, slots: MemberSlots, executor: Executor | None = None) -> None:
        self.slots = slots
        self._executor = executor

    async def claim(self, user_id: MemberId) -> SlotLease | None:
        """See :meth:`MemberSlots.claim`."""
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, self.slots.claim, user_id)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            try:
                lease = await job
            except Exception:
                raise asyncio.CancelledError from None
            if lease is not None:
                try:
                    await self._run(self.slots.release, lease)
                except Exception:
                    log.exception("Could not release an abandoned claim; it ends when it expires.")
            raise

    async def renew(self, lease: SlotLease) -> SlotLease | None:
        """See :meth:`MemberSlots.renew`."""
        return await self._run(self.slots.renew, lease)

    async def release(self, lease: SlotLease) -> bool:
        """See :meth:`MemberSlots.release`."""
        return await self._run(self.slots.release, lease)

    async def holder(self, user_id: MemberId) -> SlotHolder | None:
        """See :meth:`MemberSlots.holder`."""
        return await self._run(self.slots.holder, user_id)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))
