"""``abby cleanup`` and ``abby storage init|stats|reconcile|archive|archived|restore``: the operator's housekeeping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from abby_cli.commands.images import LimitOpt, image_payload, list_images
from abby_cli.output import FAIL, OK, Output, escape, human_bytes, quota_line
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
from abby_core.analytics import AuditEvent
from abby_core.config import Settings
from abby_core.pipeline import event_log
from abby_core.storage import ArchivedImage

__all__ = ["register"]

MAX_CLEANUP_DAYS = 36_500  # 100 years; older cutoffs overflow the calendar

storage_app = typer.Typer(help="Prepare storage, see its usage, repair the quota ledger.", no_args_is_help=True)


def _yes(flag: bool | None, yes: str, no: str, unknown: str = "not applicable") -> str:
    if flag is None:
        return f"· {unknown}"
    return f"{OK} {yes}" if flag else f"{FAIL} {no}"


@storage_app.command("init")
def init(ctx: typer.Context, json_mode: JsonFlag = False) -> None:
    """Create the folders (or the bucket), keep it private, install the lifecycle rule."""

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            with out.progress("Preparing storage…"):
                report = await storage.ensure_ready(create=True)

        def render(con: Console) -> None:
            con.print(f"{OK} {report.backend} storage ready at {escape(report.location)}" + (
                " (created)" if report.created else ""))
            con.print(_yes(report.private, "private: public access blocked", "the bucket may be public",
                           "privacy: files are protected by the folder's permissions"))
            if report.lifecycle_days is not None:
                con.print(f"{OK} lifecycle rule: images expire after {report.lifecycle_days} days")
            con.print(_yes(report.conditional_writes, "conditional writes honoured: quotas are exact",
                           "the server ignores conditional writes: quotas are NOT exact across processes"))
            for note in report.notes:
                con.print(f"  {escape(note)}")

        out.success(
            {
                "backend": report.backend,
                "location": report.location,
                "created": report.created,
                "private": report.private,
                "lifecycle_days": report.lifecycle_days,
                "conditional_writes": report.conditional_writes,
                "notes": list(report.notes),
            },
            render,
        )

    run_command(ctx, json_mode, body)


@storage_app.command("stats")
def stats(
    ctx: typer.Context,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="How many of the biggest users to list.")] = 10,
    json_mode: JsonFlag = False,
) -> None:
    """Show the server's storage usage and the users using the most."""

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            result = await storage.stats(top=top)

        def render(con: Console) -> None:
            share = result.global_bytes / result.global_limit_bytes * 100 if result.global_limit_bytes else 0
            con.print(
                f"Storage: {human_bytes(result.global_bytes)} of {human_bytes(result.global_limit_bytes)} "
                f"({share:.1f}%) · {result.users} user(s) · {result.in_flight} generation(s) in progress"
            )
            if result.top_users:
                table = Table("User", "Used", title="Top users")
                for uid, used in result.top_users:
                    table.add_row(escape(uid), human_bytes(used))
                con.print(table)
            if result.leases:
                table = Table("Bot process", "Leased", "Until", title="Leases of the global budget (STORAGE_ESCROW)")
                for lease in result.leases:
                    until = f"{lease.expires:%H:%M:%S} UTC"
                    table.add_row(escape(lease.owner or lease.lease_id), human_bytes(lease.bytes), until)
                con.print(table)
                con.print(f"{human_bytes(result.leased_bytes)} of the storage above is leased by bot processes.")
            if result.archive is not None and result.archive.objects:
                con.print(
                    f"Archive: {result.archive.objects} image(s), {human_bytes(result.archive.bytes)} "
                    f"from {result.archive.users} user(s) (not counted in the storage above)"
                )

        out.success(
            {
                "global_bytes": result.global_bytes,
                "global_limit_bytes": result.global_limit_bytes,
                "users": result.users,
                "in_flight": result.in_flight,
                "top_users": [{"user_id": uid, "bytes": used} for uid, used in result.top_users],
                "leases": [
                    {"lease_id": lease.lease_id, "owner": lease.owner, "bytes": lease.bytes,
                     "expires": lease.expires.isoformat()}
                    for lease in result.leases
                ],
                "archive": None if result.archive is None else {
                    "objects": result.archive.objects,
                    "bytes": result.archive.bytes,
                    "users": result.archive.users,
                    "top_users": [{"user_id": uid, "bytes": used} for uid, used in result.archive.top_users],
                },
            },
            render,
        )

    run_command(ctx, json_mode, body)


