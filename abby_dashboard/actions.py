"""The admin actions on a member: grant, reset, block, unblock, each confirmed before it happens.

::

    POST /members/{id}/actions/{action}            → a page naming the member and the action (nothing done)
    POST /members/{id}/actions/{action}/confirm    → done, written to the audit log, 303 back with a message

Both POSTs need a signed-in admin and the session's CSRF token; a refused POST changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from abby_core.analytics import AuditAction, AuditEvent
from abby_core.errors import AbbyError, InvalidInput
from abby_core.storage import StorageManager, rules
from abby_dashboard.context import dashboard, flash, redirect, render, require_admin
from abby_dashboard.csrf import checked_form
from abby_dashboard.errors import refusal
from abby_dashboard.pages import checked_user

__all__ = ["ACTIONS", "routes"]


@dataclass(frozen=True)
class Action:
    """One admin action: how it is named on the page and what it does."""

    title: str
    question: str
    done: str
    run: Callable[[StorageManager, str, int], Awaitable[None]]


async def _grant(store: StorageManager, uid: str, count: int) -> None:
    await store.grant(uid, count)


async def _reset(store: StorageManager, uid: str, count: int) -> None:
    await store.reset_daily(uid)


async def _block(store: StorageManager, uid: str, count: int) -> None:
    await store.set_blocked(uid, True)


async def _unblock(store: StorageManager, uid: str, count: int) -> None:
    await store.set_blocked(uid, False)


ACTIONS: dict[AuditAction, Action] = {
    "grant": Action("Grant extra generations", "Give {who} {count} extra generation(s) for today (until midnight "
                    "UTC)?", "Granted {count} extra generation(s) to {who} for today.", _grant),
    "reset": Action("Reset today's count", "Set {who}'s generations used today back to zero (and drop today's "
                    "grants)?", "Reset today's count of {who}.", _reset),
    "block": Action("Block", "Block {who} from generating images? Their images stay.", "Blocked {who}.", _block),
    "unblock": Action("Unblock", "Let {who} generate images again?", "Unblocked {who}.", _unblock),
}


def _action(request: Request) -> AuditAction:
    name = request.path_params["action"]
    for known in ACTIONS:
        if name == known:
            return known
    raise HTTPException(404, f"There is no action {name[:20]!r}: grant, reset, block or unblock.")


def _count(form: FormData, action: AuditAction) -> int:
    """The number of extra generations typed in the form; the core's rule decides what is allowed."""
    if action != "grant":
        return 0
    raw = form.get("count")
    text = raw.strip() if isinstance(raw, str) else ""
    try:
        # Only a short run of digits is a number here (int() refuses more than 4300 digits).
        return rules.check_grant(int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else text)
    except InvalidInput as exc:
        raise refusal(exc, field="count", typed=text) from None


async def _who(request: Request, uid: str) -> str:
    member, _ = await dashboard(request).directory.member(uid)
    return f"{member.name} ({uid})" if member else uid


async def confirm(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    form = await checked_form(request, dash.origin)
    uid = checked_user(request.path_params["user_id"])
    action = _action(request)
    count = _count(form, action)
    who = await _who(request, uid)
    spec = ACTIONS[action]
    context = {"uid": uid, "action": action, "title": spec.title, "count": count,
               "question": spec.question.format(who=who, count=count)}
    return render(request, "confirm.html", context)


async def perform(request: Request) -> Response:
    admin = require_admin(request)
    dash = dashboard(request)
    form = await checked_form(request, dash.origin)
    uid = checked_user(request.path_params["user_id"])
    action = _action(request)
    count = _count(form, action)
    spec = ACTIONS[action]
    try:
        await spec.run(dash.storage, uid, count)
    except AbbyError as exc:
        raise refusal(exc, changing=True) from exc
    details: dict[str, int | float] = {"extra": count} if action == "grant" else {}
    record = AuditEvent(time=dash.clock(), actor=admin.actor, action=action, target=uid, details=details)
    await dash.events.arecord_audit(record)  # logs, never fails: the action is done
    flash(request, spec.done.format(who=await _who(request, uid), count=count))
    return redirect(f"/members/{uid}")


def routes() -> list[Route]:
    return [
        Route("/members/{user_id}/actions/{action}", confirm, methods=["POST"]),
        Route("/members/{user_id}/actions/{action}/confirm", perform, methods=["POST"]),
    ]
