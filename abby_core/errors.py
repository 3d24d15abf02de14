"""Every error Abby's core raises, in one place.

The tree::

    AbbyError                                   .code (stable, used by the CLI's --json)
    ├── ConfigError                             config_error
    ├── NotConfigured                           not_configured  .setting
    ├── UserBlocked                             blocked
    ├── QuotaExceeded                           .limit_name .used .limit .resets_at
    │   ├── DailyLimitExceeded                  daily_limit
    │   ├── UserStorageFull                     user_storage_full
    │   └── GlobalStorageFull                   global_storage_full
    ├── StorageError                            storage_error
    │   ├── StorageUnavailable                  storage_unavailable
    │   │   └── SaveOutcomeUnknown              save_outcome_unknown  (stored and counted, or neither)
    │   ├── LedgerCorrupt                       ledger_corrupt
    │   ├── ImageNotFound                       image_not_found  .key
    │   │   └── ArchivedImageNotFound           image_not_found  .key  (no such archived image)
    │   └── ReservationInvalid                  reservation_invalid
    ├── InvalidInput                            invalid_input   .parameter .value .allowed .reason
    │   ├── InvalidPrompt                       invalid_prompt
    │   ├── InvalidImage                        invalid_image
    │   ├── InvalidUser                         invalid_user
    │   └── InvalidKey                          invalid_key
    └── GenerationError                         generation_error
        ├── GenerationUnavailable               generation_unavailable  (retried; never charged)
        │   ├── ProviderUnreachable             provider_unreachable    (nothing was sent)
        │   ├── GenerationTimeout               generation_timeout
        │   └── RateLimited                     rate_limited
        └── ProviderRejected                    .status .request_id .detail
            ├── PromptRejected                  invalid_prompt          (the user's to fix)
            ├── ContentFiltered                 content_filtered        (the user's to fix)
            ├── RequestTooLarge                 invalid_image
            ├── ProviderAuthError               generation_auth         (the operator's to fix)
            └── ProviderOutOfCredits            generation_auth         (the operator's to fix)

Messages are neutral, factual sentences for logs, in the third person (no "you",
no "please", no buttons, no command-line flags): each adapter (the Discord
translator, the CLI, the dashboard) words what its reader can do from the data the
error carries (``.limit``, ``.key``, ``.parameter``, ``.reason``, ...); a test fails if
a core string addresses the reader or a translator falls back to the message.
Every message is safe to show to a Discord member or an operator: it never contains
a secret, a key, a credential or a foreign exception's text that could hold one.
Foreign exceptions (botocore, httpx, OSError) are translated at the edge of core
with ``raise ... from exc`` and never leave it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar

__all__ = [
    "AbbyError",
    "ArchivedImageNotFound",
    "ConfigError",
    "ContentFiltered",
    "DailyLimitExceeded",
    "GenerationError",
    "GenerationTimeout",
    "GenerationUnavailable",
    "GlobalStorageFull",
    "ImageNotFound",
    "InvalidImage",
    "InvalidInput",
    "InvalidKey",
    "InvalidPrompt",
    "InvalidUser",
    "LedgerCorrupt",
    "NotConfigured",
    "PromptRejected",
    "ProviderAuthError",
    "ProviderOutOfCredits",
    "ProviderRejected",
    "ProviderUnreachable",
    "QuotaExceeded",
    "RateLimited",
    "RequestTooLarge",
    "ReservationInvalid",
    "SaveOutcomeUnknown",
    "StorageError",
    "StorageUnavailable",
    "UserBlocked",
    "UserStorageFull",
]


_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")  # STABILITY_API_KEY, DISCORD_TOKEN


class AbbyError(Exception):
    """Base of every error Abby raises on purpose."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(AbbyError):
    """The configuration is invalid; the message names each variable and what it allows."""

    code = "config_error"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class NotConfigured(AbbyError):
    """A feature was used that the operator has not configured (e.g. no Stability key).

    ``setting`` is the variable that would configure it (``STABILITY_API_KEY``,
    ``DISCORD_TOKEN``); when not given it is the first variable name the message
    mentions, or ``None``.
    """

    code = "not_configured"

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        if setting is None:
            named = _VARIABLE.search(message)
            setting = named.group(0) if named else None
        self.setting = setting


class UserBlocked(AbbyError):
    """An admin has blocked this user from generating images."""

    code = "blocked"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"User {user_id} is blocked from generating images.")
        self.user_id = user_id


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


