"""Following one ComfyUI job: send it, follow it to its end, report its progress, withdraw it.

:class:`Follower` sends ``POST /prompt`` with a prompt id chosen here (so the job can be
found and stopped even when the answer is lost; a 400 lists the failing nodes), then
follows the job's websocket messages until ``executing`` with ``node: null``, checking
``/history`` and ``/queue`` every ``poll_interval`` seconds in case a message was missed
or someone cleared the queue. Without a websocket the job is followed by polling alone,
without step-by-step progress.

Progress goes to :func:`~abby_core.generation.base.report_progress`, only when someone
listens, and only what the server says: ``queued`` with the number of prompts ahead in
``/queue`` (asked right after the POST and on each ``status`` message while waiting),
``running`` on ``execution_start``, each node, each sampler step and each preview, and
``finished`` once the history entry names the image. A report that says nothing new is
skipped (:class:`~abby_core.generation.base.ProgressReports`).

A job nobody waits for any more is withdrawn (:meth:`Follower.abandon`): deleted from the
queue and, if it is already running, interrupted, so the GPU does not keep working for
nobody. Interrupts name the prompt id, and are only sent while that prompt is the one
running (older servers interrupt whatever runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from abby_core.errors import GenerationError, GenerationUnavailable, ProviderUnreachable
from abby_core.generation._http import json_object
from abby_core.generation.base import Progress, ProgressReports, wants_progress
from abby_core.generation.comfyui_answers import failure, ids, place, refusal, step_count
from abby_core.generation.comfyui_http import ComfyUIClient
from abby_core.generation.comfyui_workflows import Workflow

__all__ = ["Follower", "Job"]

log = logging.getLogger("abby.generation.comfyui")

# Messages a finished job's socket may still deliver, each restarting the wait for the next
# (a job's steps, nodes and previews come to a few hundred; other clients' "status" too).
_DRAIN = 1000
# How long a finished job's socket may stay quiet before its last message is given up on (at
# least the poll interval): the server sends that message right after the history shows the
# job done, so only a loaded machine delays it, never by this much.
_DRAIN_QUIET = 1.0
_PREVIEW_TYPES = {1: "image/jpeg", 2: "image/png"}


@dataclass
class Job:
    """One prompt's life here: chosen ids, what was sent, whether the server is done with it,
    and what was last reported of it."""

    workflow: Workflow
    prompt_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    graph: dict[str, Any] = field(default_factory=dict)
    submitted: bool = False
    running: bool = False
    done: bool = False
    step: int | None = None  # the current node's last reported step, for its previews
    steps: int | None = None
    reports: ProgressReports = field(default_factory=ProgressReports)
    queued_at: float = 0.0  # loop time when the server accepted the prompt


class Follower:
    """Sends, follows and withdraws jobs through ``client``."""

    def __init__(self, client: ComfyUIClient, *, poll_interval: float, cleanup_timeout: float) -> None:
        self._client = client
        self._poll_interval = poll_interval
        self._drain_quiet = max(poll_interval, _DRAIN_QUIET)
        self._cleanup_timeout = cleanup_timeout

    async def submit(self, job: Job) -> None:
        """``POST /prompt``; a refusal raises, naming the failing nodes."""
        body = {"prompt": job.graph, "client_id": job.client_id, "prompt_id": job.prompt_id}
        job.submitted = True  # from here a cancelled call must still withdraw the prompt
        try:
            response = await self._client.call("POST", "/prompt", json=body, check=False, before_job=True)
        except ProviderUnreachable:
            job.done = True  # the connection never opened: nothing was queued
            raise
        job.done = not response.is_success  # an answered refusal queued nothing
        job.queued_at = asyncio.get_running_loop().time()
        answer = json_object(response)
        if response.status_code == 400 and ("error" in answer or "node_errors" in answer):
            raise refusal(job.workflow, answer, self._client.secrets())
        self._client.check(response)
        if isinstance(answer.get("prompt_id"), str):
            job.prompt_id = answer["prompt_id"]  # older servers choose their own
        node_errors = answer.get("node_errors")
        if isinstance(node_errors, dict) and any(
            job.workflow.output in (info.get("dependent_outputs") or [])
            for info in node_errors.values() if isinstance(info, dict)
        ):
            # Queued for other outputs of the graph, but not for ours: withdraw it.
            await self.abandon(job)
            job.done = True
            raise refusal(job.workflow, answer, self._client.secrets())
        if wants_progress():
            await self._report_place(job, await self._client.queue_or_none(job.queued_at))

    async def follow(self, job: Job, socket: ClientConnection | None) -> dict[str, Any]:
        """Wait until the server is done with the job; return its history entry.

        The socket reports the job; every ``poll_interval`` seconds ``/history`` and
        ``/queue`` are checked too, so a lost message or a cleared queue cannot leave
        the job waiting until the timeout. When the history shows the job done while
        the socket is alive, the socket delivers the rest: until the server's last message,
        or until it has been quiet for ``_DRAIN_QUIET`` (each message it still has restarts that
        wait, at most ``_DRAIN`` times, so a listener slower than the poll loses nothing).
        """
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self._poll_interval
        done_entry: dict[str, Any] | None = None
        drained = 0
        while True:
            message: str | bytes | None = None
            wait = check_at - loop.time()
            if wait > 0:
                if socket is None:
                    await asyncio.sleep(wait)
                else:
                    try:
                        # Not asyncio.wait_for: on 3.11 it can swallow a cancellation.
                        async with asyncio.timeout(wait):
                            message = await socket.recv()  # cancelling it loses no message
                    except TimeoutError:
                        pass
                    except ConnectionClosed as exc:
                        log.info("ComfyUI websocket ended (%s); following prompt %s by polling", exc, job.prompt_id)
                        socket = None
            if message is not None:
                if await self._on_message(job, message):
                    entry = done_entry or await self._client.history(job.prompt_id)
                    if entry is not None:
                        return entry
                if done_entry is not None and drained < _DRAIN:
                    drained += 1
                    check_at = loop.time() + self._drain_quiet
                continue
            check_at = loop.time() + self._poll_interval
            if done_entry is not None:
                return done_entry
            entry = await self._client.history(job.prompt_id)
            if entry is None:
                queue = await self._client.queue(asyncio.get_running_loop().time())
                if job.prompt_id in ids(queue.get("queue_running")) | ids(queue.get("queue_pending")):
                    await self._report_place(job, queue)
                else:
                    entry = await self._client.history(job.prompt_id)  # it may have finished in between
                    if entry is None:
                        job.done = True
                        raise GenerationUnavailable(
                            "The job was removed from the ComfyUI queue before it ran (was the queue cleared?)."
                        )
            if entry is not None:
                job.done = True
                if socket is None:
                    return entry
                done_entry = entry
                check_at = loop.time() + self._drain_quiet

    async def abandon(self, job: Job) -> None:
        """Withdraw a prompt the server may still hold: delete it if queued, interrupt it if running."""
        if not job.submitted or job.done:
            return
        job.done = True
        try:
            async with asyncio.timeout(self._cleanup_timeout):
                await self._client.call("POST", "/queue", json={"delete": [job.prompt_id]})
                queue = await self._client.call_json("GET", "/queue")
                if job.prompt_id in ids(queue.get("queue_pending")):  # arrived after the delete
                    await self._client.call("POST", "/queue", json={"delete": [job.prompt_id]})
                if job.prompt_id in ids(queue.get("queue_running")):
                    await self._client.call("POST", "/interrupt", json={"prompt_id": job.prompt_id})
        except (GenerationError, TimeoutError) as exc:
            log.warning("Could not withdraw ComfyUI prompt %s; it may still run: %s", job.prompt_id, exc)

    # -- messages ------------------------------------------------------------------------

    async def _on_message(self, job: Job, message: str | bytes) -> bool:
        """Report one websocket message; True once the server is done with the job."""
        if isinstance(message, bytes):
            await self._on_preview(job, message)
            return False
        try:
            parsed = json.loads(message)
        except ValueError:
            return False
        data = parsed.get("data") if isinstance(parsed, dict) else None
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "status":  # the queue changed: where is ours now?
            if not job.running and wants_progress():
                await self._report_place(job, await self._client.queue_or_none(asyncio.get_running_loop().time()))
            return False
        if not isinstance(data, dict) or data.get("prompt_id") != job.prompt_id:
            return False  # another client's job
        if kind == "execution_start":
            await self._start(job)
        elif kind == "executing" and data.get("node") is None:
            job.done = True
            return True
        elif kind == "executing":
            job.step = job.steps = None
            await job.reports(Progress("running"))
        elif kind == "progress":
            job.step, job.steps = step_count(data.get("value")), step_count(data.get("max")) or None
            await job.reports(Progress("running", step=job.step, steps=job.steps))
        elif kind in ("execution_error", "execution_interrupted"):
            job.done = True
            raise failure(job.workflow, job.graph, kind, data, self._client.secrets())
        return False

    async def _on_preview(self, job: Job, message: bytes) -> None:
        if not job.running or len(message) < 8 or not wants_progress():
            return
        event, = struct.unpack_from(">I", message, 0)
        if event == 1:  # 4-byte image type, then the image
            kind, = struct.unpack_from(">I", message, 4)
            preview, content_type = message[8:], _PREVIEW_TYPES.get(kind, "image/jpeg")
        elif event == 4:  # 4-byte metadata length, JSON metadata, then the image
            size, = struct.unpack_from(">I", message, 4)
            try:
                meta = json.loads(message[8 : 8 + size])
            except ValueError:
                return
            if not isinstance(meta, dict) or meta.get("prompt_id") != job.prompt_id:
                return
            preview, content_type = message[8 + size :], str(meta.get("image_type", "image/jpeg"))
        else:
            return
        await job.reports(Progress("running", step=job.step, steps=job.steps, preview=preview,
                                        preview_type=content_type))

    async def _start(self, job: Job) -> None:
        if not job.running:
            job.running = True
            await job.reports(Progress("running"))

    async def _report_place(self, job: Job, queue: dict[str, Any] | None) -> None:
        """Report where a job not yet seen running is, from a ``/queue`` answer (None: unknown)."""
        if job.running:
            return
        if queue is None:
            if job.reports.last is None:
                await job.reports(Progress("queued"))
        elif job.prompt_id in ids(queue.get("queue_running")):
            await self._start(job)
        elif (ahead := place(queue, job.prompt_id)) is not None:
            await job.reports(Progress("queued", queue_position=ahead))
