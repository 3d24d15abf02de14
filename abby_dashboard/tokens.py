"""Sign-in with ``DASHBOARD_TOKEN``: a constant-time compare, and a per-address backoff after failures.

Each failure from an address makes it wait before the next try: 1 s, 2 s, 4 s... up to
:data:`MAX_WAIT_SECONDS`. A success clears the address. Behind a reverse proxy the address is
the one uvicorn reports (it trusts ``X-Forwarded-For`` from 127.0.0.1 only).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_WAIT_SECONDS", "TokenGuard", "tokens_match"]

MAX_WAIT_SECONDS = 60.0
_REMEMBERED = 10_000


def tokens_match(sent: str, expected: str) -> bool:
    """Whether ``sent`` is the token, in time that does not depend on where they differ."""
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8"))


@dataclass
class _Failures:
    count: int
    until: float


class TokenGuard:
    """Remembers failed token sign-ins per address (the last :data:`_REMEMBERED` addresses)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def wait_seconds(self, address: str) -> float:
        """How long ``address`` must still wait before it may try again (0: it may)."""
        found = self._failures.get(address)
        return 0.0 if found is None else max(0.0, found.until - self.clock())

    def failed(self, address: str) -> float:
        """Count a failure; returns the wait it earned."""
        found = self._failures.pop(address, None)
        count = 1 if found is None else found.count + 1
        wait = min(MAX_WAIT_SECONDS, 2.0 ** (count - 1))
        self._failures[address] = _Failures(count, self.clock() + wait)
        while len(self._failures) > _REMEMBERED:
            self._failures.popitem(last=False)
        return wait

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
