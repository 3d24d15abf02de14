"""The manager takes the storage section: every storage variable reaches it, and its defaults are the section's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from abby_core.config import StorageSettings, load_settings
from abby_core.storage.filesystem import FilesystemBackend
from abby_core.storage.manager import StorageManager


async def test_every_storage_variable_reaches_the_manager(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None, STORAGE_ROOT=str(tmp_path), MAX_GLOBAL_STORAGE_MB="800", MAX_USER_STORAGE_MB="70",
        MAX_USER_DAILY_GENS="9", STORAGE_CLEANUP_DAYS="11", IMAGE_GEN_SIZE_MB="2", RESERVATION_TTL_SECONDS="300",
        PRESIGNED_URL_TTL_SECONDS="120", QUOTA_TIERS="5:20:100", PREMIUM_TIERS="6:30:200", STORAGE_ESCROW="true",
        STORAGE_ARCHIVE="on", ARCHIVE_DAYS="30", MAX_USER_ARCHIVE_MB="40", ARCHIVE_QUALITY="50",
        ANALYTICS_RETENTION_DAYS="45",
    )
    async with StorageManager.from_settings(settings) as manager:
        assert manager.section == settings.storage
        assert (manager.global_limit_bytes, manager.default_limits.storage_bytes) == (800_000_000, 70_000_000)
        assert (manager.default_limits.daily_gens, manager.cleanup_days, manager.estimate_bytes) == (9, 11, 2_000_000)
        assert (manager.reservation_ttl, manager.link_ttl) == (300, 120)
        assert manager.limits_for(role_ids=[5], sku_ids=[6]).daily_gens == 30
        assert manager.escrow is not None and manager.archive
        archiver = manager.archiver
        assert (archiver.days, archiver.limit_bytes, archiver.quality, archiver.link_ttl) == (30, 40_000_000, 50, 120)
        assert manager.events_retention_days == 45
        assert isinstance(manager.backend, FilesystemBackend)


async def test_keywords_are_section_fields_over_the_sections_defaults(tmp_path: Path) -> None:
    async with StorageManager(storage_root=tmp_path, max_user_daily_gens=7, reservation_ttl_seconds=2) as manager:
        expected = StorageSettings().model_copy(update={"max_user_daily_gens": 7, "reservation_ttl_seconds": 2})
        assert manager.section == expected  # a short TTL, as tests need, is not refused
        assert manager.protocol.ttl == 2 and manager.accounts.lease_silence is not None
        assert manager.accounts.lease_silence < timedelta(seconds=2)
    section = load_settings(env_file=None, MAX_USER_DAILY_GENS="3", ARCHIVE_DAYS="12").storage
    async with StorageManager(FilesystemBackend(tmp_path), section, cleanup_days=4) as manager:
        assert (manager.default_limits.daily_gens, manager.archiver.days, manager.cleanup_days) == (3, 12, 4)


def test_an_unknown_keyword_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="max_daily_gens"):
        StorageManager(storage_root=tmp_path, max_daily_gens=3)
