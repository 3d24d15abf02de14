"""ProgressMessage on its own: a fake clock and a stub interaction, no Discord and no image server."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
import pytest

from abby_core.generation import Progress
from abby_discord.progress import ProgressMessage, describe_progress
from tests.fixtures.clocks import Ticks

RUNNING_12 = Progress("running", step=12, steps=30)


class StubInteraction:
    """Records ``edit_original_response`` calls; ``hold()`` keeps the next edits in flight until ``release()``."""

    def __init__(self) -> None:
        self.edits: list[dict[str, Any]] = []
        self.started = 0
        self.fail_with: Exception | None = None
        self._gate = asyncio.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def edit_original_response(self, **kw: Any) -> None:
        self.started += 1
        await asyncio.wait_for(self._gate.wait(), 5)
        if self.fail_with is not None:
            raise self.fail_with
        files = [(f.filename, f.fp.read()) for f in kw.get("attachments", [])]
        self.edits.append({**kw, "files": files})

    @property
    def texts(self) -> list[str]:
        return [edit["content"] for edit in self.edits]


@pytest.fixture
def clock() -> Ticks:
    return Ticks(1000.0)


@pytest.fixture
def stub() -> StubInteraction:
    return StubInteraction()


@pytest.fixture
def progress(stub: StubInteraction, clock: Ticks) -> ProgressMessage:
    return ProgressMessage(stub, clock=clock)  # type: ignore[arg-type]  # duck-typed interaction


async def settle(message: ProgressMessage) -> None:
    """Let the edit task started by the last report run to its end (bounded)."""
    task = message._task
    if task is not None:
        await asyncio.wait_for(asyncio.shield(task), 5)


# -- the text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "text"),
    [
        (Progress("queued"), "⏳ Waiting for the image server…"),
        (Progress("queued", queue_position=0), "⏳ Waiting for the image server…"),
        (Progress("queued", queue_position=1), "⏳ Waiting for the image server — 1 image ahead of yours."),
        (Progress("queued", queue_position=3), "⏳ Waiting for the image server — 3 images ahead of yours."),
        (Progress("running"), "🎨 Working on your image…"),
        (Progress("running", step=3, steps=None), "🎨 Working on your image…"),
        (Progress("running", step=0, steps=30), "🎨 Working on your image… step 0/30 ▱▱▱▱▱▱▱▱▱▱▱▱"),
        (RUNNING_12, "🎨 Working on your image… step 12/30 ▰▰▰▰▰▱▱▱▱▱▱▱"),
        (Progress("running", step=30, steps=30), "🎨 Working on your image… step 30/30 ▰▰▰▰▰▰▰▰▰▰▰▰"),
        (Progress("running", step=31, steps=30), "🎨 Working on your image… step 31/30 ▰▰▰▰▰▰▰▰▰▰▰▰"),
        (Progress("finished"), "✨ Almost done — saving your image…"),
    ],
    ids=[
        "queued",
        "queued-first",
        "queued-1-ahead",
        "queued-3-ahead",
        "running",
        "running-no-total",
        "step-0",
        "step-12",
        "step-last",
        "step-over",
        "finished",
    ],
)
def test_describe_progress(report: Progress, text: str) -> None:
    assert describe_progress(report) == text


async def test_each_stage_is_shown_as_its_text(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    for report in (Progress("queued", queue_position=2), RUNNING_12, Progress("finished")):
        await progress(report)
        await settle(progress)
        clock.advance(2)
    assert stub.texts == [
        "⏳ Waiting for the image server — 2 images ahead of yours.",
        "🎨 Working on your image… step 12/30 ▰▰▰▰▰▱▱▱▱▱▱▱",
        "✨ Almost done — saving your image…",
    ]
    assert all(edit["files"] == [] for edit in stub.edits)
    assert progress.edits == 3


# -- rate limit and one edit at a time --------------------------------------------------------------


async def test_at_most_one_edit_per_interval(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    await progress(Progress("running", step=1, steps=30))
    await settle(progress)
    for step in range(2, 10):  # a burst within the interval: dropped
        clock.advance(0.2)
        await progress(Progress("running", step=step, steps=30))
        await settle(progress)
    assert stub.texts == ["🎨 Working on your image… step 1/30 ▱▱▱▱▱▱▱▱▱▱▱▱"]
    clock.advance(0.3)  # 1.9 s after the first edit: still too soon
    await progress(Progress("running", step=10, steps=30))
    await settle(progress)
    assert len(stub.edits) == 1
    clock.advance(0.1)  # 2.0 s: the latest news goes out
    await progress(Progress("running", step=11, steps=30))
    await settle(progress)
    assert [text.split("… ")[1][:10] for text in stub.texts] == ["step 1/30 ", "step 11/30"]


async def test_the_interval_is_configurable(stub: StubInteraction, clock: Ticks) -> None:
    message = ProgressMessage(stub, interval=5.0, clock=clock)  # type: ignore[arg-type]
    await message(Progress("queued"))
    await settle(message)
    clock.advance(4.9)
    await message(RUNNING_12)
    await settle(message)
    clock.advance(0.1)
    await message(Progress("finished"))
    await settle(message)
    assert stub.texts == ["⏳ Waiting for the image server…", "✨ Almost done — saving your image…"]


async def test_a_dropped_report_does_not_reset_the_interval(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    await progress(Progress("queued"))
    await settle(progress)
    clock.advance(1.5)
    await progress(RUNNING_12)  # dropped: too soon
    clock.advance(0.5)  # 2 s after the edit that was sent, 0.5 s after the dropped one
    await progress(RUNNING_12)
    await settle(progress)
    assert len(stub.edits) == 2


async def test_only_one_edit_is_in_flight(progress: ProgressMessage, stub: StubInteraction, clock: Ticks) -> None:
    stub.hold()  # Discord is slow to answer the first edit
    await progress(Progress("queued"))
    await asyncio.sleep(0)
    assert stub.started == 1
    for step in range(1, 6):  # long past the interval, but the first edit has not come back
        clock.advance(3)
        await progress(Progress("running", step=step, steps=30))
        await asyncio.sleep(0)
    assert stub.started == 1 and stub.edits == []
    stub.release()
    await settle(progress)
    clock.advance(3)
    await progress(Progress("running", step=6, steps=30))
    await settle(progress)
    assert stub.started == 2
    assert stub.texts == ["⏳ Waiting for the image server…", "🎨 Working on your image… step 6/30 ▰▰▱▱▱▱▱▱▱▱▱▱"]


async def test_the_same_text_is_not_sent_twice(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    await progress(RUNNING_12)
    await settle(progress)
    clock.advance(5)
    await progress(RUNNING_12)
    await settle(progress)
    assert len(stub.edits) == 1
    clock.advance(5)
    await progress(Progress("running", step=13, steps=30))
    await settle(progress)
    assert len(stub.edits) == 2


async def test_a_refused_edit_is_logged_and_the_next_one_still_goes(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks, caplog: pytest.LogCaptureFixture
) -> None:
    response = type("Response", (), {"status": 429, "reason": "Too Many Requests"})()
    stub.fail_with = discord.HTTPException(response, "rate limited")  # type: ignore[arg-type]
    with caplog.at_level("DEBUG", "abby.discord"):
        await progress(Progress("queued"))
        await settle(progress)  # the task swallowed the error: settle does not raise
    assert progress.edits == 0 and "progress edit was refused" in caplog.text
    stub.fail_with = None
    clock.advance(2)
    await progress(RUNNING_12)
    await settle(progress)
    assert progress.edits == 1 and len(stub.edits) == 1


# -- close ------------------------------------------------------------------------------------------


async def test_no_edit_after_close(progress: ProgressMessage, stub: StubInteraction, clock: Ticks) -> None:
    await progress(Progress("queued"))
    await settle(progress)
    await progress.close()
    for report in (RUNNING_12, Progress("finished"), Progress("running", preview=b"x", preview_type="image/png")):
        clock.advance(10)
        await progress(report)
        await asyncio.sleep(0)
    assert stub.started == 1 and len(stub.edits) == 1


async def test_close_waits_for_the_edit_in_flight(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    stub.hold()
    await progress(RUNNING_12)
    await asyncio.sleep(0)
    assert stub.started == 1
    closing = asyncio.create_task(progress.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close() returned while a progress edit could still land"
    stub.release()
    await asyncio.wait_for(closing, 5)
    assert stub.texts == ["🎨 Working on your image… step 12/30 ▰▰▰▰▰▱▱▱▱▱▱▱"]  # it landed before close returned
    clock.advance(10)
    await progress(Progress("finished"))
    await asyncio.sleep(0)
    assert stub.started == 1


async def test_close_without_any_edit_and_twice(progress: ProgressMessage, stub: StubInteraction) -> None:
    await progress.close()
    await progress.close()
    await progress(Progress("queued"))
    await asyncio.sleep(0)
    assert stub.started == 0


async def test_close_does_not_raise_when_the_edit_in_flight_fails(
    progress: ProgressMessage, stub: StubInteraction
) -> None:
    stub.hold()
    stub.fail_with = RuntimeError("connection reset")  # not an HTTPException: the task ends with it
    await progress(RUNNING_12)
    await asyncio.sleep(0)
    closing = asyncio.create_task(progress.close())
    stub.release()
    await asyncio.wait_for(closing, 5)  # the final answer must still be sent
    assert stub.edits == []


# -- previews -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preview_type", "filename"),
    [
        ("image/jpeg", "SPOILER_preview.jpg"),
        ("image/png", "SPOILER_preview.png"),
        ("image/webp", "SPOILER_preview.webp"),
        (None, "SPOILER_preview.png"),
        ("image/bmp", "SPOILER_preview.png"),
    ],
)
async def test_a_preview_is_attached_as_a_spoiler_file(
    progress: ProgressMessage, stub: StubInteraction, preview_type: str | None, filename: str
) -> None:
    preview = b"\xff\xd8\xff" + b"preview bytes"
    await progress(Progress("running", step=5, steps=30, preview=preview, preview_type=preview_type))
    await settle(progress)
    [edit] = stub.edits
    assert edit["content"] == "🎨 Working on your image… step 5/30 ▰▰▱▱▱▱▱▱▱▱▱▱"
    assert edit["files"] == [(filename, preview)]


async def test_a_new_preview_goes_out_even_with_the_same_text(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    await progress(Progress("running", step=5, steps=30, preview=b"first", preview_type="image/png"))
    await settle(progress)
    clock.advance(2)
    await progress(Progress("running", step=5, steps=30, preview=b"second", preview_type="image/png"))
    await settle(progress)
    clock.advance(2)
    await progress(Progress("running", step=5, steps=30))  # same text, same picture: nothing to send
    await settle(progress)
    assert [edit["files"] for edit in stub.edits] == [
        [("SPOILER_preview.png", b"first")],
        [("SPOILER_preview.png", b"second")],
    ]


async def test_the_newest_preview_rides_on_the_next_edit(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    # ComfyUI sends each step, then that step's preview: the edit goes out on the step report.
    for step in range(1, 5):
        await progress(Progress("running", step=step, steps=30))
        await settle(progress)
        await progress(Progress("running", step=step, steps=30, preview=f"p{step}".encode(), preview_type="image/jpeg"))
        await settle(progress)
        clock.advance(0.7)
    await progress(Progress("running", step=5, steps=30))
    await settle(progress)
    assert [(edit["content"].split()[-2], edit["files"]) for edit in stub.edits] == [
        ("1/30", []),  # no picture yet
        ("4/30", [("SPOILER_preview.jpg", b"p3")]),  # 2.1 s later: the newest picture, from step 3
    ]
    clock.advance(2)
    await progress(Progress("running", step=6, steps=30))  # no new picture: the last one stays up
    await settle(progress)
    assert stub.edits[-1]["files"] == [("SPOILER_preview.jpg", b"p4")]


async def test_queued_and_finished_carry_no_preview(
    progress: ProgressMessage, stub: StubInteraction, clock: Ticks
) -> None:
    await progress(Progress("running", step=5, steps=30, preview=b"picture", preview_type="image/png"))
    await settle(progress)
    clock.advance(2)
    await progress(Progress("finished"))
    await settle(progress)
    clock.advance(2)
    await progress(Progress("queued", queue_position=1))
    await settle(progress)
    assert [edit["files"] for edit in stub.edits] == [[("SPOILER_preview.png", b"picture")], [], []]
    assert all("attachments" in edit for edit in stub.edits), "an empty list takes the old preview off"
