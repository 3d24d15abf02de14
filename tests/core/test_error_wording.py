"""Core errors carry data and neutral sentences; each adapter words them for its reader."""

from __future__ import annotations

import pytest

from abby_core import errors
from abby_core.generation import ImageGenerator
from abby_core.generation.stability import NOT_CONFIGURED


def test_core_quota_messages_name_no_button_and_no_command() -> None:
    for exc in (errors.UserStorageFull(used=3, limit=2), errors.GlobalStorageFull(used=3, limit=2)):
        lowered = exc.message.lower()
        assert "button" not in lowered and "abby " not in lowered and "/gallery" not in lowered
        assert (exc.used, exc.limit) == (3, 2)


def test_not_configured_carries_the_setting() -> None:
    assert errors.NotConfigured(NOT_CONFIGURED).setting == "STABILITY_API_KEY"
    assert errors.NotConfigured("DISCORD_TOKEN is not set").setting == "DISCORD_TOKEN"
    assert errors.NotConfigured("a message").setting is None
    assert errors.NotConfigured("no key", setting="STABILITY_API_KEY").setting == "STABILITY_API_KEY"


async def test_the_generator_names_the_missing_key() -> None:
    async with ImageGenerator(None) as generator:
        with pytest.raises(errors.NotConfigured) as refused:
            await generator.text_to_image("a fox")
    assert refused.value.setting == "STABILITY_API_KEY"


def test_discord_keeps_its_own_wording() -> None:
    from abby_discord.errors import user_message

    full = user_message(errors.UserStorageFull(used=3_000_000, limit=3_000_000))
    assert "Delete button" in full and "/gallery" in full and "3.0 MB of 3.0 MB" in full
    assert "abby " not in full