@storage_app.command("reconcile")
def reconcile(ctx: typer.Context, json_mode: JsonFlag = False) -> None:
    """Recount every user's usage from the stored images; report and fix any drift."""

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            with out.progress("Reconciling the quota ledger with storage…"):
                report = await storage.reconcile()
            record = AuditEvent.of_reconcile(report, actor="cli", time=storage.clock())
            await event_log(storage).arecord_audit(record)  # logs, never fails
        drift = [
            {"user_id": uid, "ledger_bytes": before, "actual_bytes": after, "difference": after - before}
            for uid, (before, after) in sorted(report.drift.items())
        ]

        def render(con: Console) -> None:
            con.print(
                f"Checked {report.users} user(s), {report.objects} image(s), {human_bytes(report.bytes)}."
            )
            if not drift:
                con.print(f"{OK} No drift: the ledger matches storage.")
                return
            table = Table("User", "Ledger said", "Storage holds", "Difference", title="Drift (now fixed)")
            for uid, (before, after) in sorted(report.drift.items()):
                sign = "+" if after >= before else "-"
                change = sign + human_bytes(abs(after - before))
                table.add_row(escape(uid), human_bytes(before), human_bytes(after), change)
            con.print(table)

        out.success(
            {
                "users": report.users,
                "objects": report.objects,
                "bytes": report.bytes,
                "drift_bytes": report.drift_bytes,
                "drift": drift,
            },
            render,
        )

    run_command(ctx, json_mode, body)


@storage_app.command("archive")
def archive(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option(
            "--days", show_default=False,
            help="Age in days, 0 to 36500 (default STORAGE_CLEANUP_DAYS).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be archived.")] = False,
    json_mode: JsonFlag = False,
) -> None:
    """Archive images older than --days (smaller copies, kept ARCHIVE_DAYS), then prune the archive."""
    if days is not None and not 0 <= days <= MAX_CLEANUP_DAYS:
        raise typer.BadParameter(
            f"{days} is out of range: give a whole number of days from 0 to {MAX_CLEANUP_DAYS}.",
            ctx=ctx, param_hint="'--days'",
        )

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            with out.progress("Looking for old images…" if dry_run else "Archiving old images…"):
                report = await storage.archive_old(days, dry_run=dry_run)
        age = settings.storage.cleanup_days if days is None else days

        def render(con: Console) -> None:
            verb = "Would archive" if dry_run else "Archived"
            con.print(f"{OK} {verb} images older than {age} days (before {report.cutoff:%Y-%m-%d %H:%M} UTC).")
            table = Table("", "Images", "Bytes", title="Archive run")
            table.add_row("archived", str(report.archived), human_bytes(report.original_bytes))
            if not dry_run:
                table.add_row("  stored as", "", human_bytes(report.archived_bytes))
                table.add_row("  saved", "", human_bytes(report.saved_bytes))
                table.add_row("deleted (archive full)", str(report.deleted), human_bytes(report.deleted_bytes))
                table.add_row("left for the next run", str(report.failed), "")
                table.add_row("pruned (past ARCHIVE_DAYS)", str(report.pruned), human_bytes(report.pruned_bytes))
            con.print(table)

        out.success(
            {
                "dry_run": report.dry_run,
                "days": age,
                "cutoff": report.cutoff.isoformat(),
                "archived": report.archived,
                "original_bytes": report.original_bytes,
                "archived_bytes": report.archived_bytes,
                "deleted": report.deleted,
                "deleted_bytes": report.deleted_bytes,
                "failed": report.failed,
                "pruned": report.pruned,
                "pruned_bytes": report.pruned_bytes,
                "users": report.users,
            },
            render,
        )

    run_command(ctx, json_mode, body)


