"""/imagine end to end: the result message, quotas, and every way it can be refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from abby_core.errors import (
    ContentFiltered,
    DailyLimitExceeded,
    GenerationTimeout,
    GenerationUnavailable,
    GlobalStorageFull,
    InvalidPrompt,
    NotConfigured,
    ProviderAuthError,
    StorageUnavailable,
    UserStorageFull,
)
from abby_core.generation.offline import LABEL
from tests.discord.conftest import Abby, field, refusal, result_of
from tests.fixtures.fake_stability import FakeStability, Reply


def _midnight_after(moment: datetime) -> int:
    return int(datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC).timestamp())


async def test_imagine_returns_the_image_with_prompt_seed_label_and_quota(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash(
        "imagine", user=member, options={"prompt": "a lighthouse at dawn", "seed": 42, "aspect_ratio": "16:9"}
    )
    result = await result_of(handle)
    embed = result.embeds[0]
    assert embed["description"] == "a lighthouse at dawn"
    assert field(embed, "Seed") == "42"
    assert field(embed, "Aspect ratio") == "16:9"
    assert field(embed, "Made with") == LABEL
    midnight = _midnight_after(datetime.now(UTC))
    assert re.fullmatch(rf"1/5 today · 0\.\d of 500 MB · resets <t:{midnight}:R>", field(embed, "Your quota"))
    [upload] = result.files
    assert upload.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert embed["image"]["url"] == f"attachment://{upload.filename}"
    message = handle.original
    assert message is not None and not message["flags"] & 64, "results are public"
    assert message["attachments"][0]["filename"] == upload.filename
    assert {"Upscale", "Variation", "Reroll", "Delete"} <= {
        item["label"] for row in message["components"] for item in row["components"]
    }
    status = await abby.status(member)
    assert status.daily_used == 1 and status.user_bytes == len(upload.data)


async def test_the_sixth_image_is_refused_with_the_reset_time(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    for n in range(5):
        result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": f"cat {n}"}))
        assert field(result.embeds[0], "Your quota").startswith(f"{n + 1}/5 today")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "one more"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, DailyLimitExceeded)
    assert "all 5 of your image generations" in (reply.content or "")
    assert f"<t:{_midnight_after(datetime.now(UTC))}:R>" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 5


async def test_two_members_have_their_own_quota(abby: Abby) -> None:
    await abby.start(MAX_USER_DAILY_GENS=1)
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "a"}))
    error, _ = await refusal(await abby.fake.slash("imagine", user=ann, options={"prompt": "b"}, expect_error=True))
    assert isinstance(error, DailyLimitExceeded)
    result = await result_of(await abby.fake.slash("imagine", user=bob, options={"prompt": "c"}))
    assert field(result.embeds[0], "Your quota").startswith("1/1 today")


async def test_quota_resets_at_midnight_utc(abby: Abby) -> None:
    late = datetime.now(UTC).replace(hour=23, minute=58, second=0, microsecond=0)
    abby.clock.set(late)
    await abby.start(MAX_USER_DAILY_GENS=1)
    member = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "before midnight"}))
    error, reply = await refusal(
        await abby.fake.slash("imagine", user=member, options={"prompt": "again"}, expect_error=True)
    )
    assert isinstance(error, DailyLimitExceeded)
    assert f"<t:{_midnight_after(late)}:R>" in (reply.content or "")
    abby.clock.advance(minutes=3)  # 00:01 the next day
    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "after midnight"}))
    assert field(result.embeds[0], "Your quota").startswith("1/1 today")


async def test_a_full_user_storage_is_refused_and_costs_nothing(abby: Abby) -> None:
    await abby.start(MAX_USER_STORAGE_MB=1.5, IMAGE_GEN_SIZE_MB=1.5)
    member = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "first"}))
    error, reply = await refusal(
        await abby.fake.slash("imagine", user=member, options={"prompt": "second"}, expect_error=True)
    )
    assert isinstance(error, UserStorageFull)
    assert "Your image storage is full" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 1


async def test_a_full_server_storage_is_refused_with_its_message(abby: Abby) -> None:
    await abby.start(MAX_GLOBAL_STORAGE_MB=1.6, MAX_USER_STORAGE_MB=1.6, IMAGE_GEN_SIZE_MB=1.5)
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    await result_of(await abby.fake.slash("imagine", user=ann, options={"prompt": "first"}))
    error, reply = await refusal(await abby.fake.slash("imagine", user=bob, options={"prompt": "b"}, expect_error=True))
    assert isinstance(error, GlobalStorageFull)
    assert "This server's image storage is full" in (reply.content or "")
    assert "/abby-admin cleanup" in (reply.content or "")
    assert (await abby.status(bob)).daily_used == 0


async def test_an_invalid_prompt_is_refused_before_any_quota(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat\u202e"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, InvalidPrompt)
    assert "invisible formatting character" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0


@pytest.mark.parametrize(
    ("replies", "error_type", "text"),
    [
        ([Reply(finish_reason="CONTENT_FILTERED")], ContentFiltered, "safety filter"),
        ([Reply(delay=2)], GenerationTimeout, "took too long"),
        ([Reply.error(503), Reply.error(500)], GenerationUnavailable, "unavailable right now"),
        ([Reply.error(401)], ProviderAuthError, "image service account has a problem"),
    ],
    ids=["content-filtered", "timeout", "provider-5xx", "auth"],
)
async def test_provider_failures_give_their_message_and_cost_nothing(
    abby: Abby,
    fake_stability: FakeStability,
    stability_generator: Any,
    replies: list[Reply],
    error_type: type[Exception],
    text: str,
) -> None:
    await abby.start(generator=stability_generator(), IMAGE_PROVIDER="stability")
    member = abby.fake.make_member(name="ann")
    fake_stability.script("core", *replies)
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, error_type)
    assert text in (reply.content or "")
    assert "sk-" not in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0
    # and the next request works: the failure left nothing held
    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a red fox"}))
    assert field(result.embeds[0], "Your quota").startswith("1/5 today")


async def test_without_a_stability_key_the_bot_starts_and_says_not_configured(abby: Abby) -> None:
    await abby.start(IMAGE_PROVIDER="stability")
    assert abby.generator is not None and not abby.generator.configured
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, NotConfigured)
    assert "not configured" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0


async def test_storage_on_a_file_is_reported_as_unavailable(abby: Abby, caplog: pytest.LogCaptureFixture) -> None:
    blocker = abby.tmp_path / "not-a-folder"
    blocker.write_text("x")
    await abby.start(STORAGE_ROOT=str(blocker))
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, StorageUnavailable)
    assert "Image storage is unavailable" in (reply.content or "")
    assert "Storage is not usable" in caplog.text


async def test_s3_on_a_closed_port_is_reported_as_unavailable(abby: Abby) -> None:
    await abby.start(
        STORAGE_BACKEND="s3",
        S3_ENDPOINT_URL="http://127.0.0.1:9",
        S3_ACCESS_KEY_ID="abbytest",
        S3_SECRET_ACCESS_KEY="abbytestsecret",
        S3_MAX_ATTEMPTS=1,
        S3_TIMEOUT_SECONDS=1,
    )
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, StorageUnavailable)
    assert "Image storage is unavailable" in (reply.content or "")
    assert "abbytestsecret" not in (reply.content or "")


async def test_an_unexpected_error_shows_a_reference_that_is_logged(
    abby: Abby, caplog: pytest.LogCaptureFixture
) -> None:
    from abby_core.generation import ImageGenerator, OfflineProvider

    class Broken(OfflineProvider):
        async def text_to_image(self, request: Any) -> Any:
            raise RuntimeError("kaboom password=hunter2")

    await abby.start(generator=ImageGenerator(provider=Broken()))
    member = abby.fake.make_member(name="ann")
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": "a cat"}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, RuntimeError)
    found = re.search(r"\(ref ([0-9a-f]{8})\)", reply.content or "")
    assert found, reply.content
    assert "hunter2" not in (reply.content or "")
    assert f"ref {found[1]}" in caplog.text and "kaboom" in caplog.text
    assert (await abby.status(member)).daily_used == 0


@pytest.mark.seaweedfs
async def test_on_s3_the_presigned_link_is_in_the_embed(abby: Abby, seaweedfs: Any) -> None:
    import uuid

    env = {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": seaweedfs.endpoint,
        "S3_BUCKET": f"abby-bot-{uuid.uuid4().hex[:8]}",
        "S3_ACCESS_KEY_ID": seaweedfs.access_key,
        "S3_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "PRESIGNED_URL_TTL_SECONDS": "120",
    }
    await abby.start(**env)
    assert abby.storage is not None
    await abby.storage.ensure_ready()
    member = abby.fake.make_member(name="ann")
    result = await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a harbour"}))
    link = re.search(r"\[Open the full image\]\((http[^)]+)\)", field(result.embeds[0], "Link"))
    assert link and link[1].startswith(seaweedfs.endpoint)
    # One variable sets how long the link works and the expiry the member is shown.
    assert "X-Amz-Expires=120&" in link[1] + "&"
    (stored,) = await abby.storage.list_images(member.id)
    expires = re.search(r"\(expires <t:(\d+):R>\)", field(result.embeds[0], "Link"))
    assert expires and int(expires[1]) == int((stored.created_at + timedelta(seconds=120)).timestamp())
    assert result.files, "IMAGE_DELIVERY=both attaches the file too"
    async with aiohttp.ClientSession() as session, session.get(link[1]) as response:
        assert response.status == 200
        assert await response.read() == result.files[0].data
