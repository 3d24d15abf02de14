"""The pages: overview (``/``), members (``/members``, ``/members/{id}``), storage (``/storage``).

Each reads through core (``StorageManager``, ``EventLog``) on worker threads where the call is
blocking, and renders; a core error becomes a message on the page worded by
:mod:`abby_dashboard.errors`, never a stack trace.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from abby_core.errors import ImageNotFound, InvalidKey, InvalidUser, StorageError
from abby_core.storage import MemberId, check_image_key, check_user_id
from abby_dashboard.charts import WINDOWS, chart_data, outlook
from abby_dashboard.context import dashboard, render, require_admin
from abby_dashboard.discord_api import DiscordAPIError, GuildMember
from abby_dashboard.errors import refusal

__all__ = ["THUMB_SIDE", "checked_user", "routes", "thumbnail"]

THUMB_SIDE = 256
MAX_THUMB_PIXELS = 40_000_000
MEMBER_DAYS = 30
MEMBER_IMAGES = 60
MAX_QUERY = 100


def checked_user(user_id: str) -> MemberId:
    """``user_id`` when it is a Discord user id; a 400 page saying why not otherwise."""
    try:
        return check_user_id(user_id)
    except InvalidUser as exc:
        raise refusal(exc, typed=user_id) from None


async def overview(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    raw = request.query_params.get("days", "30")
    if raw not in {str(w) for w in WINDOWS}:
        raise HTTPException(400, f"days must be one of {', '.join(map(str, WINDOWS))}, not {raw[:20]!r}.")
    days = int(raw)
    try:
        summary = await asyncio.to_thread(dash.events.summary, days, top=10)
        usage = await dash.storage.stats(top=10)
    except StorageError as exc:
        raise refusal(exc) from exc
    view = outlook(summary, usage, summary.end)
    user_limit = dash.storage.default_limits.storage_bytes
    names = await dash.directory.names([*(m.user_id for m in summary.top_members), *(u for u, _ in usage.top_users)])
    data = chart_data(summary, usage, user_limit, view, names.name)
    context = {
        "summary": summary, "usage": usage, "outlook": view, "days": days, "windows": WINDOWS,
        "user_limit": user_limit, "names": names, "chart_json": json.dumps(data).replace("</", "<\\/"),
    }
    return render(request, "overview.html", context)


async def members(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    query = request.query_params.get("q", "").strip()
    context: dict[str, Any] = {"query": query, "names_available": dash.directory.names_available, "results": None}
    if query:
        context["results"], context["search_error"] = await _search(request, query)
    try:
        summary = await asyncio.to_thread(dash.events.summary, MEMBER_DAYS, top=50)
        usage = await dash.storage.stats(top=50)
    except StorageError as exc:
        raise refusal(exc) from exc
    stored = dict(usage.top_users)
    rows = [{"user_id": m.user_id, "images": m.images, "refusals": m.refusals, "stored": stored.pop(m.user_id, None)}
            for m in summary.top_members]
    rows += [{"user_id": uid, "images": None, "refusals": None, "stored": used} for uid, used in stored.items()]
    names = await dash.directory.names(str(r["user_id"]) for r in rows)
    context.update(rows=rows, names=names, days=MEMBER_DAYS)
    return render(request, "members.html", context)


async def _search(request: Request, query: str) -> tuple[list[dict[str, str | None]], str | None]:
    """Search results (id and name), and a message when the search could not be done as asked."""
    dash = dashboard(request)
    if len(query) > MAX_QUERY:
        return [], f"The search is too long: at most {MAX_QUERY} characters."
    if query.isascii() and query.isdigit():
        uid = checked_user(query) if len(query) <= 20 else None
        if uid is None:
            return [], "A user id has at most 20 digits."
        member, problem = await dash.directory.member(uid)
        return [{"user_id": uid, "name": member.name if member else None}], problem
    if not dash.directory.names_available:
        return [], "Names can be searched only when DISCORD_TOKEN (the bot's token) is set: search by user id."
    try:
        found = await dash.directory.search(query)
    except DiscordAPIError as exc:
        return [], f"Names could not be searched: {exc.message}"
    return [{"user_id": m.user_id, "name": m.name} for m in found], None


async def member(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    uid = checked_user(request.path_params["user_id"])
    found, problem = await dash.directory.member(uid)
    roles = found.roles if isinstance(found, GuildMember) else ()
    try:
        status = await dash.storage.get_quota_status(uid, role_ids=roles)
        history = await asyncio.to_thread(dash.events.member_days, uid, MEMBER_DAYS)
        images = await dash.storage.list_images(uid, limit=MEMBER_IMAGES)
        audit = await asyncio.to_thread(dash.events.audit_events, 20, target=uid)
    except StorageError as exc:
        raise refusal(exc) from exc
    base = dash.storage.limits_for(roles)
    context = {
        "uid": uid, "member": found, "name_problem": problem, "status": status, "history": history,
        "extra": max(0, status.daily_limit - base.daily_gens), "images": images, "audit": audit,
        "names_available": dash.directory.names_available, "tiers": bool(dash.storage.quota_tiers),
        "totals": {k: sum(getattr(d, k) for d in history) for k in ("images", "refusals", "failures", "bytes")},
    }
    return render(request, "member.html", context)


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """A WebP no larger than ``side`` × ``side``; refuses images too large to decode safely."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_THUMB_PIXELS:
            raise ValueError("image too large")
        img.draft("RGB", (side, side))  # JPEG decodes at a fraction of its size
        img.thumbnail((side, side))
        out = io.BytesIO()
        img.convert("RGBA" if "A" in img.getbands() else "RGB").save(out, format="WEBP", quality=80)
    return out.getvalue()


