"""The fake Discord OAuth2 server behaves as Discord's documentation says, so dashboard tests can trust it."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yarl

from tests.fixtures.fake_discord_oauth import (
    ALL_PERMISSIONS,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeDiscordOAuth,
    fake_discord_oauth,  # noqa: F401
)

REDIRECT = "http://127.0.0.1:9/auth/callback"
ANN, BOB, CAT = 101, 102, 103
HOME, OTHER = 7001, 7002
MANAGE_GUILD = 1 << 5


@pytest.fixture
def fake(fake_discord_oauth: FakeDiscordOAuth) -> FakeDiscordOAuth:  # noqa: F811
    fake_discord_oauth.add_app(CLIENT_ID, CLIENT_SECRET, [REDIRECT], name="Abby Dashboard")
    fake_discord_oauth.add_user(ANN, "ann", global_name="Ann Admin", email="ann@example.org")
    fake_discord_oauth.add_user(BOB, "bob")
    fake_discord_oauth.add_user(CAT, "catherine", global_name="Cat")
    fake_discord_oauth.add_guild(HOME, "Home", owner_id=ANN)
    fake_discord_oauth.add_guild(OTHER, "Other", owner_id=CAT)
    fake_discord_oauth.add_member(OTHER, ANN, roles=[55, 66], permissions=MANAGE_GUILD, nick="annie")
    fake_discord_oauth.add_member(HOME, BOB, nick="Bobby")
    fake_discord_oauth.add_member(HOME, CAT)
    return fake_discord_oauth


@pytest.fixture
async def client(fake: FakeDiscordOAuth) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, follow_redirects=False, timeout=5) as http:
        yield http


def _params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": CLIENT_ID, "scope": "identify guilds guilds.members.read",
        "redirect_uri": REDIRECT, "state": "st-123",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def _consent(client: httpx.AsyncClient, **overrides: str | None) -> str:
    """Open the authorize page and return the pending request's id from its form."""
    page = await client.get("/oauth2/authorize", params=_params(**overrides))
    assert page.status_code == 200, page.text
    found = re.search(r'name=request value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def _code(client: httpx.AsyncClient, **overrides: str | None) -> str:
    request_id = await _consent(client, **overrides)
    answer = await client.post("/oauth2/authorize/decision", data={"request": request_id, "decision": "authorize"})
    assert answer.status_code == 302
    return yarl.URL(answer.headers["location"]).query["code"]


async def _exchange(client: httpx.AsyncClient, code: str, **form: str) -> httpx.Response:
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **form}
    return await client.post("/api/v10/oauth2/token", data=body, auth=(CLIENT_ID, CLIENT_SECRET))


async def _token(client: httpx.AsyncClient, **overrides: str | None) -> str:
    answer = await _exchange(client, await _code(client, **overrides))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}


# --- the code flow ----------------------------------------------------------------------------


