"""``abby stats``: images per day, refusals, top members, latency and credits, and where storage is heading."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from abby_cli.output import Output, escape, human_bytes
from abby_cli.runtime import JsonFlag, open_storage, run_command
from abby_core.analytics import Percentiles, UsageSummary
from abby_core.analytics.outlook import outlook
from abby_core.config import Settings
from abby_core.pipeline import event_log
from abby_core.storage import GlobalStats

__all__ = ["register"]

BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of block characters, ``width`` cells for ``largest``."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / largest * width * 8))
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def projection(summary: UsageSummary, usage: GlobalStats, today: date) -> dict[str, Any]:
    """When the global limit is reached if images keep arriving at the rate since the window's first active day."""
    return outlook(summary, usage, today).as_dict()


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _latency(p: Percentiles | None) -> tuple[str, str, str]:
    return ("–", "–", "–") if p is None else (_seconds(p.p50), _seconds(p.p90), _seconds(p.p99))


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def register(app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        ctx: typer.Context,
        days: Annotated[
            int, typer.Option("--days", min=1, max=3650, help="How many days to show, today included.")
        ] = 30,
        top: Annotated[int, typer.Option("--top", min=1, max=1000, help="How many members to list.")] = 10,
        json_mode: JsonFlag = False,
    ) -> None:
        """Usage over the last --days days: images, refusals, members, latency, credits, storage outlook."""

        async def body(settings: Settings, out: Output) -> None:
            async with open_storage(settings) as storage:
                events = event_log(storage)
                with out.progress("Reading usage events…"):
                    summary = await asyncio.to_thread(events.summary, days, top=top)
                    usage = await storage.stats(top=1)
            outlook = projection(summary, usage, summary.end)
            payload = summary.model_dump(mode="json")
            payload["storage"] = outlook
            out.success(payload, lambda con: _render(con, summary, outlook))

        run_command(ctx, json_mode, body)


def _render(con: Console, summary: UsageSummary, outlook: dict[str, Any]) -> None:
    con.print(
        f"Usage {summary.start} to {summary.end} ({summary.days} days): {summary.images} image(s), "
        f"{summary.refusals_total} refusal(s), {summary.failures} failure(s), {human_bytes(summary.bytes)} stored"
    )
    largest = max((d.images for d in summary.per_day), default=0)
    width = max(10, min(BAR_WIDTH, con.width - 60))  # the other columns take about 60 cells
    days = Table("Day", "Images", "Refusals", "Failures", "Stored", title="Images per day")
    days.add_column("", no_wrap=True, min_width=width)
    for d in summary.per_day:
        days.add_row(d.day.isoformat(), str(d.images), str(d.refusals), str(d.failures), human_bytes(d.bytes),
                     f"[cyan]{bar(d.images, largest, width)}[/cyan]")
    con.print(days)
    if summary.refusals:
        refusals = Table("Reason", "Count", "", title="Refusals by reason")
        most = max(summary.refusals.values())
        for reason, count in summary.refusals.items():
            refusals.add_row(escape(reason), str(count), f"[yellow]{bar(count, most, 20)}[/yellow]")
        con.print(refusals)
    if summary.top_members:
        members = Table("Member", "Images", "Refusals", "Stored", title="Top members")
        for m in summary.top_members:
            members.add_row(escape(m.user_id), str(m.images), str(m.refusals), human_bytes(m.bytes))
        con.print(members)
    if summary.providers:
        providers = Table("Provider", "OK", "Failed", "Failure rate", "p50", "p90", "p99", title="Providers")
        for name, p in summary.providers.items():
            providers.add_row(escape(name), str(p.ok), str(p.failures), _rate(p.failure_rate), *_latency(p.latency))
        providers.add_row("[bold]all[/bold]", str(summary.images), str(summary.failures),
                          _rate(summary.failure_rate), *_latency(summary.latency))
        con.print(providers)
    con.print(f"Credits spent: {summary.credits:g}")
    con.print(f"Credits spent by members (images past their daily limit): {summary.credits_spent}")
    used, limit = outlook["global_bytes"], outlook["global_limit_bytes"]
    share = used / limit * 100 if limit else 0
    line = f"Storage: {human_bytes(used)} of {human_bytes(limit)} ({share:.1f}%)"
    if outlook["not_full_within_days"] is not None:
        years = outlook["not_full_within_days"] // 365
        line += f" · {human_bytes(round(summary.bytes_per_day))}/day → not full within {years} years at this rate"
    elif outlook["days_until_full"] is None:
        line += " · nothing stored in this window: no projection"
    else:
        line += (
            f" · {human_bytes(round(summary.bytes_per_day))}/day → full in about {outlook['days_until_full']:g} days "
            f"({outlook['full_on']}) at this rate, before cleanup frees old images"
        )
    con.print(line)
