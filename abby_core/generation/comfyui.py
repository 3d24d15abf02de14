"""A self-hosted ComfyUI server: the only module that speaks to it.

A job is one API-format graph (a :class:`~abby_core.generation.comfyui_workflows.Workflow`)
with the request's values written into the inputs the workflow declares. For one image:

1. open ``/ws?clientId=<new id>``: the server reports the job there (when the socket
   cannot be opened, e.g. a proxy that does not pass websockets, the job is followed
   by polling ``/history`` instead, without step-by-step progress);
2. upload the input picture (``POST /upload/image``) for image-to-image and upscale;
3. ``POST /prompt`` with a prompt id chosen here, so the job can be found and stopped
   even when the answer is lost; a 400 lists the failing nodes (``node_errors``);
4. follow the job's messages until ``executing`` with ``node: null``, and check
   ``/history`` and ``/queue`` every ``poll_interval`` seconds in case a message was
   missed or someone cleared the queue;
5. read the output node's first image with ``GET /view``.

Progress goes to :func:`~abby_core.generation.base.report_progress`, only when someone
listens, and only what the server says: ``queued`` with the number of prompts ahead in
``/queue`` (asked right after the POST and on each ``status`` message while waiting),
``running`` on ``execution_start``, each node, each sampler step and each preview, and
``finished`` once the history entry names the image. A report that would repeat the
last one is skipped.

A connection that cannot be opened before ``POST /prompt`` was sent (the websocket, the
upload, the POST's own connect) raises :class:`~abby_core.errors.ProviderUnreachable`:
no job exists, so another provider may take it. From the POST on, it is
:class:`~abby_core.errors.GenerationUnavailable`.

A job nobody waits for any more (the awaiting task was cancelled, or ``timeout``
passed) is deleted from the queue and, if it is already running, interrupted, so the
GPU does not keep working for nobody. Interrupts name the prompt id, and are only sent
while that prompt is the one running (older servers interrupt whatever runs).

The websocket is the ``websockets`` library's client, on its own connection (the injected
httpx ``transport`` carries only the HTTP calls). httpx, websockets and socket errors stop
here and become :mod:`abby_core.errors` classes (``raise ... from exc``); HTTP statuses go
through :func:`~abby_core.generation._status.error_for_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import struct
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from abby_core.errors import (
    ConfigError,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    NotConfigured,
    ProviderAuthError,
    ProviderRejected,
    ProviderUnreachable,
)
from abby_core.generation._results import generated_image, random_seed
from abby_core.generation._status import OWNER, error_for_status, sanitize
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    Progress,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
    report_progress,
    wants_progress,
)
from abby_core.generation.comfyui_workflows import (
    MODEL_FOLDERS,
    SLOTS,
    WORKFLOW_KINDS,
    Workflow,
    WorkflowIssue,
    WorkflowKind,
    default_workflows,
    workflow_issues,
)
from abby_core.images import sniff_format

__all__ = [
    "MODEL_FOLDERS",
    "SLOTS",
    "WORKFLOW_KINDS",
    "ComfyUIProvider",
    "ServerReport",
    "Workflow",
    "WorkflowIssue",
    "default_workflows",
]

log = logging.getLogger("abby.generation.comfyui")

UPLOAD_SUBFOLDER = "abby"
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,4096}")
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)
# Messages a finished job's socket may still deliver, each restarting the wait for the next
# (a job's steps, nodes and previews come to a few hundred; other clients' "status" too).
_DRAIN = 1000
_MAX_MESSAGE = 32 * 1024 * 1024  # previews are small; anything larger is not ComfyUI talking
_PREVIEW_TYPES = {1: "image/jpeg", 2: "image/png"}


@dataclass(frozen=True)
class ServerReport:
    """What a ComfyUI server is, and what the configured workflows need from it (``abby doctor``).

    ``version``, ``device`` (the first device's name) and ``vram_total`` (bytes) are ``None``
    when ``/system_stats`` does not say; ``on_cpu``: the device is the CPU (``--cpu``), and
    ``vram_total`` is then the machine's RAM. ``workflows`` are the kinds checked, in order;
    ``issues`` is empty when every node class and model they use is installed.
    """

    version: str | None
    device: str | None
    vram_total: int | None
    workflows: tuple[str, ...]
    issues: tuple[WorkflowIssue, ...]
    on_cpu: bool = False


@dataclass
class _Job:
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
    reported: Progress | None = None
    queued_at: float = 0.0  # loop time when the server accepted the prompt


class ComfyUIProvider(Provider):
    """Client for one ComfyUI server at ``base_url`` (e.g. ``http://gpu-box:8188``).

    ``workflows`` maps ``txt2img``, ``img2img`` and ``upscale`` to a :class:`Workflow`
    (default: :func:`default_workflows`); a kind without one raises
    :class:`~abby_core.errors.NotConfigured` when used. ``auth_header`` is sent as
    ``auth_header_name`` on every request, the websocket included (for a server behind
    an authenticating reverse proxy). ``timeout`` bounds a whole job, queue wait
    included; ``request_timeout`` one HTTP call (and, up to 10 seconds, opening a
    connection or the websocket). ``transport`` carries the HTTP calls, not the websocket.
    Progress goes to the listener set with
    :func:`~abby_core.generation.base.reporting_progress` around the call, if any.
    Every upscale mode runs the ``upscale`` workflow.
    Uploaded pictures stay in the server's ``input/abby`` folder (there is no API to
    delete them).
    """

    name = "comfyui"
    # nodes.py: latents from 16 px up to MAX_RESOLUTION (16384) a side, any shape; LoadImage takes
    # any picture; server.py takes uploads up to --max-upload-size (100 MB by default).
    input_limits = InputLimits.sides(16, 16384, max_bytes=100 * 1024 * 1024)

    def __init__(
        self,
        base_url: str,
        workflows: Mapping[str, Workflow] | None = None,
        *,
        auth_header: str | SecretStr | None = None,
        auth_header_name: str = "Authorization",
        timeout: float = 300.0,
        request_timeout: float = 30.0,
        poll_interval: float = 2.0,
        cleanup_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not re.match(r"^https?://[^/\s]+", base_url or ""):
            raise ConfigError("The ComfyUI URL must start with http:// or https://, e.g. http://127.0.0.1:8188.")
        if min(timeout, request_timeout, poll_interval, cleanup_timeout) <= 0:
            raise ConfigError("The ComfyUI timeouts and poll interval must be above 0 seconds.")
        workflows = default_workflows() if workflows is None else dict(workflows)
        for kind, workflow in workflows.items():
            if kind not in WORKFLOW_KINDS:
                raise ConfigError(f"Unknown ComfyUI workflow kind '{kind}' (known: {', '.join(WORKFLOW_KINDS)}).")
            workflow.check_kind(kind)
        value = auth_header.get_secret_value() if isinstance(auth_header, SecretStr) else auth_header
        value = value.strip() if value else None
        if value and not _HEADER_VALUE.fullmatch(value):
            raise ConfigError("The ComfyUI auth header has characters a header cannot hold (newlines, non-ASCII).")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", auth_header_name):
            raise ConfigError("The ComfyUI auth header name must be a plain header name, e.g. Authorization.")
        self._url = base_url.rstrip("/")
        self._shown_url = _shown(self._url)
        self._workflows: dict[str, Workflow] = workflows
        self._headers = {auth_header_name: value} if value else {}
        self._secret = value
        self._auth_name = auth_header_name
        self._timeout = timeout
        self._http_timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, 10.0))
        self._poll_interval = poll_interval
        self._cleanup_timeout = cleanup_timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._queue_lock = asyncio.Lock()
        self._queue_copy: tuple[float, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"ComfyUIProvider(url={self._shown_url!r}, workflows={sorted(self._workflows)})"

    # -- provider interface --------------------------------------------------------

    async def text_to_image(self, request: TextToImageRequest) -> GeneratedImage:
        workflow = self._workflow("txt2img")
        seed = request.seed or random_seed()
        width, height = workflow.size(request.aspect_ratio)
        # No negative prompt: the workflow's own (often a default like "blurry") stays.
        values: dict[str, object] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt,
                                     "seed": seed, "width": width, "height": height}
        return await self._generate("txt2img", values, None, request.output_format, seed)

    async def image_to_image(self, request: ImageToImageRequest) -> GeneratedImage:
        seed = request.seed or random_seed()
        values: dict[str, object] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt,
                                     "seed": seed, "strength": request.strength}
        return await self._generate("img2img", values, request.image, request.output_format, seed)

    async def upscale(self, request: UpscaleRequest) -> GeneratedImage:
        values: dict[str, object] = {"prompt": request.prompt}
        return await self._generate("upscale", values, request.image, request.output_format, 0)

    async def aclose(self) -> None:
        """Close the connection pool; the provider cannot be used afterwards."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def inspect(self) -> ServerReport:
        """Ask the server what it is and has, and judge the configured workflows by it.

        ``GET /system_stats`` (version, first device) and ``GET /object_info`` (the node
        classes installed, with the choices of their list inputs). Starts no job. Raises
        :class:`~abby_core.errors.ProviderUnreachable` when no connection opens,
        :class:`~abby_core.errors.ProviderAuthError` when the server (or a proxy in front of
        it) refuses the auth header, :class:`~abby_core.errors.GenerationTimeout`, and other
        :class:`~abby_core.errors.GenerationError` for any other answer (an unknown route
        is a :class:`~abby_core.errors.ProviderRejected` with ``status`` 404).
        """
        stats = _json(await self._call("GET", "/system_stats", before_job=True))
        info = _json(await self._call("GET", "/object_info", before_job=True))
        if not info:
            raise GenerationUnavailable("The ComfyUI server gave an unreadable answer to /object_info.")
        system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
        devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
        first = devices[0] if devices and isinstance(devices[0], dict) else {}
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        vram = first.get("vram_total")
        kinds = tuple(kind for kind in WORKFLOW_KINDS if kind in self._workflows)
        return ServerReport(
            version=str(version) if version else None,
            device=str(first["name"]) if first.get("name") else None,
            vram_total=vram if isinstance(vram, int) and not isinstance(vram, bool) and vram > 0 else None,
            workflows=kinds,
            issues=tuple(issue for kind in kinds for issue in workflow_issues(kind, self._workflows[kind], info)),
            on_cpu=first.get("type") == "cpu",
        )

    # -- one job -------------------------------------------------------------------------

    def _workflow(self, kind: WorkflowKind) -> Workflow:
        workflow = self._workflows.get(kind)
        if workflow is None:
            raise NotConfigured(f"The ComfyUI server has no {kind} workflow configured.")
        return workflow

    async def _generate(
        self,
        kind: WorkflowKind,
        values: dict[str, object],
        image: bytes | None,
        output_format: OutputFormat,
        seed: int,
    ) -> GeneratedImage:
        job = _Job(self._workflow(kind))
        try:
            async with asyncio.timeout(self._timeout):
                async with self._connect(job.client_id) as socket:
                    if image is not None:
                        values["image"] = await self._upload(image)
                    job.graph = job.workflow.build(values)
                    await self._submit(job)
                    entry = await self._follow(job, socket)
        except TimeoutError:
            await asyncio.shield(self._abandon(job))
            raise GenerationTimeout(
                f"The ComfyUI server did not finish the image within {self._timeout:g} seconds."
            ) from None
        except BaseException:
            await asyncio.shield(self._abandon(job))
            raise
        data = await self._output(job, entry)
        return await asyncio.to_thread(
            generated_image, data, provider=self.name, label=job.workflow.label, seed=seed,
            request_id=job.prompt_id, unreadable="The ComfyUI server sent an unreadable image.",
            output_format=output_format,
        )

    async def _submit(self, job: _Job) -> None:
        body = {"prompt": job.graph, "client_id": job.client_id, "prompt_id": job.prompt_id}
        job.submitted = True  # from here a cancelled call must still withdraw the prompt
        try:
            response = await self._call("POST", "/prompt", json=body, check=False, before_job=True)
        except ProviderUnreachable:
            job.done = True  # the connection never opened: nothing was queued
            raise
        job.done = not response.is_success  # an answered refusal queued nothing
        job.queued_at = asyncio.get_running_loop().time()
        answer = _json(response)
        if response.status_code == 400 and ("error" in answer or "node_errors" in answer):
            raise self._refusal(job, answer)
        self._check(response)
        if isinstance(answer.get("prompt_id"), str):
            job.prompt_id = answer["prompt_id"]  # older servers choose their own
        node_errors = answer.get("node_errors")
        if isinstance(node_errors, dict) and any(
            job.workflow.output in (info.get("dependent_outputs") or [])
            for info in node_errors.values() if isinstance(info, dict)
        ):
            # Queued for other outputs of the graph, but not for ours: withdraw it.
            await self._abandon(job)
            job.done = True
            raise self._refusal(job, answer)
        if wants_progress():
            await self._report_place(job, await self._queue_or_none(job.queued_at))

    async def _follow(self, job: _Job, socket: ClientConnection | None) -> dict[str, Any]:
        """Wait until the server is done with the job; return its history entry.

        The socket reports the job; every ``poll_interval`` seconds ``/history`` and
        ``/queue`` are checked too, so a lost message or a cleared queue cannot leave
        the job waiting until the timeout. When the history shows the job done while
        the socket is alive, the socket delivers the rest: until the server's last message,
        or until it has been quiet for an interval (each message it still has restarts that
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
                    entry = done_entry or await self._history(job.prompt_id)
                    if entry is not None:
                        return entry
                if done_entry is not None and drained < _DRAIN:
                    drained += 1
                    check_at = loop.time() + self._poll_interval
                continue
            check_at = loop.time() + self._poll_interval
            if done_entry is not None:
                return done_entry
            entry = await self._history(job.prompt_id)
            if entry is None:
                queue = await self._queue(asyncio.get_running_loop().time())
                if job.prompt_id in _ids(queue.get("queue_running")) | _ids(queue.get("queue_pending")):
                    await self._report_place(job, queue)
                else:
                    entry = await self._history(job.prompt_id)  # it may have finished in between
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

    async def _on_message(self, job: _Job, message: str | bytes) -> bool:
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
                await self._report_place(job, await self._queue_or_none(asyncio.get_running_loop().time()))
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
            await self._report(job, Progress("running"))
        elif kind == "progress":
            job.step, job.steps = _int(data.get("value")), _int(data.get("max")) or None
            await self._report(job, Progress("running", step=job.step, steps=job.steps))
        elif kind in ("execution_error", "execution_interrupted"):
            job.done = True
            raise self._failure(job, kind, data)
        return False

    async def _on_preview(self, job: _Job, message: bytes) -> None:
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
        await self._report(job, Progress("running", step=job.step, steps=job.steps, preview=preview,
                                         preview_type=content_type))

    async def _start(self, job: _Job) -> None:
        if not job.running:
            job.running = True
            await self._report(job, Progress("running"))

    async def _report_place(self, job: _Job, queue: dict[str, Any] | None) -> None:
        """Report where a job not yet seen running is, from a ``/queue`` answer (None: unknown)."""
        if job.running:
            return
        if queue is None:
            if job.reported is None:
                await self._report(job, Progress("queued"))
        elif job.prompt_id in _ids(queue.get("queue_running")):
            await self._start(job)
        elif (place := _place(queue, job.prompt_id)) is not None:
            await self._report(job, Progress("queued", queue_position=place))

    async def _report(self, job: _Job, progress: Progress) -> None:
        """Hand ``progress`` to the listener, unless nobody listens or it repeats the last report."""
        if wants_progress() and progress != job.reported:
            job.reported = progress
            await report_progress(progress)

    async def _output(self, job: _Job, entry: dict[str, Any]) -> bytes:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        if isinstance(status, dict) and status.get("status_str") == "error":
            for message in status.get("messages") or []:
                if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict) \
                        and message[0] in ("execution_error", "execution_interrupted"):
                    raise self._failure(job, message[0], message[1])
            raise GenerationError(f"The ComfyUI server reported that workflow {job.workflow.name} failed.")
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        node_output = outputs.get(job.workflow.output) if isinstance(outputs, dict) else None
        images = node_output.get("images") if isinstance(node_output, dict) else None
        if not isinstance(images, list) or not images or not isinstance(images[0], dict) \
                or "filename" not in images[0]:
            raise GenerationError(
                f"ComfyUI workflow {job.workflow.name} finished, but its output node "
                f"'{job.workflow.output}' produced no image."
            )
        await self._report(job, Progress("finished"))
        first = images[0]
        params = {"filename": str(first["filename"]), "subfolder": str(first.get("subfolder", "")),
                  "type": str(first.get("type", "output"))}
        return (await self._call("GET", "/view", params=params)).content

    async def _abandon(self, job: _Job) -> None:
        """Withdraw a prompt the server may still hold: delete it if queued, interrupt it if running."""
        if not job.submitted or job.done:
            return
        job.done = True
        try:
            async with asyncio.timeout(self._cleanup_timeout):
                await self._call("POST", "/queue", json={"delete": [job.prompt_id]})
                queue = _json(await self._call("GET", "/queue"))
                if job.prompt_id in _ids(queue.get("queue_pending")):  # arrived after the delete
                    await self._call("POST", "/queue", json={"delete": [job.prompt_id]})
                if job.prompt_id in _ids(queue.get("queue_running")):
                    await self._call("POST", "/interrupt", json={"prompt_id": job.prompt_id})
        except (GenerationError, TimeoutError) as exc:
            log.warning("Could not withdraw ComfyUI prompt %s; it may still run: %s", job.prompt_id, exc)

    # -- server answers -------------------------------------------------------------------

    def _refusal(self, job: _Job, answer: dict[str, Any]) -> ProviderRejected:
        """The error for a graph the server would not run, naming the failing nodes."""
        problems: list[str] = []
        node_errors = answer.get("node_errors")
        for node_id, info in (node_errors.items() if isinstance(node_errors, dict) else []):
            if not isinstance(info, dict):
                continue
            for error in (info.get("errors") or [])[:3]:
                if isinstance(error, dict):
                    problems.append(f"node {node_id} ({info.get('class_type', '?')}): "
                                    f"{error.get('message', 'invalid')} ({error.get('details', '')})")
        error = answer.get("error")
        if not problems and isinstance(error, dict):
            extra = error.get("extra_info") if isinstance(error.get("extra_info"), dict) else {}
            text = str(error.get("message") or error.get("type") or "invalid prompt")
            notes = [str(error["details"])] if error.get("details") else []
            class_type = extra.get("class_type") if isinstance(extra, dict) else None
            if class_type and str(class_type) not in text:
                notes.append(f"class {class_type}")
            problems.append(text + (f" ({', '.join(notes)})" if notes else ""))
        elif not problems and isinstance(error, str):
            problems.append(error)
        detail = sanitize("; ".join(problems) or "no reason given", secrets=self._secrets(), limit=400)
        log.warning("The ComfyUI server refused workflow %s: %s", job.workflow.name,
                    sanitize(json.dumps(answer), secrets=self._secrets(), limit=4000))
        return ProviderRejected(
            f"The ComfyUI server refused workflow {job.workflow.name}: {detail}", status=400, request_id=None
        )

    def _failure(self, job: _Job, kind: str, data: dict[str, Any]) -> GenerationError:
        node = str(data.get("node_id", "?"))
        node_type = data.get("node_type") or self._class_of(job, node) or "?"
        if kind == "execution_interrupted":
            return GenerationUnavailable(
                f"The job was interrupted on the ComfyUI server at node {node} ({node_type})."
            )
        reason = sanitize(f"{data.get('exception_type', 'error')}: {data.get('exception_message', '')}",
                          secrets=self._secrets())
        return GenerationError(
            f"ComfyUI workflow {job.workflow.name} failed at node {node} ({node_type}): {reason}"
        )

    @staticmethod
    def _class_of(job: _Job, node: str) -> str | None:
        spec = job.graph.get(node)
        return str(spec.get("class_type")) if isinstance(spec, dict) else None

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        entry = _json(await self._call("GET", f"/history/{prompt_id}")).get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def _queue(self, taken_after: float) -> dict[str, Any]:
        """``/queue`` as it was at some moment after ``taken_after`` (loop time), shared by every
        job of this provider: one read serves all the jobs that ask about the same moment.

        Every ``status`` message (the queue changed) reaches every waiting job's socket; without
        sharing, each of them would read and parse the whole queue each time.
        """
        async with self._queue_lock:
            if self._queue_copy is not None and self._queue_copy[0] >= taken_after:
                return self._queue_copy[1]
            started = asyncio.get_running_loop().time()
            answer = _json(await self._call("GET", "/queue"))
            self._queue_copy = (started, answer)
            return answer

    async def _queue_or_none(self, taken_after: float) -> dict[str, Any] | None:
        """``/queue`` for a progress report, or None when it cannot be read (the job goes on)."""
        try:
            return await self._queue(taken_after)
        except GenerationError as exc:
            log.debug("Could not read the ComfyUI queue for a progress report: %s", exc)
            return None

    async def _upload(self, image: bytes) -> str:
        fmt = sniff_format(image)
        name = f"abby-{uuid.uuid4().hex}.{'jpg' if fmt == 'jpeg' else fmt}"
        response = await self._call(
            "POST",
            "/upload/image",
            files={"image": (name, image, f"image/{fmt}")},
            data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"},
            before_job=True,
        )
        answer = _json(response)
        stored, subfolder = answer.get("name"), answer.get("subfolder") or ""
        if not isinstance(stored, str) or not isinstance(subfolder, str):
            raise GenerationUnavailable("The ComfyUI server gave an unreadable answer to the image upload.")
        return f"{subfolder}/{stored}" if subfolder else stored

    # -- HTTP ------------------------------------------------------------------------------

    def _secrets(self) -> tuple[str, ...]:
        return (self._secret,) if self._secret else ()

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise GenerationUnavailable("The ComfyUI client is closed (the bot is shutting down).")
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._url,
                headers=self._headers,
                timeout=self._http_timeout,
                limits=_LIMITS,
                transport=self._transport,
            )
        return self._client

    async def _call(
        self, method: str, path: str, *, check: bool = True, before_job: bool = False, **kw: Any
    ) -> httpx.Response:
        """One HTTP call, never retried (a second POST /prompt would queue the job twice).

        ``before_job``: no prompt of this job was sent yet (see :meth:`_translated`).
        """
        with self._translated(before_job=before_job):
            response = await self._http().request(method, path, **kw)
        if check:
            self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        if not response.is_success:
            raise self._status_error(response.status_code)

    def _status_error(self, status: int) -> GenerationError:
        """An error answer as an Abby error; 401/403 come from a proxy's auth header, not an API key."""
        if status in (401, 403):
            sent = (
                f"this bot's auth header ({self._auth_name})" if self._secret
                else "an auth header, and this bot sends none (COMFYUI_AUTH_HEADER)"
            )
            return ProviderAuthError(
                f"The ComfyUI server refused the request (HTTP {status}): it asks for {sent}. {OWNER}",
                status=status,
            )
        return error_for_status(status, {}, secrets=self._secrets())

    @contextlib.contextmanager
    def _translated(self, *, before_job: bool = False) -> Iterator[None]:
        """httpx errors as Abby errors. ``before_job``: no prompt was sent yet, so a connection
        that could not be opened means no job exists (ProviderUnreachable)."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if before_job:
                raise self._unreachable() from exc
            if isinstance(exc, httpx.ConnectTimeout):
                raise GenerationTimeout("The ComfyUI server did not answer in time.") from exc
            raise GenerationUnavailable(f"The ComfyUI server at {self._shown_url} could not be reached.") from exc
        except httpx.TimeoutException as exc:
            raise GenerationTimeout("The ComfyUI server did not answer in time.") from exc
        except httpx.LocalProtocolError:
            # Not chained: the request's headers hold the auth value.
            raise GenerationUnavailable(
                "The ComfyUI server could not be called (a malformed request)."
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # The connection broke or the server hung up (killed, restarted): a job may exist.
            raise GenerationUnavailable(f"The ComfyUI server at {self._shown_url} could not be reached.") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise GenerationUnavailable(
                f"The connection to the ComfyUI server failed ({type(exc).__name__})."
            ) from exc

    def _unreachable(self) -> ProviderUnreachable:
        return ProviderUnreachable(
            f"The ComfyUI server at {self._shown_url} is not reachable right now; nothing was used from the quota."
        )

    @contextlib.asynccontextmanager
    async def _connect(self, client_id: str) -> AsyncIterator[ClientConnection | None]:
        """The job's websocket, or None when the server (or a proxy) will not open one.

        A connection that cannot be opened at all is ProviderUnreachable (no job exists yet);
        a refused auth header is the operator's error, as on any call.
        """
        url = self._http().build_request("GET", "/ws", params={"clientId": client_id}).url
        url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
        try:
            socket = await connect(
                str(url),
                additional_headers=self._headers,
                open_timeout=self._http_timeout.connect,
                max_size=_MAX_MESSAGE,
                compression=None,  # previews are JPEG or PNG already
                ping_interval=None,  # the job's /history and /queue checks notice a dead server
                close_timeout=1,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise self._status_error(status) from exc
            log.info("The ComfyUI server opened no websocket (HTTP %s); following jobs by polling", status)
            socket = None
        except (OSError, TimeoutError) as exc:
            raise self._unreachable() from exc
        except WebSocketException as exc:  # not the protocol (a proxy's answer, a bad accept key)
            log.info("The ComfyUI server opened no websocket (%s); following jobs by polling", type(exc).__name__)
            socket = None
        if socket is None:
            yield None
            return
        try:
            yield socket
        finally:
            await socket.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ids(items: Any) -> set[str]:
    """Prompt ids of ``/queue`` items (``[number, prompt_id, prompt, extra, outputs]``)."""
    if not isinstance(items, list):
        return set()
    return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1}


def _place(queue: dict[str, Any], prompt_id: str) -> int | None:
    """Prompts ahead of a pending ``prompt_id`` in a ``/queue`` answer (running, and pending with
    a lower number); None when it is not pending or the numbers are unreadable."""
    pending = queue.get("queue_pending")
    pending = [i for i in pending if isinstance(i, list) and len(i) > 1] if isinstance(pending, list) else []
    numbers = {str(item[1]): item[0] for item in pending}
    ours = numbers.get(prompt_id)
    if isinstance(ours, bool) or not isinstance(ours, int | float):
        return None
    ahead = [n for n in numbers.values() if isinstance(n, int | float) and not isinstance(n, bool) and n < ours]
    return len(_ids(queue.get("queue_running"))) + len(ahead)


def _shown(url: str) -> str:
    """``url`` fit for a message: without user name, password, query or fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0

