"""The one place a provider's HTTP error answer becomes an Abby error."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from abby_core.errors import (
    ContentFiltered,
    GenerationError,
    GenerationTimeout,
    GenerationUnavailable,
    PromptRejected,
    ProviderAuthError,
    ProviderOutOfCredits,
    ProviderRejected,
    RateLimited,
    RequestTooLarge,
)

__all__ = ["error_for_status", "sanitize"]

OWNER = "This is a setup problem for the server owner."
_SECRETISH = re.compile(r"\b(sk-[A-Za-z0-9_-]{6,}|Bearer\s+\S+)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]+")


def sanitize(text: str, *, secrets: Iterable[str] = (), limit: int = 200) -> str:
    """Shorten provider text for a member: no controls, no key-like tokens, one line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRETISH.sub("[redacted]", text)
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _detail(body: Any, secrets: Iterable[str]) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return sanitize("; ".join(str(e) for e in errors[:3]), secrets=secrets)
    return ""


def error_for_status(
    status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    secrets: Iterable[str] = (),
) -> GenerationError:
    """Map a provider error answer (``{id, name, errors[]}``) to the Abby error to raise.

    Every status gets an answer: unknown 4xx are a generic :class:`ProviderRejected`,
    unknown 5xx and others :class:`GenerationUnavailable`.
    """
    request_id = body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None
    name = body.get("name") if isinstance(body, dict) else None
    detail = _detail(body, secrets)
    because = f": {detail}" if detail else ""
    kw: dict[str, Any] = {"status": status, "request_id": request_id, "detail": detail or None}
    if status in (400, 422):
        return PromptRejected(
            f"The image service refused the request{because}.", **kw
        )
    if status == 401:
        return ProviderAuthError(f"The image service rejected this server's API key. {OWNER}", **kw)
    if status == 402:
        return ProviderOutOfCredits(
            "This server's image-generation credits have run out; the provider account needs a top-up.",
            **kw,
        )
    if status == 403 and name == "content_moderation":
        return ContentFiltered(
            "The request was flagged by the image service's content filter.", **kw
        )
    if status == 403:
        return ProviderAuthError(f"The image service refused access for this server's account. {OWNER}", **kw)
    if status == 404:
        return ProviderRejected(
            "The image service does not know this request (HTTP 404).",
            **kw,
        )
    if status == 413:
        return RequestTooLarge(
            "The image is too large for the image service.", **kw
        )
    if status == 408:
        return GenerationTimeout("The image service took too long to answer.")
    if status == 429:
        return RateLimited(
            "The image service is busy (rate limited).", retry_after=retry_after
        )
    if 400 <= status < 500:
        return ProviderRejected(f"The image service refused the request (HTTP {status}){because}.", **kw)
    return GenerationUnavailable(
        f"The image service is having trouble (HTTP {status}); nothing was used from the quota."
    )
