"""Every quota rule, in one place: limits and tiers, holds, commits, the day, the status.

The credit book (credit sources, refunds, the member record's copy) has its own module,
:mod:`abby_core.storage.credit_rules`, built on the hold rules here.

Nothing else in Abby computes "limit + bonus", picks a tier or compares usage with a
limit. The functions that change a document change it in place and raise a
:class:`~abby_core.errors.QuotaExceeded` subclass (or :class:`~abby_core.errors.UserBlocked`)
to refuse. They run inside :meth:`Ledger.update`, so they may run more than once and must
not touch anything but their document.

The day only moves forward: a document stored on day D is never taken back to an earlier
day by a process whose clock is behind (it counts against D instead). Two hosts whose
clocks differ across midnight therefore allow at most one daily limit per UTC day.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum

from abby_core.config import MB, PremiumTier, QuotaTier
from abby_core.errors import (
    DailyLimitExceeded,
    GlobalStorageFull,
    InvalidInput,
    ReservationInvalid,
    UserBlocked,
    UserStorageFull,
)
from abby_core.storage.documents import (
    CreditSource,
    Entry,
    Hold,
    UserLedger,
)
from abby_core.storage.models import QuotaStatus, UserLimits

__all__ = [
    "CLOCK_BOUND",
    "MAX_CREDITS",
    "MAX_GRANT",
    "PURGE_MARGIN",
    "Settled",
    "check_credits",
    "check_grant",
    "check_room",
    "check_size",
    "check_source",
    "claimed_holds",
    "commit",
    "committable",
    "counts",
    "credits_left",
    "day_of",
    "drop_hold",
    "droppable",
    "expired_holds",
    "hold",
    "limits_for",
    "next_midnight",
    "precheck",
    "roll_day",
    "settle",
    "status",
    "uncommit",
    "user_bytes",
]

#: How far apart the clocks of two processes sharing the storage may be (docs/SCALING.md).
#: Every decision one process makes about a hold, a lease or a slot another wrote keeps at
#: least this much to spare.
CLOCK_BOUND = timedelta(seconds=120)
# A hold counts, and is dropped by a process other than its owner, until this long after it
# expired: its owner commits only before expiry by its own clock, so a process whose clock
# is up to this much ahead never stops counting (or drops) a hold its owner can still commit.
PURGE_MARGIN = CLOCK_BOUND
#: The most extra generations one admin grant gives (for the day it is given).
MAX_GRANT = 1000
#: The most credits one source gives: an admin grant or a credit pack (CREDIT_PACKS).
MAX_CREDITS = 100_000


class Settled(Enum):
    """What became of a generation whose commit did not answer."""

    COMMITTED = "committed"
    VOIDED = "voided"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def _whole(value: object, top: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise InvalidInput(f"The number of {what} must be a whole number from 1 to {top}.")
    return value


def check_grant(extra: object) -> int:
    """``extra`` as a number of extra generations to grant, or :class:`InvalidInput`."""
    return _whole(extra, MAX_GRANT, "extra generations")


def check_credits(credits: object) -> int:
    """``credits`` as a number of credits one source gives, or :class:`InvalidInput`."""
    return _whole(credits, MAX_CREDITS, "credits")


def check_size(size: object, *, estimate: int, limit: int) -> int:
    """``size`` as the bytes to reserve (``None``: the ``estimate``), a whole number from 1 to
    the global ``limit``, or :class:`InvalidInput`."""
    if size is None:
        return estimate
    if isinstance(size, bool) or not isinstance(size, int | float) or not math.isfinite(size):
        raise InvalidInput(f"The size to reserve must be a whole number of bytes, not {size!r}.")
    if size != int(size) or not 1 <= size <= limit:
        raise InvalidInput(f"The size to reserve must be a whole number of bytes from 1 to {limit}.")
    return int(size)


_CREDIT_SOURCE = re.compile(r"[A-Za-z0-9:_-]{1,100}")


def check_source(source: object) -> str:
    """``source`` as the id of what gives credits (an entitlement, an admin grant), or :class:`InvalidInput`."""
    if not isinstance(source, str) or not _CREDIT_SOURCE.fullmatch(source):
        raise InvalidInput("A credit source must be 1 to 100 letters, digits, ':', '_' or '-'.")
    return source


def limits_for(
    defaults: UserLimits,
    tiers: Sequence[QuotaTier],
    role_ids: Iterable[int] = (),
    premium: Sequence[PremiumTier] = (),
    sku_ids: Iterable[int] = (),
) -> UserLimits:
    """The most generous of the defaults, every tier whose role the member holds and every
    premium tier whose subscription SKU they hold."""
    roles, skus = set(role_ids), set(sku_ids)
    held = [t for t in tiers if t.role_id in roles] + [t for t in premium if t.sku_id in skus]
    limits = defaults
    for tier in held:
        limits = UserLimits(
            max(limits.daily_gens, tier.daily_gens),
            max(limits.storage_bytes, int(tier.storage_mb * MB)),
        )
    return limits


def roll_day(doc: UserLedger, now: datetime) -> None:
    """Daily counts restart at midnight UTC, and never go back to an earlier day."""
    today = day_of(now)
    if today > doc.day:
        doc.day, doc.count, doc.bonus = today, 0, 0


def droppable(h: Hold, now: datetime) -> bool:
    """Whether any process may drop the hold: void, or ``PURGE_MARGIN`` past its expiry."""
    return h.void or h.expires + PURGE_MARGIN <= now


def counts(h: Hold, now: datetime) -> bool:
    """Whether a hold still counts against its member's limits: until it may be dropped, by
    the clock of whoever is looking (so also a while after its owner can no longer commit)."""
    return not droppable(h, now)


def committable(h: Hold, now: datetime, skew: timedelta) -> bool:
    """Whether its owner may still commit (or renew) it: before expiry with ``skew`` to spare."""
    return not h.void and h.expires > now + skew


def expired_holds(doc: UserLedger, now: datetime) -> list[str]:
    """Holds another process may drop: void ones, and live ones past expiry plus the margin."""
    return [rid for rid, h in doc.holds.items() if droppable(h, now)]


def user_bytes(doc: UserLedger, now: datetime | None = None, *, skip: str | None = None) -> int:
    """Committed bytes (the recent images and the catalogue segments), plus the bytes of
    live holds when ``now`` is given."""
    total = sum(e.size for e in doc.objects.values()) + sum(s.bytes for s in doc.segments.values())
    if now is not None:
        total += sum(h.bytes for rid, h in doc.holds.items() if counts(h, now) and rid != skip)
    return total


def credits_left(doc: UserLedger, now: datetime) -> int:
    """Credits not yet promised to a hold that counts, nor claimed by a refund from a hold not yet dropped."""
    claimed = claimed_holds(doc)
    promised = sum(1 for rid, h in doc.holds.items() if h.credit and (counts(h, now) or rid in claimed))
    return max(0, doc.credits - promised)


def _daily_used(doc: UserLedger, now: datetime, *, skip: str | None = None) -> int:
    pending = sum(1 for rid, h in doc.holds.items() if counts(h, now) and h.day == doc.day and rid != skip)
    return doc.count + pending


def check_room(
    *,
    blocked: bool,
    user_id: str,
    daily_used: int | None,
    daily_limit: int,
    resets_at: datetime,
    user_used: int,
    user_limit: int,
    size: int,
) -> None:
    """Refuse one more generation of ``size`` bytes (``daily_used=None``: an existing hold grows)."""
    if blocked:
        raise UserBlocked(user_id)
    if daily_used is not None and daily_used >= daily_limit:
        raise DailyLimitExceeded(used=daily_used, limit=daily_limit, resets_at=resets_at)
    if user_used + size > user_limit:
        raise UserStorageFull(used=user_used, limit=user_limit)


def hold(
    doc: UserLedger,
    *,
    rid: str,
    size: int,
    stem: str,
    limits: UserLimits,
    now: datetime,
    ttl: int,
    skew: timedelta,
    renew: bool = False,
) -> Hold:
    """Hold one generation and ``size`` bytes for a new ``rid``, or (``renew``) grow and renew it.

    A renewed hold keeps its day (it does not count again) and grows to ``max(old, size)``.
    Only a live hold can be renewed: one that expired may already have been dropped by
    another process, together with whatever was uploaded for it.
    """
    roll_day(doc, now)
    existing = doc.holds.get(rid)
    if renew and (existing is None or not committable(existing, now, skew)):
        raise ReservationInvalid("The generation took too long and its quota hold expired; nothing was charged.")
    if not renew and existing is not None:
        raise ReservationInvalid("This reservation id is already in use.")
    size = max(size, existing.bytes) if existing else size
    daily_used = None if existing else _daily_used(doc, now)
    daily_limit = limits.daily_gens + doc.bonus
    # Past the daily allowance, a credit pays (spent at commit; a failure spends nothing).
    credit = existing.credit if existing else daily_used is not None and daily_used >= daily_limit
    if credit and not existing and credits_left(doc, now) > 0:
        daily_used = None
    check_room(
        blocked=doc.blocked,
        user_id=doc.user_id,
        daily_used=daily_used,
        daily_limit=daily_limit,
        resets_at=next_midnight(doc.day),
        user_used=user_bytes(doc, now, skip=rid),
        user_limit=limits.storage_bytes,
        size=size,
    )
    entry = Hold(
        bytes=size,
        expires=now + timedelta(seconds=ttl),
        day=existing.day if existing else doc.day,
        stem=stem,
        credit=credit,
    )
    doc.holds[rid] = entry
    return entry


def commit(doc: UserLedger, *, rid: str, key: str, size: int, now: datetime, skew: timedelta) -> None:
    """Turn the live hold ``rid`` into the stored image ``key``: the generation's commit point.

    Committing again (a retried write whose first answer was lost) changes nothing. Without
    a live hold nothing is charged: :class:`~abby_core.errors.ReservationInvalid`.
    """
    if key in doc.objects:
        return
    held = doc.holds.get(rid)
    if held is None or not committable(held, now, skew):
        raise ReservationInvalid(
            "The generation took too long to save and its quota hold expired; nothing was charged."
        )
    roll_day(doc, now)
    del doc.holds[rid]
    if held.day == doc.day:
        doc.count += 1
    if held.credit:
        # Refunds never take credits promised to a live hold, so one is there to spend (a
        # refund's claim on it stays listed: see uncommit).
        doc.credits = max(0, doc.credits - 1)
        doc.credits_spent += 1
    doc.objects[key] = Entry(size=size, created=now)


def settle(doc: UserLedger, *, rid: str, key: str | None) -> Settled:
    """Decide a generation whose outcome is unknown: committed stays; anything else is voided."""
    if key is not None and key in doc.objects:
        return Settled.COMMITTED
    held = doc.holds.get(rid)
    if held is not None and not held.void:
        doc.holds[rid] = held.model_copy(update={"void": True})
    return Settled.VOIDED


def uncommit(doc: UserLedger, *, key: str, day: date, rid: str, credit: bool = False) -> bool:
    """Take back a committed image (hold ``rid``) whose success was never reported (it was
    interrupted). Its credit comes back, or goes to the refund that claimed it."""
    if doc.objects.pop(key, None) is None:
        return False
    if doc.day == day and doc.count > 0:
        doc.count -= 1
    if credit and doc.credits_spent > 0:
        doc.credits_spent -= 1
        claim = next((e for e in doc.credit_log.values() if rid in e.claims and rid not in doc.holds), None)
        if claim is None:
            doc.credits += 1
        else:
            claim.claims.remove(rid)
            claim.removed += 1
    return True


def status(doc: UserLedger, *, limits: UserLimits, now: datetime, global_bytes: int, global_limit: int) -> QuotaStatus:
    """Where a member stands: ``daily_used`` counts generations in flight too."""
    roll_day(doc, now)
    live = [h for h in doc.holds.values() if counts(h, now)]
    return QuotaStatus(
        user_id=doc.user_id,
        daily_used=_daily_used(doc, now),
        daily_limit=limits.daily_gens + doc.bonus,
        resets_at=next_midnight(doc.day),
        user_bytes=user_bytes(doc, now),
        user_limit_bytes=limits.storage_bytes,
        global_bytes=global_bytes,
        global_limit_bytes=global_limit,
        in_flight=len(live),
        blocked=doc.blocked,
        credits=credits_left(doc, now),
    )


def precheck(state: QuotaStatus, size: int) -> None:
    """Refuse early what a reservation of ``size`` bytes would refuse (a hint; the hold decides)."""
    check_room(
        blocked=state.blocked,
        user_id=state.user_id,
        daily_used=None if state.daily_used >= state.daily_limit and state.credits > 0 else state.daily_used,
        daily_limit=state.daily_limit,
        resets_at=state.resets_at,
        user_used=state.user_bytes,
        user_limit=state.user_limit_bytes,
        size=size,
    )
    if state.global_bytes + size > state.global_limit_bytes:
        raise GlobalStorageFull(used=state.global_bytes, limit=state.global_limit_bytes)


# -- credits promised to holds -------------------------------------------------------------
# A hold past the daily allowance is paid by a credit (``hold``), spent at ``commit``. The
# credit book itself (sources, refunds, the member record's copy) is in ``credit_rules``. A
# refund that meets a credit promised to a generation in flight claims it, and the claim is
# settled when that generation ends (``drop_hold``: failed, the credit goes to the refund;
# ``commit``: it was spent; ``uncommit``: taken back, it goes to the refund after all).
def claimed_holds(doc: UserLedger) -> dict[str, CreditSource]:
    """Holds still in the document whose credit a refund claimed, with that refund's source."""
    return {rid: entry for entry in doc.credit_log.values() for rid in entry.claims if rid in doc.holds}


def drop_hold(doc: UserLedger, rid: str) -> None:
    """Drop a hold that can no longer commit (void, or expired past the margin); a refund's
    claim on its credit is settled: the credit goes to the refund."""
    entry = claimed_holds(doc).get(rid)
    if doc.holds.pop(rid, None) is None or entry is None:
        return
    entry.claims.remove(rid)
    entry.removed += 1
    doc.credits = max(0, doc.credits - 1)
