"""What every page needs: the collaborators handed to :func:`~abby_dashboard.app.create_app`,
the signed-in admin, and rendering a template with the session's CSRF token and flash message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from abby_core.analytics import EventLog
from abby_core.config import DashboardSettings
from abby_core.storage import StorageManager
from abby_dashboard import formats
from abby_dashboard.csrf import FIELD, csrf_token, origin_of
from abby_dashboard.discord_api import DiscordAPI
from abby_dashboard.members import Directory
from abby_dashboard.tokens import TokenGuard

__all__ = ["Admin", "Dashboard", "dashboard", "flash", "render", "require_admin", "signed_in"]

HERE = Path(__file__).resolve().parent


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
    )
    env.filters.update(formats.FILTERS)
    return Jinja2Templates(env=env)


@dataclass
class Dashboard:
    """The app's collaborators, on ``app.state.dashboard``."""

    settings: DashboardSettings
    storage: StorageManager
    events: EventLog
    api: DiscordAPI
    clock: Callable[[], datetime]
    templates: Jinja2Templates = field(default_factory=_templates)
    guard: TokenGuard = field(default_factory=TokenGuard)
    directory: Directory = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Directory(self.api, clock=self.clock)

    @property
    def origin(self) -> str:
        return origin_of(self.settings.public_url)


@dataclass(frozen=True)
class Admin:
    """Who is signed in: ``actor`` is their Discord user id, or ``"token"``."""

    actor: str
    name: str


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def signed_in(request: Request) -> Admin | None:
    actor = request.session.get("actor")
    if not isinstance(actor, str) or not actor:
        return None
    return Admin(actor=actor, name=str(request.session.get("name") or actor))


def require_admin(request: Request) -> Admin:
    """The signed-in admin; a page redirects to ``/login`` without one, anything else is refused (403)."""
    admin = signed_in(request)
    if admin is not None:
        return admin
    if request.method in ("GET", "HEAD") and not request.url.path.endswith("/thumb"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, headers={"Location": f"/login?next={quote(target, safe='')}"})
    raise HTTPException(403, "Sign in to the dashboard first.")


def flash(request: Request, message: str) -> None:
    request.session["flash"] = message


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200, *, forms: bool = True
) -> Response:
    """``template`` with the admin, the CSRF token, the flash message (shown once) and the sign-in methods.

    ``forms=False`` is for a page with no form of its own (an error): the CSRF token is then only
    given to a signed-in admin (for the sign-out button), so a refused request from a visitor with
    no session starts none, and cannot replace the cookie of a session the browser holds.
    """
    dash = dashboard(request)
    admin = signed_in(request)
    values: dict[str, Any] = {
        "admin": admin,
        "csrf_field": FIELD,
        "csrf": csrf_token(request) if forms or admin is not None else "",
        "flash": request.session.pop("flash", None),
        "oauth_enabled": dash.settings.oauth_enabled,
        "token_enabled": dash.settings.token_enabled,
        "path": request.url.path,
    }
    values.update(context or {})
    response = dash.templates.TemplateResponse(request, template, values, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
