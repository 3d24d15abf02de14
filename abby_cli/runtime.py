"""What every command shares: the settings built once at the entry, and resources opened
for one command and closed at its end.

A command body is a coroutine ``body(settings, out)``; :func:`run_command` runs it with
``asyncio.run`` and turns any exception into the command's error output.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from abby_cli.output import Output
from abby_core.config import Settings
from abby_core.errors import AbbyError, ConfigError
from abby_core.generation import ImageGenerator
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager

__all__ = [
    "JsonFlag",
    "State",
    "UserArg",
    "UserOpt",
    "UserThenKeyArg",
    "open_generator",
    "open_service",
    "open_storage",
    "pick_user",
    "pick_user_and_key",
    "run_command",
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of text.")]
# Every command that takes a user id takes it either way: ``abby quota ID`` or ``abby quota --user ID``.
UserArg = Annotated[
    str | None,
    typer.Argument(metavar="USER", show_default=False, help="The Discord user id (digits), or give it with --user."),
]
# ``USER KEY``, or ``--user USER KEY``: then the first argument is the key (see pick_user_and_key).
UserThenKeyArg = Annotated[
    str | None,
    typer.Argument(
        metavar="USER", show_default=False, help="The Discord user id (digits); leave it out when --user is given."
    ),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user", "-u", show_default=False, help="The Discord user id (digits), instead of USER."),
]

Body = Callable[[Settings, Output], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class State:
    """Built by the app's callback: the settings, or why they could not be loaded."""

    settings: Settings | None
    config_error: ConfigError | None = None
    debug: bool = False


def pick_user(ctx: typer.Context, argument: str | None, option: str | None) -> str:
    """The user id given as the USER argument or with ``--user``; a usage error for none or two different."""
    if argument is not None and option is not None and argument != option:
        raise typer.BadParameter(
            f"two different user ids were given ({argument!r} and --user {option!r}); give one.",
            ctx=ctx,
            param_hint="USER / --user",
        )
    user = option if option is not None else argument
    if user is None:
        raise typer.BadParameter(
            "a user id is needed: give it as the USER argument or with --user ID.", ctx=ctx, param_hint="USER / --user"
        )
    return user


def pick_user_and_key(
    ctx: typer.Context, first: str | None, second: str | None, option: str | None, *, usage: str
) -> tuple[str, str]:
    """The user id and key of ``USER KEY`` or ``--user USER KEY`` (``usage`` shows both forms)."""
    # With --user, the one argument is the key; without it, the user id comes first.
    key = second if second is not None or option is None else first
    if key is None:
        raise typer.BadParameter(f"an image key is needed: {usage}.", ctx=ctx, param_hint="KEY")
    return pick_user(ctx, first if second is not None else None, option), key


def state_of(ctx: typer.Context) -> State:
    state = ctx.find_root().obj
    if not isinstance(state, State):  # a command invoked without the app's callback
        raise RuntimeError("the abby callback did not run")
    return state


def run_command(ctx: typer.Context, json_mode: bool, body: Body) -> None:
    """Run ``body`` with the settings; report any failure and exit with its code."""
    out = Output(json_mode)
    state = state_of(ctx)
    try:
        if state.settings is None:
            raise state.config_error or ConfigError("Invalid configuration.")
        asyncio.run(body(state.settings, out))
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        # A failed generation is released on the way out, so an interruption costs nothing.
        out.interrupted()
        raise typer.Exit(130) from None
    except Exception as exc:
        if state.debug and not isinstance(exc, AbbyError):
            raise
        out.fail(exc)


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[StorageManager]:
    storage = StorageManager.from_settings(settings)
    try:
        yield storage
    finally:
        await storage.aclose()


@contextlib.asynccontextmanager
async def open_generator(settings: Settings, provider: str | None = None) -> AsyncIterator[ImageGenerator]:
    """The generator for ``IMAGE_PROVIDER``, or for ``provider`` when the command overrides it."""
    api = settings.api if provider is None else settings.api.model_copy(update={"provider": provider})
    generator = ImageGenerator.from_settings(api)
    try:
        yield generator
    finally:
        await generator.aclose()


@contextlib.asynccontextmanager
async def open_service(settings: Settings, provider: str | None = None) -> AsyncIterator[ImageService]:
    async with open_storage(settings) as storage, open_generator(settings, provider) as generator:
        service = ImageService.from_settings(settings, storage, generator)
        try:
            yield service
        finally:
            await service.flush_events()  # a one-shot command still records what it did
