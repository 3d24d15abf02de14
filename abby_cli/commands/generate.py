"""``abby imagine``, ``abby img2img`` and ``abby upscale``: the whole pipeline for one user.

Each goes through :meth:`~abby_core.admission.Admission.generate`, as the bot's commands do:
a user with a generation running (here, in the bot or in another ``abby``) is refused, the
precheck refuses what it can before anything is held, and the queue is waited on. Quota is
held before the provider is called and committed when the image is stored, by
:class:`~abby_core.pipeline.ImageService`; the CLI only reads files and renders.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from abby_cli.output import OK, Output, escape, human_bytes, quota_line
from abby_cli.runtime import JsonFlag, UserArg, UserOpt, open_service, pick_user, run_command
from abby_core.admission import Admission
from abby_core.analytics import EventKind
from abby_core.config import Settings
from abby_core.errors import AbbyError, InvalidImage, InvalidInput
from abby_core.generation import ASPECT_RATIOS, ProgressCallback, validate_text_to_image
from abby_core.generation.params import ImagineOptions
from abby_core.images import MAX_IMAGE_BYTES
from abby_core.pipeline import GenerationResult, ImageService

__all__ = ["register"]


class Provider(StrEnum):
    offline = "offline"
    stability = "stability"
    comfyui = "comfyui"
    automatic1111 = "automatic1111"


class UpscaleMode(StrEnum):
    fast = "fast"
    conservative = "conservative"
    creative = "creative"


ProviderOpt = Annotated[Provider | None, typer.Option("--provider", help="Override IMAGE_PROVIDER for this command.")]
Negative = Annotated[str | None, typer.Option("--negative", help="What to keep out of the image.")]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Repeat an image; 0 picks a random one (it is reported).")]
OutFile = Annotated[Path | None, typer.Option("--out", help="Also write a copy of the image here.")]
ImageFile = Annotated[Path, typer.Argument(metavar="IMAGE", help="An image file: PNG, JPEG or WebP.")]


def _refuse_large(path: Path, limit: int, size: int | None = None) -> NoReturn:
    found = f" ({size / 1_048_576:.1f} MiB)" if size is not None else ""
    raise InvalidImage(f"The image file {path} is too large{found}: the limit is {limit / 1_048_576:g} MiB.")


def read_image(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an input image file, or :class:`InvalidImage` saying why not.

    Never reads more than ``limit + 1`` bytes: a regular file over the limit is refused
    by its size before reading, and a device or pipe (``/dev/zero``) once it passes it.
    """
    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                _refuse_large(path, limit, info.st_size)
            data = file.read(limit + 1)
    except IsADirectoryError:
        raise InvalidImage(f"{path} is a folder, not an image file.") from None
    except FileNotFoundError:
        raise InvalidImage(f"The image file {path} does not exist.") from None
    except OSError as exc:
        raise InvalidImage(f"The image file {path} cannot be read ({exc.strerror or 'unreadable'}).") from None
    if len(data) > limit:
        _refuse_large(path, limit)
    return data


def check_out(path: Path | None) -> None:
    """Refuse an ``--out`` whose folder does not exist before anything is generated or charged."""
    if path is not None and not path.parent.is_dir():
        raise InvalidInput(f"Cannot write a copy to {path}: the folder {path.parent} does not exist.")


def result_payload(result: GenerationResult) -> dict[str, Any]:
    stored = result.stored
    payload: dict[str, Any] = {
        "kind": result.kind,
        "user_id": stored.user_id,
        "key": stored.key,
        "size": stored.size,
        "content_type": stored.content_type,
        "created_at": stored.created_at.isoformat(),
        "seed": result.image.seed,
        "provider": result.image.provider,
        "width": result.image.width,
        "height": result.image.height,
    }
    payload.update({"url": stored.url} if stored.url else {"path": stored.path})
    payload["quota"] = result.status.as_dict()
    return payload


async def _finish(service: ImageService, out: Output, result: GenerationResult, copy_to: Path | None) -> None:
    payload = result_payload(result)
    copy_error: str | None = None
    if copy_to is not None:
        # The image is stored and charged by now: a failed copy is reported beside the
        # success (``out_error``), never as a failure that a script would retry and pay for.
        try:
            copy_to.write_bytes(await service.storage.get_image(result.stored.user_id, result.stored.key))
            payload["out"] = str(copy_to)
        except OSError as exc:
            copy_error = f"a copy could not be written to {copy_to} ({exc.strerror or 'write failed'})"
        except AbbyError as exc:
            copy_error = f"a copy could not be written to {copy_to} ({exc.message})"
        if copy_error is not None:
            payload["out_error"] = copy_error

    def render(con: Console) -> None:
        stored = result.stored
        size = human_bytes(stored.size)
        con.print(f"{OK} Saved [bold]{escape(stored.name)}[/bold] ({size}, seed {result.image.seed})")
        con.print(f"  {'url' if stored.url else 'path'}: {escape(stored.link or '')}")
        if copy_error is not None:
            con.print(f"  [yellow]copy: {escape(copy_error)}[/yellow]")
        elif copy_to is not None:
            con.print(f"  copy: {escape(str(copy_to))}")
        con.print(f"  quota: {escape(quota_line(result.status))}")

    out.success(payload, render)