async def test_full_authorization_code_flow(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    page = await client.get("/oauth2/authorize", params=_params())
    assert page.status_code == 200
    assert "Abby Dashboard" in page.text and "Ann Admin" in page.text and "@ann" in page.text
    assert 'data-scope="guilds.members.read"' in page.text
    request_id = re.search(r'name=request value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]

    answer = await client.post("/oauth2/authorize/decision", data={"request": request_id, "decision": "authorize"})
    assert answer.status_code == 302
    location = yarl.URL(answer.headers["location"])
    assert str(location.with_query(None)) == REDIRECT
    assert location.query["state"] == "st-123" and location.query["code"]

    tokens = await _exchange(client, location.query["code"])
    assert tokens.status_code == 200
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 604800
    assert body["scope"] == "identify guilds guilds.members.read"
    assert body["access_token"] and body["refresh_token"]
    assert tokens.headers["cache-control"] == "no-store"
    auth = _bearer(body["access_token"])

    me = (await client.get("/api/v10/users/@me", headers=auth)).json()
    assert me["id"] == str(ANN) and me["username"] == "ann" and me["global_name"] == "Ann Admin"
    assert me["discriminator"] == "0" and me["avatar"] is None and "email" not in me

    guilds = (await client.get("/api/v10/users/@me/guilds", headers=auth)).json()
    assert [(g["id"], g["owner"], g["permissions"]) for g in guilds] == [
        (str(HOME), True, str(ALL_PERMISSIONS)),
        (str(OTHER), False, str(MANAGE_GUILD)),
    ]
    assert guilds[0]["name"] == "Home" and guilds[0]["icon"] is None and guilds[0]["features"] == []

    member = (await client.get(f"/api/v10/users/@me/guilds/{OTHER}/member", headers=auth)).json()
    assert member["user"]["id"] == str(ANN) and member["nick"] == "annie"
    assert member["roles"] == ["55", "66"] and member["joined_at"]

    assert len(fake.requests_to("/api/v10/oauth2/token", "POST")) == 1
    assert fake.requests_to("/api/v10/oauth2/token")[0].form["grant_type"] == "authorization_code"
    assert fake.requests_to("/oauth2/authorize")[0].status == 200


async def test_client_credentials_in_the_form_work_too(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(BOB)
    code = await _code(client, scope="identify email")
    body = {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
    }
    answer = await client.post("/api/oauth2/token", data=body)
    assert answer.status_code == 200
    me = (await client.get("/api/v10/users/@me", headers=_bearer(answer.json()["access_token"]))).json()
    assert me["username"] == "bob" and me["email"] is None and me["verified"] is False


async def test_cancel_redirects_with_access_denied(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    request_id = await _consent(client)
    answer = await client.post("/oauth2/authorize/decision", data={"request": request_id, "decision": "cancel"})
    assert answer.status_code == 302
    query = yarl.URL(answer.headers["location"]).query
    assert query["error"] == "access_denied" and query["state"] == "st-123" and query["error_description"]
    assert "code" not in query
    again = await client.post("/oauth2/authorize/decision", data={"request": request_id, "decision": "authorize"})
    assert again.status_code == 400  # a consent page answers once


async def test_state_is_omitted_when_not_sent(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    request_id = await _consent(client, state=None)
    answer = await client.post("/oauth2/authorize/decision", data={"request": request_id, "decision": "authorize"})
    assert set(yarl.URL(answer.headers["location"]).query) == {"code"}


async def test_nobody_signed_in_shows_a_login_page(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    page = await client.get("/oauth2/authorize", params=_params())
    assert page.status_code == 200 and 'id=login' in page.text and "request" not in page.text
    redirect_to = html.unescape(re.search(r'name=redirect_to value="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    refused = await client.post("/login", data={"username": "nobody", "redirect_to": redirect_to})
    assert refused.status_code == 400 and fake.signed_in is None
    logged_in = await client.post("/login", data={"username": "catherine", "redirect_to": redirect_to})
    assert logged_in.status_code == 302 and fake.signed_in == CAT
    assert logged_in.headers["location"].startswith("/oauth2/authorize?")
    consent = await client.get(logged_in.headers["location"])
    assert consent.status_code == 200 and "@catherine" in consent.text


async def test_prompt_none_skips_consent_once_granted(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    await _code(client, scope="identify")
    skipped = await client.get("/oauth2/authorize", params=_params(scope="identify", prompt="none"))
    assert skipped.status_code == 302 and "code=" in skipped.headers["location"]
    wider = await client.get("/oauth2/authorize", params=_params(scope="identify guilds", prompt="none"))
    assert wider.status_code == 200 and "id=consent" in wider.text
    consent = await client.get("/oauth2/authorize", params=_params(scope="identify", prompt="consent"))
    assert consent.status_code == 200


# --- authorize errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": "999"}, "Unknown Application"),
        ({"client_id": None}, "Unknown Application"),
        ({"redirect_uri": REDIRECT + "/"}, "Invalid OAuth2 redirect_uri"),
        ({"redirect_uri": "http://127.0.0.1:9/elsewhere"}, "Invalid OAuth2 redirect_uri"),
        ({"redirect_uri": None}, "Invalid OAuth2 redirect_uri"),
        ({"response_type": "token"}, "Unsupported response type"),
        ({"response_type": None}, "Unsupported response type"),
        ({"scope": "identify admin"}, "Invalid scope"),
        ({"scope": ""}, "Invalid scope"),
    ],
)
async def test_bad_authorize_requests_show_an_error_page(
    fake: FakeDiscordOAuth, client: httpx.AsyncClient, overrides: dict[str, str | None], message: str,
) -> None:
    fake.sign_in(ANN)
    page = await client.get("/oauth2/authorize", params=_params(**overrides))
    assert page.status_code == 400
    assert message in page.text and "location" not in page.headers


# --- token errors -----------------------------------------------------------------------------


async def test_codes_are_single_use_and_reuse_revokes(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    code = await _code(client)
    first = await _exchange(client, code)
    assert first.status_code == 200
    second = await _exchange(client, code)
    assert second.status_code == 400
    assert second.json() == {"error": "invalid_grant", "error_description": 'Invalid "code" in request.'}
    me = await client.get("/api/v10/users/@me", headers=_bearer(first.json()["access_token"]))
    assert me.status_code == 401 and me.json() == UNAUTHORIZED


async def test_codes_expire(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    code = await _code(client)
    fake.advance(601)
    answer = await _exchange(client, code)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("redirect_uri", [None, REDIRECT + "?x=1", "http://127.0.0.1:9/other"])
async def test_redirect_uri_must_match_the_authorize_request(
    fake: FakeDiscordOAuth, client: httpx.AsyncClient, redirect_uri: str | None,
) -> None:
    fake.sign_in(ANN)
    code = await _code(client)
    form = {"grant_type": "authorization_code", "code": code}
    if redirect_uri is not None:
        form["redirect_uri"] = redirect_uri
    answer = await client.post("/api/v10/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": 'Invalid "redirect_uri" in request.'}


async def test_unknown_code_is_invalid_grant(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    answer = await _exchange(client, "not-a-code")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "auth", [(CLIENT_ID, "wrong"), ("999", CLIENT_SECRET), None],
)
async def test_bad_client_credentials_are_invalid_client(
    fake: FakeDiscordOAuth, client: httpx.AsyncClient, auth: tuple[str, str] | None,
) -> None:
    fake.sign_in(ANN)
    code = await _code(client)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    answer = await client.post("/api/v10/oauth2/token", data=form, auth=auth)
    assert answer.status_code == 401 and answer.json() == {"error": "invalid_client"}
    assert (await _exchange(client, code)).status_code == 200  # the failed attempt did not use the code


@pytest.mark.parametrize("grant_type", ["password", "", "implicit"])
async def test_unsupported_grant_type(client: httpx.AsyncClient, grant_type: str) -> None:
    form = {"grant_type": grant_type}
    answer = await client.post("/api/v10/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert answer.status_code == 400 and answer.json() == {"error": "unsupported_grant_type"}


async def test_token_endpoint_wants_a_form_body(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    code = await _code(client)
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    answer = await client.post("/api/v10/oauth2/token", json=body, auth=(CLIENT_ID, CLIENT_SECRET))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


async def test_refresh_and_revoke(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    first = (await _exchange(client, await _code(client))).json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    refreshed = await client.post("/api/v10/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert refreshed.status_code == 200 and refreshed.json()["access_token"] != first["access_token"]
    reused = await client.post("/api/v10/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    fresh = _bearer(refreshed.json()["access_token"])
    assert (await client.get("/api/v10/users/@me", headers=_bearer(first["access_token"]))).status_code == 401
    assert (await client.get("/api/v10/users/@me", headers=fresh)).status_code == 200
    revoked = await client.post(
        "/api/v10/oauth2/token/revoke", data={"token": refreshed.json()["access_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert revoked.status_code == 200
    assert (await client.get("/api/v10/users/@me", headers=fresh)).status_code == 401


# --- Bearer routes ----------------------------------------------------------------------------


async def test_scopes_are_enforced(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    identify_only = _bearer(await _token(client, scope="identify"))
    assert (await client.get("/api/v10/users/@me", headers=identify_only)).status_code == 200
    for path in ("/api/v10/users/@me/guilds", f"/api/v10/users/@me/guilds/{HOME}/member"):
        answer = await client.get(path, headers=identify_only)
        assert answer.status_code == 401 and answer.json() == UNAUTHORIZED, path
    guilds_only = _bearer(await _token(client, scope="guilds"))
    assert (await client.get("/api/v10/users/@me/guilds", headers=guilds_only)).status_code == 200
    assert (await client.get("/api/v10/users/@me", headers=guilds_only)).status_code == 401


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "nope"}])
async def test_missing_or_unknown_token_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    answer = await client.get("/api/v10/users/@me", headers=headers)
    assert answer.status_code == 401 and answer.json() == UNAUTHORIZED


async def test_access_tokens_expire(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    auth = _bearer(await _token(client))
    fake.advance(604_799)
    assert (await client.get("/api/v10/users/@me", headers=auth)).status_code == 200
    fake.advance(2)
    assert (await client.get("/api/v10/users/@me", headers=auth)).status_code == 401


async def test_member_of_a_guild_one_is_not_in_is_unknown_guild(
    fake: FakeDiscordOAuth, client: httpx.AsyncClient,
) -> None:
    fake.sign_in(BOB)
    auth = _bearer(await _token(client))
    assert [g["id"] for g in (await client.get("/api/v10/users/@me/guilds", headers=auth)).json()] == [str(HOME)]
    for guild_id in (OTHER, 123456):
        answer = await client.get(f"/api/v10/users/@me/guilds/{guild_id}/member", headers=auth)
        assert answer.status_code == 404 and answer.json() == {"message": "Unknown Guild", "code": 10004}
    home = (await client.get(f"/api/v10/users/@me/guilds/{HOME}/member", headers=auth)).json()
    assert home["nick"] == "Bobby" and home["roles"] == []


async def test_guild_list_paging_and_counts(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    fake.sign_in(ANN)
    auth = _bearer(await _token(client))

    async def ids(**params: Any) -> list[str]:
        answer = await client.get("/api/v10/users/@me/guilds", headers=auth, params=params)
        assert answer.status_code == 200, answer.text
        return [g["id"] for g in answer.json()]

    assert await ids(limit=1) == [str(HOME)]
    assert await ids(after=HOME) == [str(OTHER)]
    assert await ids(before=OTHER) == [str(HOME)]
    counted = (await client.get("/api/v10/users/@me/guilds", headers=auth, params={"with_counts": "true"})).json()
    assert [g["approximate_member_count"] for g in counted] == [3, 2]
    bad = await client.get("/api/v10/users/@me/guilds", headers=auth, params={"limit": 201})
    assert bad.status_code == 400 and bad.json()["code"] == 50035


# --- Bot routes -------------------------------------------------------------------------------


def _bot(fake: FakeDiscordOAuth) -> dict[str, str]:
    return {"Authorization": f"Bot {fake.bot_token}"}


async def _search(client: httpx.AsyncClient, fake: FakeDiscordOAuth, guild: int, **params: Any) -> httpx.Response:
    return await client.get(f"/api/v10/guilds/{guild}/members/search", headers=_bot(fake), params=params)


async def test_bot_member_search(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    one = await _search(client, fake, HOME, query="")
    assert one.status_code == 200 and len(one.json()) == 1  # limit defaults to 1
    every = await _search(client, fake, HOME, query="", limit=1000)
    assert sorted(m["user"]["id"] for m in every.json()) == [str(ANN), str(BOB), str(CAT)]
    by_nick = await _search(client, fake, HOME, query="bobb", limit=10)
    assert [m["user"]["username"] for m in by_nick.json()] == ["bob"]
    by_username = await _search(client, fake, HOME, query="CATH", limit=10)
    assert [m["user"]["id"] for m in by_username.json()] == [str(CAT)]
    by_display_name = await _search(client, fake, HOME, query="cat", limit=10)
    assert [m["user"]["id"] for m in by_display_name.json()] == [str(CAT)]
    assert (await _search(client, fake, HOME, query="herine", limit=10)).json() == []  # a prefix, not a substring
    owner = (await _search(client, fake, HOME, query="ann", limit=10)).json()
    assert owner[0]["user"]["id"] == str(ANN) and owner[0]["roles"] == []


@pytest.mark.parametrize(
    "params", [{}, {"query": "a", "limit": 0}, {"query": "a", "limit": 1001}, {"query": "a", "limit": "x"}],
)
async def test_bot_member_search_validates(
    fake: FakeDiscordOAuth, client: httpx.AsyncClient, params: dict[str, Any],
) -> None:
    answer = await _search(client, fake, HOME, **params)
    assert answer.status_code == 400
    assert answer.json()["code"] == 50035 and answer.json()["message"] == "Invalid Form Body"


async def test_bot_routes_need_the_bot_token(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    path = f"/api/v10/guilds/{HOME}/members/search"
    fake.sign_in(ANN)
    user_token = await _token(client)
    for headers in ({}, {"Authorization": "Bot wrong"}, _bearer(user_token), {"Authorization": fake.bot_token}):
        answer = await client.get(path, headers=headers, params={"query": "a"})
        assert answer.status_code == 401 and answer.json() == UNAUTHORIZED


async def test_bot_get_member(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    found = await client.get(f"/api/v10/guilds/{OTHER}/members/{ANN}", headers=_bot(fake))
    assert found.status_code == 200 and found.json()["nick"] == "annie" and found.json()["roles"] == ["55", "66"]
    missing = await client.get(f"/api/v10/guilds/{OTHER}/members/{BOB}", headers=_bot(fake))
    assert missing.status_code == 404 and missing.json() == {"message": "Unknown Member", "code": 10007}
    no_guild = await client.get(f"/api/v10/guilds/42/members/{BOB}", headers=_bot(fake))
    assert no_guild.status_code == 404 and no_guild.json() == {"message": "Unknown Guild", "code": 10004}
    fake.add_guild(43, "Botless", owner_id=BOB, bot_member=False)
    botless = await client.get(f"/api/v10/guilds/43/members/{BOB}", headers=_bot(fake))
    assert botless.status_code == 403 and botless.json() == {"message": "Missing Access", "code": 50001}


async def test_bot_sees_itself_and_its_guilds(fake: FakeDiscordOAuth, client: httpx.AsyncClient) -> None:
    me = (await client.get("/api/v10/users/@me", headers=_bot(fake))).json()
    assert me["bot"] is True and me["id"] == str(fake.bot_user.id)
    fake.add_guild(43, "Botless", owner_id=BOB, bot_member=False)
    guilds = (await client.get("/api/v10/users/@me/guilds", headers=_bot(fake))).json()
    assert [g["id"] for g in guilds] == [str(HOME), str(OTHER)]


# --- unknown routes ---------------------------------------------------------------------------


async def test_unknown_paths_and_methods_answer_like_discord(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v10/nothing/here")
    assert missing.status_code == 404 and missing.json() == {"message": "404: Not Found", "code": 0}
    wrong = await client.delete("/api/v10/users/@me")
    assert wrong.status_code == 405 and wrong.json() == {"message": "405: Method Not Allowed", "code": 0}
    get_token = await client.get("/api/v10/oauth2/token")
    assert get_token.status_code == 405


async def test_the_fake_can_run_on_the_test_loop() -> None:
    async with FakeDiscordOAuth() as fake, httpx.AsyncClient() as http:
        answer = await http.get(fake.api_url + "/users/@me")
        assert answer.status_code == 401
    assert fake.requests[0].path == "/api/v10/users/@me" and fake.requests[0].status == 401
