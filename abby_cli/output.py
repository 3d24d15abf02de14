"""Rendering: one JSON object on stdout with ``--json``, rich text otherwise.

With ``--json`` nothing but that object reaches stdout; progress and notes go to stderr.
Without it, results go to stdout and errors to stderr. Text from users and storage is
escaped before rich sees it, and long lines are never wrapped (paths and links stay
copyable).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from abby_cli.errors import CliError, describe_error
from abby_core.generation import Progress as GenerationProgress
from abby_core.generation import ProgressCallback
from abby_core.storage import QuotaStatus

__all__ = ["FAIL", "OK", "Output", "escape", "human_bytes", "mb", "quota_line"]

OK = "[green]✔[/green]"
FAIL = "[red]✘[/red]"
MB = 1_000_000


def human_bytes(n: int) -> str:
    """``412.3 KB``, ``1.5 MB``: decimal units, as the quota settings are in MB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop always returns


def mb(n: int, *, limit: bool = False) -> str:
    """Megabytes for the quota line: ``0.4`` used, ``500`` as a limit."""
    return f"{n / MB:g}" if limit else f"{n / MB:.1f}"


def quota_line(status: QuotaStatus) -> str:
    """``1/5 today · 0.4 of 500 MB · resets 00:00 UTC``."""
    line = (
        f"{status.daily_used}/{status.daily_limit} today · {mb(status.user_bytes)} of "
        f"{mb(status.user_limit_bytes, limit=True)} MB · resets {status.resets_at:%H:%M} UTC"
    )
    return line + (" · blocked" if status.blocked else "")


class Output:
    """Where a command's result goes; ``json_mode`` is the command's ``--json``."""

    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, soft_wrap=True, highlight=False)

    def success(self, payload: dict[str, Any], render: Callable[[Console], None]) -> None:
        """Print ``{"ok": true, **payload}`` (JSON) or call ``render`` with the stdout console."""
        if self.json_mode:
            self._json({"ok": True, **payload})
        else:
            render(self.out)

    def interrupted(self) -> None:
        """Say the command was stopped (Ctrl+C): one JSON object with ``--json``, as always."""
        if self.json_mode:
            self._json({"ok": False, "error": {"code": "interrupted", "message": "Interrupted."}})
        else:
            self.note("Interrupted.")

    def fail(self, exc: BaseException, *, payload: dict[str, Any] | None = None) -> NoReturn:
        """Report ``exc`` (JSON on stdout, or a red message on stderr) and exit with its code."""
        error = describe_error(exc)
        self.report(error, payload=payload)
        raise typer.Exit(error.exit_code)

    def report(self, error: CliError, *, payload: dict[str, Any] | None = None) -> None:
        """Print ``error``: ``{"ok": false, ..., "error": {...}}`` on stdout, or ``✘ code: message`` on stderr."""
        if self.json_mode:
            self._json({"ok": False, **(payload or {}), "error": error.as_dict()})
        else:
            self.err.print(f"{FAIL} [bold red]{escape(error.code)}[/bold red]: {escape(error.message)}")

    def note(self, text: str) -> None:
        """A side remark for humans (stderr; silent with ``--json``)."""
        if not self.json_mode:
            self.err.print(text)

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[ProgressCallback | None]:
        """A progress bar with elapsed time on stderr while a long operation runs.

        Yields a listener for a generation's :class:`~abby_core.generation.Progress` (queue
        position, steps), or ``None`` with ``--json`` or when stderr is not a terminal.
        """
        if self.json_mode or not self.err.is_terminal:
            yield None
            return
        columns = (
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        with Progress(*columns, console=self.err, transient=True) as bar:
            task = bar.add_task(escape(label), total=None)

            def update(p: GenerationProgress) -> None:
                if p.stage == "queued":
                    ahead = f" ({p.queue_position} ahead)" if p.queue_position else ""
                    bar.update(task, description=f"Waiting for the image server{ahead}…")
                elif p.stage == "finished":
                    # Made: the bar is full, whether or not this report repeats the step count.
                    total = p.steps or bar.tasks[0].total
                    bar.update(task, description="Saving…", completed=total or 0, total=total)
                elif p.step is not None and p.steps:
                    bar.update(task, description=escape(label), completed=p.step, total=p.steps)

            yield update

    @staticmethod
    def _json(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()
