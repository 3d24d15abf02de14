"""The one rule both GPU providers follow for what reaches a progress listener."""

from __future__ import annotations

import pytest

from abby_core.generation.base import Progress, ProgressReports, reporting_progress

Q0, Q1 = Progress("queued", queue_position=0), Progress("queued", queue_position=1)
RUN, STEP1, STEP2 = Progress("running"), Progress("running", step=1, steps=5), Progress("running", step=2, steps=5)
P1 = Progress("running", step=1, steps=5, preview=b"a", preview_type="image/jpeg")
P1_AGAIN = Progress("running", step=1, steps=5, preview=b"a", preview_type="image/jpeg")
P1_OTHER = Progress("running", step=1, steps=5, preview=b"b", preview_type="image/jpeg")
P2_SAME_PICTURE = Progress("running", step=2, steps=5, preview=b"a", preview_type="image/jpeg")
DONE = Progress("finished")


@pytest.mark.parametrize(
    ("sent", "reported"),
    [
        ([Q1, Q1, Q0, RUN, RUN, DONE], [Q1, Q0, RUN, DONE]),  # a repeat says nothing new
        ([STEP1, P1, P1_AGAIN, STEP2], [STEP1, P1, STEP2]),  # the same preview at the same step
        ([STEP1, P1, P1_OTHER], [STEP1, P1, P1_OTHER]),  # a new preview at the same step
        ([P1, STEP1], [P1]),  # the step without its preview, after it, adds nothing
        ([P1, STEP2, P2_SAME_PICTURE], [P1, STEP2, P2_SAME_PICTURE]),  # the same picture at a new step
        ([RUN, Q1], [RUN, Q1]),  # the stage is part of what is new
    ],
)
async def test_a_report_reaches_the_listener_only_when_it_says_something_new(
    sent: list[Progress], reported: list[Progress]
) -> None:
    seen: list[Progress] = []
    reports = ProgressReports()
    with reporting_progress(seen.append):
        for progress in sent:
            await reports(progress)
    assert [(p.stage, p.queue_position, p.step, p.preview) for p in seen] == [
        (p.stage, p.queue_position, p.step, p.preview) for p in reported
    ]
    assert reports.last is (seen[-1] if seen else None)


async def test_nobody_listening_means_nothing_is_remembered() -> None:
    reports = ProgressReports()
    await reports(Q1)
    assert reports.last is None
    seen: list[Progress] = []
    with reporting_progress(seen.append):
        await reports(Q1)  # the first report anyone hears
    assert seen == [Q1]
