"""The one mapping from an exception to what the CLI reports: a code, a message, an exit code.

Exit codes::

    0  success
    1  the user's request failed: quota, input, generation, image not found, unexpected error
    2  configuration or usage: bad settings, a feature not configured, bad command-line options
    3  storage unavailable: the folder or the S3 server cannot be used

Codes are the ``.code`` of the core error (``daily_limit``, ``storage_unavailable``, ...);
``usage_error`` for bad command lines and ``internal_error`` for anything unexpected,
whose message is generic so no foreign text (which could hold a secret) is shown.

Messages are written for an operator at a terminal, from the data the core error
carries: quota errors name the commands and settings that free or raise the limit,
and a missing provider key points at ``--provider offline``. Other core messages are
shown as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

from abby_core.errors import (
    AbbyError,
    ArchivedImageNotFound,
    ConfigError,
    DailyLimitExceeded,
    GlobalStorageFull,
    ImageNotFound,
    NotConfigured,
    QuotaExceeded,
    StorageError,
    UserBlocked,
    UserStorageFull,
)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_STORAGE",
    "EXIT_USER",
    "CliError",
    "describe_error",
]

EXIT_OK = 0
EXIT_USER = 1
EXIT_CONFIG = 2
EXIT_STORAGE = 3


@dataclass(frozen=True)
class CliError:
    """What to show for a failure; ``extra`` goes into the JSON error object."""

    code: str
    message: str
    exit_code: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


def _extra(exc: AbbyError) -> dict[str, Any]:
    if isinstance(exc, ConfigError):
        return {"problems": list(exc.problems)}
    if isinstance(exc, NotConfigured):
        return {"setting": exc.setting}
    if isinstance(exc, QuotaExceeded):
        resets = exc.resets_at.isoformat() if exc.resets_at else None
        return {"limit_name": exc.limit_name, "used": exc.used, "limit": exc.limit, "resets_at": resets}
    return {}


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def _message(exc: AbbyError) -> str:
    """The operator's sentence for ``exc``; core messages speak to a member."""
    match exc:
        case DailyLimitExceeded():
            when = f" It resets at {exc.resets_at:%H:%M} UTC." if exc.resets_at else ""
            return (
                f"This user has used all {exc.limit} of their generations for today.{when} "
                "To allow more, raise MAX_USER_DAILY_GENS or give them a role listed in QUOTA_TIERS."
            )
        case UserStorageFull():
            return (
                f"This user's image storage is full ({_mb(exc.used)} of {_mb(exc.limit)}). Free space with "
                "'abby delete USER KEY' (keys from 'abby gallery USER') or 'abby cleanup', "
                "or raise MAX_USER_STORAGE_MB."
            )
        case GlobalStorageFull():
            return (
                f"The server's image storage is full ({_mb(exc.used)} of {_mb(exc.limit)}). Free space with "
                "'abby cleanup' or 'abby delete USER KEY', or raise MAX_GLOBAL_STORAGE_MB."
            )
        case ArchivedImageNotFound():
            return (
                f"This user has no archived image {exc.key!r}: 'abby storage archived USER' lists their archived "
                "images ('abby gallery USER' those back in the gallery)."
            )
        case UserBlocked():
            return f"User {exc.user_id} is blocked from generating images on this server."
        case NotConfigured(setting="STABILITY_API_KEY"):
            return (
                "Image generation is not configured: STABILITY_API_KEY is not set (in .env or the "
                "environment). To make local previews without a key, add --provider offline, or set "
                "IMAGE_PROVIDER=offline."
            )
    return exc.message


def describe_error(exc: BaseException) -> CliError:
    """Code, message and exit code for ``exc``; the only place this decision is made."""
    if isinstance(exc, AbbyError):
        if isinstance(exc, ConfigError | NotConfigured):
            exit_code = EXIT_CONFIG
        elif isinstance(exc, StorageError) and not isinstance(exc, ImageNotFound):
            exit_code = EXIT_STORAGE
        else:
            exit_code = EXIT_USER
        return CliError(exc.code, _message(exc), exit_code, _extra(exc))
    if isinstance(exc, typer.TyperException):  # bad options or arguments (click's UsageError)
        return CliError("usage_error", exc.format_message(), EXIT_CONFIG)
    return CliError(
        "internal_error",
        f"An unexpected error occurred ({type(exc).__name__}). Run again with 'abby --debug ...' for details.",
        EXIT_USER,
    )
