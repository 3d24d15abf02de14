"""The credit book, as pure rules: credit sources added once, refunds, and the member record's copy.

A member's credits pay for generations past the daily allowance (:func:`rules.hold` promises
one to a hold, :func:`rules.commit` spends it). This module owns what adds and takes back
credits. A source's record (``CreditSource``) is correct whichever order its add, its refund
and the generations around them arrive in: a refund that comes first leaves a tombstone; one
that meets a credit promised to a generation in flight claims it (settled by the rules when
that generation ends: see :func:`rules.drop_hold`). The member record keeps a copy of the book
(:func:`mirror_credits`), which a rebuilt document starts from (:func:`credit_log_of`).

Like :mod:`abby_core.storage.rules`, the functions change a document in place and run inside
:meth:`Ledger.update`, so they may run more than once and touch nothing but their arguments.
"""

from __future__ import annotations

from datetime import datetime

from abby_core.storage.documents import CreditSource, MemberRecord, UserLedger
from abby_core.storage.rules import claimed_holds, counts, credits_left

__all__ = ["add_credits", "credit_log_of", "mirror_credits", "refund_credits", "refund_split", "refund_taken"]


def add_credits(doc: UserLedger, *, source: str, credits: int) -> bool:
    """Apply a credit source (a purchase, a grant) once; ``False`` if it was applied before or
    refunded first (a tombstone: the refunded source never adds anything)."""
    if source in doc.credit_log:
        return False
    doc.credit_log[source] = CreditSource(credits=credits)
    doc.credits += credits
    return True


def refund_split(*, given: int, credits: int, claimed: int, free: int) -> tuple[int, int]:
    """What the refund of a source that gave ``given`` credits takes back: ``(now, later)``.

    ``credits`` is the member's balance, ``claimed`` the part of it earlier refunds claimed
    from generations in flight, ``free`` the part no generation in flight was promised. The
    refund takes what the source gave, never more than the balance nobody claimed (credits
    already spent stay spent): ``now`` from the free credits, ``later`` from credits promised
    to generations in flight, each taken if its generation fails.
    """
    wanted = max(0, min(given, credits - claimed))
    now = max(0, min(wanted, free))
    return now, wanted - now


def refund_taken(doc: UserLedger, source: str) -> int:
    """What the refund of ``source`` took back: removed, plus credits it claimed from
    generations still in flight (0 when the source was not refunded)."""
    entry = doc.credit_log.get(source)
    if entry is None or not entry.refunded:
        return 0
    return entry.removed + sum(1 for rid in entry.claims if rid in doc.holds)


def refund_credits(doc: UserLedger, *, source: str, credits: int, now: datetime) -> int:
    """Refund ``source`` once (see :func:`refund_split`); returns :func:`refund_taken`.

    ``credits``: what the member record says the source gave. A source the document has not
    got yet (an add cut short between its two writes) is applied first and then refunded;
    one nobody knows leaves a tombstone that a later add respects.
    """
    entry = doc.credit_log.get(source)
    if entry is None:
        entry = doc.credit_log[source] = CreditSource(credits=credits)
        doc.credits += credits
    if entry.refunded:
        return refund_taken(doc, source)
    claimed = claimed_holds(doc)
    taken, later = refund_split(
        given=entry.credits, credits=doc.credits, claimed=len(claimed), free=credits_left(doc, now)
    )
    promised = sorted(rid for rid, h in doc.holds.items() if h.credit and counts(h, now) and rid not in claimed)
    entry.refunded, entry.removed, entry.claims = True, taken, promised[:later]
    doc.credits -= taken
    return refund_taken(doc, source)


def mirror_credits(record: MemberRecord, doc: UserLedger) -> bool:
    """Copy the credit book of ``doc`` (a stored version of the member's document) into the
    member record, unless the record already mirrors a newer version; returns whether it changed.

    Each refund is recorded with what it took back, claims included (a rebuilt document has no
    generation in flight: a claim is then settled as a failure). Sources and tombstones the
    document has not got yet (an add or a refund between its two writes) stay as they are.
    """
    if record.credits_version > doc.version:
        return False
    before = (record.credit_sources.copy(), record.credit_refunds.copy(), record.credits_spent)
    for source, entry in doc.credit_log.items():
        if entry.credits:
            record.credit_sources[source] = entry.credits
        if entry.refunded:
            record.credit_refunds[source] = refund_taken(doc, source)
    record.credits_spent = doc.credits_spent
    changed = before != (record.credit_sources, record.credit_refunds, record.credits_spent)
    record.credits_version = doc.version
    return changed


def credit_log_of(record: MemberRecord) -> dict[str, CreditSource]:
    """The credit log of a document rebuilt from the member record (no generation is in flight)."""
    return {
        source: CreditSource(
            credits=record.credit_sources.get(source, 0),
            refunded=source in record.credit_refunds,
            removed=record.credit_refunds.get(source, 0),
        )
        for source in sorted(record.credit_sources.keys() | record.credit_refunds.keys())
    }
