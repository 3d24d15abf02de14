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
a missing provider key points at ``--provider offline``, and a refused option is named as
typed (``--aspect-ratio``, not the request's field). Every other core error keeps its factual
message (written for logs) followed by what the operator can do; none is shown bare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer
from pydantic import ValidationError

from abby_core.admission import QueueTimeout, UserBusy
from abby_core.errors import (
    AbbyError,
    ArchivedImageNotFound,
    ConfigError,
    ContentFiltered,
    DailyLimitExceeded,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    GlobalStorageFull,
    ImageNotFound,
    InvalidImage,
    InvalidInput,
    InvalidKey,
    InvalidPrompt,
    InvalidUser,
    LedgerCorrupt,
    NotConfigured,
    PromptRejected,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    ProviderUnreachable,
    QuotaExceeded,
    RateLimited,
    RequestTooLarge,
    ReservationInvalid,
    SaveOutcomeUnknown,
    StorageError,
    StorageUnavailable,
    UserBlocked,
    UserStorageFull,
)
from abby_core.images import ACCEPTED

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


#: The option a CLI user typed for each request field a core error can name.
OPTIONS = {"aspect_ratio": "--aspect-ratio", "style_preset": "--style", "mode": "--mode", "prompt": "--prompt"}


def _extra(exc: AbbyError) -> dict[str, Any]:
    if isinstance(exc, InvalidInput) and exc.parameter in OPTIONS:
        extra: dict[str, Any] = {"option": OPTIONS[exc.parameter]}
        if exc.allowed is not None:
            extra.update(value=exc.value, allowed=list(exc.allowed))
        return extra
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


_CHARGED_NOTHING = "Nothing was charged"
# What the operator can do about a refused prompt or image, by the error's ``reason``.
_PROMPT_ADVICE = {
    "empty": "Describe the image to make.",
    "too_long": "Shorten it.",
    "control_character": "Remove that character.",
    "invalid_character": "Retype that character.",
    "format_character": "Retype the text without that character.",
}
_IMAGE_ADVICE = {
    "too_detailed": "Give a smaller image.",
    "damaged": f"Give a complete {ACCEPTED} file.",
}


def _advice(exc: AbbyError) -> str:
    """What an operator can do about a core error the CLI does not word on its own."""
    match exc:
        case SaveOutcomeUnknown():
            return "'abby gallery USER' shows whether the image was kept; if it is not there, nothing was charged."
        case StorageUnavailable():
            return "Run again once storage answers; 'abby doctor' checks the storage settings."
        case LedgerCorrupt():
            return "It is rebuilt from the stored images on its next use; run again."
        case ReservationInvalid():
            return f"{_CHARGED_NOTHING}; run the command again."
        case StorageError():
            return "'abby doctor' checks the storage settings."
        case InvalidUser():
            return "Give the member's Discord user id (digits only)."
        case InvalidPrompt():
            return _PROMPT_ADVICE.get(exc.reason or "", "Change the prompt and run again.")
        case InvalidImage():
            return _IMAGE_ADVICE.get(exc.reason or "", f"Give a {ACCEPTED} image.")
        case InvalidInput():
            return "Nothing was changed."
        case ContentFiltered() | PromptRejected():
            return f"{_CHARGED_NOTHING}; change the prompt or options and run again."
        case RequestTooLarge():
            return f"{_CHARGED_NOTHING}; give a smaller image."
        case ProviderAuthError():
            return "Check the provider's key or credentials in the settings ('abby doctor' checks them)."
        case ProviderOutOfCredits():
            return "Top up the provider account, then run again."
        case ProviderRejected():
            return f"{_CHARGED_NOTHING}."
        case GenerationTimeout():
            return f"{_CHARGED_NOTHING}; run again, or raise the provider's timeout setting."
        case RateLimited():
            return f"{_CHARGED_NOTHING}; run again in a minute."
        case ProviderUnreachable():
            return f"{_CHARGED_NOTHING}; check that the image server runs and its URL ('abby doctor')."
        case GenerationUnavailable() | GenerationError():
            return f"{_CHARGED_NOTHING}; run again in a few minutes."
        case NotConfigured(setting=str(setting)):
            return f"Set {setting} in .env or the environment."
        case ConfigError() | NotConfigured():
            return "Fix the settings in .env or the environment ('abby doctor' checks them)."
    return "Run again with 'abby --debug ...' for details."


def _message(exc: AbbyError) -> str:
    """The operator's sentence for ``exc``; core messages are written for logs."""
    if not type(exc).__module__.startswith("abby_core."):
        return exc.message  # the CLI's own errors (PortInUse) are written for the operator
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
        case UserBusy():
            return (
                f"User {exc.user_id} already has a generation running (in the bot or another 'abby' command). "
                f"{_CHARGED_NOTHING}; run again when it has finished."
            )
        case QueueTimeout():
            return (
                f"Every generation slot stayed busy for too long. {_CHARGED_NOTHING}; run again later, "
                "or raise MAX_CONCURRENT_GENERATIONS."
            )
        case UserBlocked():
            return f"User {exc.user_id} is blocked from generating images on this server."
        case NotConfigured(setting="STABILITY_API_KEY"):
            return (
                "Image generation is not configured: STABILITY_API_KEY is not set (in .env or the "
                "environment). To make local previews without a key, add --provider offline, or set "
                "IMAGE_PROVIDER=offline."
            )
        case ImageNotFound():
            return f"No image {exc.key!r} in this user's gallery (their images: 'abby gallery USER')."
        case InvalidKey(parameter="archived_key"):
            given = f"{exc.value!r}" if exc.value is not None else "That"
            return (
                f"{given} is not an archived image of this user: give a file name from "
                "'abby storage archived USER', or its full key."
            )
        case InvalidKey():
            given = f"{exc.value!r}" if exc.value is not None else "That"
            if exc.reason == "other_user":
                return f"{given} is another user's image: give a key from 'abby gallery USER' of this user."
            return (
                f"{given} is not an image key of this user: give a file name from 'abby gallery USER', "
                "or its full key."
            )
        case InvalidInput(parameter=str(parameter)) if parameter in OPTIONS:
            if exc.allowed is not None:
                return f"{OPTIONS[parameter]} must be one of {', '.join(exc.allowed)} (got {exc.value!r})."
            return f"{exc.message} Give it with {OPTIONS[parameter]}."
    return f"{exc.message}{chr(10) if chr(10) in exc.message else ' '}{_advice(exc)}"


def _usage_message(exc: typer.TyperException) -> str:
    """Click's message on one line, with where to read the command's options."""
    message = " ".join(exc.format_message().split())
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():  # typer converts values with pydantic
        message += f" (got {str(cause.errors()[0].get('input'))[:40]!r})"
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


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
        return CliError("usage_error", _usage_message(exc), EXIT_CONFIG)
    return CliError(
        "internal_error",
        f"An unexpected error occurred ({type(exc).__name__}). Run again with 'abby --debug ...' for details.",
        EXIT_USER,
    )
