"""The Discord client's requests and its one mapping of failures to sentences (httpx.MockTransport)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

import httpx
import pytest

from abby_core.config import load_settings
from abby_dashboard.discord_api import DiscordAPI, DiscordAPIError

API = "http://discord.test/api/v10"
Answer = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
async def api_with() -> AsyncIterator[Callable[[Answer], DiscordAPI]]:
    clients: list[httpx.AsyncClient] = []

    def build(answer: Answer) -> DiscordAPI:
        section = load_settings(
            env_file=None, DISCORD_CLIENT_ID="4242", DISCORD_CLIENT_SECRET="shh-secret", DISCORD_GUILD_ID="777",
            DISCORD_API_URL=API, DISCORD_TOKEN="bot-token", DASHBOARD_PUBLIC_URL="https://abby.example.org",
        ).dashboard
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        clients.append(client)
        return DiscordAPI(section, client=client)

    yield build
    for client in clients:
        await client.aclose()


async def test_code_exchange_request(api_with: Callable[[Answer], DiscordAPI]) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "tok", "token_type": "Bearer"})

    assert await api_with(answer).exchange_code("the-code") == "tok"
    [request] = seen
    assert request.method == "POST" and str(request.url) == f"{API}/oauth2/token"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"4242:shh-secret").decode()
    form = parse_qs(request.content.decode())
    assert form == {
        "grant_type": ["authorization_code"], "code": ["the-code"],
        "redirect_uri": ["https://abby.example.org/auth/callback"],
    }


async def test_user_guilds_and_member_requests(api_with: Callable[[Answer], DiscordAPI]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        return {
            "/api/v10/users/@me": httpx.Response(200, json={"id": "42", "username": "ann", "global_name": "Ann"}),
            "/api/v10/users/@me/guilds": httpx.Response(200, json=[{"id": "777", "owner": False,
                                                                    "permissions": "2147483647"}]),
            "/api/v10/users/@me/guilds/777/member": httpx.Response(200, json={"user": {"id": "42", "username": "ann"},
                                                                              "roles": ["9", "10"]}),
        }[request.url.path]

    api = api_with(answer)
    me = await api.me("tok")
    assert (me.id, me.display_name) == ("42", "Ann")
    [guild] = await api.my_guilds("tok")
    assert guild.permissions == 2147483647 and not guild.owner
    member = await api.my_member("tok", 777)
    assert member is not None and member.roles == (9, 10)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda r: httpx.Response(401, json={"error": "invalid_client"}), "DISCORD_CLIENT_SECRET"),
        (lambda r: httpx.Response(400, json={"error": "invalid_grant"}), "expired or was already used"),
        (lambda r: httpx.Response(429, headers={"Retry-After": "3"}), "try again in 3 s"),
        (lambda r: httpx.Response(503, text="down"), "HTTP 503"),
        (lambda r: httpx.Response(200, text="<html>not json"), "could not be read"),
        (lambda r: httpx.Response(200, json={"nothing": 1}), "no access token"),
    ],
)
async def test_token_failures_become_sentences(
    api_with: Callable[[Answer], DiscordAPI], answer: Answer, words: str
) -> None:
    with pytest.raises(DiscordAPIError) as caught:
        await api_with(answer).exchange_code("c")
    assert words in caught.value.message and "shh-secret" not in caught.value.message


@pytest.mark.parametrize(
    ("error", "words"),
    [(httpx.ConnectError, "could not be reached"), (httpx.ReadTimeout, "did not answer in time")],
)
async def test_transport_failures_become_sentences(
    api_with: Callable[[Answer], DiscordAPI], error: type[httpx.TransportError], words: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    with pytest.raises(DiscordAPIError, match=words) as caught:
        await api_with(answer).me("tok")
    assert isinstance(caught.value.__cause__, error)


async def test_bot_failures_and_missing_members(api_with: Callable[[Answer], DiscordAPI]) -> None:
    missing = api_with(lambda r: httpx.Response(404, json={"message": "Unknown Member", "code": 10007}))
    assert await missing.get_member("123") is None
    refused = api_with(lambda r: httpx.Response(401, json={"message": "401: Unauthorized"}))
    with pytest.raises(DiscordAPIError, match="DISCORD_TOKEN"):
        await refused.search_members("ann")
    odd = api_with(lambda r: httpx.Response(200, json=[{"user": "not an object"}]))
    with pytest.raises(DiscordAPIError, match="could not be read"):
        await odd.search_members("ann")
