"""The overview's figures: what ``abby stats`` shows, as plain data for the tables and the charts.

The page embeds :func:`chart_data` as JSON in a ``<script type="application/json">`` element;
``static/dashboard.js`` draws it with Chart.js. The same numbers are in the page's tables, so
nothing needs JavaScript to be read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from abby_core.analytics import UsageSummary
from abby_core.analytics.outlook import Outlook, outlook  # the same projection as ``abby stats``
from abby_core.storage import GlobalStats

__all__ = ["WINDOWS", "Outlook", "chart_data", "outlook"]

WINDOWS = (7, 30, 90)


def chart_data(
    summary: UsageSummary, usage: GlobalStats, user_limit: int, view: Outlook,
    name: Callable[[str], str | None] = lambda user_id: None,
) -> dict[str, Any]:
    """Everything the overview's charts draw, JSON-ready; members are labelled ``name(id)`` or their id."""
    return {
        "days": {
            "labels": [d.day.isoformat() for d in summary.per_day],
            "images": [d.images for d in summary.per_day],
            "refusals": [d.refusals for d in summary.per_day],
            "failures": [d.failures for d in summary.per_day],
        },
        "refusals": {"labels": list(summary.refusals), "counts": list(summary.refusals.values())},
        "members": {
            "labels": [name(m.user_id) or m.user_id for m in summary.top_members],
            "images": [m.images for m in summary.top_members],
        },
        "providers": {
            "labels": list(summary.providers),
            "p50": [p.latency.p50 if p.latency else None for p in summary.providers.values()],
            "p90": [p.latency.p90 if p.latency else None for p in summary.providers.values()],
            "p99": [p.latency.p99 if p.latency else None for p in summary.providers.values()],
            "failure_rate": [p.failure_rate for p in summary.providers.values()],
        },
        "storage": {
            "used": view.used,
            "limit": view.limit,
            "users": [name(uid) or uid for uid, _ in usage.top_users],
            "user_bytes": [used for _, used in usage.top_users],
            "user_limit": user_limit,
        },
    }
