"""Escrow of the global storage budget: a lease per process, so saves stop queueing on one document.

Without escrow every hold and every commit writes the global document (``ledger/global.json``),
and all writers of all processes take turns on that one object. With escrow (the demarcation
protocol) a process leases a slice of the remaining global budget with one conditional
write, then admits holds against its slice in memory: a generation writes only its member's
own document. The slice is settled from time to time: one global write records the
snapshots of the members the process served, shrinks the lease to what is still in flight
and takes a fresh slice.

The invariant (docs/STORAGE_SYSTEM.md has the long form)::

    stored bytes + live holds  <=  sum of the user snapshots + sum of the leases  <=  limit

It holds because every byte a process admits comes out of its lease's ``free`` part before
the member's document is written (``charge``), and stays covered by the lease until the
global document holds a snapshot of that member's document that includes it (``settle``).
A snapshot never replaces a newer one, and a member's document only ever moves forward,
so a snapshot applied by anybody later includes every hold that landed before it.

The lease is written with an expiry. A process stops admitting from it a margin before it
expires. Another process takes it for dead (or stalled) when it has seen the lease unchanged
across its own global writes for a lifetime and the margin (its own monotonic clock), or
when its clock is past the expiry plus the margin plus ``CLOCK_BOUND`` (the expiry is the
owner's clock): the next global write refreshes every user snapshot from the user documents
and drops the lease (``Accounts.update_global``), so a crash loses no budget for much longer
than a lease's lifetime and the margin, and no clocks up to ``CLOCK_BOUND`` apart drop a
lease its owner still admits from.

Slices shrink as the budget runs out: a process takes at most what is left divided among
the processes holding leases (and itself), and never less than the hold it is admitting,
so the last megabytes go one generation at a time, to whoever asks, through the global
document: exact at the limit.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from abby_core.errors import GlobalStorageFull, StorageError
from abby_core.storage import keys, usage_rules
from abby_core.storage.accounts import Accounts
from abby_core.storage.documents import GlobalLedger, Lease, UserLedger
from abby_core.storage.ledger import UncertainWrite

__all__ = ["Escrow", "LeaseView"]

log = logging.getLogger("abby.storage.escrow")


@dataclass(frozen=True)
class LeaseView:
    """This process's lease as it stands in memory (for stats and tests)."""

    lease_id: str
    granted: int  # bytes the global document reserves for this lease
    free: int  # of which not yet admitted to any hold
    in_flight: int  # admitted to holds whose write has not landed yet
    landed: int  # admitted to holds that landed, not yet in a settled snapshot
    expires: datetime | None


