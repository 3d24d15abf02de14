"""A self-hosted ComfyUI server: :class:`ComfyUIProvider`, the one class that makes images there.

A job is one API-format graph (a :class:`~abby_core.generation.comfyui_workflows.Workflow`)
with the request's values written into the inputs the workflow declares. For one image:

1. open ``/ws?clientId=<new id>``: the server reports the job there (when the socket
   cannot be opened, e.g. a proxy that does not pass websockets, the job is followed
   by polling ``/history`` instead, without step-by-step progress);
2. upload the input picture (``POST /upload/image``) for image-to-image and upscale;
3. ``POST /prompt`` and follow the job to its end (:mod:`~abby_core.generation.comfyui_follow`,
   which also reports its progress);
4. read the output node's first image with ``GET /view``.

The parts live beside this module: the HTTP calls and the websocket, where every httpx,
websockets and socket error becomes an Abby error (:mod:`~abby_core.generation.comfyui_http`);
following a job and withdrawing it (:mod:`~abby_core.generation.comfyui_follow`); what the
server's answers mean (:mod:`~abby_core.generation.comfyui_answers`); the workflows
(:mod:`~abby_core.generation.comfyui_workflows`).

A connection that cannot be opened before ``POST /prompt`` was sent (the websocket, the
upload, the POST's own connect) raises :class:`~abby_core.errors.ProviderUnreachable`:
no job exists, so another provider may take it. From the POST on, it is
:class:`~abby_core.errors.GenerationUnavailable`.

A job nobody waits for any more (the awaiting task was cancelled, or ``timeout``
passed) is deleted from the queue and, if it is already running, interrupted, so the
GPU does not keep working for nobody.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from abby_core.errors import ConfigError, GenerationTimeout, NotConfigured
from abby_core.generation._results import generated_image, random_seed
from abby_core.generation.base import (
    GeneratedImage,
    ImageToImageRequest,
    InputLimits,
    OutputFormat,
    Progress,
    Provider,
    TextToImageRequest,
    UpscaleRequest,
)
from abby_core.generation.comfyui_answers import ServerReport, output_image, server_report
from abby_core.generation.comfyui_follow import Follower, Job
from abby_core.generation.comfyui_http import ComfyUIClient
from abby_core.generation.comfyui_workflows import (
    MODEL_FOLDERS,
    SLOTS,
    WORKFLOW_KINDS,
    Workflow,
    WorkflowIssue,
    WorkflowKind,
    default_workflows,
)

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

_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,4096}")


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
        self._workflows: dict[str, Workflow] = workflows
        self._timeout = timeout
        self._client = ComfyUIClient(
            base_url.rstrip("/"),
            headers={auth_header_name: value} if value else {},
            secret=value,
            auth_name=auth_header_name,
            timeout=httpx.Timeout(request_timeout, connect=min(request_timeout, 10.0)),
            transport=transport,
        )
        self._jobs = Follower(self._client, poll_interval=poll_interval, cleanup_timeout=cleanup_timeout)

    def __repr__(self) -> str:
        return f"ComfyUIProvider(url={self._client.shown_url!r}, workflows={sorted(self._workflows)})"

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
        await self._client.aclose()

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
        stats = await self._client.call_json("GET", "/system_stats", before_job=True)
        info = await self._client.call_json("GET", "/object_info", before_job=True)
        return server_report(stats, info, self._workflows)

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
        job = Job(self._workflow(kind))
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.connect(job.client_id) as socket:
                    if image is not None:
                        values["image"] = await self._client.upload(image)
                    job.graph = job.workflow.build(values)
                    await self._jobs.submit(job)
                    entry = await self._jobs.follow(job, socket)
        except TimeoutError:
            await asyncio.shield(self._jobs.abandon(job))
            raise GenerationTimeout(
                f"The ComfyUI server did not finish the image within {self._timeout:g} seconds."
            ) from None
        except BaseException:
            await asyncio.shield(self._jobs.abandon(job))
            raise
        view = output_image(job.workflow, job.graph, entry, self._client.secrets())
        await job.reports(Progress("finished"))
        data = (await self._client.call("GET", "/view", params=view)).content
        return await asyncio.to_thread(
            generated_image, data, provider=self.name, label=job.workflow.label, seed=seed,
            request_id=job.prompt_id, unreadable="The ComfyUI server sent an unreadable image.",
            output_format=output_format,
        )
