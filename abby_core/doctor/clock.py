"""The clock check: this machine's UTC against the storage server's ``Date`` header."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from abby_core.doctor.report import Check, fail, ok, skip
from abby_core.storage.rules import CLOCK_BOUND

__all__ = ["MAX_CLOCK_SKEW", "clock_verdict", "server_date"]

#: Half the bound the shared ledger is safe for: two hosts that pass are within ``CLOCK_BOUND``.
MAX_CLOCK_SKEW = CLOCK_BOUND / 2


def server_date(response: httpx.Response) -> datetime | None:
    """The response's ``Date`` header in UTC, or None when it has none or one that does not parse."""
    header = response.headers.get("date")
    if header:
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(header).astimezone(UTC)
    return None


def clock_verdict(server: datetime | None, now: datetime) -> Check:
    """Skipped without a server date; failed beyond :data:`MAX_CLOCK_SKEW` either way."""
    if server is None:
        return skip("clock", "the storage server sent no Date header to compare with")
    skew = now - server
    seconds = abs(skew.total_seconds())
    if abs(skew) > MAX_CLOCK_SKEW:
        direction = "ahead of" if skew.total_seconds() > 0 else "behind"
        return fail(
            "clock",
            f"this machine is {seconds:.0f} s {direction} the storage server",
            "Synchronise the clock (NTP): bot processes sharing the storage must agree within 2 minutes, "
            "and signed requests and presigned links fail beyond 15 minutes.",
        )
    return ok("clock", f"within {max(seconds, 1):.0f} s of the storage server")
