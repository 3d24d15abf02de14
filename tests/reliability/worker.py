"""Child process for the reliability scenarios: ``python -m tests.reliability.worker CONFIG_JSON``.

Modes:

* ``imagine``: wait for ``start_at``, run ``attempts`` concurrent ``ImageService.imagine``
  calls with the offline renderer for ``user``; print
  ``{"granted", "refused", "errors", "stored": [[key, sha256], ...]}``.
* ``crash``: one ``imagine`` for ``user`` through a backend that kills this process at
  storage call ``at`` (see crashpoints.py), with a daily limit of ``daily`` if given; print
  ``{"reported": "success" | error code}`` if it gets that far.
* ``refund``: :func:`tests.reliability.test_credit_crash_points.refund_story` for ``user``
  through a backend that kills this process at storage call ``at``; prints
  ``{"reported": "success" | error code}`` if it gets that far.
* ``hold``: reserve ``holds`` generations for ``user`` (TTL ``ttl``), print
  ``{"held": [reservation ids]}``, then sleep until killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from typing import Any

from abby_core.errors import AbbyError, QuotaExceeded
from abby_core.generation import ImageGenerator, OfflineProvider
from abby_core.pipeline import ImageService
from abby_core.storage import StorageManager
from tests.storage.hammer import build_backend


async def imagine(config: dict[str, Any]) -> dict[str, Any]:
    manager = StorageManager(build_backend(config), max_user_daily_gens=config["daily"])
    service = ImageService(manager, ImageGenerator(provider=OfflineProvider()))
    delay = config["start_at"] - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    results = await asyncio.gather(
        *(service.imagine(config["user"], f"a lighthouse, take {i}") for i in range(config["attempts"])),
        return_exceptions=True,
    )
    await manager.aclose()
    ok = [r for r in results if not isinstance(r, BaseException)]
    return {
        "granted": len(ok),
        "refused": sum(isinstance(r, QuotaExceeded) for r in results),
        "errors": [repr(r) for r in results if isinstance(r, BaseException) and not isinstance(r, QuotaExceeded)],
        "stored": [[r.stored.key, hashlib.sha256(r.image.data).hexdigest()] for r in ok],
    }


async def hold(config: dict[str, Any]) -> None:
    manager = StorageManager(
        build_backend(config), max_user_daily_gens=config["daily"], reservation_ttl_seconds=config["ttl"]
    )
    held = [await manager.reserve(config["user"]) for _ in range(config["holds"])]
    print(json.dumps({"held": [r.id for r in held]}), flush=True)
    await asyncio.sleep(120)  # the parent kills us long before


async def crash(config: dict[str, Any]) -> dict[str, Any]:
    from tests.reliability.crashpoints import TTL, CrashPoints

    backend = CrashPoints(build_backend(config), at=config["at"], action="kill")
    limits = {"max_user_daily_gens": config["daily"]} if "daily" in config else {}
    manager = StorageManager(
        backend, reservation_ttl_seconds=TTL, settle_seconds=1, escrow=bool(config.get("escrow")), **limits
    )
    service = ImageService(manager, ImageGenerator(provider=OfflineProvider()))
    try:
        await service.imagine(config["user"], "a lighthouse at dawn")
        return {"reported": "success"}
    except AbbyError as exc:
        return {"reported": exc.code, "message": str(exc)}
    finally:
        await manager.aclose()


async def refund(config: dict[str, Any]) -> dict[str, Any]:
    from tests.reliability.crashpoints import TTL, CrashPoints
    from tests.reliability.test_credit_crash_points import refund_story

    backend = CrashPoints(build_backend(config), at=config["at"], action="kill")
    manager = StorageManager(backend, reservation_ttl_seconds=TTL, settle_seconds=1)
    try:
        await refund_story(manager, config["user"])
        return {"reported": "success"}
    except AbbyError as exc:
        return {"reported": exc.code, "message": str(exc)}
    finally:
        await manager.aclose()


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    if cfg["mode"] == "hold":
        asyncio.run(hold(cfg))
    elif cfg["mode"] == "crash":
        print(json.dumps(asyncio.run(crash(cfg))), flush=True)
    elif cfg["mode"] == "refund":
        print(json.dumps(asyncio.run(refund(cfg))), flush=True)
    else:
        print(json.dumps(asyncio.run(imagine(cfg))))
