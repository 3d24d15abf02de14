"""The catalogue rules: when a member's older images move out of their document, and how a
catalogue segment is counted there. Pure functions, pinned by table tests like the quota rules.

A member's document lists their committed images until it has more than ``FOLD_AT``; then
those committed ``RECENT`` ago or earlier move into catalogue segments, one document a month
(``ledger/catalogue/{id}/{YYYYmm}.json``), and the member's document keeps each segment's
totals. So the document a generation rewrites holds the recent images and a line a month,
whatever the member's history.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from abby_core.storage.documents import CatalogueSegment, Entry, Segment, UserLedger
from abby_core.storage.keys import month_of_key

__all__ = ["FOLD_AT", "RECENT", "apply_segment", "fold_plan", "segment_snapshot"]

FOLD_AT = 200
RECENT = timedelta(days=1)


def fold_plan(doc: UserLedger, now: datetime) -> dict[str, dict[str, Entry]]:
    """The images to move from the member's document into catalogue segments, by month:
    none while it lists at most ``FOLD_AT``; past that, every one committed ``RECENT`` ago or
    earlier (a commit, a take-back or a settle only ever looks for recent images)."""
    if len(doc.objects) <= FOLD_AT:
        return {}
    plan: dict[str, dict[str, Entry]] = {}
    for key, entry in doc.objects.items():
        if entry.created <= now - RECENT:
            plan.setdefault(month_of_key(key), {})[key] = entry
    return plan


def segment_snapshot(seg: CatalogueSegment) -> Segment:
    return Segment(version=seg.version, bytes=sum(e.size for e in seg.entries.values()), count=len(seg.entries))


def apply_segment(doc: UserLedger, seg: CatalogueSegment) -> None:
    """Record catalogue segment ``seg`` in the member's document: its totals (an older version
    never replaces a newer one), and the images it holds leave the document's own list, in the
    same write, so each image is counted once: by the list until then, by the segment after.

    Dropping them is right whichever version is recorded: a newer segment still holds them,
    unless they were deleted since, and a deletion takes them off the list too.
    """
    current = doc.segments.get(seg.month)
    if current is None or current.version < seg.version:
        doc.segments[seg.month] = segment_snapshot(seg)
    for key in [k for k in doc.objects if k in seg.entries]:
        del doc.objects[key]
