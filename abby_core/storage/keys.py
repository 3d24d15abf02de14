"""Key layout and the one place that decides whether a user id or a key is safe.

Layout (the same on the filesystem, under ``STORAGE_ROOT``, and in a bucket)::

    images/users/{user_id}/{YYYYmmddTHHMMSSZ}-{reservation_id}.{ext}   the images
    ledger/users/{user_id}.json                                      a user's quota ledger
    ledger/shards/{shard}.json                                       usage of the members of one shard
    ledger/global.json                                               server-wide usage: one line a shard
    ledger/members/{user_id}.json                                    blocks, grants, deletions
    ledger/catalogue/{user_id}/{YYYYmm}.json                         a member's older images, by month
    ledger/slots/{user_id}.json                                      the member's generation in flight
    ledger/queue/{joined}-{id}.json                                  a generation waiting or running (shared queue)
    archive/users/{user_id}/{YYYYmmddTHHMMSSZ}-{reservation_id}.{ext} archived images (STORAGE_ARCHIVE)
    ledger/archive/{user_id}.json                                    a member's archive document
    events/                                                          usage events (abby_core.analytics)
    temp/  logs/                                                     scratch and logs

The ledger sits outside ``images/`` so the lifecycle rule that expires images never
touches it.
"""

from __future__ import annotations

import re
import zlib
from datetime import UTC, date, datetime

from abby_core import images
from abby_core.errors import InvalidKey, InvalidUser

__all__ = [
    "ARCHIVE_LEDGER_PREFIX",
    "ARCHIVE_PREFIX",
    "ARCHIVE_USERS_PREFIX",
    "CATALOGUE_PREFIX",
    "CONTENT_TYPES",
    "GLOBAL_LEDGER_KEY",
    "IMAGES_PREFIX",
    "IMAGE_EXTENSIONS",
    "LEDGER_PREFIX",
    "LOGS_PREFIX",
    "MEMBERS_PREFIX",
    "QUEUE_PREFIX",
    "SHARDS",
    "SHARDS_LEDGER_PREFIX",
    "SLOTS_PREFIX",
    "TEMP_PREFIX",
    "USERS_LEDGER_PREFIX",
    "USERS_PREFIX",
    "MemberId",
    "archive_ledger_key",
    "archive_prefix",
    "archived_key",
    "catalogue_prefix",
    "check_archived_key",
    "check_user_id",
    "content_type_of",
    "day_of_key",
    "image_candidates",
    "image_key",
    "member_key",
    "month_of_key",
    "restored_stem",
    "segment_key",
    "shard_key",
    "shard_of",
    "slot_key",
    "time_of_key",
    "user_from_archived_key",
    "user_from_key",
    "user_ledger_key",
    "user_prefix",
]

IMAGES_PREFIX = "images/"
USERS_PREFIX = "images/users/"
LEDGER_PREFIX = "ledger/"
USERS_LEDGER_PREFIX = "ledger/users/"
GLOBAL_LEDGER_KEY = "ledger/global.json"
SHARDS_LEDGER_PREFIX = "ledger/shards/"
#: How many shard documents the members are spread over (a power of two; changing it
#: would move members between shards, so it is part of the layout).
SHARDS = 256
MEMBERS_PREFIX = "ledger/members/"
SLOTS_PREFIX = "ledger/slots/"
QUEUE_PREFIX = "ledger/queue/"
TEMP_PREFIX = "temp/"
LOGS_PREFIX = "logs/"
ARCHIVE_PREFIX = "archive/"
ARCHIVE_USERS_PREFIX = "archive/users/"
ARCHIVE_LEDGER_PREFIX = "ledger/archive/"
CATALOGUE_PREFIX = "ledger/catalogue/"

# Discord snowflakes are 64-bit integers: at most 20 ASCII digits. ``str.isdigit`` would
# accept other scripts' digits ("١٢٣"), so the pattern spells out ASCII.
_SNOWFLAKE = re.compile(r"[1-9][0-9]{0,19}")
# The image formats Abby stores (images.CONTENT_TYPES), by content type -> file extension:
# a JPEG is named .jpg (.jpeg is read too).
CONTENT_TYPES = {ct: "jpg" if fmt == "jpeg" else fmt for fmt, ct in images.CONTENT_TYPES.items()}
_BY_EXTENSION = {**{ext: ct for ct, ext in CONTENT_TYPES.items()}, **images.CONTENT_TYPES}
#: Every file extension an image may have, without the dot.
IMAGE_EXTENSIONS = tuple(_BY_EXTENSION)
# The one pattern of an image's file name: when it was reserved, then the reservation id.
_NAME = re.compile(rf"(?P<stamp>[0-9]{{8}}T[0-9]{{6}}Z)-[0-9a-f]{{8,32}}\.(?P<ext>{'|'.join(_BY_EXTENSION)})")


