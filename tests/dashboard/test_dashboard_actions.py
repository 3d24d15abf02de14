"""Grant, reset, block, unblock: confirmed first, done through the ledger, written to the audit log."""

from __future__ import annotations

import httpx
import pytest

from abby_core.analytics import EventLog
from abby_core.storage import StorageManager
from tests.dashboard.conftest import ALICE, BOB, browser_client, csrf_of, store_image
from tests.storage.conftest import Clock

ACTION_URL = f"/members/{ALICE}/actions"


async def csrf(http: httpx.AsyncClient) -> str:
    return csrf_of((await http.get(f"/members/{ALICE}")).text)


async def confirm_and_do(http: httpx.AsyncClient, action: str, **form: str) -> httpx.Response:
    token = await csrf(http)
    question = await http.post(f"{ACTION_URL}/{action}", data={"csrf_token": token, **form})
    assert question.status_code == 200 and ALICE in question.text
    assert f'action="{ACTION_URL}/{action}/confirm"' in question.text
    return await http.post(f"{ACTION_URL}/{action}/confirm", data={"csrf_token": csrf_of(question.text), **form})


async def test_grant_is_confirmed_then_done_and_audited(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog
) -> None:
    await storage.release(await storage.reserve(ALICE))  # a member who has used Abby before
    token = await csrf(admin)
    question = await admin.post(f"{ACTION_URL}/grant", data={"csrf_token": token, "count": "3"})
    assert "3 extra generation(s)" in question.text
    assert (await storage.get_quota_status(ALICE)).daily_limit == 5  # asking changes nothing
    done = await admin.post(f"{ACTION_URL}/grant/confirm", data={"csrf_token": token, "count": "3"})
    assert done.status_code == 303 and done.headers["location"] == f"/members/{ALICE}"
    assert (await storage.get_quota_status(ALICE)).daily_limit == 8
    page = await admin.get(f"/members/{ALICE}")
    assert "Granted 3 extra generation(s)" in page.text
    assert "Granted 3" not in (await admin.get(f"/members/{ALICE}")).text  # the message is shown once
    [record] = events.audit_events(10)
    assert (record.actor, record.action, record.target, record.details) == ("token", "grant", ALICE, {"extra": 3})


async def test_grant_to_a_member_who_never_generated(admin: httpx.AsyncClient, storage: StorageManager) -> None:
    assert (await confirm_and_do(admin, "grant", count="3")).status_code == 303
    assert (await storage.get_quota_status(ALICE)).daily_limit == 8


async def test_reset_block_unblock(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog, clock: Clock
) -> None:
    await store_image(storage, ALICE)
    assert (await storage.get_quota_status(ALICE)).daily_used == 1
    assert (await confirm_and_do(admin, "reset")).status_code == 303
    assert (await storage.get_quota_status(ALICE)).daily_used == 0
    clock.advance(seconds=1)  # audit records are ordered by time
    assert (await confirm_and_do(admin, "block")).status_code == 303
    assert (await storage.get_quota_status(ALICE)).blocked
    assert 'id="blocked">yes<' in (await admin.get(f"/members/{ALICE}")).text
    clock.advance(seconds=1)
    assert (await confirm_and_do(admin, "unblock")).status_code == 303
    assert not (await storage.get_quota_status(ALICE)).blocked
    assert [e.action for e in events.audit_events(10, target=ALICE)] == ["unblock", "block", "reset"]
    assert events.latest_audit("block") is not None and events.audit_events(10, target=BOB) == []


async def test_without_a_session_nothing_changes(app: object, storage: StorageManager, events: EventLog) -> None:
    async with browser_client(app) as http:  # type: ignore[arg-type]
        page = await http.get("/login")  # a session with a CSRF token, but nobody signed in
        token = csrf_of(page.text)
        for path in (f"{ACTION_URL}/block", f"{ACTION_URL}/block/confirm", f"{ACTION_URL}/grant/confirm"):
            response = await http.post(path, data={"csrf_token": token, "count": "5"})
            assert response.status_code == 403, path
    state = await storage.get_quota_status(ALICE)
    assert not state.blocked and state.daily_limit == 5 and events.audit_events(10) == []


@pytest.mark.parametrize("sent", [None, "", "wrong-token"])
async def test_a_missing_or_wrong_csrf_token_changes_nothing(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog, sent: str | None
) -> None:
    form = {} if sent is None else {"csrf_token": sent}
    response = await admin.post(f"{ACTION_URL}/block/confirm", data=form)
    assert response.status_code == 403 and "Reload the page" in response.text
    assert not (await storage.get_quota_status(ALICE)).blocked and events.audit_events(10) == []


async def test_a_post_from_another_origin_changes_nothing(admin: httpx.AsyncClient, storage: StorageManager) -> None:
    token = await csrf(admin)
    response = await admin.post(
        f"{ACTION_URL}/block/confirm", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403 and "another site" in response.text
    assert not (await storage.get_quota_status(ALICE)).blocked
    same = await admin.post(f"{ACTION_URL}/block/confirm", data={"csrf_token": token},
                            headers={"Origin": "http://127.0.0.1:8765"})
    assert same.status_code == 303 and (await storage.get_quota_status(ALICE)).blocked


@pytest.mark.parametrize("count", ["0", "1001", "abc", "", "2.5", "-1"])
async def test_grant_count_is_checked(admin: httpx.AsyncClient, storage: StorageManager, count: str) -> None:
    token = await csrf(admin)
    for path in (f"{ACTION_URL}/grant", f"{ACTION_URL}/grant/confirm"):
        response = await admin.post(path, data={"csrf_token": token, "count": count})
        assert response.status_code == 400 and "whole number from 1 to 1000" in response.text
    assert (await storage.get_quota_status(ALICE)).daily_limit == 5


async def test_unknown_action_and_bad_user(admin: httpx.AsyncClient) -> None:
    token = await csrf(admin)
    assert (await admin.post(f"{ACTION_URL}/delete/confirm", data={"csrf_token": token})).status_code == 404
    bad = await admin.post("/members/12ab/actions/block/confirm", data={"csrf_token": token})
    assert bad.status_code == 400 and "not a Discord user id" in bad.text