async def thumb(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    uid = checked_user(request.path_params["user_id"])
    name = request.path_params["name"]
    try:
        key = check_image_key(uid, name)
    except InvalidKey as exc:
        raise refusal(exc) from None
    etag = '"' + key.rsplit("/", 1)[-1] + '"'
    headers = {"Cache-Control": "private, max-age=86400, immutable", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        data = await dash.storage.get_image(uid, key)
        small = await asyncio.to_thread(thumbnail, data)
    except ImageNotFound as exc:
        raise refusal(exc) from None
    except StorageError as exc:
        raise refusal(exc) from exc
    except (OSError, ValueError, Image.DecompressionBombError):
        raise HTTPException(422, "That image could not be read.") from None
    return Response(small, media_type="image/webp", headers=headers)


async def storage(request: Request) -> Response:
    require_admin(request)
    dash = dashboard(request)
    store = dash.storage
    try:
        usage = await store.stats(top=10)
        ready = await store.ensure_ready(create=False)
        last_cleanup = await asyncio.to_thread(dash.events.latest_audit, "cleanup")
        last_reconcile = await asyncio.to_thread(dash.events.latest_audit, "reconcile")
    except StorageError as exc:
        raise refusal(exc) from exc
    names = await dash.directory.names(uid for uid, _ in usage.top_users)
    context = {
        "names": names, "usage": usage, "ready": ready, "last_cleanup": last_cleanup, "last_reconcile": last_reconcile,
        "user_limit": store.default_limits.storage_bytes, "daily_limit": store.default_limits.daily_gens,
        "tiers": store.quota_tiers, "estimate": store.estimate_bytes,
    }
    return render(request, "storage.html", context)


def routes() -> list[Route]:
    return [
        Route("/", overview, methods=["GET"]),
        Route("/members", members, methods=["GET"]),
        Route("/members/{user_id}", member, methods=["GET"]),
        Route("/members/{user_id}/images/{name:path}/thumb", thumb, methods=["GET"]),
        Route("/storage", storage, methods=["GET"]),
    ]
