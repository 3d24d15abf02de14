"""Whether another process still renews something, judged without comparing clocks.

A process never decides that another is gone by comparing its own clock with a time the
other wrote (or with the storage server's modification time): their clocks disagree. It
judges by what it saw change, on its own monotonic clock. Each thing it watches (a queue
ticket, a lease of the global budget) has a version that changes whenever its owner
renews it; the observer remembers since when it has seen the current version, and takes
the owner for gone once that version is older than the owner's renewal period allows.
This is how Kubernetes' leader election judges a lease it did not write.

::

    seen = observe(seen, version, monotonic())   # at every fresh look
    if abandoned(seen, monotonic(), lifetime):   # unchanged for longer than ``lifetime``
        ...                                      # its owner stopped renewing it

A version first seen now counts for a whole ``lifetime`` from now, so a process that just
started waits that long before it takes anything for abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sighting", "abandoned", "observe"]


@dataclass(frozen=True)
class Sighting:
    """A version, and since when (the observer's monotonic clock) it has been seen."""

    version: str
    since: float


def observe(previous: Sighting | None, version: str, now: float) -> Sighting:
    """What an observer knows after a fresh look at ``now``: an unchanged version keeps its
    first sighting; a new one starts a new sighting."""
    if previous is not None and previous.version == version:
        return previous
    return Sighting(version, now)


def abandoned(sighting: Sighting, now: float, lifetime: float) -> bool:
    """Whether the version has been seen unchanged for longer than ``lifetime`` (same clock)."""
    return now - sighting.since > lifetime
