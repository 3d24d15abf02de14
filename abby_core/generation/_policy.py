"""When and how long to wait before trying a provider call again.

The numbers live here, apart from the calls (like openai-python's ``_constants``):
which statuses are worth retrying, exponential backoff with jitter, and
``Retry-After`` honoured up to a cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

# 408 request timeout, 429 rate limited, and every 5xx (the request was not served).
RETRY_STATUSES = frozenset({408, 429})
INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
RETRY_AFTER_CAP = 60.0  # Stability's rate-limit penalty box lasts 60 s
JITTER = 0.25  # each backoff is shortened by up to this fraction


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], datetime] | None = None
) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), or ``None``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` extra attempts after the first; delays from :meth:`delay`."""

    max_retries: int = 3
    initial_delay: float = INITIAL_DELAY
    max_delay: float = MAX_DELAY
    retry_after_cap: float = RETRY_AFTER_CAP
    jitter: float = JITTER
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def should_retry(self, status: int) -> bool:
        return status in RETRY_STATUSES or status >= 500

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        A server's ``Retry-After`` wins, capped at :attr:`retry_after_cap`; otherwise
        ``initial_delay * 2**retry`` up to :attr:`max_delay`, minus random jitter.
        """
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        base = min(self.initial_delay * 2**retry, self.max_delay)
        return float(base * (1 - self.jitter * self.random()))
