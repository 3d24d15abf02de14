"""Rendering details: the progress bar."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

import abby_cli.output as output
from abby_core.generation import Progress


def test_the_bar_stays_full_when_the_image_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server reports ``finished`` without steps: the bar must not go back to ``0/6``."""
    bars: list[Any] = []

    class Recorded(output.Progress):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, auto_refresh=False)
            bars.append(self)

    monkeypatch.setattr(output, "Progress", Recorded)
    out = output.Output(json_mode=False)
    out.err = Console(file=io.StringIO(), force_terminal=True)
    with out.progress("Generating…") as update:
        assert update is not None
        for step in range(1, 7):
            update(Progress("running", step=step, steps=6))
        update(Progress("finished"))
        task = bars[0].tasks[0]
        assert (task.description, task.completed, task.total) == ("Saving…", 6, 6)
