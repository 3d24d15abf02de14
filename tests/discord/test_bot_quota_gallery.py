"""/quota and /gallery: private answers about a member's own images."""

from __future__ import annotations

from abby_discord.cogs.gallery.cog import PAGE_SIZE
from tests.discord.conftest import Abby, buttons, field, result_of


async def test_quota_shows_the_members_standing_privately(abby: Abby) -> None:
    await abby.start(MAX_USER_DAILY_GENS=3)
    member = abby.fake.make_member(name="ann")
    await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": "a"}))
    handle = await abby.fake.slash("quota", user=member)
    assert (await handle.response()).type == 5
    reply = await handle.followup()
    assert handle.original is not None and handle.original["flags"] & 64
    embed = reply.embeds[0]
    assert field(embed, "Today") == "1 of 3 used · 2 left"
    assert field(embed, "Storage").endswith("of 500 MB")
    assert embed["description"].startswith("1/3 today · ")


async def test_quota_tiers_follow_the_members_roles(abby: Abby) -> None:
    patrons = abby.fake.make_role("patrons")
    await abby.start(MAX_USER_DAILY_GENS=2, QUOTA_TIERS=f"{patrons.id}:20:2000")
    patron = abby.fake.make_member(name="pat", roles=[patrons])
    await result_of(await abby.fake.slash("imagine", user=patron, options={"prompt": "a"}))
    handle = await abby.fake.slash("quota", user=patron)
    await handle.response()
    embed = (await handle.followup()).embeds[0]
    assert field(embed, "Today") == "1 of 20 used · 19 left"
    assert field(embed, "Storage").endswith("of 2000 MB")


async def test_gallery_pages_through_the_members_images(abby: Abby) -> None:
    count = PAGE_SIZE + 2
    await abby.start(MAX_USER_DAILY_GENS=count)
    member, other = abby.fake.make_member(name="ann"), abby.fake.make_member(name="bob")
    empty = await abby.fake.slash("gallery", user=member)
    await empty.response()
    assert "no images yet" in (await empty.followup()).embeds[0]["description"]

    for n in range(count):
        await result_of(await abby.fake.slash("imagine", user=member, options={"prompt": f"picture {n}"}))
    await result_of(await abby.fake.slash("imagine", user=other, options={"prompt": "not ann's"}))
    assert abby.storage is not None
    names = [i.name for i in await abby.storage.list_images(member.id)]

    handle = await abby.fake.slash("gallery", user=member)
    await handle.response()
    first = (await handle.followup()).embeds[0]
    assert f"{count} images · page 1 of 2" == first["description"]
    assert [f["name"].split(" ", 1)[1] for f in first["fields"]] == names[:PAGE_SIZE]
    assert "made <t:" in first["fields"][0]["value"]
    page = handle.original
    assert page is not None and page["flags"] & 64

    click = await abby.fake.click(buttons(page)["Next ▶"], user=member, message=page)
    assert (await click.response()).type == 6
    second = (await click.edit()).embeds[0]
    assert [f["name"].split(" ", 1)[1] for f in second["fields"]] == names[PAGE_SIZE:]
    assert second["fields"][0]["name"].startswith(f"{PAGE_SIZE + 1}. ")

    direct = await abby.fake.slash("gallery", user=member, options={"page": 2})
    await direct.response()
    assert (await direct.followup()).embeds[0]["description"].endswith("page 2 of 2")
