"""The ``abby`` app: settings are built once here, in the callback, and handed to every command.

A bad configuration does not stop ``--help``; each command reports it in its own format
(text, or ``{"ok": false, "error": {"code": "config_error", ...}}`` with ``--json``) and
exits 2. A usage error is one line ``✘ usage_error: message`` on stderr (exit 2); with
``--json`` anywhere on the command line, it is one JSON object.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError  # typer's own click, which raises it
from typer.core import TyperGroup, TyperOption

from abby_cli import __version__
from abby_cli.commands import dashboard, register, stats
from abby_cli.errors import EXIT_CONFIG, describe_error
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
    """Reports usage errors in the project's format: one line ``✘ usage_error: message`` on
    stderr (exit 2), or the JSON error object when ``--json`` was asked for.

    It also makes boolean flags read as flags in every command's ``--help``.
    """

    json_requested = False  # ``--json`` anywhere on the command line; read by ``--version``

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
        self.json_requested = "--json" in argv
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
        except NoArgsIsHelpError:
            code = EXIT_CONFIG  # typer printed the help as it made this error
        except typer.TyperException as exc:  # typer's click: bad options or arguments
            error = describe_error(exc)
            Output(json_mode=self.json_requested).report(error)
            code = error.exit_code
        except typer.Abort:
            code = 1
        if not standalone:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _show_version(ctx: typer.Context, asked: bool) -> None:
    if not asked or ctx.resilient_parsing:
        return
    out = Output(json_mode=getattr(ctx.command, "json_requested", False))
    out.success({"version": __version__}, lambda con: con.print(f"abby {__version__}"))
    raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
    json_mode: Annotated[bool, typer.Option("--json", hidden=True, help="With --version: print JSON.")] = False,
) -> None:
    """Settings come from .env in the current folder and the environment (environment wins)."""
    try:
        ctx.obj = State(load_settings(), debug=debug)
    except ConfigError as exc:
        ctx.obj = State(None, config_error=exc, debug=debug)


register(app)
stats.register(app)
dashboard.register(app)
