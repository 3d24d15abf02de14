"""Core errors are worded for the admin in one place (abby_dashboard/errors.py): never the
core's log sentence, a code or a field name; refused input is named as the admin typed it."""

from __future__ import annotations

import httpx
import pytest

from abby_core import errors
from abby_core.analytics import EventLog
from abby_core.storage import StorageManager
from abby_dashboard.errors import admin_message
from tests.dashboard.conftest import ALICE
from tests.dashboard.test_dashboard_actions import ACTION_URL, confirm_and_do, csrf

#: A core sentence with what must never reach a page: a key, a host, a foreign error's text.
LOG_SENTENCE = "PUT ledger/users/1.json on http://10.0.0.5:9000 failed: botocore EndpointConnectionError"

SAMPLES: list[errors.AbbyError] = [
    errors.StorageUnavailable(LOG_SENTENCE),
    errors.SaveOutcomeUnknown(LOG_SENTENCE),
    errors.LedgerCorrupt(LOG_SENTENCE),
    errors.ReservationInvalid(LOG_SENTENCE),
    errors.StorageError(LOG_SENTENCE),
    errors.ImageNotFound("images/users/1/a.png", message=LOG_SENTENCE),
    errors.InvalidKey(LOG_SENTENCE, parameter="key", value="x", reason="other_user"),
    errors.InvalidUser(LOG_SENTENCE, parameter="user_id", value="12ab"),
    errors.InvalidInput(LOG_SENTENCE, parameter="extra", value="5000"),
    errors.ConfigError(LOG_SENTENCE),
    errors.GenerationError(LOG_SENTENCE),
]


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("changing", [False, True])
def test_no_core_sentence_code_or_field_name_reaches_the_admin(exc: errors.AbbyError, changing: bool) -> None:
    status, message = admin_message(exc, changing=changing, field="count", typed="5000")
    assert 400 <= status < 600
    for hidden in (exc.message, "ledger/", "botocore", "10.0.0.5", exc.code, "internal_error", "parameter",
                   "reason", ".value"):
        assert hidden not in message, (hidden, message)
    if changing and status >= 500:
        assert "Nothing was changed" in message


async def test_a_storage_failure_on_a_page_is_a_sentence_for_the_admin(
    admin: httpx.AsyncClient, storage: StorageManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(*args: object, **kwargs: object) -> object:
        raise errors.StorageUnavailable(LOG_SENTENCE)

    monkeypatch.setattr(storage, "stats", fails)
    for page in ("/", "/members", "/storage"):
        response = await admin.get(page)
        assert response.status_code == 503, page
        assert "Storage could not be read" in response.text and "abby doctor" in response.text
        assert "botocore" not in response.text and "ledger/" not in response.text


async def test_a_failed_action_says_nothing_was_changed_in_the_admins_words(
    admin: httpx.AsyncClient, storage: StorageManager, events: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(*args: object, **kwargs: object) -> None:
        raise errors.StorageUnavailable(LOG_SENTENCE)

    monkeypatch.setattr(storage, "set_blocked", fails)
    response = await confirm_and_do(admin, "block")
    assert response.status_code == 503
    assert "Nothing was changed: storage could not be updated" in response.text
    assert "botocore" not in response.text and "ledger/" not in response.text
    assert events.audit_events(10) == []


async def test_a_core_refusal_of_an_action_is_not_shown_as_its_log_sentence(
    admin: httpx.AsyncClient, storage: StorageManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuses(*args: object, **kwargs: object) -> None:
        raise errors.InvalidUser(LOG_SENTENCE, parameter="user_id", value=ALICE)

    monkeypatch.setattr(storage, "reset_daily", refuses)
    response = await confirm_and_do(admin, "reset")
    assert response.status_code == 400 and "not a Discord user id" in response.text
    assert "botocore" not in response.text


@pytest.mark.parametrize("count", ["5000", "99999999999999999999999", "7" * 5000, "-3", "three"])
async def test_a_refused_grant_names_what_the_admin_typed(
    admin: httpx.AsyncClient, storage: StorageManager, count: str
) -> None:
    token = await csrf(admin)
    response = await admin.post(f"{ACTION_URL}/grant", data={"csrf_token": token, "count": count})
    assert response.status_code == 400
    assert "whole number from 1 to 1000" in response.text and repr(count[:40]).replace("'", "&#39;") in response.text
    assert (await storage.get_quota_status(ALICE)).daily_limit == 5
