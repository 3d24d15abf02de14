"""Live progress of a generation in the member's deferred reply.

A local GPU server reports its queue position, each sampling step and small previews.
:class:`ProgressMessage` turns those into edits of the reply: at most one edit every
``interval`` seconds per message (Discord rate-limits edits), never more than one in
flight, and none after :meth:`ProgressMessage.close` (so a late progress edit can never
replace the finished image).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable

import discord

from abby_core.generation import Progress
from abby_core.storage.keys import CONTENT_TYPES

__all__ = ["ProgressMessage", "describe_progress"]

log = logging.getLogger("abby.discord")
_BAR = 12


def describe_progress(progress: Progress) -> str:
    """One line for the member, e.g. ``🎨 Working on your image… step 12/30 ▰▰▰▰▱▱▱▱``."""
    if progress.stage == "queued":
        if progress.queue_position:
            ahead = "1 image" if progress.queue_position == 1 else f"{progress.queue_position} images"
            return f"⏳ Waiting for the image server — {ahead} ahead of yours."
        return "⏳ Waiting for the image server…"
    if progress.stage == "finished":
        return "✨ Almost done — saving your image…"
    if progress.step is not None and progress.steps:
        filled = round(_BAR * min(progress.step, progress.steps) / progress.steps)
        bar = "▰" * filled + "▱" * (_BAR - filled)
        return f"🎨 Working on your image… step {progress.step}/{progress.steps} {bar}"
    return "🎨 Working on your image…"


class ProgressMessage:
    """A progress listener that edits one interaction's reply, rate-limited.

    Each edit while the job runs carries the newest preview seen so far, even one that
    came with a report that was not shown; queued and finished edits carry none.
    """

    def __init__(
        self,
        interaction: discord.Interaction,
        *,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interaction = interaction
        self.interval = interval
        self.clock = clock
        self.edits = 0
        self._last: float | None = None
        self._shown: str | None = None
        self._preview: Progress | None = None  # the newest report that carried a preview
        self._shown_preview: Progress | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def __call__(self, progress: Progress) -> None:
        if self._closed:
            return
        if progress.preview:
            # Kept even when this report is not shown: servers send a step, then its preview,
            # so the report that gets the next edit is usually the step without a picture.
            self._preview = progress
        if self._task is not None and not self._task.done():
            return  # one edit at a time; the next report brings the news up to date
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return
        text = describe_progress(progress)
        preview = self._preview if progress.stage == "running" else None
        if text == self._shown and preview is self._shown_preview:
            return
        self._last, self._shown, self._shown_preview = now, text, preview
        # The edit runs beside the generation: a slow Discord never holds up the image server.
        self._task = asyncio.create_task(self._edit(text, preview))

    async def _edit(self, text: str, preview: Progress | None) -> None:
        attachments: list[discord.File] = []
        if preview is not None and preview.preview:
            ext = CONTENT_TYPES.get(preview.preview_type or "", "png")
            attachments.append(discord.File(io.BytesIO(preview.preview), filename=f"preview.{ext}", spoiler=True))
        try:
            await self.interaction.edit_original_response(content=text, attachments=attachments)
            self.edits += 1
        except discord.HTTPException:
            log.debug("A progress edit was refused; the generation goes on.", exc_info=True)

    async def close(self) -> None:
        """Stop editing and wait for an edit in flight, so the final answer always comes last."""
        self._closed = True
        if self._task is not None:
            try:
                await self._task
            except Exception:  # a progress edit is cosmetic: the answer still goes out
                log.warning("A progress edit failed unexpectedly.", exc_info=True)
