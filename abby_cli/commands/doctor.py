"""``abby doctor``: check the installation and say, one line each, what to fix."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from abby_cli.errors import EXIT_CONFIG, EXIT_USER
from abby_cli.output import FAIL, OK, Output, escape
from abby_cli.runtime import JsonFlag, open_generator, open_storage, state_of
from abby_core.config import Settings, describe_settings
from abby_core.doctor import Check, config_failed, run_checks
from abby_core.errors import ConfigError

__all__ = ["register"]

_MARK = {"ok": OK, "fail": FAIL, "skip": "[dim]·[/dim]"}
# Shown as set/unset only: secrets, and identifiers that belong with them.
_HIDDEN = {"S3_ACCESS_KEY_ID"}
# Credentials inside a URL that a check mentions (an endpoint written as http://user:pw@host).
_URL_CREDENTIALS = re.compile(r"(?i)\b(https?://)[^\s/?#@]*@")


def _without_credentials(check: Check) -> Check:
    def clean(text: str) -> str:
        return _URL_CREDENTIALS.sub(r"\1***@", text)

    return dataclasses.replace(check, detail=clean(check.detail), fix=clean(check.fix) if check.fix else None)


def shown_settings(settings: Settings) -> dict[str, Any]:
    """The settings as ``abby doctor --settings`` prints them; secrets are never shown."""
    shown = describe_settings(settings)
    for name in _HIDDEN:
        if shown.get(name) is not None:
            shown[name] = "********"
    return shown


async def _checks(settings: Settings) -> list[Check]:
    async with open_storage(settings) as storage, open_generator(settings) as generator:
        return await run_checks(settings, storage, generator)


def _render(con: Console, checks: list[Check], settings: dict[str, Any] | None) -> None:
    for check in checks:
        line = f"{_MARK[check.status]} [bold]{escape(check.title)}[/bold]: {escape(check.detail)}"
        if check.status == "skip":
            line = f"{_MARK['skip']} [dim]{escape(check.title)}: {escape(check.detail)}[/dim]"
        con.print(line)
        if check.status == "fail" and check.fix:
            con.print(f"    [yellow]fix:[/yellow] {escape(check.fix)}")
    failed = sum(c.status == "fail" for c in checks)
    con.print("")
    con.print(f"[red]{failed} check(s) failed.[/red]" if failed else "[green]All checks passed.[/green]")
    if settings is not None:
        table = Table("Variable", "Value", title="Settings (secrets hidden)")
        for name, value in settings.items():
            table.add_row(name, escape("" if value is None else str(value)))
        con.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        ctx: typer.Context,
        show_settings: Annotated[bool, typer.Option("--settings", help="Also print the settings (no secrets)")] = False,
        json_mode: JsonFlag = False,
    ) -> None:
        """Check the configuration, storage, image provider (key or GPU server) and bot token; explain each fix."""
        import asyncio

        out = Output(json_mode)
        state = state_of(ctx)
        settings = state.settings
        try:
            if settings is None:
                checks = config_failed(state.config_error or ConfigError("Invalid configuration."))
            else:
                checks = asyncio.run(_checks(settings))
            checks = [_without_credentials(c) for c in checks]
        except KeyboardInterrupt:  # reported as run_command reports it (exit 130)
            out.interrupted()
            raise typer.Exit(130) from None
        except Exception as exc:  # run_checks reports failures as checks; this is a bug
            if state.debug:
                raise
            out.fail(exc)
        shown = shown_settings(settings) if settings is not None and show_settings else None
        payload: dict[str, Any] = {"checks": [c.as_dict() for c in checks]}
        if shown is not None:
            payload["settings"] = shown
        failed = [c for c in checks if c.status == "fail"]
        if not failed:
            out.success(payload, lambda con: _render(con, checks, shown))
            return
        if json_mode:
            code = "config_error" if settings is None else "checks_failed"
            message = "; ".join(f"{c.title}: {c.detail}" for c in failed)
            out._json({"ok": False, **payload, "error": {"code": code, "message": message}})
        else:
            _render(out.out, checks, shown)
        raise typer.Exit(EXIT_CONFIG if settings is None else EXIT_USER)
