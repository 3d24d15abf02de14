"""Discord's REST API as the dashboard uses it: the OAuth2 sign-in and member look-ups.

::

    api = DiscordAPI(settings.dashboard)         # its own httpx client; tests pass client=...
    access = await api.exchange_code(code)       # POST {api}/oauth2/token
    me, guilds = await api.me(access), await api.my_guilds(access)
    await api.aclose()

The dashboard is the one adapter that reaches the network itself: Discord's OAuth2 is part of
signing in to a web page, not of making images, so it stays out of core. Every httpx error and
every unexpected answer becomes one :class:`DiscordAPIError` (in :meth:`DiscordAPI._request`)
whose message an admin can act on; nothing else leaves this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx

from abby_core.config import DashboardSettings

__all__ = ["OAUTH_SCOPES", "DiscordAPI", "DiscordAPIError", "DiscordUser", "GuildMember", "PartialGuild"]

OAUTH_SCOPES = "identify guilds guilds.members.read"
TIMEOUT_SECONDS = 10.0
USER_AGENT = "DiscordBot (abby-dashboard, 0.2.0)"
Auth = Literal["client", "bearer", "bot"]


class DiscordAPIError(Exception):
    """Discord could not be reached or refused; ``message`` says what to do, ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class DiscordUser:
    """The signed-in user (``GET /users/@me``)."""

    id: str
    username: str
    display_name: str


@dataclass(frozen=True)
class PartialGuild:
    """One server of the signed-in user (``GET /users/@me/guilds``); ``permissions`` is their bit set there."""

    id: str
    owner: bool
    permissions: int


@dataclass(frozen=True)
class GuildMember:
    """A member of the server: the name to show (nickname, display name or user name) and role ids."""

    user_id: str
    username: str
    name: str
    roles: tuple[int, ...]


def _digits(value: object) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ValueError("not a snowflake")
    return text


def _member(data: Any) -> GuildMember:
    """A guild member object (``{"user": {...}, "nick": ..., "roles": [...]}``)."""
    user = data.get("user") if isinstance(data, Mapping) else None
    if not isinstance(user, Mapping):
        raise ValueError("no user")
    username = str(user.get("username") or "")
    name = data.get("nick") or user.get("global_name") or username
    roles = tuple(int(_digits(r)) for r in data.get("roles") or ())
    return GuildMember(user_id=_digits(user.get("id")), username=username, name=str(name), roles=roles)


def _status_message(response: httpx.Response, what: str, auth: Auth) -> str:
    """The one mapping from an HTTP status to what the admin (or operator) should do."""
    status = response.status_code
    if status == 401:
        return {
            "client": "Discord refused the dashboard's application credentials: check DISCORD_CLIENT_ID and "
            "DISCORD_CLIENT_SECRET.",
            "bearer": "Discord no longer accepts this sign-in: sign in again.",
            "bot": "Discord refused the bot token: check DISCORD_TOKEN.",
        }[auth]
    if status == 400 and auth == "client":
        return (
            "Discord refused the sign-in code: it expired or was already used, or the redirect URL is not "
            "registered in the Discord application. Sign in again."
        )
    if status == 403:
        if auth == "bot":
            return f"Discord did not allow the bot to {what}: is the bot a member of the server?"
        return f"Discord did not allow the dashboard to {what}."
    if status == 429:
        wait = response.headers.get("retry-after", "")
        later = f" in {wait[:6]} s" if wait.replace(".", "", 1).isdigit() else " in a minute"
        return f"Discord is limiting requests: try again{later}."
    if status >= 500:
        return f"Discord had a problem (HTTP {status}) when asked to {what}: try again in a moment."
    return f"Discord answered HTTP {status} when asked to {what}."


