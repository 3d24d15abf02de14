"""ComfyUI workflows: the API-format graphs Abby runs, and what they need from a server.

A :class:`Workflow` is checked whenever one is made (from a file, a dict or the
constructor) and raises :class:`~abby_core.errors.ConfigError` naming the file and the
node. :func:`workflow_issues` judges one against a server's ``/object_info`` for
``abby doctor``. Nothing here speaks to the server: :mod:`abby_core.generation.comfyui_http` does.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from abby_core.errors import ConfigError

__all__ = [
    "MODEL_FOLDERS",
    "SLOTS",
    "WORKFLOW_KINDS",
    "Workflow",
    "WorkflowIssue",
    "WorkflowKind",
    "default_workflows",
    "workflow_issues",
]

WorkflowKind = Literal["txt2img", "img2img", "upscale"]
WORKFLOW_KINDS: tuple[WorkflowKind, ...] = ("txt2img", "img2img", "upscale")
# Where a request's values can go; each workflow declares the node input of those it uses.
SLOTS = ("prompt", "negative_prompt", "seed", "width", "height", "strength", "image")
_NEEDS: dict[WorkflowKind, tuple[str, ...]] = {
    "txt2img": ("prompt", "seed"),
    "img2img": ("prompt", "seed", "image"),
    "upscale": ("image",),
}


@dataclass(frozen=True)
class Workflow:
    """An API-format graph and where a request's values go in it.

    ``inputs`` maps a slot of :data:`SLOTS` to ``(node id, input name)``; ``output`` is
    the node whose first image is the result. ``base_size`` is the side of a square
    image; other aspect ratios keep about the same number of pixels (multiples of 64).
    Every way of making one (:meth:`load`, :meth:`from_dict`, the constructor,
    ``dataclasses.replace``) checks the graph and each declared node and input, and
    raises :class:`~abby_core.errors.ConfigError` naming the file and the node.
    """

    name: str
    graph: Mapping[str, Any] = field(repr=False)
    inputs: Mapping[str, tuple[str, str]]
    output: str
    label: str = "ComfyUI"
    base_size: int = 1024

    @classmethod
    def load(cls, path: str | Path) -> Workflow:
        """Read a workflow file (``{label, base_size, inputs, output, graph}``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"ComfyUI workflow {path.name} could not be read: {exc}") from exc
        return cls.from_dict(data, name=path.name)

    @classmethod
    def from_dict(cls, data: Any, *, name: str) -> Workflow:
        """Build from a workflow file's JSON object; ``name`` is used in error messages."""
        if not isinstance(data, dict):
            raise ConfigError(f"ComfyUI workflow {name}: the file must hold a JSON object with 'inputs', "
                              "'output' and 'graph'.")
        declared = data.get("inputs")
        if not isinstance(declared, dict):
            raise ConfigError(f"ComfyUI workflow {name}: 'inputs' must map slots (prompt, seed, ...) "
                              "to [node id, input name].")
        inputs: dict[str, tuple[str, str]] = {}
        for slot, target in declared.items():
            if not (isinstance(target, list) and len(target) == 2 and all(isinstance(t, str) for t in target)):
                raise ConfigError(f"ComfyUI workflow {name}: '{slot}' must be [node id, input name], "
                                  f"not {target!r}.")
            inputs[str(slot)] = (target[0], target[1])
        graph: Any = data.get("graph")
        output: Any = data.get("output")
        return cls(name, graph, inputs, output, data.get("label", "ComfyUI"), data.get("base_size", 1024))

    def __post_init__(self) -> None:
        def bad(problem: str) -> ConfigError:
            return ConfigError(f"ComfyUI workflow {self.name}: {problem}")

        graph = self.graph
        if not isinstance(graph, Mapping) or not graph:
            raise bad("'graph' must be the API-format graph (ComfyUI's 'Save (API Format)').")
        for node_id, node in graph.items():
            if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
                raise bad(f"node '{node_id}' has no class_type.")
            if not isinstance(node.get("inputs"), Mapping):
                raise bad(f"node '{node_id}' ({node['class_type']}) has no inputs object.")
            for input_name, value in node["inputs"].items():
                if isinstance(value, list) and (len(value) != 2 or str(value[0]) not in graph):
                    raise bad(f"node '{node_id}' links its input '{input_name}' to {value!r}, "
                              "which is not a node of the graph.")
        for slot, (node_id, input_name) in self.inputs.items():
            if slot not in SLOTS:
                raise bad(f"unknown input slot '{slot}' (known: {', '.join(SLOTS)}).")
            if node_id not in graph:
                raise bad(f"'{slot}' is declared on node '{node_id}', which is not in the graph.")
            node = graph[node_id]
            if input_name not in node["inputs"]:
                raise bad(f"'{slot}' is declared on node '{node_id}' ({node['class_type']}), "
                          f"which has no input '{input_name}'.")
            if isinstance(node["inputs"][input_name], list):
                raise bad(f"'{slot}' is declared on node '{node_id}' input '{input_name}', which is a link.")
        if ("width" in self.inputs) != ("height" in self.inputs):
            raise bad("declare both 'width' and 'height', or neither.")
        if not isinstance(self.output, str) or self.output not in graph:
            raise bad(f"the output node '{self.output}' is not in the graph.")
        if not isinstance(self.label, str) or not self.label.strip():
            raise bad("'label' must be a non-empty string.")
        size = self.base_size
        if isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 8192:
            raise bad("'base_size' must be a whole number of pixels between 64 and 8192.")
        # Frozen, and the graph is the caller's dict: keep a private copy.
        object.__setattr__(self, "graph", copy.deepcopy(dict(graph)))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "label", self.label.strip())

    def check_kind(self, kind: WorkflowKind) -> None:
        """Raise ConfigError unless the workflow declares what a ``kind`` job needs."""
        missing = [slot for slot in _NEEDS[kind] if slot not in self.inputs]
        if missing:
            raise ConfigError(
                f"ComfyUI workflow {self.name} is used for {kind} but declares no input for {', '.join(missing)}."
            )

    def build(self, values: Mapping[str, object]) -> dict[str, Any]:
        """A copy of the graph with each value written into its declared input (undeclared ones are skipped)."""
        graph = copy.deepcopy(dict(self.graph))
        for slot, value in values.items():
            if slot in self.inputs and value is not None:
                node_id, input_name = self.inputs[slot]
                graph[node_id]["inputs"][input_name] = value
        return graph

    def size(self, aspect_ratio: str) -> tuple[int, int]:
        """Width and height for an ``"w:h"`` aspect ratio, about ``base_size``² pixels, multiples of 64."""
        w, h = (int(part) for part in aspect_ratio.split(":"))
        area = self.base_size * self.base_size
        width = max(64, round(math.sqrt(area * w / h) / 64) * 64)
        height = max(64, round(area / width / 64) * 64)
        return width, height


