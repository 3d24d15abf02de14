"""What the Stable Diffusion web UI API's answers mean: its JSON read into typed values, and its
error answers as Abby errors.

Nothing here speaks to the server. An answer that does not have the expected shape is
:class:`~abby_core.errors.GenerationUnavailable` (:func:`parse`); an error answer goes
through :func:`answer_error` (FastAPI's ``{"detail"}`` or the web UI's
``{"error", "detail", ...}``), whose server text is sanitized (no password, no controls).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from abby_core.errors import (
    AbbyError,
    ConfigError,
    GenerationUnavailable,
    InvalidImage,
    PromptRejected,
    ProviderAuthError,
)
from abby_core.generation._status import OWNER, error_for_status, sanitize
from abby_core.images import probe_image

__all__ = [
    "LISTINGS",
    "UNREADABLE",
    "UNREADABLE_IMAGE",
    "Generated",
    "Info",
    "JobKind",
    "Setting",
    "Snapshot",
    "State",
    "UnknownName",
    "Upscaled",
    "WebUIReport",
    "answer_error",
    "decode",
    "image_size",
    "match",
    "parse",
    "sampler_not_found",
    "size_for",
]

log = logging.getLogger("abby.generation")

JobKind = Literal["text-to-image", "image-to-image", "upscale"]
Setting = Literal["model", "sampler", "upscaler"]
#: The route (below ``/sdapi/v1``) that lists each setting's names.
LISTINGS: dict[Setting, str] = {"model": "sd-models", "sampler": "samplers", "upscaler": "upscalers"}
UNREADABLE = "The image server gave an unreadable answer."
UNREADABLE_IMAGE = "The image server sent an unreadable image."
_T = TypeVar("_T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class State(_Model):
    """``/progress``'s ``state``: which job runs (``job_timestamp``) and how far it is."""

    job_count: int = 0
    job_no: int = 0
    job_timestamp: str = "0"
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False

    @property
    def busy(self) -> bool:
        return self.job_count != 0  # -1 while the model loads


class Snapshot(_Model):
    """One ``/progress`` answer; ``current_image`` is the preview, base64 (when asked for)."""

    progress: float = 0.0
    eta_relative: float = 0.0
    state: State
    current_image: str | None = None


class _Checkpoint(_Model):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str = ""

    def names(self) -> set[str]:
        base = self.title.rsplit(" [", 1)[0]
        file = self.filename.replace("\\", "/").rsplit("/", 1)[-1]
        return {n for n in (self.title, self.model_name, base, file, self.hash, self.sha256) if n}


class _Named(_Model):
    name: str
    aliases: list[str] = []


class Generated(_Model):
    """A ``txt2img``/``img2img`` answer: base64 images and ``info``, a JSON text."""

    images: list[str] | None = None
    info: str = ""


class Info(_Model):
    """What ``info`` says of the image made."""

    seed: int | None = None
    sd_model_name: str | None = None


class Upscaled(_Model):
    """An ``extra-single-image`` answer."""

    image: str | None = None


@dataclass(frozen=True)
class UnknownName:
    """A configured ``setting`` whose name ``wanted`` the web UI does not have; ``available`` are its names."""

    setting: Setting
    wanted: str
    available: tuple[str, ...]


@dataclass(frozen=True)
class WebUIReport:
    """What the web UI's API lists (checkpoint titles, sampler and upscaler names), and the
    configured names it lacks (``abby doctor``). Unset settings (no model, no sampler) are not judged."""

    models: tuple[str, ...]
    samplers: tuple[str, ...]
    upscalers: tuple[str, ...]
    unknown: tuple[UnknownName, ...]


def match(setting: Setting, wanted: str | None, listing: Any) -> tuple[str | None, list[str]]:
    """The server's name for ``wanted`` in a ``/sd-models``, ``/samplers`` or ``/upscalers`` answer
    (None when it is not there, or not asked), and the names the server offers."""
    if setting == "model":
        checkpoints = parse(list[_Checkpoint], listing)
        found = next((c.title for c in checkpoints if wanted and wanted in c.names()), None)
        return found, [c.title for c in checkpoints]
    items = parse(list[_Named], listing)
    # The API does not resolve aliases itself (it falls back to its default).
    lookup = {alias.lower(): i.name for i in items for alias in (i.name, *i.aliases)}
    found = lookup.get(wanted.lower()) if wanted and wanted.lower() != "none" else None
    return found, [i.name for i in items if i.name != "None"]


def parse(kind: type[_T], data: Any) -> _T:
    """``data`` (decoded JSON) as ``kind``; any other shape is GenerationUnavailable."""
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        raise GenerationUnavailable(UNREADABLE) from exc


def decode(b64: str) -> bytes:
    """An image the server sent as base64."""
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GenerationUnavailable(UNREADABLE_IMAGE) from exc


def size_for(aspect_ratio: str, side: int) -> tuple[int, int]:
    """Width and height for ``aspect_ratio`` with about ``side * side`` pixels, in multiples of 64."""
    w, h = (int(part) for part in aspect_ratio.split(":"))
    scale = side / math.sqrt(w * h)
    return max(64, round(w * scale / 64) * 64), max(64, round(h * scale / 64) * 64)


def image_size(data: bytes) -> tuple[int, int]:
    """An input picture's width and height; inputs were checked by ``params``, so this should not fail."""
    try:
        _, width, height = probe_image(data)
    except InvalidImage as exc:
        raise GenerationUnavailable("The image could not be read before sending it.") from exc
    return width, height


def sampler_not_found(status: int, body: dict[str, Any]) -> bool:
    """Whether an error answer says the sampler sent is unknown (a name that was good may go)."""
    return status in (400, 404) and body.get("detail") == "Sampler not found"


def answer_error(
    status: int, body: dict[str, Any], *, shown_url: str, sampler: str | None, secrets: Iterable[str]
) -> AbbyError:
    """An error answer (``body``: its JSON object, ``{}`` without one) as the Abby error to raise."""
    secrets = tuple(secrets)
    detail = body.get("detail")
    if status == 401:
        return ProviderAuthError(
            f"The image server refused this bot's user name and password. {OWNER}", status=401
        )
    if status == 404 and detail == "Not Found":
        return ConfigError(f"{shown_url} does not answer as a web UI API (is its API enabled?).")
    if sampler_not_found(status, body):
        return ConfigError(f"The image server has no sampler {sampler!r}.")
    if status == 422 and isinstance(detail, list):
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg', '')}"
            for e in detail[:3] if isinstance(e, dict)
        ]
        detail = sanitize("; ".join(problems), secrets=secrets)
        return PromptRejected(f"The image server refused the request ({detail}).", status=422, detail=detail)
    error = body.get("error")
    name = error if isinstance(error, str) else ""
    text = next((v for v in (detail, body.get("errors"), body.get("message")) if isinstance(v, str) and v), "")
    if name or text:
        log.warning("The image server answered %s: %s %s", status, sanitize(name, secrets=secrets),
                    sanitize(text, secrets=secrets))
    if name == "OutOfMemoryError":
        return GenerationUnavailable(
            "The image server ran out of GPU memory (a smaller image needs less)."
        )
    return error_for_status(status, {"errors": [text]} if text else {}, secrets=secrets)