@storage_app.command("archived")
def archived(
    ctx: typer.Context,
    user_arg: UserArg = None,
    user_opt: UserOpt = None,
    limit: LimitOpt = 20,
    json_mode: JsonFlag = False,
) -> None:
    """List USER's archived images, most recently archived first, with their links (or file paths)."""
    user = pick_user(ctx, user_arg, user_opt)

    def show(con: Console, found: Sequence[ArchivedImage]) -> None:
        table = Table("Name", "Size", "Made", "Archived", title=f"Archived images of {escape(user)}")
        for image in found:
            table.add_row(escape(image.name), human_bytes(image.size),
                          f"{image.created_at:%Y-%m-%d}", f"{image.archived_at:%Y-%m-%d}")
        con.print(table)

    list_images(ctx, json_mode, user, lambda storage: storage.list_archived(user, limit=limit), field="archived",
                nothing=f"User {escape(user)} has no archived images.", show=show)


@storage_app.command("restore")
def restore(
    ctx: typer.Context,
    first: UserThenKeyArg = None,
    second: Annotated[str | None, typer.Argument(metavar="KEY", show_default=False, help=(
        "The archived image's key, or its file name (see 'abby storage archived USER')."))] = None,
    user_opt: UserOpt = None,
    json_mode: JsonFlag = False,
) -> None:
    """Bring one of USER's archived images back to their gallery: abby storage restore USER KEY.

    It counts against their storage and the server's but uses no generation; when full, it stays archived.
    """
    user, key = pick_user_and_key(
        ctx, first, second, user_opt, usage="abby storage restore USER KEY, or abby storage restore --user USER KEY"
    )

    async def body(settings: Settings, out: Output) -> None:
        async with open_storage(settings) as storage:
            restored = await storage.restore_archived(user, key)
            status = await storage.get_quota_status(user)

        def render(con: Console) -> None:
            con.print(f"{OK} Restored {escape(restored.name)} to the gallery of {escape(user)} "
                      f"({human_bytes(restored.size)})")
            con.print(f"  quota: {escape(quota_line(status))}")

        out.success({"user_id": user, "restored": image_payload(restored), "quota": status.as_dict()}, render)

    run_command(ctx, json_mode, body)


def register(app: typer.Typer) -> None:
    @app.command()
    def cleanup(
        ctx: typer.Context,
        days: Annotated[
            int | None,
            typer.Option(
                "--days", show_default=False,
                help="Age in days, 0 to 36500 (default STORAGE_CLEANUP_DAYS); 0 removes every image.",
            ),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
        json_mode: JsonFlag = False,
    ) -> None:
        """Delete images older than --days and give their storage back to their owners."""
        if days is not None and not 0 <= days <= MAX_CLEANUP_DAYS:
            raise typer.BadParameter(
                f"{days} is out of range: give a whole number of days from 0 to {MAX_CLEANUP_DAYS} "
                "(0 removes every image).",
                ctx=ctx, param_hint="'--days'",
            )

        async def body(settings: Settings, out: Output) -> None:
            async with open_storage(settings) as storage:
                with out.progress("Looking for old images…" if dry_run else "Deleting old images…"):
                    report = await storage.cleanup_old_files(days, dry_run=dry_run)
                age = settings.storage.cleanup_days if days is None else days
                if not dry_run:
                    record = AuditEvent.of_cleanup(report, actor="cli", time=storage.clock(), days=age)
                    await event_log(storage).arecord_audit(record)  # logs, never fails

            def render(con: Console) -> None:
                verb = "Would delete" if dry_run else "Deleted"
                con.print(
                    f"{OK} {verb} {report.objects} image(s), {human_bytes(report.bytes)}, from {report.users} user(s) "
                    f"(older than {age} days, before {report.cutoff:%Y-%m-%d %H:%M} UTC)."
                )

            out.success(
                {
                    "dry_run": report.dry_run,
                    "days": age,
                    "cutoff": report.cutoff.isoformat(),
                    "objects": report.objects,
                    "bytes": report.bytes,
                    "users": report.users,
                },
                render,
            )

        run_command(ctx, json_mode, body)

    app.add_typer(storage_app, name="storage")
