"""Prometheus metrics: what the usage events add up to, live, plus a few gauges the bot keeps fresh.

One :class:`Metrics` per process holds its own ``CollectorRegistry`` (never the library's
global one, so tests and several services in one process do not collide)::

    metrics = Metrics()
    service = ImageService(storage, generator, metrics=metrics)   # record() → metrics.observe(event)
    metrics.track_queue(waiting=lambda: limiter.waiting, running=lambda: limiter.active)
    metrics.set_storage(await storage.stats(top=0))               # or set_storage(None): storage down
    prometheus_client.start_http_server(9108, registry=metrics.registry)

What each metric means, dashboards and alerts: docs/OPERATIONS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from abby_core.analytics import INTERRUPTED, OK, REFUSAL_CODES, UsageEvent
from abby_core.errors import AbbyError
from abby_core.storage import GlobalStats

__all__ = ["FAILURE_CODES", "LATENCY_BUCKETS", "Metrics"]

#: Provider latency buckets in seconds: a fast local GPU to a slow queue, up to 10 minutes.
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0,
                   300.0, 600.0)



def _codes(error: type[AbbyError]) -> set[str]:
    # Core's own tree only: an adapter's subclass (the CLI's) is never a generation's outcome.
    own = {error.code} if error.__module__ == AbbyError.__module__ else set()
    return own.union(*(_codes(sub) for sub in error.__subclasses__()))


#: Every outcome that counts as a failure (``abby_provider_errors_total``'s ``code``): the
#: core error tree's codes that are not refusals, and an interrupted generation.
FAILURE_CODES: frozenset[str] = frozenset(_codes(AbbyError) - REFUSAL_CODES | {INTERRUPTED})


class Metrics:
    """Every Abby metric, registered in :attr:`registry` (a new one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.generations = Counter(
            "abby_generations", "Generation requests by kind, provider and outcome ('ok' or an error code).",
            ["kind", "provider", "outcome"], registry=r,
        )
        self.refusals = Counter(
            "abby_refusals", "Requests refused by a rule (quota, blocklist, invalid input...), by code.",
            ["reason"], registry=r,
        )
        self.provider_errors = Counter(
            "abby_provider_errors", "Requests that failed (neither ok nor refused), by provider and error code.",
            ["provider", "code"], registry=r,
        )
        self.generation_seconds = Histogram(
            "abby_generation_seconds", "Time the image provider took per call, in seconds.",
            ["provider"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stored_bytes = Counter(
            "abby_stored_bytes", "Bytes of images stored (after compression).", registry=r,
        )
        self.queue_length = Gauge(
            "abby_queue_length", "Generations waiting for a free slot in this process.", registry=r,
        )
        self.running = Gauge(
            "abby_generations_running", "Generations holding a slot (running) in this process.", registry=r,
        )
        self.storage_used = Gauge(
            "abby_storage_used_bytes", "Storage used by every member, from the last storage read.", registry=r,
        )
        self.storage_limit = Gauge(
            "abby_storage_limit_bytes", "The global storage limit (MAX_GLOBAL_STORAGE_MB) in bytes.", registry=r,
        )
        self.storage_users = Gauge(
            "abby_storage_users", "Members with at least one stored image, from the last storage read.", registry=r,
        )
        self.storage_up = Gauge(
            "abby_storage_up", "1 if the last storage read worked, 0 if it failed.", registry=r,
        )

    def start(self, provider: str, kinds: Iterable[str]) -> None:
        """Create every known series of ``provider`` and ``kinds`` at 0, keeping counts already made.

        A counter series that first appears holding its first count hides that count from
        ``rate()`` and ``increase()`` (after each restart an alert on ``>= 5`` failures would
        need 6). Known: each kind with ``ok`` and every error code, every failure code of the
        provider, every refusal reason, and the latency histogram.
        """
        for kind in kinds:
            for outcome in (OK, *REFUSAL_CODES, *FAILURE_CODES):
                self.generations.labels(kind=kind, provider=provider, outcome=outcome)
        for reason in REFUSAL_CODES:
            self.refusals.labels(reason=reason)
        for code in FAILURE_CODES:
            self.provider_errors.labels(provider=provider, code=code)
        self.generation_seconds.labels(provider=provider)

    def observe(self, event: UsageEvent) -> None:
        """Count one outcome: every event in ``abby_generations_total``, then refusal or failure by code.

        Latency is observed only when a provider was called (``latency_seconds`` not None).
        """
        self.generations.labels(kind=event.kind, provider=event.provider, outcome=event.outcome).inc()
        if event.refused:
            self.refusals.labels(reason=event.outcome).inc()
        elif event.outcome != OK:
            self.provider_errors.labels(provider=event.provider, code=event.outcome).inc()
        if event.latency_seconds is not None:
            self.generation_seconds.labels(provider=event.provider).observe(event.latency_seconds)
        if event.bytes_stored:
            self.stored_bytes.inc(event.bytes_stored)

    def track_queue(self, *, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        """Read the queue gauges from these callbacks at each scrape (called from the HTTP server's thread)."""
        self.queue_length.set_function(waiting)
        self.running.set_function(running)

    def set_storage(self, stats: GlobalStats | None) -> None:
        """The storage gauges from a fresh read; ``None`` when storage could not be read.

        When storage is down only ``abby_storage_up`` changes (to 0): the other gauges keep
        the last values read, which are the best estimate there is.
        """
        if stats is None:
            self.storage_up.set(0)
            return
        self.storage_used.set(stats.global_bytes)
        self.storage_limit.set(stats.global_limit_bytes)
        self.storage_users.set(stats.users)
        self.storage_up.set(1)
