"""Running one job on the Stable Diffusion web UI at a time: send it, poll its progress, stop it.

What the design rests on (the server's behaviour, not ours to change): it runs one job at
a time and ``/interrupt`` stops *whichever* job is running. :class:`JobRunner` sends one
job at a time too, and only interrupts a job it saw start after its request was sent (a
new ``job_timestamp`` in ``/progress``). When the awaiting task is cancelled or the timeout
passes, a job already running is interrupted at once; one still queued behind someone
else's is watched and interrupted when it starts. The next job is sent only once the
server has answered the abandoned one. An interrupted job still answers 200 with a
half-finished image; it is refused.

Only the job's POST starts a job, and the calls after it (progress, interrupt) never raise
to the caller, so :class:`~abby_core.errors.ProviderUnreachable` always means no job was sent.

Progress goes to :func:`~abby_core.generation.base.report_progress` when someone listens:
``queued`` while another job holds the server, ``running`` from ``/progress`` (the preview
is fetched only then), ``finished`` when the POST has answered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from abby_core.errors import AbbyError, GenerationTimeout, GenerationUnavailable, InvalidImage
from abby_core.generation.automatic1111_answers import JobKind, Snapshot, State, decode, parse
from abby_core.generation.automatic1111_http import API, WebUIClient
from abby_core.generation.base import Progress, ProgressReports, wants_progress
from abby_core.images import sniff_format

__all__ = ["JobRunner"]

log = logging.getLogger("abby.generation")

_GRACE = 30.0  # seconds an interrupted or abandoned job is given to answer
_STOP_WAIT = 5.0  # how long a cancelled call waits for its interrupt to be sent
_SNAPSHOT_TIMEOUT = 10.0


class _Watch:
    """Tells the provider's job apart from other clients' jobs in ``/progress`` snapshots."""

    def __init__(self, before: State | None) -> None:
        # The job running when the request was sent is not ours; unknown means none was.
        self._before: str | None = None
        self._last: tuple[int, int] | None = None
        if before is not None and before.busy:
            self._before, self._last = before.job_timestamp, (before.job_no, before.sampling_step)
        self.timestamp: str | None = None  # our job's, once seen
        self.stopped = False  # our job was seen interrupted or skipped

    def ours(self, state: State) -> bool:
        if not state.busy:
            return False
        if self.timestamp is None:
            position = (state.job_no, state.sampling_step)
            # Timestamps have one-second resolution: a job that went backwards is a new one.
            restarted = self._last is not None and position < self._last
            if state.job_timestamp == self._before and not restarted:
                self._last = position
                return False
            self.timestamp = state.job_timestamp
        if state.job_timestamp != self.timestamp:
            return False
        self.stopped = self.stopped or state.interrupted or state.skipped
        return True

    def ended_stopped(self, state: State) -> bool:
        """Whether an idle server's last job was ours and was interrupted or skipped."""
        mine = self.timestamp is None or state.job_timestamp == self.timestamp
        return not state.busy and mine and (state.interrupted or state.skipped)


class _Reporter:
    """One job's progress for the current listener, from ``/progress`` snapshots."""

    def __init__(self, kind: JobKind) -> None:
        self._kind = kind
        self._reports = ProgressReports()
        self._preview: str | None = None  # the last preview decoded, as the server encoded it

    async def __call__(self, progress: Progress) -> None:
        """Report ``progress`` if it says something new."""
        await self._reports(progress)

    async def running(self, snapshot: Snapshot) -> None:
        """Our job as one ``/progress`` snapshot shows it; a preview only when it is a new one."""
        state = snapshot.state
        # Step counters are stale while the model loads (job_count -1) and during upscales.
        counting = state.job_count > 0 and state.sampling_steps > 0 and self._kind != "upscale"
        step = min(state.sampling_step + 1, state.sampling_steps) if counting else None  # steps done
        preview, preview_type = None, None
        if snapshot.current_image and snapshot.current_image != self._preview:
            self._preview = snapshot.current_image
            try:
                preview = decode(snapshot.current_image)
                preview_type = f"image/{sniff_format(preview)}"
            except (GenerationUnavailable, InvalidImage):
                preview = None
        steps = state.sampling_steps if counting else None
        await self(Progress("running", step=step, steps=steps, preview=preview, preview_type=preview_type))


