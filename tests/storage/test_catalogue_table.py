"""The catalogue rules, pure: when older images leave a member's document, and how a segment
is counted there (``abby_core/storage/catalogue_rules.py``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from abby_core.storage import catalogue_rules, rules
from abby_core.storage.catalogue_rules import FOLD_AT, RECENT
from abby_core.storage.documents import CatalogueSegment, Entry, Segment, UserLedger

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _key(when: datetime, n: int) -> str:
    return f"images/users/42/{when:%Y%m%dT%H%M%SZ}-{n:08x}.png"


def _doc(entries: dict[str, Entry], **fields: object) -> UserLedger:
    return UserLedger(user_id="42", day=date(2026, 11, 25), objects=entries, **fields)  # type: ignore[arg-type]


def _listed(count: int, when: datetime) -> dict[str, Entry]:
    return {_key(when, n): Entry(size=10 + n, created=when) for n in range(count)}


@pytest.mark.parametrize(
    ("old", "recent", "folded"),
    [
        (FOLD_AT, 0, 0),  # at the threshold: nothing moves
        (0, FOLD_AT + 1, 0),  # over it, but every image is recent
        (FOLD_AT, 1, FOLD_AT),  # over it: every image old enough moves
        (1, FOLD_AT, 1),
    ],
)
def test_older_images_move_once_the_document_lists_more_than_the_threshold(old: int, recent: int, folded: int) -> None:
    entries = _listed(old, NOW - RECENT) | {
        _key(NOW, n + 10_000): Entry(size=1, created=NOW - RECENT + timedelta(seconds=1)) for n in range(recent)
    }
    plan = catalogue_rules.fold_plan(_doc(entries), NOW)
    assert sum(len(v) for v in plan.values()) == folded
    assert all(entries[k].created <= NOW - RECENT for month in plan.values() for k in month)


def test_a_fold_groups_the_images_by_the_month_of_their_key() -> None:
    october = _listed(FOLD_AT, datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC))
    november = _listed(3, datetime(2026, 11, 1, 0, 0, tzinfo=UTC))
    odd = {"images/users/42/uploaded-by-hand.png": Entry(size=5, created=NOW - RECENT)}
    plan = catalogue_rules.fold_plan(_doc(october | november | odd), NOW)
    assert {m: sorted(v) for m, v in plan.items()} == {
        "202610": sorted(october),
        "202611": sorted(november),
        "other": sorted(odd),
    }


def test_a_segment_counts_its_images() -> None:
    seg = CatalogueSegment(user_id="42", month="202610", version=7, entries=_listed(3, NOW))
    assert catalogue_rules.segment_snapshot(seg) == Segment(version=7, bytes=10 + 11 + 12, count=3)


@pytest.mark.parametrize(
    ("recorded", "applied", "kept"),
    [
        (None, 2, 2),
        (1, 2, 2),
        (3, 2, 3),  # an older segment never replaces a newer one
        (2, 2, 2),
    ],
)
def test_a_segment_is_recorded_forward_and_its_images_leave_the_list(
    recorded: int | None, applied: int, kept: int
) -> None:
    moved = _listed(2, NOW - RECENT)
    stays = {_key(NOW, 99): Entry(size=1000, created=NOW)}
    segments = {"202611": Segment(version=recorded, bytes=5, count=1)} if recorded is not None else {}
    doc = _doc(moved | stays, segments=segments)
    seg = CatalogueSegment(user_id="42", month="202611", version=applied, entries=dict(moved))
    catalogue_rules.apply_segment(doc, seg)
    assert doc.objects == stays  # whichever version is kept, the segment's images are not listed twice
    assert doc.segments["202611"].version == kept
    expected = 10 + 11 if recorded is None or recorded < applied else 5  # the recorded totals
    assert rules.user_bytes(doc) == 1000 + expected


def test_a_members_bytes_are_the_list_and_the_segments() -> None:
    doc = _doc(_listed(2, NOW), segments={"202609": Segment(version=1, bytes=300, count=2)})
    assert rules.user_bytes(doc) == 10 + 11 + 300
