"""Quota rules as pure functions over ledger documents (see :mod:`abby_core.storage.ledger`).

Each function mutates one document in place and raises a
:class:`~abby_core.errors.QuotaExceeded` subclass to refuse. They run inside
:meth:`Ledger.update`, so they may run more than once and must not touch anything else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from abby_core.errors import (
    DailyLimitExceeded,
    GlobalStorageFull,
    ReservationInvalid,
    UserBlocked,
    UserStorageFull,
)
from abby_core.storage.ledger import NoChange
from abby_core.storage.models import UserLimits

__all__ = [
    "day_of",
    "global_hold",
    "global_release",
    "global_set_user",
    "global_usage",
    "new_global_doc",
    "new_user_doc",
    "next_midnight",
    "user_bytes",
    "user_commit",
    "user_hold",
    "user_roll_day",
    "well_formed",
]

Doc = dict[str, Any]


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def next_midnight(moment: datetime) -> datetime:
    start = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _expired(entry: dict[str, Any], now: datetime) -> bool:
    return datetime.fromisoformat(str(entry["expires"])) <= now


def new_user_doc(user_id: str, now: datetime) -> Doc:
    return {
        "user_id": user_id,
        "day": day_of(now),
        "count": 0,
        "bonus": 0,
        "blocked": False,
        "objects": {},
        "reservations": {},
        "version": 0,
    }


def new_global_doc() -> Doc:
    return {"users": {}, "reservations": {}, "version": 0}


def purge_expired(doc: Doc, now: datetime) -> list[str]:
    """Drop reservations whose holder never came back (e.g. a killed process)."""
    gone = [rid for rid, r in doc["reservations"].items() if _expired(r, now)]
    for rid in gone:
        del doc["reservations"][rid]
    return gone


def user_roll_day(doc: Doc, now: datetime) -> None:
    """Daily counts restart at midnight UTC."""
    today = day_of(now)
    if doc.get("day") != today:
        doc["day"], doc["count"], doc["bonus"] = today, 0, 0


def user_bytes(doc: Doc, *, include_reserved: bool = True, skip: str | None = None) -> int:
    total = sum(int(entry[0]) for entry in doc["objects"].values())
    if include_reserved:
        total += sum(int(r["bytes"]) for rid, r in doc["reservations"].items() if rid != skip)
    return total


def daily_used(doc: Doc, now: datetime, *, skip: str | None = None) -> int:
    today = day_of(now)
    pending = sum(1 for rid, r in doc["reservations"].items() if r["day"] == today and rid != skip)
    return int(doc["count"]) + pending


def user_hold(
    doc: Doc,
    *,
    rid: str,
    size: int,
    stem: str,
    limits: UserLimits,
    now: datetime,
    ttl: int,
) -> dict[str, Any]:
    """Hold one generation and ``size`` bytes for reservation ``rid`` (new, or grown).

    An existing reservation is extended to ``max(old, size)`` bytes and a fresh expiry,
    and does not count against the daily limit again.
    """
    purge_expired(doc, now)
    user_roll_day(doc, now)
    if doc.get("blocked"):
        raise UserBlocked(str(doc["user_id"]))
    existing = doc["reservations"].get(rid)
    if existing is None:
        limit = limits.daily_gens + int(doc.get("bonus", 0))
        used = daily_used(doc, now)
        if used >= limit:
            raise DailyLimitExceeded(used=used, limit=limit, resets_at=next_midnight(now))
    size = max(size, int(existing["bytes"])) if existing else size
    used_bytes = user_bytes(doc, skip=rid)
    if used_bytes + size > limits.storage_bytes:
        raise UserStorageFull(used=used_bytes, limit=limits.storage_bytes)
    entry = {
        "bytes": size,
        "expires": _iso(now + timedelta(seconds=ttl)),
        "day": existing["day"] if existing else day_of(now),
        "stem": stem,
    }
    doc["reservations"][rid] = entry
    return entry


def user_commit(doc: Doc, *, rid: str, key: str, size: int, now: datetime) -> None:
    """Turn the hold of reservation ``rid`` into the stored object ``key``.

    Without a live hold there is nothing to charge against, so nothing is committed:
    :class:`~abby_core.errors.ReservationInvalid` (the hold expired during the upload,
    or the reservation was already used).
    """
    user_roll_day(doc, now)
    purge_expired(doc, now)
    held = doc["reservations"].pop(rid, None)
    if held is None:
        raise ReservationInvalid(
            "This generation took too long to save and its quota hold expired; nothing was charged. "
            "Please try again."
        )
    if held["day"] == doc["day"]:
        doc["count"] = int(doc["count"]) + 1
    doc["objects"][key] = [size, _iso(now)]


def global_usage(doc: Doc, *, skip: str | None = None) -> int:
    committed = sum(int(v[0]) for v in doc["users"].values())
    return committed + sum(int(r["bytes"]) for rid, r in doc["reservations"].items() if rid != skip)


def global_hold(
    doc: Doc,
    *,
    rid: str,
    user_id: str,
    size: int,
    limit: int,
    now: datetime,
    ttl: int,
    user_total: int | None = None,
    user_version: int = 0,
) -> None:
    """Hold ``size`` bytes of the global limit for ``rid``.

    ``user_total``/``user_version``: the user's committed bytes from the user document
    just written; recorded here when newer, so a total a crashed process never synced
    is corrected by the user's next reservation.
    """
    purge_expired(doc, now)
    current = doc["users"].get(user_id)
    if user_total is not None and (current is None or int(current[1]) < user_version):
        doc["users"][user_id] = [user_total, user_version]
    existing = doc["reservations"].get(rid)
    size = max(size, int(existing["bytes"])) if existing else size
    used = global_usage(doc, skip=rid)
    if used + size > limit:
        raise GlobalStorageFull(used=used, limit=limit)
    doc["reservations"][rid] = {"user": user_id, "bytes": size, "expires": _iso(now + timedelta(seconds=ttl))}


def global_release(doc: Doc, *, rid: str) -> None:
    if doc["reservations"].pop(rid, None) is None:
        raise NoChange()


def global_set_user(doc: Doc, *, user_id: str, total: int, version: int, rid: str | None = None) -> None:
    """Record ``user_id``'s committed bytes as of their document ``version`` (newer wins)."""
    changed = False
    if rid is not None and doc["reservations"].pop(rid, None) is not None:
        changed = True
    current = doc["users"].get(user_id)
    if current is None or int(current[1]) < version:
        # Kept even at zero bytes: the version must survive so a stale total cannot return.
        doc["users"][user_id] = [total, version]
        changed = True
    if not changed:
        raise NoChange()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_time(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _holds(value: object, fields: dict[str, Any]) -> bool:
    return isinstance(value, dict) and all(
        isinstance(r, dict) and all(check(r.get(name)) for name, check in fields.items()) for r in value.values()
    )


def well_formed(doc: Doc, *, is_global: bool) -> bool:
    """Whether ``doc`` has every field the rules above read, with the right types.

    A document that parses but fails this (a bad edit, a half-written or foreign file)
    is treated as corrupt and rebuilt from the objects, never read as zero usage.
    """
    if is_global:
        users = doc.get("users")
        return (
            isinstance(users, dict)
            and all(isinstance(v, list) and len(v) == 2 and all(map(_is_int, v)) for v in users.values())
            and _holds(doc.get("reservations"), {"user": lambda v: isinstance(v, str), "bytes": _is_int,
                                                 "expires": _is_time})
        )
    objects = doc.get("objects")
    return (
        isinstance(doc.get("user_id"), str)
        and isinstance(doc.get("day"), str)
        and _is_int(doc.get("count"))
        and _is_int(doc.get("bonus", 0))
        and isinstance(doc.get("blocked", False), bool)
        and isinstance(objects, dict)
        and all(isinstance(v, list) and len(v) == 2 and _is_int(v[0]) for v in objects.values())
        and _holds(doc.get("reservations"), {"bytes": _is_int, "expires": _is_time,
                                             "day": lambda v: isinstance(v, str), "stem": lambda v: isinstance(v, str)})
    )