class JobRunner:
    """Sends jobs through ``client`` one at a time, follows each, and stops those nobody awaits.

    ``timeout`` covers waiting for the server and the job itself; ``/progress`` is read every
    ``poll_interval`` seconds while a job runs.
    """

    def __init__(self, client: WebUIClient, *, timeout: float, poll_interval: float) -> None:
        self._client = client
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._jobs = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def aclose(self) -> None:
        """Stop watching abandoned jobs."""
        for task in list(self._background):
            task.cancel()

    async def run(self, kind: JobKind, path: str, payload: dict[str, Any]) -> Any:
        """Send one job and follow it; on timeout or cancellation, stop it on the server."""
        post: asyncio.Task[Any] | None = None
        watch = _Watch(None)
        report = _Reporter(kind)
        locked = False
        try:
            async with asyncio.timeout(self._timeout):
                await self._jobs.acquire()
                locked = True
                before = await self._snapshot(preview=False)
                watch = _Watch(before.state if before is not None else None)
                post = asyncio.ensure_future(
                    self._client.call("POST", f"{API}/{path}", json=payload, timeout=self._timeout + _GRACE)
                )
                if before is not None and before.state.busy:
                    await report(Progress("queued"))  # another job holds the server: ours waits
                await self._follow(post, watch, report)
                body = post.result()
                if kind != "upscale":
                    after = await self._snapshot(preview=False)
                    if watch.stopped or (after is not None and watch.ended_stopped(after.state)):
                        raise GenerationUnavailable(
                            "The job was stopped on the image server before it finished."
                        )
                await report(Progress("finished"))
                return body
        except BaseException as exc:
            if post is not None and not post.done():
                locked = False  # the stopper releases it once the server has answered
                await self._abandon(post, watch)
            elif post is not None and not post.cancelled():
                post.exception()  # already raised to the caller, or replaced by this exception
            if isinstance(exc, TimeoutError):
                raise GenerationTimeout(
                    f"The image server did not finish within {self._timeout:g} seconds."
                ) from None
            raise
        finally:
            if locked:
                self._jobs.release()

    async def _follow(self, post: asyncio.Task[Any], watch: _Watch, report: _Reporter) -> None:
        for _ in range(math.ceil(self._timeout / self._poll_interval) + 2):
            done, _ = await asyncio.wait({post}, timeout=self._poll_interval)
            if done:
                return
            # Read even when nobody listens: the watch must see our job start, to stop it if need be.
            snapshot = await self._snapshot(preview=wants_progress())
            if snapshot is None:
                continue
            if watch.ours(snapshot.state):
                await report.running(snapshot)
            elif watch.timestamp is None and snapshot.state.busy:
                await report(Progress("queued"))
        await asyncio.wait({post})  # the caller's timeout ends this

    async def _snapshot(self, *, preview: bool) -> Snapshot | None:
        """The server's progress, or ``None`` when it cannot be read right now."""
        params = {"skip_current_image": "false" if preview else "true"}
        try:
            data = await self._client.call(
                "GET", f"{API}/progress", params=params, timeout=_SNAPSHOT_TIMEOUT, retry=False
            )
            return parse(Snapshot, data)
        except AbbyError as exc:
            log.debug("Could not read the image server's progress: %s", exc)
            return None

    async def _abandon(self, post: asyncio.Task[Any], watch: _Watch) -> None:
        """Hand the job to a stopper task and wait briefly for its first look (and interrupt).

        The stopper is a task of its own: a second cancellation of the caller does not stop it.
        """
        attempted = asyncio.Event()
        stopper = asyncio.ensure_future(self._stop(post, watch, attempted))
        self._background.add(stopper)
        stopper.add_done_callback(self._background.discard)
        waiter = asyncio.ensure_future(attempted.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=_STOP_WAIT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def _stop(self, post: asyncio.Task[Any], watch: _Watch, attempted: asyncio.Event) -> None:
        """Interrupt the job once it is ours and running, then wait for the server's answer."""
        try:
            for _ in range(math.ceil((self._timeout + _GRACE) / self._poll_interval) + 1):
                if post.done():
                    break
                snapshot = await self._snapshot(preview=False)
                if snapshot is not None and watch.ours(snapshot.state):
                    await self._client.call("POST", f"{API}/interrupt", timeout=_SNAPSHOT_TIMEOUT, retry=False)
                    attempted.set()
                    await asyncio.wait({post}, timeout=_GRACE)
                    break
                attempted.set()  # not started yet (queued behind another job): look again
                await asyncio.wait({post}, timeout=self._poll_interval)
        except AbbyError as exc:
            log.warning("Could not stop an abandoned job on the image server: %s", exc)
        finally:
            attempted.set()
            if post.done() and not post.cancelled():
                post.exception()  # its error was already reported to the caller as cancel/timeout
            post.cancel()
            self._jobs.release()
