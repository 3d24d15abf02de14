"""MemberId: a member id is checked once, where it enters, and is a checked value from then on.

The table below is the rule (the path-traversal guard included); mypy strict over abby_core
proves that the key builders and everything past the doors only ever receive a MemberId.
"""

from __future__ import annotations

import json
import pickle

import pytest

from abby_core.errors import InvalidUser
from abby_core.storage import MemberId, check_user_id, keys

NAME = "20261125T101010Z-ab12cd34.png"
GOOD = [
    ("1", "1"),
    (1, "1"),
    ("424242424242424242", "424242424242424242"),
    (424242424242424242, "424242424242424242"),
    (str(2**64 - 1), "18446744073709551615"),
    (2**64 - 1, "18446744073709551615"),
]
BAD = [
    "../1", "1/../2", "-1", -1, "+1", "1e9", "1" * 21, "1" * 30, str(2**64), 2**64, "0", 0, "0123", "",
    "12 3", " 123", "123\n", "١٢٣", "１２３", "abc", None, 1.5, True, False, b"123", ["1"],
]


@pytest.mark.parametrize(("given", "text"), GOOD)
def test_good_ids_become_a_member_id(given: object, text: str) -> None:
    uid = check_user_id(given)
    assert type(uid) is MemberId and uid == text and MemberId(given) == uid
    assert check_user_id(uid) is uid and MemberId(uid) is uid, "a MemberId was checked when it was made"


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_bad_ids_are_refused_by_both_doors(bad: object) -> None:
    for door in (check_user_id, MemberId):
        with pytest.raises(InvalidUser) as refused:
            door(bad)
        message = str(refused.value)
        assert "is not a user id: it must be a Discord user id" in message
        if isinstance(bad, str):
            assert repr(bad)[:40] in message, "the message names what was typed"


def test_a_member_id_is_a_plain_string_for_keys_paths_and_json() -> None:
    uid = MemberId(424242)
    assert keys.user_prefix(uid) == "images/users/424242/"
    assert keys.user_ledger_key(uid) == "ledger/users/424242.json"
    assert keys.member_key(uid) == "ledger/members/424242.json"
    assert keys.archive_ledger_key(uid) == "ledger/archive/424242.json"
    assert json.dumps({uid: uid}) == '{"424242": "424242"}'
    assert {uid: 1}["424242"] == 1 and f"{uid}" == "424242"
    again = pickle.loads(pickle.dumps(uid))  # unpickling makes it again, through the check
    assert type(again) is MemberId and again == uid


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        (f"images/users/424242/{NAME}", "424242"),
        (f"images/users/{2**64 - 1}/{NAME}", str(2**64 - 1)),
        (f"images/users/{2**64}/{NAME}", None),  # 20 digits, but past a snowflake's range
        (f"images/users/0424242/{NAME}", None),
        (f"images/users/../{NAME}", None),
        (f"images/users/424242/x/{NAME}", None),
        ("images/users/424242/notes.txt", None),
    ],
)
def test_ids_read_out_of_keys_are_parsed_into_member_ids(key: str, owner: str | None) -> None:
    found = keys.user_from_key(key)
    assert found == owner
    assert found is None or type(found) is MemberId
    archived = keys.user_from_archived_key("archive/" + key.removeprefix("images/"))
    assert archived == owner and (archived is None or type(archived) is MemberId)
