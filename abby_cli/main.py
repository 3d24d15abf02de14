"""The ``abby`` app: settings are built once here, in the callback, and handed to every command.

A bad configuration does not stop ``--help``; each command reports it in its own format
(text, or ``{"ok": false, "error": {"code": "config_error", ...}}`` with ``--json``) and
exits 2. With ``--json`` anywhere on the command line, even a usage error is one JSON object.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from abby_cli.commands import dashboard, register, stats
from abby_cli.errors import describe_error
from abby_cli.output import Output
from abby_cli.runtime import State
from abby_core.config import load_settings
from abby_core.errors import ConfigError

__all__ = ["app"]


def _read_as_flags(params: list[Any]) -> list[Any]:
    """Typer's help shows every boolean flag as ``--json <bool>``, as if it took a value; drop that.

    An empty metavar is only read by help: a flag takes no value to name.
    """
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


def _flags_everywhere(command: Any, ctx: Any) -> None:
    _read_as_flags(command.get_params(ctx))  # includes --help, made on first use
    for sub in getattr(command, "commands", {}).values():
        _flags_everywhere(sub, ctx)


class AbbyGroup(TyperGroup):
    """Turns usage errors into the JSON error object when ``--json`` was asked for.

    It also makes boolean flags read as flags in every command's ``--help``.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _read_as_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _flags_everywhere(command, ctx)
        return command

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        standalone = extra.pop("standalone_mode", True)
        if "--json" not in argv:
            return super().main(argv, prog_name, standalone_mode=standalone, **extra)
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            Output(json_mode=True)._json({"ok": False, "error": describe_error(exc).as_dict()})
            code = describe_error(exc).exit_code
        except typer.Abort:
            code = 1
        if not standalone:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=AbbyGroup,
    name="abby",
    help="Abby: make images for the members of a Discord server, and look after them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could show secrets
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of unexpected errors.")] = False,
) -> None:
    """Settings come from .env in the current folder and the environment (environment wins)."""
    try:
        ctx.obj = State(load_settings(), debug=debug)
    except ConfigError as exc:
        ctx.obj = State(None, config_error=exc, debug=debug)


register(app)
stats.register(app)
dashboard.register(app)
