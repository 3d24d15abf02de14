"""Where images live and who may make another: ``StorageManager`` and its backends.

``StorageManager`` is the only entry point the bot and the CLI need; backends
(``FilesystemBackend``, ``S3Backend``) are chosen by ``STORAGE_BACKEND``.
"""

from abby_core.storage.backend import StorageBackend
from abby_core.storage.filesystem import FilesystemBackend
from abby_core.storage.keys import MemberId, check_image_key, check_user_id
from abby_core.storage.manager import StorageManager
from abby_core.storage.models import (
    ArchivedImage,
    ArchiveReport,
    ArchiveStats,
    CleanupReport,
    GlobalStats,
    LeaseInfo,
    ObjectInfo,
    QuotaStatus,
    ReadyReport,
    ReconcileReport,
    Reservation,
    StoredImage,
    UserLimits,
)

__all__ = [
    "ArchiveReport",
    "ArchiveStats",
    "ArchivedImage",
    "CleanupReport",
    "FilesystemBackend",
    "GlobalStats",
    "LeaseInfo",
    "MemberId",
    "ObjectInfo",
    "QuotaStatus",
    "ReadyReport",
    "ReconcileReport",
    "Reservation",
    "S3Backend",
    "StorageBackend",
    "StorageManager",
    "StoredImage",
    "UserLimits",
    "check_image_key",
    "check_user_id",
]


def __getattr__(name: str) -> object:
    # boto3 is imported only when the S3 backend is actually used.
    if name == "S3Backend":
        from abby_core.storage.s3 import S3Backend

        return S3Backend
    raise AttributeError(name)
