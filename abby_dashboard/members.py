"""Members by id or name: names come from Discord's REST with the bot token, cached for a while.

Without ``DISCORD_TOKEN`` there are no names: members are found by id only, and the pages say so.
A failed look-up never stops a page: it shows ids and the reason names are missing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from abby_dashboard.discord_api import DiscordAPI, DiscordAPIError, GuildMember

__all__ = ["NAME_TTL", "Directory", "Lookup"]

NAME_TTL = timedelta(minutes=10)
MAX_LOOKUPS = 25  # names looked up for one page; the rest show ids
_PARALLEL = 4
_REMEMBERED = 5_000


class Lookup:
    """Members found for a page, and why some names are missing (``problem``)."""

    def __init__(self) -> None:
        self.members: dict[str, GuildMember] = {}
        self.problem: str | None = None

    def name(self, user_id: str) -> str | None:
        found = self.members.get(user_id)
        return found.name if found else None


class Directory:
    """Look members up by id (cached ``NAME_TTL``) and search them by name."""

    def __init__(self, api: DiscordAPI, *, clock: Callable[[], datetime]) -> None:
        self.api = api
        self.clock = clock
        self._cache: OrderedDict[str, tuple[GuildMember | None, datetime]] = OrderedDict()

    @property
    def names_available(self) -> bool:
        return self.api.has_bot_token

    def _cached(self, user_id: str) -> tuple[bool, GuildMember | None]:
        found = self._cache.get(user_id)
        if found is None or found[1] < self.clock():
            return False, None
        return True, found[0]

    def _remember(self, user_id: str, member: GuildMember | None) -> None:
        self._cache[user_id] = (member, self.clock() + NAME_TTL)
        self._cache.move_to_end(user_id)
        while len(self._cache) > _REMEMBERED:
            self._cache.popitem(last=False)

    async def member(self, user_id: str) -> tuple[GuildMember | None, str | None]:
        """The member (None when not in the server or no bot token) and why it could not be looked up."""
        if not self.names_available:
            return None, None
        hit, member = self._cached(user_id)
        if hit:
            return member, None
        try:
            member = await self.api.get_member(user_id)
        except DiscordAPIError as exc:
            return None, exc.message
        self._remember(user_id, member)
        return member, None

    async def names(self, user_ids: Iterable[str]) -> Lookup:
        """The first :data:`MAX_LOOKUPS` of ``user_ids`` looked up, a few at a time."""
        lookup = Lookup()
        if not self.names_available:
            return lookup
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(uid: str) -> None:
            async with gate:
                member, problem = await self.member(uid)
            if member is not None:
                lookup.members[uid] = member
            if problem is not None:
                lookup.problem = problem

        await asyncio.gather(*(one(uid) for uid in list(dict.fromkeys(user_ids))[:MAX_LOOKUPS]))
        return lookup

    async def search(self, query: str, limit: int = 25) -> list[GuildMember]:
        """Members whose name starts with ``query``; :class:`DiscordAPIError` when Discord refuses."""
        found = await self.api.search_members(query, limit)
        for member in found:
            self._remember(member.user_id, member)
        return found