class QuotaExceeded(AbbyError):
    """A quota would be exceeded; nothing was reserved or charged."""

    code = "quota_exceeded"
    limit_name: ClassVar[str] = "quota"

    def __init__(
        self,
        message: str,
        *,
        used: int,
        limit: int,
        resets_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.used = used
        self.limit = limit
        self.resets_at = resets_at


class DailyLimitExceeded(QuotaExceeded):
    """The user has used every generation allowed today (UTC)."""

    code = "daily_limit"
    limit_name = "daily"

    def __init__(self, *, used: int, limit: int, resets_at: datetime) -> None:
        super().__init__(
            f"The daily limit of {limit} image generations is used up ({used} used); "
            f"it resets at {resets_at:%H:%M} UTC.",
            used=used,
            limit=limit,
            resets_at=resets_at,
        )


class UserStorageFull(QuotaExceeded):
    """The user's own storage allowance cannot hold another image."""

    code = "user_storage_full"
    limit_name = "user_storage"

    def __init__(self, *, used: int, limit: int) -> None:
        super().__init__(
            f"The user's image storage is full ({_mb(used)} of {_mb(limit)}).",
            used=used,
            limit=limit,
        )


class GlobalStorageFull(QuotaExceeded):
    """The server-wide storage allowance cannot hold another image."""

    code = "global_storage_full"
    limit_name = "global_storage"

    def __init__(self, *, used: int, limit: int) -> None:
        super().__init__(
            f"The server's image storage is full ({_mb(used)} of {_mb(limit)}).",
            used=used,
            limit=limit,
        )


class StorageError(AbbyError):
    """Something went wrong reading or writing storage."""

    code = "storage_error"


class StorageUnavailable(StorageError):
    """Storage could not be reached or refused the operation; nothing was charged."""

    code = "storage_unavailable"


class SaveOutcomeUnknown(StorageUnavailable):
    """Storage stopped answering right at the commit: the image is either stored and counted, or
    neither (never half). It shows in the gallery if it was kept."""

    code = "save_outcome_unknown"


class LedgerCorrupt(StorageError):
    """A quota ledger document is unreadable; storage rebuilds it from the objects and logs it."""

    code = "ledger_corrupt"


class ImageNotFound(StorageError):
    """No image with that key belongs to this user."""

    code = "image_not_found"

    def __init__(self, key: str, *, message: str | None = None) -> None:
        super().__init__(message or f"No image {key!r} was found in the user's gallery.")
        self.key = key


class ArchivedImageNotFound(ImageNotFound):
    """No archived image with that key belongs to this user (never archived, or restored or deleted since)."""

    def __init__(self, key: str) -> None:
        super().__init__(key, message=f"No archived image {key!r} was found.")


class ReservationInvalid(StorageError):
    """A reservation was used twice, or its hold expired before the image was committed."""

    code = "reservation_invalid"


class InvalidInput(AbbyError):
    """Input was refused before anything was spent.

    ``parameter`` names the request's field that was refused (``aspect_ratio``,
    ``style_preset``, ``mode``, ``prompt``), ``value`` what was given and ``allowed`` the
    accepted values when they are a list; each adapter names its own option for the field.
    All three are ``None`` when the refusal is not about one field. ``reason`` is one of the
    class's :attr:`reasons` when the adapters advise differently for it (an empty prompt is
    described, a control character removed), else ``None``.
    """

    code = "invalid_input"
    reasons: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: str | None = None,
        allowed: tuple[str, ...] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        if reason is not None and reason not in self.reasons:
            raise ValueError(f"{type(self).__name__} has no reason {reason!r}")
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        self.reason = reason


class InvalidPrompt(InvalidInput):
    """The prompt is empty, too long or contains characters that are not allowed."""

    code = "invalid_prompt"
    reasons = ("empty", "too_long", "control_character", "invalid_character", "format_character")


class InvalidImage(InvalidInput):
    """An uploaded image is not one Abby can use."""

    code = "invalid_image"
    reasons = ("unsupported_format", "empty", "damaged", "too_detailed")


class InvalidUser(InvalidInput):
    """A user id is not a Discord snowflake (digits only)."""

    code = "invalid_user"


class InvalidKey(InvalidInput):
    """An image key is malformed or does not belong to the user."""

    code = "invalid_key"
    reasons = ("not_a_key", "other_user")


class GenerationError(AbbyError):
    """The image provider did not produce an image."""

    code = "generation_error"


class GenerationUnavailable(GenerationError):
    """The provider did not answer usefully after retries; never charged."""

    code = "generation_unavailable"


class ProviderUnreachable(GenerationUnavailable):
    """The image server could not be reached, so no job was sent (a fallback provider may be tried)."""

    code = "provider_unreachable"


class GenerationTimeout(GenerationUnavailable):
    """The provider took longer than the configured timeout."""

    code = "generation_timeout"


class RateLimited(GenerationUnavailable):
    """The provider kept rate-limiting us after retries."""

    code = "generation_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRejected(GenerationError):
    """The provider answered with an error about this request.

    ``detail`` is the provider's own reason, shortened and stripped of secrets (``None`` when it gave none).
    """

    code = "generation_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.detail = detail


class PromptRejected(ProviderRejected):
    """The provider refused the prompt or a parameter (HTTP 400/422)."""

    code = "invalid_prompt"


class ContentFiltered(ProviderRejected):
    """The provider's content filter refused the prompt or the result."""

    code = "content_filtered"


class RequestTooLarge(ProviderRejected):
    """The request was over the provider's size limit (HTTP 413)."""

    code = "invalid_image"


class ProviderAuthError(ProviderRejected):
    """The provider refused the API key (HTTP 401): the operator must fix it."""

    code = "generation_auth"


class ProviderOutOfCredits(ProviderRejected):
    """The provider account has no credits left (HTTP 402): the operator must top it up."""

    code = "generation_auth"