Call = Callable[[ImageService, bytes, ProgressCallback | None], Awaitable[GenerationResult]]


def _generate(
    ctx: typer.Context,
    json_mode: bool,
    *,
    provider: Provider | None,
    out_file: Path | None,
    label: str,
    call: Call,
    user: str,
    kind: EventKind,
    prompt: str | None,
    image: Path | None = None,
    check: Callable[[], object] | None = None,
) -> None:
    """What imagine, img2img and upscale share: check, open the service, generate, report.

    ``check()`` (the options) runs and ``image`` is read (and refused if unusable) before
    anything is opened or charged, so bad input is named before any quota refusal.
    """

    async def body(settings: Settings, out: Output) -> None:
        check_out(out_file)
        if check is not None:
            check()
        data = read_image(image) if image is not None else b""
        async with open_service(settings, provider.value if provider else None) as service:
            admission = Admission.from_settings(settings, service)

            async def queued(place: int) -> None:
                out.note(f"Queued: position {place}; it starts when a generation slot is free.")

            with out.progress(label) as progress:
                result = await admission.generate(
                    user, lambda: call(service, data, progress), prompt=prompt, kind=kind, on_position=queued
                )
            await _finish(service, out, result, out_file)

    run_command(ctx, json_mode, body)


def register(app: typer.Typer) -> None:
    @app.command()
    def imagine(
        ctx: typer.Context,
        prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to draw.")],
        user_arg: UserArg = None,
        user_opt: UserOpt = None,
        provider: ProviderOpt = None,
        negative: Negative = None,
        seed: Seed = 0,
        aspect_ratio: Annotated[str, typer.Option("--aspect-ratio", help=", ".join(ASPECT_RATIOS))] = "1:1",
        style: Annotated[str | None, typer.Option("--style", help="A style preset, e.g. photographic.")] = None,
        out_file: OutFile = None,
        json_mode: JsonFlag = False,
    ) -> None:
        """Make an image from PROMPT for USER (quota reserve → generate → store → commit)."""
        user = pick_user(ctx, user_arg, user_opt)
        options = ImagineOptions(negative_prompt=negative, aspect_ratio=aspect_ratio, seed=seed, style_preset=style)

        _generate(
            ctx, json_mode, provider=provider, out_file=out_file, label="Generating…", user=user, kind="imagine",
            prompt=prompt, check=lambda: validate_text_to_image(prompt, **options),
            call=lambda service, _, progress: service.imagine(user, prompt, progress=progress, **options),
        )

    @app.command()
    def img2img(
        ctx: typer.Context,
        image: ImageFile,
        prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="What to make of it.")],
        user_arg: UserArg = None,
        user_opt: UserOpt = None,
        strength: Annotated[float, typer.Option("--strength", help="0 keeps the image, 1 ignores it.")] = 0.6,
        provider: ProviderOpt = None,
        negative: Negative = None,
        seed: Seed = 0,
        out_file: OutFile = None,
        json_mode: JsonFlag = False,
    ) -> None:
        """Make a new image from IMAGE and PROMPT for USER."""
        user = pick_user(ctx, user_arg, user_opt)

        _generate(
            ctx, json_mode, provider=provider, out_file=out_file, label="Generating…", image=image, user=user,
            kind="img2img", prompt=prompt, call=lambda service, data, progress: service.img2img(
                user, data, prompt, strength=strength, negative_prompt=negative, seed=seed, progress=progress
            ),
        )

    @app.command()
    def upscale(
        ctx: typer.Context,
        image: ImageFile,
        user_arg: UserArg = None,
        user_opt: UserOpt = None,
        mode: Annotated[
            UpscaleMode,
            typer.Option("--mode", help="fast (4x); conservative or creative (they need --prompt)"),
        ] = UpscaleMode.fast,
        prompt: Annotated[
            str | None, typer.Option("--prompt", help="What the image shows (needed by conservative and creative).")
        ] = None,
        provider: ProviderOpt = None,
        out_file: OutFile = None,
        json_mode: JsonFlag = False,
    ) -> None:
        """Make a larger copy of IMAGE for USER."""
        user = pick_user(ctx, user_arg, user_opt)

        _generate(
            ctx, json_mode, provider=provider, out_file=out_file, label="Upscaling…", image=image, user=user,
            kind="upscale", prompt=prompt, call=lambda service, data, progress: service.upscale(
                user, data, mode=mode.value, prompt=prompt, progress=progress
            ),
        )