class DiscordAPI:
    """The calls the dashboard makes, over one ``httpx.AsyncClient`` (made here unless ``client`` is given).

    ``settings.api_url`` is the REST base (``https://discord.com/api/v10``), ``settings.oauth_url``
    where browsers authorize (``https://discord.com``). Close with :meth:`aclose` (a client passed
    in is left open: its owner closes it).
    """

    def __init__(self, settings: DashboardSettings, *, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT_SECONDS, headers={"User-Agent": USER_AGENT})

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    @property
    def has_bot_token(self) -> bool:
        """Whether names can be looked up (``DISCORD_TOKEN`` set)."""
        return self.settings.bot_token is not None

    # -- OAuth2 ------------------------------------------------------------------------------
    def authorize_url(self, state: str) -> str:
        """Where the browser goes to sign in: ``{DISCORD_OAUTH_URL}/oauth2/authorize?...``."""
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id or "",
                "scope": OAUTH_SCOPES,
                "redirect_uri": self.settings.redirect_uri,
                "state": state,
                "prompt": "none",
            },
            quote_via=quote,
        )
        return f"{self.settings.oauth_url}/oauth2/authorize?{query}"

    async def exchange_code(self, code: str) -> str:
        """The access token for an authorization ``code`` (``POST /oauth2/token``, client credentials in Basic auth)."""
        secret = self.settings.client_secret
        data = await self._request(
            "POST", "/oauth2/token", what="finish the sign-in", auth="client",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri},
            basic=(self.settings.client_id or "", secret.get_secret_value() if secret else ""),
        )
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise DiscordAPIError("Discord's answer to the sign-in had no access token: sign in again.")
        return token

    async def me(self, access_token: str) -> DiscordUser:
        data = await self._request("GET", "/users/@me", what="tell who you are", auth="bearer", token=access_token)
        try:
            uid = _digits(data.get("id"))
            username = str(data.get("username") or "")
            return DiscordUser(id=uid, username=username, display_name=str(data.get("global_name") or username))
        except (AttributeError, ValueError) as exc:
            raise DiscordAPIError("Discord's answer about your account could not be read.") from exc

    async def my_guilds(self, access_token: str) -> list[PartialGuild]:
        data = await self._request(
            "GET", "/users/@me/guilds", what="list your servers", auth="bearer", token=access_token
        )
        try:
            return [
                PartialGuild(_digits(g["id"]), owner=bool(g.get("owner")), permissions=int(g.get("permissions") or 0))
                for g in data
            ]
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise DiscordAPIError("Discord's list of your servers could not be read.") from exc

    async def my_member(self, access_token: str, guild_id: int) -> GuildMember | None:
        """Your membership in ``guild_id`` (roles), or None when you are not a member."""
        data = await self._request(
            "GET", f"/users/@me/guilds/{guild_id}/member", what="read your roles in the server", auth="bearer",
            token=access_token, missing_ok=True,
        )
        return None if data is None else self._parse_member(data)

    # -- members (bot token) -----------------------------------------------------------------
    async def search_members(self, query: str, limit: int = 25) -> list[GuildMember]:
        """Members whose user name or nickname starts with ``query`` (``GET /guilds/{id}/members/search``)."""
        data = await self._request(
            "GET", f"/guilds/{self.settings.guild_id}/members/search", what="search the server's members",
            auth="bot", params={"query": query, "limit": str(limit)},
        )
        if not isinstance(data, list):
            raise DiscordAPIError("Discord's member search answer could not be read.")
        return [self._parse_member(item) for item in data]

    async def get_member(self, user_id: str) -> GuildMember | None:
        """One member of the server (``GET /guilds/{id}/members/{user_id}``), or None when not a member."""
        data = await self._request(
            "GET", f"/guilds/{self.settings.guild_id}/members/{_digits(user_id)}", what="look the member up",
            auth="bot", missing_ok=True,
        )
        return None if data is None else self._parse_member(data)

    @staticmethod
    def _parse_member(data: Any) -> GuildMember:
        try:
            return _member(data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise DiscordAPIError("Discord's answer about a member could not be read.") from exc

    # -- the one place httpx is called -------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        auth: Auth,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        headers = {}
        if auth == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif auth == "bot":
            bot = self.settings.bot_token
            if bot is None or self.settings.guild_id is None:
                raise DiscordAPIError("Member names need DISCORD_TOKEN and DISCORD_GUILD_ID.")
            headers["Authorization"] = f"Bot {bot.get_secret_value()}"
        url = f"{self.settings.api_url}{path}"
        try:
            response = await self.client.request(
                method, url, headers=headers, data=data, params=params, auth=httpx.BasicAuth(*basic) if basic else None
            )
        except httpx.TimeoutException as exc:
            raise DiscordAPIError(f"Discord did not answer in time when asked to {what}: try again.") from exc
        except httpx.HTTPError as exc:
            raise DiscordAPIError(
                f"Discord could not be reached to {what} ({type(exc).__name__}): check the network and "
                "DISCORD_API_URL."
            ) from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise DiscordAPIError(_status_message(response, what, auth), status=response.status_code)
        try:
            return response.json()
        except ValueError as exc:
            raise DiscordAPIError(
                f"Discord's answer could not be read when asked to {what}.", status=response.status_code
            ) from exc