class MemberId(str):
    """A member's Discord user id that has been checked: 1-20 ASCII digits, no leading zero, at most 2**64-1.

    A plain ``str`` for keys, paths and JSON, but the only way to make one is to check:
    ``MemberId(x)`` is :func:`check_user_id` (``InvalidUser`` for anything else). Code past
    the door takes a ``MemberId``, so the type proves the id was checked and nothing re-checks it.
    """

    __slots__ = ()

    def __new__(cls, user_id: object) -> MemberId:
        return check_user_id(user_id)


def check_user_id(user_id: object) -> MemberId:
    """Return ``user_id`` (an int, or a string of ASCII digits) as a :class:`MemberId`, or raise :class:`InvalidUser`.

    This is also the path-traversal guard: a user id becomes a path segment and a key
    prefix, so anything but 1-20 ASCII digits (``../1``, ``-1``, ``1e9``, unicode digits,
    30 digits) is refused. A :class:`MemberId` is returned as it is (it was checked when made).
    """
    if isinstance(user_id, MemberId):
        return user_id
    if isinstance(user_id, bool):
        raise InvalidUser(f"{user_id!r} is not a user id: it must be a Discord user id (digits only).")
    text = str(user_id) if isinstance(user_id, int) else user_id
    if not isinstance(text, str) or not _SNOWFLAKE.fullmatch(text) or int(text) > 2**64 - 1:
        shown = repr(text)[:40] if isinstance(text, str) else type(user_id).__name__
        raise InvalidUser(f"{shown} is not a user id: it must be a Discord user id (up to 20 digits, no leading zero).")
    return str.__new__(MemberId, text)


def user_prefix(user_id: MemberId) -> str:
    return f"{USERS_PREFIX}{user_id}/"


def user_ledger_key(user_id: MemberId) -> str:
    return f"{USERS_LEDGER_PREFIX}{user_id}.json"


def shard_of(user_id: MemberId) -> str:
    """The shard of ``user_id``'s usage: a stable hash (the same in every process and version)."""
    return f"{zlib.crc32(user_id.encode()) % SHARDS:02x}"


def shard_key(shard: str) -> str:
    return f"{SHARDS_LEDGER_PREFIX}{shard}.json"


def member_key(user_id: MemberId) -> str:
    return f"{MEMBERS_PREFIX}{user_id}.json"


def slot_key(user_id: MemberId) -> str:
    return f"{SLOTS_PREFIX}{user_id}.json"


def extension_for(content_type: str) -> str:
    try:
        return CONTENT_TYPES[content_type]
    except KeyError:
        raise InvalidKey(f"Images must be PNG, JPEG or WebP, not {content_type!r}.") from None


def content_type_of(key: str) -> str:
    """The content type of an image key, from its extension."""
    return _BY_EXTENSION[key.rsplit(".", 1)[-1]]


def image_candidates(stem: str) -> list[str]:
    """Every key an image reserved under ``stem`` can have (its format is chosen later)."""
    return [f"{stem}.{ext}" for ext in CONTENT_TYPES.values()]


def day_of_key(key: str) -> date | None:
    """The UTC day an image was reserved, from its name (``None`` for other keys)."""
    match = _NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").date()


def time_of_key(key: str) -> datetime | None:
    """When an image was reserved (UTC, to the second), from its name."""
    match = _NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    return datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def key_stem(user_id: MemberId, created: datetime, reservation_id: str) -> str:
    """The key of an image without its extension (fixed when quota is reserved)."""
    return f"{user_prefix(user_id)}{created:%Y%m%dT%H%M%SZ}-{reservation_id}"


def image_key(stem: str, content_type: str) -> str:
    return f"{stem}.{extension_for(content_type)}"


