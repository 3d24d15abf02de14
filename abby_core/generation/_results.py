"""What every provider does with a result: the seed a request left to chance, and the image
handed back in the format that was asked for."""

from __future__ import annotations

import io
import secrets

from PIL import Image

from abby_core.errors import GenerationUnavailable, InvalidImage
from abby_core.generation.base import GeneratedImage, OutputFormat
from abby_core.generation.params import MAX_SEED
from abby_core.images import probe_image

__all__ = ["generated_image", "random_seed"]


def random_seed() -> int:
    """A fresh random seed from 1 to ``MAX_SEED`` (never 0, which asks for one)."""
    return secrets.randbelow(MAX_SEED) + 1


def generated_image(
    data: bytes,
    *,
    provider: str,
    label: str,
    seed: int,
    request_id: str | None,
    unreadable: str,
    output_format: OutputFormat | None = None,
) -> GeneratedImage:
    """A successful result ``data`` as a :class:`GeneratedImage`.

    With ``output_format``, an image the server encoded otherwise is re-encoded (JPEG at
    quality 90, without alpha): CPU work, so async callers run this in a thread. Without
    it, the image stays as the server sent it. Data that is not a readable image raises
    :class:`~abby_core.errors.GenerationUnavailable` with the message ``unreadable``.
    """
    try:
        fmt, width, height = probe_image(data)
        if output_format is not None and fmt != output_format:
            data, fmt = _encode(data, output_format), output_format
    except (InvalidImage, OSError, ValueError) as exc:
        raise GenerationUnavailable(unreadable) from exc
    return GeneratedImage(
        data=data,
        content_type=f"image/{fmt}",
        seed=seed,
        width=width,
        height=height,
        provider=provider,
        finish_reason="SUCCESS",
        label=label,
        request_id=request_id,
    )


def _encode(data: bytes, fmt: OutputFormat) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        out = img.convert("RGB") if fmt == "jpeg" or img.mode not in ("RGB", "RGBA") else img.copy()
    buf = io.BytesIO()
    out.save(buf, format=fmt.upper(), quality=90)
    return buf.getvalue()
