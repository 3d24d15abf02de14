"""Refusals are private from the first message; a stored image is never reported as a failure."""

from __future__ import annotations

from typing import Any

import discord
import pytest

from abby_core.errors import DailyLimitExceeded, InvalidPrompt, UserBlocked
from tests.discord.conftest import Abby


@pytest.mark.parametrize(
    ("setup", "prompt", "expected"),
    [
        ("blocked", "a cat", UserBlocked),
        ("used_up", "a cat", DailyLimitExceeded),
        ("none", "bad\u202eprompt", InvalidPrompt),
    ],
)
async def test_refusals_never_show_a_public_thinking_message(
    abby: Abby, setup: str, prompt: str, expected: type[Exception]
) -> None:
    await abby.start(MAX_USER_DAILY_GENS=1)
    member = abby.fake.make_member(name="ann")
    assert abby.storage is not None
    if setup == "blocked":
        await abby.storage.set_blocked(member.id, True)
    elif setup == "used_up":
        await abby.storage.save_image(await abby.storage.reserve(member.id), _png())
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": prompt}, expect_error=True)
    error = await handle.error()
    first = await handle.response()
    assert isinstance(getattr(error, "original", error), expected)
    assert first.type == 4 and first.ephemeral, (first.type, first.content)  # no public "thinking…"
    assert handle.original is None or handle.original["flags"] & 64


async def test_image_kept_and_named_when_it_cannot_be_shown(abby: Abby, monkeypatch: pytest.MonkeyPatch) -> None:
    await abby.start()
    member = abby.fake.make_member(name="bo")
    real = discord.Interaction.edit_original_response

    async def refuse_result(self: discord.Interaction, **kw: Any) -> Any:
        if kw.get("embed") is not None:
            response = type("Response", (), {"status": 413, "reason": "Payload Too Large"})()
            raise discord.HTTPException(response, "Request entity too large")  # type: ignore[arg-type]
        return await real(self, **kw)

    monkeypatch.setattr(discord.Interaction, "edit_original_response", refuse_result)
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"})
    assert (await handle.response()).type == 5
    reply = await handle.followup()
    assert reply.ephemeral and "saved as" in (reply.content or "") and "/gallery" in (reply.content or "")
    status = await abby.status(member)
    assert status.daily_used == 1  # charged once, and the member was told where the image is
    assert abby.storage is not None
    gallery = await abby.storage.list_images(member.id)
    assert len(gallery) == 1 and gallery[0].name in (reply.content or "")


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()
