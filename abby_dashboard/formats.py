"""Numbers as people read them; registered as Jinja filters (``{{ n | bytes }}``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from markupsafe import Markup

__all__ = ["FILTERS", "human_bytes", "percent", "seconds"]


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns


def percent(part: float | None, whole: float | None = None) -> str:
    """``part`` as a percentage (of ``whole`` when given, else ``part`` is a fraction)."""
    if part is None or (whole is not None and not whole):
        return "–"
    share = part / whole if whole is not None else part
    return f"{share * 100:.1f}%"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _unbroken(format_: Callable[..., str]) -> Callable[..., Markup]:
    """``format_`` as a filter whose amount is one word on the page: "977.0 KB" never wraps before "KB"."""

    def amount(*args: Any) -> Markup:
        return Markup('<span class="amount">{}</span>').format(format_(*args))

    return amount


FILTERS: dict[str, Callable[..., Any]] = {
    "bytes": _unbroken(human_bytes), "percent": percent, "seconds": _unbroken(seconds), "when": when,
}
