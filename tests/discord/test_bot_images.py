"""/imgimg, /upscale and the buttons under a result, including after a restart."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from abby_core.errors import InvalidImage
from abby_discord.buttons import RESULT_TEMPLATE, ResultButton
from tests.discord.conftest import Abby, buttons, field, refusal, result_of


def _png(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buf, format="PNG")
    return buf.getvalue()


async def _imagine(abby: Abby, member: object, prompt: str = "a red fox") -> dict:
    handle = await abby.fake.slash("imagine", user=member, options={"prompt": prompt, "style": "anime"})
    await result_of(handle)
    assert handle.original is not None
    return handle.original


async def test_imgimg_makes_a_new_image_from_an_attachment(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    picture = abby.fake.add_attachment("cat.png", _png(), "image/png")
    handle = await abby.fake.slash(
        "imgimg", user=member, options={"image": picture, "prompt": "a cat in snow", "strength": 0.3}
    )
    result = await result_of(handle)
    assert result.embeds[0]["description"] == "a cat in snow"
    with Image.open(io.BytesIO(result.files[0].data)) as made:
        assert made.size[0] / made.size[1] == pytest.approx(96 / 64, rel=0.02)
    await abby.fake.wait_for("GET", r"/cdn/attachments/.*/cat\.png", timeout=1)
    assert (await abby.status(member)).daily_used == 1


@pytest.mark.parametrize(
    ("name", "data", "content_type", "text"),
    [
        ("notes.txt", b"hello", "text/plain", "is not an image"),
        ("huge.png", b"\x89PNG" + b"0" * (10 * 1024 * 1024 + 1), "image/png",
         "is 10.1 MiB; images must be 10 MiB or smaller"),
    ],
    ids=["text-file", "oversize"],
)
async def test_a_bad_attachment_is_refused_before_download(
    abby: Abby, name: str, data: bytes, content_type: str, text: str
) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    attachment = abby.fake.add_attachment(name, data, content_type)
    for command, options in (("imgimg", {"prompt": "x"}), ("upscale", {})):
        options = {"image": attachment, **options}
        handle = await abby.fake.slash(command, user=member, options=options, expect_error=True)
        error, reply = await refusal(handle)
        assert isinstance(error, InvalidImage)
        assert text in (reply.content or "")
    assert not [r for r in abby.fake.requests if r.path.startswith("/cdn/")], "nothing was downloaded"
    assert (await abby.status(member)).daily_used == 0


async def test_a_disguised_file_is_refused_by_its_content(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    fake_png = abby.fake.add_attachment("cat.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png")
    handle = await abby.fake.slash("upscale", user=member, options={"image": fake_png}, expect_error=True)
    error, reply = await refusal(handle)
    assert isinstance(error, InvalidImage) and "PNG, JPEG or WebP" in (reply.content or "")
    assert (await abby.status(member)).daily_used == 0


async def test_upscale_enlarges_the_attachment(abby: Abby) -> None:
    await abby.start()
    member = abby.fake.make_member(name="ann")
    picture = abby.fake.add_attachment("small.png", _png((64, 48)), "image/png")
    handle = await abby.fake.slash("upscale", user=member, options={"image": picture})
    result = await result_of(handle)
    with Image.open(io.BytesIO(result.files[0].data)) as made:
        assert made.size == (256, 192)
    assert set(buttons(handle.original or {})) == {"Upscale", "Delete"}, "no prompt to reuse: no Variation/Reroll"


async def test_result_buttons_upscale_vary_and_reroll(abby: Abby) -> None:
    await abby.start()
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    message = await _imagine(abby, ann)
    ids = buttons(message)
    assert all(len(custom_id) <= 100 for custom_id in ids.values())

    upscaled = await result_of(await abby.fake.click(ids["Upscale"], user=ann, message=message))
    with Image.open(io.BytesIO(upscaled.files[0].data)) as made:
        assert made.size == (4096, 4096)
    assert upscaled.embeds[0]["description"] == "a red fox"

    varied = await result_of(await abby.fake.click(ids["Variation"], user=ann, message=message))
    assert varied.embeds[0]["title"].endswith("Variation")
    assert varied.embeds[0]["description"] == "a red fox"

    # anyone may reroll a public result; it is charged to them, not to the owner
    rerolled = await result_of(await abby.fake.click(ids["Reroll"], user=bob, message=message))
    embed = rerolled.embeds[0]
    assert embed["description"] == "a red fox" and field(embed, "Style") == "anime"
    assert field(embed, "Seed") != field(message["embeds"][0], "Seed")
    assert (await abby.status(ann)).daily_used == 3
    assert (await abby.status(bob)).daily_used == 1


async def test_delete_is_for_the_owner_only(abby: Abby) -> None:
    await abby.start()
    ann, bob = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    message = await _imagine(abby, ann)
    delete = buttons(message)["Delete"]

    refused = await (await abby.fake.click(delete, user=bob, message=message)).response()
    assert refused.ephemeral and "Only the member who made this image can delete it" in (refused.content or "")
    assert abby.storage is not None and len(await abby.storage.list_images(ann.id)) == 1

    click = await abby.fake.click(delete, user=ann, message=message)
    assert (await click.response()).type == 6
    edit = await click.edit()
    assert "deleted" in edit.embeds[0]["title"]
    stored = abby.fake.message(message["id"])
    assert stored is not None and stored["components"] == [] and stored["attachments"] == []
    assert await abby.storage.list_images(ann.id) == []
    assert (await abby.status(ann)).user_bytes == 0


async def test_buttons_keep_working_after_a_restart(abby: Abby) -> None:
    await abby.start()
    ann = abby.fake.make_member(name="ann")
    message = await _imagine(abby, ann)
    ids = buttons(message)

    await abby.restart()
    varied = await result_of(await abby.fake.click(ids["Variation"], user=ann, message=message))
    assert varied.embeds[0]["description"] == "a red fox"
    click = await abby.fake.click(ids["Delete"], user=ann, message=message)
    await click.response()
    assert "deleted" in (await click.edit()).embeds[0]["title"]
    assert (await abby.status(ann)).daily_used == 2


async def test_a_button_on_an_expired_image_says_it_is_gone(abby: Abby) -> None:
    await abby.start()
    ann = abby.fake.make_member(name="ann")
    message = await _imagine(abby, ann)
    assert abby.storage is not None
    [image] = await abby.storage.list_images(ann.id)
    await abby.storage.delete_image(ann.id, image.name)  # as the daily cleanup would
    handle = await abby.fake.click(buttons(message)["Upscale"], user=ann, message=message)
    assert (await handle.response()).type == 5
    reply = await handle.followup()
    assert reply.ephemeral and "no longer exists" in (reply.content or "")
    assert handle.original is None
    assert (await abby.status(ann)).daily_used == 1


def test_custom_ids_fit_discords_limit() -> None:
    longest = ResultButton("upscale", "1" * 20, "20261125T101010Z-" + "a" * 32 + ".webp")
    assert len(longest.custom_id) <= 100
    assert ResultButton.__discord_ui_compiled_template__.pattern == RESULT_TEMPLATE
