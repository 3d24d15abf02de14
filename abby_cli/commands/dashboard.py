"""``abby dashboard``: serve the web dashboard with uvicorn until stopped.

Storage, the event log and the Discord client are opened once here, handed to the app, and
closed when the server stops. With ``--json`` the startup line (printed once the socket
listens) is the command's one JSON object; stopping it prints nothing more.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Annotated

import typer

from abby_cli.output import Output
from abby_cli.runtime import JsonFlag, open_storage, run_command
from abby_core.config import DashboardSettings, Settings
from abby_core.errors import NotConfigured
from abby_core.pipeline import event_log

__all__ = ["register"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _section(settings: Settings, host: str | None, port: int | None) -> DashboardSettings:
    """The dashboard's settings with ``--host``/``--port`` applied (the default public URL follows them)."""
    section = settings.dashboard
    if host is None and port is None:
        return section
    host = host if host is not None else section.host
    port = port if port is not None else section.port
    return section.model_copy(update={"host": host, "port": port})


class PortInUse(NotConfigured):
    """The dashboard cannot listen: something else uses ``host``:``port``."""

    code = "port_in_use"

    def __init__(self, message: str, *, host: str, port: int) -> None:
        super().__init__(message, setting="DASHBOARD_PORT")
        self.host, self.port = host, port


def _listen(host: str, port: int) -> socket.socket:
    """The dashboard's socket, bound here and handed to uvicorn: a taken port is one clear error,
    found by the bind itself (uvicorn would log the OS error and exit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog: the startup line is true once printed
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} is in use on {host}: stop what uses it, or choose another port with --port "
                "or DASHBOARD_PORT.",
                host=host, port=port,
            ) from None
        raise NotConfigured(
            f"The dashboard cannot listen on {host}:{port} ({exc.strerror or exc}): check DASHBOARD_HOST "
            "(or --host) and DASHBOARD_PORT (or --port).",
            setting="DASHBOARD_HOST",
        ) from None
    return sock


def _methods(section: DashboardSettings) -> list[str]:
    return [name for name, on in (("discord", section.oauth_enabled), ("token", section.token_enabled)) if on]


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard(
        ctx: typer.Context,
        host: Annotated[
            str | None, typer.Option("--host", show_default=False, help="Listen on this address (DASHBOARD_HOST).")
        ] = None,
        port: Annotated[
            int | None,
            typer.Option("--port", min=1, max=65535, show_default=False, help="Listen on this port (DASHBOARD_PORT)."),
        ] = None,
        json_mode: JsonFlag = False,
    ) -> None:
        """Serve the web dashboard (charts, members, storage) until stopped with Ctrl+C.

        With --json, the line saying where it listens is one JSON object, printed once it listens.
        """
        if host is not None and not host.strip():
            raise typer.BadParameter("give an address such as 127.0.0.1 or 0.0.0.0.", ctx=ctx, param_hint="'--host'")

        async def body(settings: Settings, out: Output) -> None:
            section = _section(settings, host, port)
            section.check_sign_in()
            if not logging.getLogger().handlers:
                logging.basicConfig(level=settings.discord.log_level, format=LOG_FORMAT)
            methods = _methods(section)
            with _listen(section.host, section.port) as listening:
                await _serve(settings, section, methods, listening, out)

        run_command(ctx, json_mode, body)


async def _serve(
    settings: Settings, section: DashboardSettings, methods: list[str], listening: socket.socket, out: Output
) -> None:
    """Open storage and the Discord client, serve the app on ``listening`` until stopped, close them."""
    # Imported here: the web stack is only loaded when the dashboard actually runs.
    import uvicorn

    from abby_dashboard import AccessLogRedaction, DiscordAPI, create_app

    async with open_storage(settings) as storage:
        events = event_log(storage, settings.analytics)
        api = DiscordAPI(section)
        try:
            web = create_app(section, storage, events, api, clock=storage.clock)
            config = uvicorn.Config(
                web, host=section.host, port=section.port, log_level=settings.discord.log_level.lower(),
                server_header=False,
            )
            access = logging.getLogger("uvicorn.access")
            if not any(isinstance(f, AccessLogRedaction) for f in access.filters):
                access.addFilter(AccessLogRedaction())
            out.success(
                {"url": section.public_url, "listening": f"{section.host}:{section.port}", "sign_in": methods},
                lambda con: con.print(
                    f"Abby dashboard at {section.public_url} (listening on {section.host}:{section.port}); "
                    f"sign-in: {' and '.join('Discord' if m == 'discord' else 'token' for m in methods)}. "
                    "Stop it with Ctrl+C."
                ),
            )
            try:
                await uvicorn.Server(config).serve(sockets=[listening])
            except SystemExit:  # uvicorn exits when it cannot start (it logged why)
                raise NotConfigured(
                    "The dashboard could not start; the reason is logged above.", setting="DASHBOARD_HOST"
                ) from None
        finally:
            await api.aclose()
