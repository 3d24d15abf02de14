"""The quota ledger's documents, as typed models with a schema version.

Three kinds of document, all outside ``images/`` so lifecycle rules never expire them::

    ledger/users/{id}.json     UserLedger    the member's hot document: today's count, their
                                             committed images and the holds in flight
    ledger/shards/{k}.json     ShardLedger   one snapshot of each user document of shard k
                                             (committed bytes and holds, with its version)
    ledger/global.json         GlobalLedger  one snapshot of each shard document, and the
                                             processes' leases of the budget (escrow)
    ledger/catalogue/{id}/{m}.json  CatalogueSegment  the member's images of month m, once
                                             no longer recent (the hot document keeps totals)
    ledger/members/{id}.json   MemberRecord  what must survive damage to the hot document:
                                             blocks, grants, daily resets, today's deletions

Schema 1 documents (written before holds had states) are upgraded when read; they are
written back as schema 2 by the next change.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

__all__ = [
    "SCHEMA",
    "CatalogueSegment",
    "CreditSource",
    "Entry",
    "GlobalLedger",
    "Hold",
    "Lease",
    "MemberRecord",
    "Segment",
    "ShardHold",
    "ShardLedger",
    "ShardSnapshot",
    "ShardTotals",
    "Snapshot",
    "SnapshotHold",
    "UserLedger",
]

SCHEMA: Literal[2] = 2


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Document(_Record):
    """A ledger document: a schema number and a version counter that every write raises."""

    schema_version: Literal[2] = Field(default=SCHEMA, alias="schema")
    version: NonNegativeInt = 0


class Hold(_Record):
    """Quota held for one generation, from ``reserve`` until its commit or its end.

    A *live* hold counts one generation on ``day`` and ``bytes`` of storage. A *void*
    hold counts nothing: its generation failed, and any image uploaded under ``stem`` is
    to be deleted before the hold is dropped (that order is what keeps a crash from
    leaving an image nobody knows about).
    """

    bytes: NonNegativeInt
    expires: AwareDatetime
    day: date
    stem: str
    void: bool = False
    credit: bool = False  # past the daily allowance: paid with one of the member's credits at commit


class CreditSource(_Record):
    """One source of credits in a member's document (a purchase, a grant), in whatever order
    its add, its refund and the generations around them arrive.

    ``refunded`` with ``credits == 0`` is a tombstone: the refund came first, and an add of
    the same source changes nothing. ``claims``: generations in flight whose promised credit
    the refund takes if they fail (it is spent if they succeed); a claim whose hold was
    committed stays listed, so taking that generation back gives its credit to the refund.
    """

    credits: NonNegativeInt = 0  # what the source gave
    refunded: bool = False
    removed: NonNegativeInt = 0  # credits the refund took back so far
    claims: list[str] = Field(default_factory=list)


class Entry(_Record):
    """A committed image: its size and when it was committed."""

    size: NonNegativeInt
    created: AwareDatetime


class Segment(_Record):
    """A catalogue segment as the member's document last saw it (``version``: the segment's)."""

    version: NonNegativeInt
    bytes: NonNegativeInt
    count: NonNegativeInt


class CatalogueSegment(_Document):
    """``ledger/catalogue/{id}/{month}.json``: the member's committed images of one month
    (by key), moved out of the member's document once they are no longer recent."""

    user_id: str
    month: str
    entries: dict[str, Entry] = Field(default_factory=dict)


class UserLedger(_Document):
    """``ledger/users/{id}.json``. ``count`` is committed generations on ``day`` (UTC)."""

    user_id: str
    day: date
    count: NonNegativeInt = 0
    bonus: NonNegativeInt = 0  # extra generations granted for ``day`` (mirrors MemberRecord)
    blocked: bool = False  # mirrors MemberRecord
    objects: dict[str, Entry] = Field(default_factory=dict)  # the recent ones; the rest in ``segments``
    # The catalogue segments of older images, by month: each one's totals as last applied.
    segments: dict[str, Segment] = Field(default_factory=dict)
    holds: dict[str, Hold] = Field(default_factory=dict)
    # Credits (bought packs, admin grants): spent one a generation past the daily allowance,
    # at commit. ``credit_log``: every source added or refunded, so each applies once;
    # mirrored in MemberRecord.
    credits: NonNegativeInt = 0
    credits_spent: NonNegativeInt = 0
    credit_log: dict[str, CreditSource] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("schema") == 1:
            data = dict(data)
            data["schema"] = SCHEMA
            if isinstance(data.get("objects"), dict):
                data["objects"] = {
                    k: {"size": v[0], "created": v[1]} if isinstance(v, list) and len(v) == 2 else v
                    for k, v in data["objects"].items()
                }
            if "reservations" in data:
                data["holds"] = data.pop("reservations")
        if isinstance(data, dict) and isinstance(data.get("credit_log"), dict):
            data = dict(data, credit_log=_credit_log(data["credit_log"]))
        return data


