"""What a ComfyUI server's answers mean: errors, results, queue places and server reports.

Pure functions over the JSON the server sent (``/prompt``'s refusal with its
``node_errors``, a history entry, websocket ``execution_error`` data, ``/queue``,
``/system_stats`` and ``/object_info``); nothing here speaks to the server. A refusal or a
failure becomes an :mod:`abby_core.errors` class naming the workflow and the node, with the
server's text sanitized (no auth value, no control characters).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from abby_core.errors import GenerationError, GenerationUnavailable, ProviderRejected
from abby_core.generation._status import sanitize
from abby_core.generation.comfyui_workflows import WORKFLOW_KINDS, Workflow, WorkflowIssue, workflow_issues

__all__ = ["ServerReport", "failure", "ids", "output_image", "place", "refusal", "server_report", "step_count"]

log = logging.getLogger("abby.generation.comfyui")


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


def server_report(stats: dict[str, Any], info: dict[str, Any], workflows: Mapping[str, Workflow]) -> ServerReport:
    """Judge ``workflows`` by the server's ``/system_stats`` and ``/object_info`` answers."""
    if not info:
        raise GenerationUnavailable("The ComfyUI server gave an unreadable answer to /object_info.")
    system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
    devices = stats.get("devices") if isinstance(stats.get("devices"), list) else []
    first = devices[0] if devices and isinstance(devices[0], dict) else {}
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    vram = first.get("vram_total")
    kinds = tuple(kind for kind in WORKFLOW_KINDS if kind in workflows)
    return ServerReport(
        version=str(version) if version else None,
        device=str(first["name"]) if first.get("name") else None,
        vram_total=vram if isinstance(vram, int) and not isinstance(vram, bool) and vram > 0 else None,
        workflows=kinds,
        issues=tuple(issue for kind in kinds for issue in workflow_issues(kind, workflows[kind], info)),
        on_cpu=first.get("type") == "cpu",
    )


def refusal(workflow: Workflow, answer: dict[str, Any], secrets: Iterable[str]) -> ProviderRejected:
    """The error for a graph the server would not run, naming the failing nodes."""
    secrets = tuple(secrets)
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
    detail = sanitize("; ".join(problems) or "no reason given", secrets=secrets, limit=400)
    log.warning("The ComfyUI server refused workflow %s: %s", workflow.name,
                sanitize(json.dumps(answer), secrets=secrets, limit=4000))
    return ProviderRejected(
        f"The ComfyUI server refused workflow {workflow.name}: {detail}", status=400, request_id=None
    )


def failure(
    workflow: Workflow, graph: dict[str, Any], kind: str, data: dict[str, Any], secrets: Iterable[str]
) -> GenerationError:
    """The error for an ``execution_error`` or ``execution_interrupted`` message (or history entry)."""
    node = str(data.get("node_id", "?"))
    spec = graph.get(node)
    node_type = data.get("node_type") or (str(spec.get("class_type")) if isinstance(spec, dict) else None) or "?"
    if kind == "execution_interrupted":
        return GenerationUnavailable(
            f"The job was interrupted on the ComfyUI server at node {node} ({node_type})."
        )
    reason = sanitize(f"{data.get('exception_type', 'error')}: {data.get('exception_message', '')}",
                      secrets=secrets)
    return GenerationError(
        f"ComfyUI workflow {workflow.name} failed at node {node} ({node_type}): {reason}"
    )


def output_image(
    workflow: Workflow, graph: dict[str, Any], entry: dict[str, Any], secrets: Iterable[str]
) -> dict[str, str]:
    """The ``GET /view`` parameters of the output node's first image in a finished job's history entry.

    A job the server reports failed raises its failure; one whose output node made no image
    raises :class:`~abby_core.errors.GenerationError`.
    """
    status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
    if isinstance(status, dict) and status.get("status_str") == "error":
        for message in status.get("messages") or []:
            if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict) \
                    and message[0] in ("execution_error", "execution_interrupted"):
                raise failure(workflow, graph, message[0], message[1], secrets)
        raise GenerationError(f"The ComfyUI server reported that workflow {workflow.name} failed.")
    outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
    node_output = outputs.get(workflow.output) if isinstance(outputs, dict) else None
    images = node_output.get("images") if isinstance(node_output, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], dict) \
            or "filename" not in images[0]:
        raise GenerationError(
            f"ComfyUI workflow {workflow.name} finished, but its output node "
            f"'{workflow.output}' produced no image."
        )
    first = images[0]
    return {"filename": str(first["filename"]), "subfolder": str(first.get("subfolder", "")),
            "type": str(first.get("type", "output"))}


def ids(items: Any) -> set[str]:
    """Prompt ids of ``/queue`` items (``[number, prompt_id, prompt, extra, outputs]``)."""
    if not isinstance(items, list):
        return set()
    return {str(item[1]) for item in items if isinstance(item, list) and len(item) > 1}


def place(queue: dict[str, Any], prompt_id: str) -> int | None:
    """Prompts ahead of a pending ``prompt_id`` in a ``/queue`` answer (running, and pending with
    a lower number); None when it is not pending or the numbers are unreadable."""
    pending = queue.get("queue_pending")
    pending = [i for i in pending if isinstance(i, list) and len(i) > 1] if isinstance(pending, list) else []
    numbers = {str(item[1]): item[0] for item in pending}
    ours = numbers.get(prompt_id)
    if isinstance(ours, bool) or not isinstance(ours, int | float):
        return None
    ahead = [n for n in numbers.values() if isinstance(n, int | float) and not isinstance(n, bool) and n < ours]
    return len(ids(queue.get("queue_running"))) + len(ahead)


def step_count(value: Any) -> int:
    """A ``progress`` message's ``value`` or ``max``; 0 when unreadable."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
