"""``abby run``: start the Discord bot with the settings built at the entry."""

from __future__ import annotations

import typer

from abby_cli.output import Output
from abby_cli.runtime import JsonFlag, state_of
from abby_core.errors import AbbyError, ConfigError, NotConfigured

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command()
    def run(ctx: typer.Context, json_mode: JsonFlag = False) -> None:
        """Start the bot and keep it running (needs DISCORD_TOKEN). Stop it with Ctrl+C."""
        out = Output(json_mode)
        state = state_of(ctx)
        try:
            if state.settings is None:
                raise state.config_error or ConfigError("Invalid configuration.")
            # Imported here: discord.py is only loaded when the bot actually runs.
            try:
                from abby_discord.bot import run_bot
            except ModuleNotFoundError as exc:
                if not (exc.name or "").startswith(("abby_discord", "discord")):
                    raise
                raise NotConfigured(
                    f"The Discord bot cannot be loaded ({exc.name} is missing): reinstall Abby."
                ) from None

            run_bot(state.settings)
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            if state.debug and not isinstance(exc, AbbyError):
                raise
            out.fail(exc)
        out.success({"stopped": True}, lambda con: con.print("Abby stopped."))
