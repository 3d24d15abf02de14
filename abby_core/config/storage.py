"""The storage sections: where images live, each member's limits, the S3 bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, field_validator, model_validator

from abby_core.config._fields import MB, Section, var
from abby_core.config._urls import OptionalUrl
from abby_core.config.tiers import PremiumTiers, QuotaTiers

__all__ = ["ARCHIVE_STORAGE_CLASSES", "S3Settings", "StorageSettings"]

#: S3 storage classes an archived copy may use (S3_ARCHIVE_STORAGE_CLASS): those read at once.
ARCHIVE_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")
_MB_ABOVE_0 = "a number of megabytes above 0 and at most 100000000"


class StorageSettings(Section):
    """Where images live and how much of it each user may use."""

    backend: Literal["filesystem", "s3"] = var("filesystem", "STORAGE_BACKEND", "'filesystem' or 's3'")
    root: Path = var(Path("shared"), "STORAGE_ROOT", "a folder path")
    max_global_storage_mb: float = var(5000, "MAX_GLOBAL_STORAGE_MB", _MB_ABOVE_0, gt=0, le=100_000_000)
    max_user_storage_mb: float = var(500, "MAX_USER_STORAGE_MB", _MB_ABOVE_0, gt=0, le=100_000_000)
    max_user_daily_gens: int = var(
        5, "MAX_USER_DAILY_GENS", "a whole number from 1 to 100000 (to stop generation, block users instead)",
        ge=1, le=100_000,
    )
    cleanup_days: int = var(7, "STORAGE_CLEANUP_DAYS", "a whole number of days from 1 to 3650", ge=1, le=3650)
    image_gen_size_mb: float = var(
        1.5, "IMAGE_GEN_SIZE_MB", "a number of megabytes above 0 and at most 100", gt=0, le=100
    )
    reservation_ttl_seconds: int = var(
        900, "RESERVATION_TTL_SECONDS", "a whole number of seconds from 30 to 86400", ge=30, le=86_400
    )
    quota_tiers: QuotaTiers = var(
        (), "QUOTA_TIERS", "entries ROLE_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 123:20:2000"
    )
    premium_tiers: PremiumTiers = var(
        (), "PREMIUM_TIERS", "entries SKU_ID:DAILY_GENS:STORAGE_MB separated by commas, e.g. 1234:50:5000"
    )
    #: How long a link to an image works.
    link_ttl_seconds: int = var(
        3600, "PRESIGNED_URL_TTL_SECONDS", "a whole number of seconds from 1 to 604800 (7 days, the SigV4 maximum)",
        ge=1, le=604_800,
    )
    escrow: bool = var(
        False, "STORAGE_ESCROW",
        "true or false (true: each bot process leases slices of the global storage budget)",
    )
    # -- archive: old images are shrunk and kept instead of deleted --
    archive: bool = var(
        False, "STORAGE_ARCHIVE",
        "on or off (or true/false): on keeps old images in a smaller archive instead of deleting them",
    )
    archive_days: int = var(
        90, "ARCHIVE_DAYS", "a whole number of days from 1 to 3650 (how long archived images are kept)",
        ge=1, le=3650,
    )
    max_user_archive_mb: float = var(
        200, "MAX_USER_ARCHIVE_MB", _MB_ABOVE_0 + " (each member's archive)", gt=0, le=100_000_000
    )
    archive_quality: int = var(60, "ARCHIVE_QUALITY", "a whole number from 1 to 100 (WebP quality)", ge=1, le=100)
    #: Keep archived originals in this S3 storage class.
    archive_storage_class: str | None = var(
        None, "S3_ARCHIVE_STORAGE_CLASS",
        "empty, or an S3 storage class that is read at once: " + ", ".join(ARCHIVE_STORAGE_CLASSES),
    )

    @field_validator("archive_storage_class", mode="before")
    @classmethod
    def _storage_class(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        if not name:
            return None
        if name in ("GLACIER", "DEEP_ARCHIVE"):
            raise ValueError(
                f"{name} objects cannot be read without a restore request that takes hours; "
                "use GLACIER_IR (Glacier Instant Retrieval) or STANDARD_IA"
            )
        if name not in ARCHIVE_STORAGE_CLASSES:
            raise ValueError(f"{name!r} is not one of {', '.join(ARCHIVE_STORAGE_CLASSES)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> StorageSettings:
        if self.archive_storage_class is not None and self.backend != "s3":
            raise ValueError(
                "S3_ARCHIVE_STORAGE_CLASS only applies with STORAGE_BACKEND=s3; leave it empty for a folder"
            )
        smallest = min(self.max_user_storage_mb, self.max_global_storage_mb)
        if self.image_gen_size_mb > smallest:
            raise ValueError(
                f"IMAGE_GEN_SIZE_MB ({self.image_gen_size_mb}) must not be larger than "
                f"MAX_USER_STORAGE_MB or MAX_GLOBAL_STORAGE_MB ({smallest})"
            )
        return self

    @property
    def max_user_archive_bytes(self) -> int:
        return int(self.max_user_archive_mb * MB)

    @property
    def max_global_bytes(self) -> int:
        return int(self.max_global_storage_mb * MB)

    @property
    def max_user_bytes(self) -> int:
        return int(self.max_user_storage_mb * MB)

    @property
    def image_gen_bytes(self) -> int:
        return int(self.image_gen_size_mb * MB)


class S3Settings(Section):
    """The S3-compatible bucket (MinIO, AWS S3, SeaweedFS)."""

    endpoint_url: OptionalUrl = var(None, "S3_ENDPOINT_URL", "an http(s) URL, or empty for AWS")
    public_endpoint_url: OptionalUrl = var(
        None, "S3_PUBLIC_ENDPOINT_URL", "an http(s) URL that users' browsers reach, or empty"
    )
    bucket: str = var(
        "abby-images", "S3_BUCKET", "a bucket name: 3-63 lowercase letters, digits, dots and hyphens",
        min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    access_key_id: str | None = var(None, "S3_ACCESS_KEY_ID", "an access key id")
    secret_access_key: SecretStr | None = var(None, "S3_SECRET_ACCESS_KEY", "a secret access key")
    region: str = var(
        "us-east-1", "S3_REGION", "a region name such as us-east-1 (lowercase letters, digits, hyphens)",
        pattern=r"^[a-z0-9][a-z0-9-]{0,40}$",
    )
    timeout_seconds: float = var(10, "S3_TIMEOUT_SECONDS", "seconds above 0 and at most 300", gt=0, le=300)
    max_attempts: int = var(3, "S3_MAX_ATTEMPTS", "a whole number from 1 to 10", ge=1, le=10)
