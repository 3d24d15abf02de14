"""/gallery's archived pages (STORAGE_ARCHIVE): Open links, Restore within the quota, Delete."""

from __future__ import annotations

from tests.discord.conftest import Abby, buttons, result_of


async def _archived_member(abby: Abby, count: int, **env: object) -> object:
    await abby.start(STORAGE_ARCHIVE="on", MAX_USER_DAILY_GENS=count + 1, **env)
    member = abby.fake.make_member(name="ann")
    for n in range(count):
        await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": f"picture {n}"}))
    abby.clock.advance(days=8)
    assert abby.bot is not None
    await abby.bot.run_maintenance()  # the daily maintenance archives instead of deleting
    return member


async def test_archived_images_have_their_own_pages_with_restore_and_delete(abby: Abby) -> None:
    member = await _archived_member(abby, 3)
    assert abby.storage is not None
    assert await abby.storage.list_images(member.id) == []  # type: ignore[attr-defined]
    archived = await abby.storage.list_archived(member.id)  # type: ignore[attr-defined]
    assert len(archived) == 3

    handle = await abby.fake.slash("gallery", user=member)
    await handle.response()
    reply = await handle.followup()
    assert "older ones are in your archive" in reply.embeds[0]["description"]
    page = handle.original
    assert page is not None
    click = await abby.fake.click(buttons(page)["🗄️ Archived (3)"], user=member, message=page)
    await click.response()
    shown = (await click.edit()).embeds[0]
    assert shown["title"] == "🗄️ Your archived images"
    assert shown["description"].startswith("3 archived images")
    assert [f["name"].split(" ", 1)[1] for f in shown["fields"]] == [a.name for a in archived]
    assert "deleted <t:" in shown["fields"][0]["value"]
    page = handle.original
    assert page is not None
    labels = buttons(page)
    assert {"Restore 1", "Restore 3", "Delete 2", "🖼️ Back to images"} <= set(labels)

    restore = await abby.fake.click(labels["Restore 1"], user=member, message=page)
    await restore.response()
    edit = await restore.edit()
    assert edit.content.startswith("♻️ Restored ")
    assert [i.name for i in await abby.storage.list_images(member.id)] == [archived[0].name]  # type: ignore[attr-defined]
    status = await abby.status(member)
    assert status.daily_used == 0 and status.user_bytes == archived[0].size

    page = handle.original
    assert page is not None
    delete = await abby.fake.click(buttons(page)["Delete 1"], user=member, message=page)
    await delete.response()
    assert (await delete.edit()).content.startswith("🗑️ Deleted ")
    assert [a.name for a in await abby.storage.list_archived(member.id)] == [archived[2].name]  # type: ignore[attr-defined]


async def test_restore_without_room_says_so_and_keeps_the_image_archived(abby: Abby) -> None:
    member = await _archived_member(abby, 1, MAX_USER_STORAGE_MB="2", IMAGE_GEN_SIZE_MB="1")
    assert abby.storage is not None
    [archived] = await abby.storage.list_archived(member.id)  # type: ignore[attr-defined]
    filler = 2_000_000 - archived.size // 2  # the member's storage is nearly full again
    held = await abby.storage.reserve(member.id, size_bytes=filler)  # type: ignore[attr-defined]
    kept = await abby.storage.save_image(held, b"x" * filler)
    handle = await abby.fake.slash("gallery", user=member)
    await handle.response()
    await handle.followup()
    page = handle.original
    assert page is not None
    click = await abby.fake.click(buttons(page)["🗄️ Archived (1)"], user=member, message=page)
    await click.response()
    await click.edit()
    page = handle.original
    assert page is not None
    restore = await abby.fake.click(buttons(page)["Restore 1"], user=member, message=page)
    await restore.response()
    refusal = await restore.followup()
    assert refusal.ephemeral and "no room to restore" in refusal.content
    assert [a.key for a in await abby.storage.list_archived(member.id)] == [archived.key]  # type: ignore[attr-defined]
    assert [i.key for i in await abby.storage.list_images(member.id)] == [kept.key]  # type: ignore[attr-defined]
