"""The dashboard's ASGI app: routes, signed-cookie sessions, security headers, error pages.

::

    app = create_app(settings.dashboard, storage, events, DiscordAPI(settings.dashboard), clock=storage.clock)
    uvicorn.run(app, host=..., port=...)

Everything is handed in: the app opens nothing and closes nothing (``abby dashboard`` does both).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from abby_core.analytics import EventLog
from abby_core.config import DashboardSettings
from abby_core.storage import StorageManager
from abby_dashboard import actions, auth, pages
from abby_dashboard.context import HERE, Dashboard, render
from abby_dashboard.discord_api import DiscordAPI

__all__ = ["SECURITY_HEADERS", "SESSION_COOKIE", "AccessLogRedaction", "create_app"]

log = logging.getLogger("abby.dashboard")

SESSION_COOKIE = "abby_session"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


class AccessLogRedaction(logging.Filter):
    """Leaves the query string of the sign-in callback out of uvicorn's access log.

    ``/auth/callback?code=…&state=…`` carries Discord's one-time code; a log is no place for it.
    Other routes are logged as they are. Add it to the ``uvicorn.access`` logger.
    """

    HIDDEN = frozenset({"/auth/callback"})

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn logs '%s - "%s %s HTTP/%s" %d' with (client, method, path?query, version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, query = args[2].partition("?")
            if query and path in self.HIDDEN:
                record.args = (*args[:2], path, *args[3:])
        return True


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response (pages, static files, errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


_TITLES = {400: "Check the request", 403: "Not allowed", 404: "Not found", 405: "Not allowed", 429: "Wait a moment",
           503: "Storage unavailable"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if 300 <= exc.status_code < 400:
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = exc.detail if exc.status_code != 404 or exc.detail != "Not Found" else "There is no such page."
    title = _TITLES.get(exc.status_code, "Something went wrong")
    return render(request, "error.html", {"title": title, "message": message}, status=exc.status_code, forms=False)


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("Unexpected error on %s %s", request.method, request.url.path)
    return Response("The dashboard hit an unexpected error; it is in the log.", status_code=500,
                    media_type="text/plain")


def create_app(
    settings: DashboardSettings,
    storage: StorageManager,
    events: EventLog,
    discord_api: DiscordAPI,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    """The dashboard for ``settings`` over the given collaborators.

    Raises :class:`~abby_core.errors.ConfigError` when no sign-in method is configured. Without
    ``DASHBOARD_SECRET_KEY`` a random key signs the cookies: sessions end when the app restarts.
    """
    settings.check_sign_in()
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
    else:
        key = secrets.token_urlsafe(48)
        log.warning("DASHBOARD_SECRET_KEY is not set: a random key signs sessions, so they end when the "
                    "dashboard restarts.")
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=key,
            session_cookie=SESSION_COOKIE,
            max_age=auth.SESSION_SECONDS,
            same_site="lax",
            https_only=settings.secure_cookies,
        ),
    ]
    routes = [
        *auth.routes(),
        *pages.routes(),
        *actions.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _crash},
    )
    app.state.dashboard = Dashboard(settings, storage, events, discord_api, clock or storage.clock)
    return app
