"""The translator: every core error has its own message; secrets and foreign text never show."""

from __future__ import annotations

import inspect
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from discord import app_commands

import abby_core.errors as core_errors
from abby_core.admission import QueueTimeout, UserBusy
from abby_discord.errors import NotAdmin, NotOwner, user_message

SECRET = "sk-SECRET-9f8e7d6c5b4a3210"
GENERIC = re.compile(r"Something went wrong|\(ref [0-9a-f]{8}\)")
RESETS = datetime(2026, 11, 26, tzinfo=UTC)


def _make(cls: type[core_errors.AbbyError], message: str = "details") -> core_errors.AbbyError:
    """An instance of any core error, whatever its constructor asks for."""
    params = inspect.signature(cls.__init__).parameters
    kw: dict[str, Any] = {}
    for name in ("used", "limit"):
        if name in params:
            kw[name] = 3_000_000
    if "resets_at" in params:
        kw["resets_at"] = RESETS
    if "key" in params:
        return cls("20261125T101010Z-ab12cd34.png")  # type: ignore[call-arg]
    if "user_id" in params:
        return cls("123")  # type: ignore[call-arg]
    if "message" in params:
        return cls(message, **kw)  # type: ignore[call-arg]
    return cls(**kw)  # type: ignore[call-arg]


CORE_CLASSES = sorted(
    (getattr(core_errors, name) for name in core_errors.__all__), key=lambda cls: cls.__name__
)


@pytest.mark.parametrize("cls", CORE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_core_error_has_a_specific_message(cls: type[core_errors.AbbyError]) -> None:
    message = user_message(_make(cls))
    assert message and not GENERIC.search(message), message
    assert len(message) <= 300


def _variants() -> list[core_errors.AbbyError]:
    """One of every core error, and one per reason for those that advise by reason."""
    made = []
    for cls in CORE_CLASSES:
        made.append(_make(cls))
        for reason in getattr(cls, "reasons", ()):
            made.append(cls("details", parameter="key", value="x.png", reason=reason))
    return made


@pytest.mark.parametrize(
    "exc", _variants(), ids=lambda e: f"{type(e).__name__}-{getattr(e, 'reason', None) or ''}".rstrip("-")
)
def test_every_core_error_is_worded_for_the_member(exc: core_errors.AbbyError) -> None:
    """The core's message is for logs: the translator words every class (and reason) itself."""
    assert user_message(exc) != exc.message


# Errors whose own text is not shown: the translator writes its own.
OWN_WORDS = [
    core_errors.NotConfigured, core_errors.ConfigError, core_errors.StorageUnavailable, core_errors.LedgerCorrupt,
    core_errors.ReservationInvalid, core_errors.GenerationError, core_errors.GenerationUnavailable,
    core_errors.GenerationTimeout, core_errors.RateLimited, core_errors.ProviderRejected,
    core_errors.ContentFiltered, core_errors.RequestTooLarge, core_errors.ProviderAuthError,
    core_errors.ProviderOutOfCredits, core_errors.ImageNotFound, core_errors.InvalidUser,
]


@pytest.mark.parametrize("cls", OWN_WORDS, ids=lambda cls: cls.__name__)
def test_secret_looking_values_never_reach_the_member(cls: type[core_errors.AbbyError]) -> None:
    message = user_message(_make(cls, f"failed with key {SECRET} at http://user:{SECRET}@10.0.0.1"))
    assert SECRET not in message and "10.0.0.1" not in message


def test_specific_wording() -> None:
    daily = user_message(core_errors.DailyLimitExceeded(used=5, limit=5, resets_at=RESETS))
    assert "all 5 of your image generations" in daily
    assert f"<t:{int(RESETS.timestamp())}:R>" in daily and f"<t:{int(RESETS.timestamp())}:t>" in daily
    assert "3.0 MB of 3.0 MB" in user_message(core_errors.UserStorageFull(used=3_000_000, limit=3_000_000))
    assert "server's image storage is full" in user_message(core_errors.GlobalStorageFull(used=1, limit=1))
    assert "rate limited" in user_message(core_errors.RateLimited("slow down", retry_after=3))
    assert "admin should check" in user_message(core_errors.ProviderOutOfCredits("no credits", status=402))
    assert "not configured" in user_message(core_errors.NotConfigured("STABILITY_API_KEY missing"))
    assert "Nothing was charged" in user_message(core_errors.GenerationTimeout("slow"))
    assert "blocked" in user_message(core_errors.UserBlocked("1"))


def test_the_adapters_own_refusals() -> None:
    assert "still working on your last image" in user_message(UserBusy("1"))
    assert "try again" in user_message(QueueTimeout("waited"))
    assert "Only the member who made this image" in user_message(NotOwner())
    assert "server admins" in user_message(NotAdmin("no"))
    assert "only works in a server" in user_message(app_commands.NoPrivateMessage())


def test_wrapped_errors_are_unwrapped() -> None:
    inner = core_errors.ContentFiltered("filtered", status=403)
    wrapped = app_commands.CommandInvokeError.__new__(app_commands.CommandInvokeError)
    wrapped.original = inner
    assert "safety filter" in user_message(wrapped)


def test_unexpected_errors_get_a_logged_reference(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="abby")
    message = user_message(KeyError(f"token={SECRET}"))
    ref = re.search(r"\(ref ([0-9a-f]{8})\)", message)
    assert ref and SECRET not in message
    assert f"Unexpected error (ref {ref[1]})" in caplog.text and "KeyError" in caplog.text
    assert user_message(ValueError()) != message, "each failure gets its own reference"


def test_a_refused_choice_names_the_slash_command_option() -> None:
    from abby_core.generation import validate_text_to_image

    with pytest.raises(core_errors.InvalidInput) as ratio:
        validate_text_to_image("a cat", aspect_ratio="7:3")
    with pytest.raises(core_errors.InvalidInput) as style:
        validate_text_to_image("a cat", style_preset="cubist")
    assert (ratio.value.parameter, ratio.value.value) == ("aspect_ratio", "7:3")
    assert "16:9" in (ratio.value.allowed or ())
    ratio_text, style_text = user_message(ratio.value), user_message(style.value)
    assert ratio_text.startswith("The `aspect_ratio` option must be one of 21:9, 16:9") and "7:3" in ratio_text
    assert style_text.startswith("The `style` option must be one of 3d-model") and "style_preset" not in style_text
