"""Plain records the storage layer hands out. No behaviour beyond small derived values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from abby_core.storage.keys import MemberId

__all__ = [
    "ArchiveReport",
    "ArchiveStats",
    "ArchivedImage",
    "CleanupReport",
    "GlobalStats",
    "LeaseInfo",
    "ObjectInfo",
    "QuotaStatus",
    "ReadyReport",
    "ReconcileReport",
    "Reservation",
    "StoredImage",
    "UserLimits",
]


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as a listing sees it; ``last_modified`` is timezone-aware UTC.

    ``version`` changes whenever the object is written with other bytes (S3: the ETag; a
    folder: the file's inode and modification time, so any rewrite changes it). It is only
    ever compared with another ``version`` of the same key, never with a clock.
    """

    key: str
    size: int
    last_modified: datetime
    version: str = ""


@dataclass(frozen=True)
class UserLimits:
    """The limits that apply to one user (defaults, or a role tier's)."""

    daily_gens: int
    storage_bytes: int


@dataclass(frozen=True)
class Reservation:
    """Quota held for one generation until it is saved or released (or expires)."""

    id: str
    user_id: MemberId
    bytes: int
    key_stem: str
    day: str
    expires_at: datetime
    limits: UserLimits
    credit: bool = False  # past the daily allowance: one of the member's credits is spent at commit


class _Linked:
    """What a stored and an archived image share: where to open it and its file name."""

    key: str
    url: str | None
    path: str | None

    @property
    def link(self) -> str | None:
        """The presigned link (S3), else the local file (filesystem)."""
        return self.url or self.path

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class StoredImage(_Linked):
    """A saved image. ``url`` is a presigned link (S3); ``path`` a local file (filesystem)."""

    key: str
    user_id: str
    size: int
    created_at: datetime
    content_type: str
    url: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class QuotaStatus:
    """Where a user stands. ``daily_used`` includes generations in flight."""

    user_id: str
    daily_used: int
    daily_limit: int
    resets_at: datetime
    user_bytes: int
    user_limit_bytes: int
    global_bytes: int
    global_limit_bytes: int
    in_flight: int = 0
    blocked: bool = False
    credits: int = 0  # credits the member can still spend (bought packs, grants), beyond daily_limit

    @property
    def daily_left(self) -> int:
        return max(0, self.daily_limit - self.daily_used)

    def as_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "daily_used": self.daily_used,
            "daily_limit": self.daily_limit,
            "resets_at": self.resets_at.isoformat(),
            "user_bytes": self.user_bytes,
            "user_limit_bytes": self.user_limit_bytes,
            "global_bytes": self.global_bytes,
            "global_limit_bytes": self.global_limit_bytes,
            "in_flight": self.in_flight,
            "blocked": self.blocked,
            "credits": self.credits,
        }


@dataclass(frozen=True)
class CleanupReport:
    objects: int
    bytes: int
    users: int
    cutoff: datetime
    dry_run: bool = False
    partial_files: int = 0  # temporary files of interrupted writes that were removed
    #: With STORAGE_ARCHIVE: what became of the old images (``objects`` then counts every
    #: image that left the gallery, archived or deleted).
    archive: ArchiveReport | None = None


@dataclass(frozen=True)
class ReconcileReport:
    """What reconcile found: ``drift`` maps user id → (ledger bytes before, bytes found)."""

    users: int
    objects: int
    bytes: int
    drift: dict[str, tuple[int, int]] = field(default_factory=dict)
    partial_files: int = 0  # temporary files of interrupted writes that were removed
    archived_objects: int = 0
    archived_bytes: int = 0
    #: user id → (archive document bytes before, archived bytes found)
    archive_drift: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def drift_bytes(self) -> int:
        return sum(found - before for before, found in self.drift.values())


@dataclass(frozen=True)
class LeaseInfo:
    """A process's lease of the global budget (escrow), as the global document records it."""

    lease_id: str
    owner: str
    bytes: int
    expires: datetime


@dataclass(frozen=True)
class GlobalStats:
    """``global_bytes`` counts stored bytes, holds and leases (``leased_bytes`` of it)."""

    global_bytes: int
    global_limit_bytes: int
    users: int
    in_flight: int
    top_users: list[tuple[str, int]]
    leases: list[LeaseInfo] = field(default_factory=list)
    archive: ArchiveStats | None = None  # archived images (not part of global_bytes)

    @property
    def leased_bytes(self) -> int:
        return sum(lease.bytes for lease in self.leases)


@dataclass(frozen=True)
class ReadyReport:
    """What ``ensure_ready`` did or found, one line each, for ``abby storage init``."""

    backend: str
    location: str
    created: bool = False
    private: bool | None = None
    lifecycle_days: int | None = None
    conditional_writes: bool | None = None
    notes: list[str] = field(default_factory=list)


# -- the archive (STORAGE_ARCHIVE) --------------------------------------------------------


@dataclass(frozen=True)
class ArchivedImage(_Linked):
    """An archived image. ``url``/``path`` link the archived copy, like :class:`StoredImage`."""

    key: str
    user_id: str
    size: int
    original_key: str
    created_at: datetime  # when the original was made
    archived_at: datetime
    content_type: str
    url: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class ArchiveReport:
    """One archive run: images archived (bytes before and after), deleted because a member's
    archive was full, failed (left in place for the next run), and archived images pruned."""

    archived: int
    original_bytes: int
    archived_bytes: int
    deleted: int
    deleted_bytes: int
    users: int
    cutoff: datetime
    dry_run: bool = False
    failed: int = 0
    pruned: int = 0
    pruned_bytes: int = 0
    seconds: float = 0.0

    @property
    def saved_bytes(self) -> int:
        return self.original_bytes - self.archived_bytes


@dataclass(frozen=True)
class ArchiveStats:
    """Archived images, kept apart from the active storage and its global limit."""

    objects: int
    bytes: int
    users: int
    top_users: list[tuple[str, int]] = field(default_factory=list)