def _credit_log(log: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a credit log of plain numbers (source → credits, "refund:" + source → −removed)."""
    if all(not isinstance(v, int) for v in log.values()):
        return log
    found: dict[str, Any] = {k: v for k, v in log.items() if not isinstance(v, int)}
    for key, value in log.items():
        if isinstance(value, int) and key.startswith("refund:"):
            entry = found.setdefault(key.removeprefix("refund:"), {})
            entry.update(refunded=True, removed=-value)
        elif isinstance(value, int):
            found.setdefault(key, {})["credits"] = value
    return found


class SnapshotHold(_Record):
    bytes: NonNegativeInt
    expires: AwareDatetime


class Snapshot(_Record):
    """One user document as the global ledger last saw it (``version``: that document's)."""

    version: NonNegativeInt
    bytes: NonNegativeInt
    holds: dict[str, SnapshotHold] = Field(default_factory=dict)


class ShardLedger(_Document):
    """``ledger/shards/{shard}.json``: the snapshots of the members whose id hashes to ``shard``.

    Members are spread over a fixed number of shards (:func:`abby_core.storage.keys.shard_of`),
    so a shard holds about members / ``SHARDS`` snapshots and the global document one
    snapshot per shard: neither grows with the community the way one list of every member would.
    """

    shard: str
    users: dict[str, Snapshot]  # required: an empty document must not read as zero usage


class ShardHold(_Record):
    """A hold in a shard snapshot, with its shard and member (whose document drops it once it expired)."""

    shard: str
    user: str
    bytes: NonNegativeInt
    expires: AwareDatetime


class ShardSnapshot(_Record):
    """One shard document as the global ledger last saw it (``version``: that document's).

    The global document stores it in two compact parts (``GlobalLedger.shards`` and
    ``GlobalLedger.holds``) so that reading it stays cheap with every shard in it.
    """

    version: NonNegativeInt
    bytes: NonNegativeInt  # committed bytes of the shard's members
    members: NonNegativeInt = 0  # members with images, for stats
    holds: dict[str, ShardHold] = Field(default_factory=dict)


#: A shard snapshot's totals as the global document stores them: version, bytes, members.
ShardTotals = tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt]


class Lease(_Record):
    """A process's slice of the global budget (escrow): it admits holds from it in memory.

    Counted in full against the global limit until its owner settles it or it expires
    (``abby_core.storage.escrow`` explains why that is exact).
    """

    bytes: NonNegativeInt
    expires: AwareDatetime
    owner: str = ""  # host:pid, for stats


class GlobalLedger(_Document):
    """``ledger/global.json``: usage is the sum of the shard snapshots' bytes and holds, plus the leases.

    ``users``: the layout before shards (one snapshot per member), read only to be moved
    into the shard documents (:meth:`abby_core.storage.accounts.Accounts.update_global`).
    """

    shards: dict[str, ShardTotals] = Field(default_factory=dict)
    holds: dict[str, ShardHold] = Field(default_factory=dict)  # the holds the shard snapshots list
    users: dict[str, Snapshot] = Field(default_factory=dict)
    leases: dict[str, Lease] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and "shards" not in data and "users" not in data:
            # An empty document must not read as zero usage.
            raise ValueError("a global ledger document lists its shards")
        if (
            isinstance(data, dict)
            and data.get("schema") == 1
            and isinstance(data.get("users"), dict)
            and isinstance(data.get("reservations"), dict)
        ):
            users: dict[str, Any] = {}
            for uid, entry in (data.get("users") or {}).items():
                if isinstance(entry, list) and len(entry) == 2:
                    users[uid] = {"version": entry[1], "bytes": entry[0], "holds": {}}
            for rid, r in (data.get("reservations") or {}).items():
                if isinstance(r, dict) and r.get("user") in users:
                    users[r["user"]]["holds"][rid] = {"bytes": r.get("bytes"), "expires": r.get("expires")}
                elif isinstance(r, dict):
                    users[str(r.get("user"))] = {
                        "version": 0,
                        "bytes": 0,
                        "holds": {rid: {"bytes": r.get("bytes"), "expires": r.get("expires")}},
                    }
            data = {"schema": SCHEMA, "version": data.get("version", 0), "users": users}
        return data


class MemberRecord(_Document):
    """``ledger/members/{id}.json``: state a rebuild of the hot document must not lose.

    Written by admin actions, deletions, credits and refunds, and after a credit-paid commit;
    ``deleted`` keeps the image keys deleted in the last two days, so a rebuilt count
    still includes today's images that were made and then deleted.
    """

    user_id: str
    blocked: bool = False
    grants: dict[date, NonNegativeInt] = Field(default_factory=dict)
    resets: dict[date, datetime] = Field(default_factory=dict)
    deleted: dict[str, date] = Field(default_factory=dict)
    # Credits: each source (an entitlement id, an admin grant) with its credits, each refund
    # (a tombstone first, then what it takes back: removed, plus what generations in flight
    # were promised), and the credits spent, as of ``credits_version`` of the hot document
    # (see docs/STORAGE_SYSTEM.md, "Credits").
    credit_sources: dict[str, NonNegativeInt] = Field(default_factory=dict)
    credit_refunds: dict[str, NonNegativeInt] = Field(default_factory=dict)
    credits_spent: NonNegativeInt = 0
    credits_version: NonNegativeInt = 0

    @property
    def credits(self) -> int:
        """The balance this record accounts for."""
        return max(0, sum(self.credit_sources.values()) - sum(self.credit_refunds.values()) - self.credits_spent)


# -- the archive (STORAGE_ARCHIVE) ---------------------------------------------------------


class ArchiveEntry(_Record):
    """One archived image: its archived size, the image it came from, and when."""

    size: NonNegativeInt
    original: str  # the image key it was archived from
    created: AwareDatetime  # when the original was made
    archived: AwareDatetime
    storage_class: str | None = None  # set when the original bytes were copied in that S3 class


class ArchiveLedger(_Document):
    """``ledger/archive/{id}.json``: a member's archived images (``entries`` by archived key).

    Rebuilt from the ``archive/users/{id}/`` listing when missing or unreadable.
    """

    user_id: str
    entries: dict[str, ArchiveEntry] = Field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.entries.values())


__all__ += ["ArchiveEntry", "ArchiveLedger"]
