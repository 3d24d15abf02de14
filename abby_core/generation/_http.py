"""What every HTTP provider does with its connection pool and its server's answers.

:class:`ClientPool` opens one ``httpx.AsyncClient`` on first use and closes it once;
:func:`json_object` reads an answer's JSON object, :func:`shown_url` makes an address
fit for a message. Nothing here raises a foreign exception.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from abby_core.errors import GenerationUnavailable

__all__ = ["LIMITS", "ClientPool", "json_object", "shown_url"]

# The pool must not serialize concurrent generations (each can take a minute).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30)


class ClientPool:
    """One provider's ``httpx.AsyncClient``: made on first :meth:`get` with ``options``, closed by :meth:`aclose`.

    After :meth:`aclose` (safe to call twice), :meth:`get` raises
    :class:`~abby_core.errors.GenerationUnavailable` with ``closed_message``: the provider
    cannot be used again (the bot is shutting down).
    """

    def __init__(self, closed_message: str, **options: Any) -> None:
        self._closed_message = closed_message
        self._options = options
        self._client: httpx.AsyncClient | None = None
        self.closed = False

    def get(self) -> httpx.AsyncClient:
        if self.closed:
            raise GenerationUnavailable(self._closed_message)
        if self._client is None:
            self._client = httpx.AsyncClient(**self._options)
        return self._client

    async def aclose(self) -> None:
        self.closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}`` when the body is not JSON or not an object."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def shown_url(url: str) -> str:
    """``url`` fit for a message: without user name, password, query or fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
