"""The sections of what Abby records about itself: usage analytics and Prometheus metrics."""

from __future__ import annotations

from abby_core.config._fields import Section, var
from abby_core.config._urls import ListenHost

__all__ = ["AnalyticsSettings", "MetricsSettings"]


class AnalyticsSettings(Section):
    """Usage events (``ANALYTICS_*``)."""

    store_prompts: bool = var(
        False, "ANALYTICS_STORE_PROMPTS", "true or false (prompts are not recorded by default)"
    )
    retention_days: int = var(
        90, "ANALYTICS_RETENTION_DAYS", "a whole number of days from 1 to 3650", ge=1, le=3650
    )


class MetricsSettings(Section):
    """The Prometheus ``/metrics`` endpoint (``METRICS_*``); off while ``port`` is None."""

    port: int | None = var(
        None, "METRICS_PORT", "a port number from 1 to 65535, or empty for no metrics endpoint", ge=1, le=65535
    )
    host: ListenHost = var(
        "127.0.0.1", "METRICS_HOST", "the address the metrics endpoint listens on: an IP address or host name"
    )

    @property
    def enabled(self) -> bool:
        return self.port is not None

    @property
    def url(self) -> str:
        """Where Prometheus scrapes, e.g. ``http://127.0.0.1:9108/metrics`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"
