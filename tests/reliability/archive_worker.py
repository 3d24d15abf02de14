"""Child process for the archive crash points: ``python -m tests.reliability.archive_worker CONFIG_JSON``.

Runs one ``archive_old`` (mode ``archive``) or one ``restore_archived`` (mode ``restore``) for
``user`` through a backend that kills this process (SIGKILL) just before storage call ``at``;
prints ``{"reported": "success" | error code}`` if it gets that far. ``offset`` shifts the
clock (seconds), so images made just before look old.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from abby_core.errors import AbbyError
from abby_core.storage import StorageManager
from tests.storage.hammer import build_backend


async def run(config: dict[str, Any]) -> dict[str, Any]:
    from tests.reliability.crashpoints import TTL, CrashPoints

    backend = CrashPoints(build_backend(config), at=config["at"], action="kill")
    offset = timedelta(seconds=config["offset"])
    manager = StorageManager(
        backend, reservation_ttl_seconds=TTL, settle_seconds=1, archive=True, clock=lambda: datetime.now(UTC) + offset
    )
    try:
        if config["mode"] == "archive":
            await manager.archive_old()
        else:
            await manager.restore_archived(config["user"], config["key"])
        return {"reported": "success"}
    except AbbyError as exc:
        return {"reported": exc.code, "message": str(exc)}
    finally:
        await manager.aclose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
