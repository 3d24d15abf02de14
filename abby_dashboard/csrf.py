"""Cross-site request forgery: one random token per session, checked on every POST.

A POST is accepted only when its form carries the session's token (compared in constant time)
and, when the browser sends an ``Origin`` header, that origin is the dashboard's own
(``DASHBOARD_PUBLIC_URL``). The session cookie is signed, HttpOnly and SameSite=lax, so another
site can neither read the token nor send the cookie with a cross-site POST; the token and the
origin check are the second and third locks.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

__all__ = ["FIELD", "checked_form", "csrf_token", "origin_of"]

FIELD = "csrf_token"
_SESSION_KEY = "csrf"
MAX_FORM_FIELDS = 20


def csrf_token(request: Request) -> str:
    """The session's token, made on first use (the login page makes it for a new visitor)."""
    token = request.session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[_SESSION_KEY] = token
    return token


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, as browsers send it in ``Origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


async def checked_form(request: Request, own_origin: str) -> FormData:
    """The POST's form once its origin and CSRF token are checked; 403 otherwise (nothing is done)."""
    origin = request.headers.get("origin")
    if origin is not None and origin.lower() != own_origin:
        raise HTTPException(403, "This form was sent from another site; open the dashboard at its own address.")
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    sent = form.get(FIELD)
    expected = request.session.get(_SESSION_KEY)
    if (
        not isinstance(sent, str)
        or not isinstance(expected, str)
        or not expected
        or not hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise HTTPException(403, "The form has expired or did not come from this dashboard. Reload the page and "
                                 "try again.")
    return form
