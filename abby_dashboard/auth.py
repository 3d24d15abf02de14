"""Signing in and out: Discord OAuth2 (authorization code) or the shared ``DASHBOARD_TOKEN``.

Discord sign-in, step by step::

    GET /auth/discord    → 303 to {DISCORD_OAUTH_URL}/oauth2/authorize?...&state=S   (S kept in the session)
    GET /auth/callback?code=C&state=S
        POST {DISCORD_API_URL}/oauth2/token                (code → access token, client id/secret in Basic auth)
        GET  {DISCORD_API_URL}/users/@me                   (who)
        GET  {DISCORD_API_URL}/users/@me/guilds            (owner? permissions?)
        GET  {DISCORD_API_URL}/users/@me/guilds/{id}/member (roles, only when needed)

An admin is the server's owner, anyone with Administrator or Manage Server there, or a holder
of one of ``ADMIN_ROLE_IDS`` (the same rule as ``/abby-admin`` in Discord). Admin rights are
checked at sign-in; a session lasts :data:`SESSION_SECONDS`. The access token is used for
those calls only and is not kept.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from abby_dashboard.context import dashboard, redirect, render, signed_in
from abby_dashboard.csrf import checked_form
from abby_dashboard.discord_api import DiscordAPIError, PartialGuild
from abby_dashboard.tokens import tokens_match

__all__ = ["ADMINISTRATOR", "MANAGE_GUILD", "SESSION_SECONDS", "admin_refusal", "routes"]

ADMINISTRATOR = 0x8
MANAGE_GUILD = 0x20
SESSION_SECONDS = 12 * 60 * 60
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


def safe_next(target: object) -> str:
    """A local path to go back to after signing in; anything else (``//host``, ``https:``) gives ``/``."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def admin_refusal(
    guilds: Sequence[PartialGuild], guild_id: int, member_roles: Sequence[int] | None, admin_role_ids: Sequence[int]
) -> str | None:
    """Why this user is not an admin of ``guild_id`` (None: they are).

    ``member_roles`` None means the roles were not looked up (not needed, or not a member).
    """
    guild = next((g for g in guilds if g.id == str(guild_id)), None)
    if guild is None:
        return "You are not a member of the Discord server this dashboard looks after."
    if guild.owner or guild.permissions & (ADMINISTRATOR | MANAGE_GUILD):
        return None
    if member_roles is not None and set(member_roles) & set(admin_role_ids):
        return None
    return (
        "You are a member of the server but lack the Manage Server permission"
        + (" or one of the admin roles (ADMIN_ROLE_IDS)." if admin_role_ids else ".")
    )


def _start_session(request: Request, actor: str, name: str) -> None:
    """A new session for the admin: nothing of the visitor's session survives (no fixation)."""
    back = request.session.get("next")
    request.session.clear()
    request.session.update({"actor": actor, "name": name[:100]})
    request.session["next"] = back


def _finish(request: Request) -> Response:
    return redirect(safe_next(request.session.pop("next", None)))


def _login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
    return render(request, "login.html", {"error": error}, status=status)


async def login(request: Request) -> Response:
    if signed_in(request) is not None:
        return redirect("/")
    if "next" in request.query_params:
        request.session["next"] = safe_next(request.query_params["next"])
    return _login_page(request)


async def login_token(request: Request) -> Response:
    dash = dashboard(request)
    form = await checked_form(request, dash.origin)
    expected = dash.settings.token
    if expected is None:
        return _login_page(request, "Sign-in with a token is not enabled (DASHBOARD_TOKEN is not set).", 403)
    address = request.client.host if request.client else "unknown"
    wait = dash.guard.wait_seconds(address)
    if wait > 0:
        return _login_page(request, f"Too many wrong tokens: wait {wait:.0f} s, then try again.", 429)
    sent = form.get("token")
    if not isinstance(sent, str) or not tokens_match(sent.strip(), expected.get_secret_value()):
        dash.guard.failed(address)
        return _login_page(request, "That token is not right.", 403)
    dash.guard.succeeded(address)
    _start_session(request, "token", "token sign-in")
    return _finish(request)


async def auth_discord(request: Request) -> Response:
    dash = dashboard(request)
    if not dash.settings.oauth_enabled:
        return _login_page(request, "Sign-in with Discord is not configured.", 404)
    state = secrets.token_urlsafe(24)
    request.session["oauth_state"] = state
    return RedirectResponse(dash.api.authorize_url(state), status_code=303)


async def auth_callback(request: Request) -> Response:
    dash = dashboard(request)
    settings = dash.settings
    if not settings.oauth_enabled or settings.guild_id is None:
        return _login_page(request, "Sign-in with Discord is not configured.", 404)
    params = request.query_params
    expected = request.session.pop("oauth_state", None)  # used once, whatever happens next
    error = params.get("error")
    if error == "access_denied":
        return _login_page(request, "Sign-in was cancelled on Discord: nothing was shared.", 400)
    if error:
        shown = error if _ERROR_CODE.fullmatch(error) else "unknown"
        return _login_page(request, f"Discord did not sign you in ({shown}): try again.", 400)
    sent = params.get("state")
    if not isinstance(expected, str) or not sent or not secrets.compare_digest(sent.encode(), expected.encode()):
        return _login_page(request, "This sign-in expired or was started in another browser: sign in again.", 400)
    code = params.get("code")
    if not code or len(code) > 512:
        return _login_page(request, "Discord sent no sign-in code: sign in again.", 400)
    try:
        access = await dash.api.exchange_code(code)
        user = await dash.api.me(access)
        guilds = await dash.api.my_guilds(access)
        roles = None
        # The roles are read only when they decide: a member without Manage Server, and admin roles set.
        in_guild = any(g.id == str(settings.guild_id) for g in guilds)
        if in_guild and settings.admin_role_ids and admin_refusal(guilds, settings.guild_id, None, ()) is not None:
            member = await dash.api.my_member(access, settings.guild_id)
            roles = member.roles if member is not None else None
    except DiscordAPIError as exc:
        return _login_page(request, exc.message, 502)
    refusal = admin_refusal(guilds, settings.guild_id, roles, settings.admin_role_ids)
    if refusal is not None:
        return render(request, "error.html", {"title": "Not an admin", "message": refusal}, status=403)
    _start_session(request, user.id, user.display_name or user.username or user.id)
    return _finish(request)


async def logout(request: Request) -> Response:
    await checked_form(request, dashboard(request).origin)
    request.session.clear()
    return redirect("/login")


def routes() -> list[Route]:
    return [
        Route("/login", login, methods=["GET"]),
        Route("/login", login_token, methods=["POST"]),
        Route("/auth/discord", auth_discord, methods=["GET"]),
        Route("/auth/callback", auth_callback, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
    ]