class Escrow:
    """One process's lease on the global budget, with the members it served since the last settle."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        global_limit: int,
        lifetime: timedelta,
        margin: timedelta,
        max_slice: int,
        owner: str | None = None,
    ) -> None:
        self.accounts = accounts
        self.clock: Callable[[], datetime] = accounts.clock
        self.global_limit = global_limit
        self.lifetime = lifetime
        self.margin = margin
        self.max_slice = max_slice
        self.lease_id = secrets.token_hex(8)
        accounts.own_leases.add(self.lease_id)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        # One lock for the in-memory books and the global writes that settle them: a
        # charge that needs a refill waits for it; charges that fit never touch storage.
        self._lock = threading.RLock()
        self._granted = 0
        self._free = 0
        self._expires: datetime | None = None
        self._in_flight: dict[int, int] = {}
        self._next_token = 0
        self._landed = 0
        self._served: dict[keys.MemberId, UserLedger] = {}  # newest document per member served, not yet settled
        self._unknown: set[keys.MemberId] = set()  # members whose hold write may have landed unseen
        self._active = False  # charged since the last settle
        self._timer: threading.Timer | None = None
        self._closed = False
        self.settles = 0  # global writes made, for benchmarks and tests

    # -- admitting -------------------------------------------------------------------------
    def _usable(self, now: datetime) -> bool:
        return self._expires is not None and now < self._expires - self.margin

    def charge(self, size: int) -> int:
        """Admit ``size`` bytes from the lease (refilling it first if needed); returns a token.

        Raises :class:`~abby_core.errors.GlobalStorageFull` when the global budget has no
        room for it, and :class:`~abby_core.errors.StorageError` when the refill failed.
        """
        with self._lock:
            if self._closed:
                raise StorageError("The storage manager is closed.")
            if size > 0 and (self._free < size or not self._usable(self.clock())):
                self._settle(need=size)
            self._free -= size
            self._next_token += 1
            self._in_flight[self._next_token] = size
            self._active = True
            return self._next_token

    def refund(self, token: int) -> None:
        """The hold was refused or its write failed for certain: the bytes go back to the lease."""
        with self._lock:
            size = self._in_flight.pop(token, 0)
            self._free += size

    def landed(self, token: int, uid: keys.MemberId, doc: UserLedger) -> None:
        """The hold landed in ``doc`` (the member's document as stored)."""
        with self._lock:
            self._landed += self._in_flight.pop(token, 0)
            self._remember(uid, doc)

    def uncertain(self, token: int, uid: keys.MemberId) -> None:
        """The hold's write may or may not have landed: keep it covered, and read the document at settle."""
        with self._lock:
            self._landed += self._in_flight.pop(token, 0)
            self._unknown.add(uid)

    def served(self, uid: keys.MemberId, doc: UserLedger) -> None:
        """A newer version of a member's document (a commit, a void): the global document learns it at settle."""
        with self._lock:
            self._remember(uid, doc)

    def _remember(self, uid: keys.MemberId, doc: UserLedger) -> None:
        known = self._served.get(uid)
        if known is None or known.version < doc.version:
            self._served[uid] = doc

    # -- settling --------------------------------------------------------------------------
    def settle(self, *, renew: bool | None = None) -> None:
        """Record the served members' snapshots and re-size the lease (one global write).

        ``renew=None``: take a fresh slice if the lease was used since the last settle,
        otherwise give the free part back.
        """
        with self._lock:
            self._settle(need=0, renew=renew)

    def _settle(self, *, need: int, renew: bool | None = None) -> None:
        if renew is None:
            renew = self._active or need > 0
        served = dict(self._served)
        for uid in sorted(self._unknown):
            doc = self.accounts.user(uid)  # a read; raises StorageError while storage is away
            if uid not in served or served[uid].version < doc.version:
                served[uid] = doc
        in_flight = sum(self._in_flight.values())
        now = self.clock()
        expires = now + self.lifetime
        if self._expires is not None and expires <= self._expires:
            # Every settle changes the lease, even on a clock that stood still: other processes
            # judge whether its owner lives by seeing it change (``Accounts.lease_silence``).
            expires = self._expires + timedelta(microseconds=1)

        shards = self.accounts.publish_users(served)

        def change(glob: GlobalLedger) -> tuple[int, bool]:
            free = usage_rules.lease_slice(
                glob,
                lease_id=self.lease_id,
                covered=in_flight,
                need=need,
                want=self.max_slice if renew else 0,
                limit=self.global_limit,
            )
            if free is None:
                # No room for ``need``: keep only what is in flight, and refuse.
                free = 0
            if in_flight + free > 0:
                glob.leases[self.lease_id] = Lease(bytes=in_flight + free, expires=expires, owner=self.owner)
            else:
                glob.leases.pop(self.lease_id, None)
            return free, need > 0 and free < need

        try:
            (free, refused), glob = self.accounts.update_global(change, shards=shards)
        except UncertainWrite:
            self._free = 0  # the lease may now be smaller than we thought: admit nothing until it is settled
            raise
        self.settles += 1
        self._granted = in_flight + free
        self._free = free
        self._expires = expires if self._granted > 0 else None
        self._landed = 0
        self._unknown.clear()
        for uid, doc in served.items():
            if self._served.get(uid) is doc:
                del self._served[uid]
        self._active = False
        self._arm_timer()
        if refused:
            used = usage_rules.global_usage(glob) - self._granted
            raise GlobalStorageFull(used=used, limit=self.global_limit)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._expires is None or self._closed:
            return
        delay = max(0.05, (self._expires - self.margin - self.clock()).total_seconds() * 0.8)
        timer = threading.Timer(delay, self._on_timer)
        timer.daemon = True
        timer.start()
        self._timer = timer

    def _on_timer(self) -> None:
        try:
            self.settle()
        except StorageError as exc:
            log.warning("Could not renew this process's lease of the global storage budget (%s).", exc)
            with self._lock:
                if not self._closed:
                    self._arm_timer()
        except GlobalStorageFull:
            pass

    def close(self) -> None:
        """Give the lease back (what is in flight stays leased until it expires). Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                if self._expires is not None or self._served or self._unknown:
                    self._settle(need=0, renew=False)
            except StorageError as exc:
                log.warning("Could not give back the lease of the global storage budget; it ends at expiry (%s).", exc)
            finally:
                self._closed = True

    # -- reading ---------------------------------------------------------------------------
    @property
    def free(self) -> int:
        """Bytes this process may still admit without a global write (0 once the lease is unusable)."""
        with self._lock:
            return self._free if self._usable(self.clock()) else 0

    def view(self) -> LeaseView:
        with self._lock:
            return LeaseView(
                lease_id=self.lease_id,
                granted=self._granted,
                free=self._free,
                in_flight=sum(self._in_flight.values()),
                landed=self._landed,
                expires=self._expires,
            )