def default_workflows() -> dict[str, Workflow]:
    """The workflows shipped with Abby (``workflows/{txt2img,img2img,upscale}.json``)."""
    folder = resources.files("abby_core.generation") / "workflows"
    found: dict[str, Workflow] = {}
    for kind in WORKFLOW_KINDS:
        source = folder / f"{kind}.json"
        try:
            found[kind] = Workflow.from_dict(json.loads(source.read_text(encoding="utf-8")), name=source.name)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The bundled ComfyUI workflow {kind}.json could not be read: {exc}") from exc
    return found


# -- what the server has ---------------------------------------------------------------------------

# Where ComfyUI looks for the files a loader's list input names: "Class.input" first, then "input".
MODEL_FOLDERS: dict[str, str] = {
    "ckpt_name": "models/checkpoints",
    "UpscaleModelLoader.model_name": "models/upscale_models",
    "lora_name": "models/loras",
    "vae_name": "models/vae",
    "control_net_name": "models/controlnet",
    "unet_name": "models/diffusion_models",
    "CLIPVisionLoader.clip_name": "models/clip_vision",
    "clip_name": "models/text_encoders",
    "clip_name1": "models/text_encoders",
    "clip_name2": "models/text_encoders",
    "style_model_name": "models/style_models",
}


@dataclass(frozen=True)
class WorkflowIssue:
    """Something a configured workflow uses that the server does not have.

    ``input_name`` is ``None`` when the node class ``class_type`` is not installed. Otherwise
    the loader's list input ``input_name`` names ``value`` (a model file), which is not among
    the server's ``choices``; ``folder`` is where ComfyUI looks for such files, when known.
    """

    kind: WorkflowKind
    workflow: str  # the file name, e.g. txt2img.json
    node_id: str
    class_type: str
    input_name: str | None = None
    value: str | None = None
    choices: tuple[str, ...] = ()
    folder: str | None = None


def _choices(spec: Any, input_name: str) -> list[str] | None:
    """The values an ``/object_info`` node spec allows for a list input, or None if it is no list."""
    declared = spec.get("input") if isinstance(spec, dict) else None
    for group in ("required", "optional"):
        inputs = declared.get(group) if isinstance(declared, dict) else None
        entry = inputs.get(input_name) if isinstance(inputs, dict) else None
        if not isinstance(entry, list) or not entry:
            continue
        options = entry[0]
        if options == "COMBO" and len(entry) > 1 and isinstance(entry[1], dict):  # the newer spelling
            options = entry[1].get("options")
        return [str(o) for o in options] if isinstance(options, list) else None
    return None


def workflow_issues(kind: WorkflowKind, workflow: Workflow, info: Mapping[str, Any]) -> Iterator[WorkflowIssue]:
    """Each node class of ``workflow`` that ``info`` (``/object_info``) lacks, and each loader input
    naming a file the server does not list. Inputs a request fills in are not judged."""
    filled = set(workflow.inputs.values())
    for node_id, node in workflow.graph.items():
        class_type = str(node["class_type"])
        spec = info.get(class_type)
        if not isinstance(spec, dict):
            yield WorkflowIssue(kind, workflow.name, node_id, class_type)
            continue
        if "Loader" not in class_type:
            continue
        for input_name, value in node["inputs"].items():
            if (node_id, input_name) in filled or not isinstance(value, str):
                continue
            choices = _choices(spec, input_name)
            if choices is not None and value not in choices:
                folder = MODEL_FOLDERS.get(f"{class_type}.{input_name}") or MODEL_FOLDERS.get(input_name)
                yield WorkflowIssue(kind, workflow.name, node_id, class_type, input_name, value, tuple(choices), folder)
