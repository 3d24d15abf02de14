"""Whether another process still renews something, judged by what this one saw change."""

from __future__ import annotations

import pytest

from abby_core.storage.liveness import Sighting, abandoned, observe


@pytest.mark.parametrize(
    ("previous", "version", "now", "dead"),
    [
        (None, "v1", 100.0, False),  # never seen: counts for a lease from now
        (Sighting("v1", 0.0), "v1", 60.0, False),  # unchanged for exactly the lease
        (Sighting("v1", 0.0), "v1", 60.5, True),  # unchanged for longer
        (Sighting("v1", 0.0), "v2", 500.0, False),  # renewed since: a new sighting
    ],
)
def test_liveness_is_what_the_observer_saw_change(
    previous: Sighting | None, version: str, now: float, dead: bool
) -> None:
    sighting = observe(previous, version, now)
    assert sighting.version == version
    assert abandoned(sighting, now, 60.0) is dead
