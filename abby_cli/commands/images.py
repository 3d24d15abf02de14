"""``abby quota``, ``abby gallery`` and ``abby delete``: one user's standing and images."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from abby_cli.output import OK, Output, escape, human_bytes, quota_line
from abby_cli.runtime import (
    JsonFlag,
    UserArg,
    UserOpt,
    UserThenKeyArg,
    open_storage,
    pick_user,
    pick_user_and_key,
    run_command,
)
from abby_core.config import Settings
from abby_core.storage import ArchivedImage, StorageManager, StoredImage

__all__ = ["image_payload", "register"]


def image_payload(image: StoredImage | ArchivedImage) -> dict[str, Any]:
    """An image as the JSON output shows it; an archived one also names its original."""
    payload: dict[str, Any] = {"key": image.key, "name": image.name, "size": image.size}
    if isinstance(image, ArchivedImage):
        payload.update(original_key=image.original_key, created_at=image.created_at.isoformat(),
                       archived_at=image.archived_at.isoformat())
    else:
        payload.update(created_at=image.created_at.isoformat(), content_type=image.content_type)
    payload.update({"url": image.url} if image.url else {"path": image.path})
    return payload


LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Show at most this many.")]


def list_images(
    ctx: typer.Context,
    json_mode: bool,
    user: str,
    fetch: Callable[[StorageManager], Awaitable[Sequence[StoredImage | ArchivedImage]]],
    *,
    field: str,
    nothing: str,
    show: Callable[[Console, Sequence[Any]], None],
) -> None:
    """Run a listing of ``user``'s images: ``fetch`` them, print ``nothing`` when there are none,
    else ``show`` them; the JSON output lists them under ``field``."""

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            found = await fetch(storage)

        def render(con: Console) -> None:
            if not found:
                con.print(nothing)
                return
            show(con, found)

        out.success({"user_id": user, "count": len(found), field: [image_payload(i) for i in found]}, render)

    run_command(ctx, json_mode, body)


def register(app: typer.Typer) -> None:
    @app.command()
    def quota(
        ctx: typer.Context, user_arg: UserArg = None, user_opt: UserOpt = None, json_mode: JsonFlag = False
    ) -> None:
        """Show where USER stands today: generations, their storage, the server's storage."""
        user = pick_user(ctx, user_arg, user_opt)

        async def body(settings: Settings, out: Output) -> None:
            async with open_storage(settings) as storage:
                status = await storage.get_quota_status(user)

            def render(con: Console) -> None:
                con.print(f"User {escape(status.user_id)}: {escape(quota_line(status))}")
                con.print(
                    f"  server: {human_bytes(status.global_bytes)} of {human_bytes(status.global_limit_bytes)}"
                    f"{f' · {status.in_flight} in progress' if status.in_flight else ''}"
                )

            out.success({**status.as_dict(), "daily_left": status.daily_left}, render)

        run_command(ctx, json_mode, body)

    @app.command()
    def gallery(
        ctx: typer.Context,
        user_arg: UserArg = None,
        user_opt: UserOpt = None,
        limit: LimitOpt = 20,
        json_mode: JsonFlag = False,
    ) -> None:
        """List USER's images, newest first, with their links (or file paths)."""
        user = pick_user(ctx, user_arg, user_opt)

        def show(con: Console, found: Sequence[StoredImage]) -> None:
            con.print(f"Images of {escape(user)}, newest first ({len(found)} shown):")
            for image in found:
                con.print(
                    f"  [bold]{escape(image.name)}[/bold]  {human_bytes(image.size)}  "
                    f"{image.created_at:%Y-%m-%d %H:%M} UTC"
                )
                con.print(f"    {escape(image.link or '')}")

        list_images(ctx, json_mode, user, lambda storage: storage.list_images(user, limit=limit), field="images",
                    nothing=f"User {escape(user)} has no images.", show=show)

    @app.command()
    def delete(
        ctx: typer.Context,
        first: UserThenKeyArg = None,
        second: Annotated[str | None, typer.Argument(metavar="KEY", show_default=False, help=(
            "The image key, or its file name (see 'abby gallery')."))] = None,
        user_opt: UserOpt = None,
        json_mode: JsonFlag = False,
    ) -> None:
        """Delete one of USER's images and give back its storage: abby delete USER KEY, or --user USER KEY."""
        user, image_key = pick_user_and_key(
            ctx, first, second, user_opt, usage="abby delete USER KEY, or abby delete --user USER KEY"
        )

        async def body(settings: Settings, out: Output) -> None:
            async with open_storage(settings) as storage:
                freed = await storage.delete_image(user, image_key)
                status = await storage.get_quota_status(user)

            def render(con: Console) -> None:
                con.print(f"{OK} Deleted {escape(image_key)} ({human_bytes(freed)} freed)")
                con.print(f"  quota: {escape(quota_line(status))}")

            payload = {"user_id": status.user_id, "key": image_key, "freed_bytes": freed, "quota": status.as_dict()}
            out.success(payload, render)

        run_command(ctx, json_mode, body)