def _owner(key: str, prefix: str) -> MemberId | None:
    """The user id in ``{prefix}{id}/{image name}``, or ``None`` when ``key`` is not such a key."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :].split("/")
    if len(rest) != 2 or not _NAME.fullmatch(rest[1]):
        return None
    return parse_user_id(rest[0])


def parse_user_id(text: str) -> MemberId | None:
    """The :class:`MemberId` that ``text`` (read from a key or a listing) spells, or ``None``."""
    try:
        return check_user_id(text)
    except InvalidUser:
        return None


def user_from_key(key: str) -> MemberId | None:
    """The owner of an image key, or ``None`` when the key is not an image key."""
    return _owner(key, USERS_PREFIX)


def check_image_key(user_id: MemberId, key: object) -> str:
    """Return ``key`` when it names one of ``user_id``'s images, else raise :class:`InvalidKey`.

    Accepts the full key or just the file name (``20261125T101010Z-ab12cd34.png``).
    Traversal (``..``), absolute paths, backslashes and other users' keys are refused.
    """
    return _check_key(user_id, key, USERS_PREFIX, what="an image key", parameter="key")


def _check_key(uid: MemberId, key: object, prefix: str, *, what: str, parameter: str) -> str:
    """``key`` (a full key or a file name) when it names one of ``uid``'s images under ``prefix``."""
    if not isinstance(key, str) or not key or len(key) > 200:
        raise InvalidKey(f"That is not {what} of the user.", parameter=parameter, reason="not_a_key")
    full = key if "/" in key else f"{prefix}{uid}/{key}"
    owner = _owner(full, prefix)
    if owner is None:
        raise InvalidKey(
            f"{key[:80]!r} is not {what} of the user.", parameter=parameter, value=key[:80], reason="not_a_key"
        )
    if owner != uid:
        raise InvalidKey(
            "The key names another user's image.", parameter=parameter, value=key[:80], reason="other_user"
        )
    return full


# -- the archive (STORAGE_ARCHIVE) ----------------------------------------------------------
# An archived image keeps its image's file name (the same pattern, ``_NAME``) under
# ``archive/users/{id}/``; only the extension may change (a WebP copy of a PNG).


def archive_prefix(user_id: MemberId) -> str:
    return f"{ARCHIVE_USERS_PREFIX}{user_id}/"


def catalogue_prefix(user_id: MemberId) -> str:
    return f"{CATALOGUE_PREFIX}{user_id}/"


def segment_key(user_id: MemberId, month: str) -> str:
    return f"{CATALOGUE_PREFIX}{user_id}/{month}.json"


def month_of_key(key: str) -> str:
    """The catalogue segment an image key belongs to: the month it was reserved (``YYYYmm``),
    or ``other`` for a key without a time in its name."""
    when = time_of_key(key)
    return when.strftime("%Y%m") if when is not None else "other"


def archive_ledger_key(user_id: MemberId) -> str:
    return f"{ARCHIVE_LEDGER_PREFIX}{user_id}.json"


def user_from_archived_key(key: str) -> MemberId | None:
    """The owner of an archived image's key, or ``None`` when the key is not one."""
    return _owner(key, ARCHIVE_USERS_PREFIX)


def archived_key(image: str, content_type: str) -> str:
    """Where the archived copy of image key ``image`` goes, stored as ``content_type``."""
    uid = user_from_key(image)
    if uid is None:
        raise InvalidKey(f"{image[:80]!r} is not an image key.")
    stem = image.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return f"{ARCHIVE_USERS_PREFIX}{uid}/{stem}.{extension_for(content_type)}"


def restored_stem(archived: str) -> str:
    """The image stem an archived key came from (and where a restore puts it back)."""
    uid = user_from_archived_key(archived)
    if uid is None:
        raise InvalidKey(f"{archived[:80]!r} is not an archived image key.")
    return f"{USERS_PREFIX}{uid}/{archived.rsplit('/', 1)[-1].rsplit('.', 1)[0]}"


def check_archived_key(user_id: MemberId, key: object) -> str:
    """Return ``key`` when it names one of ``user_id``'s archived images, else raise :class:`InvalidKey`.

    Accepts the full key or just the file name; traversal and other users' keys are refused.
    """
    return _check_key(user_id, key, ARCHIVE_USERS_PREFIX, what="an archived image", parameter="archived_key")
