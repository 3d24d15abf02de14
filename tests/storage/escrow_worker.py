"""Run by the escrow tests as ``python -m tests.storage.escrow_worker CONFIG_JSON``.

One bot process's worth of generations: ``tasks`` concurrent loops, each making images of
``size`` bytes for its own members (reserve + save_image, escrow on), until the global
budget is full: refused while no lease of anybody's is left that could free room. Its clock
is ``clock_offset`` seconds off (default 0), as a host's may be. Prints
one line per image saved (``{"saved": n}``, so a test can kill it mid-burst) and a summary.
``seconds`` only bounds a run that went wrong: ``done`` says the budget was full when it stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from abby_core.errors import GlobalStorageFull, StorageError
from abby_core.storage import StorageManager
from tests.storage.hammer import build_backend

PNG = b"\x89PNG\r\n\x1a\n"


async def main(config: dict[str, Any]) -> dict[str, Any]:
    size = config["size"]
    offset = timedelta(seconds=config.get("clock_offset", 0))  # this process's clock is this far off
    manager = StorageManager(
        build_backend(config),
        max_global_storage_mb=config["limit_bytes"] / 1_000_000,
        max_user_storage_mb=100,
        max_user_daily_gens=100_000,
        image_gen_size_mb=size / 1_000_000,
        reservation_ttl_seconds=config["ttl"],
        escrow=config.get("escrow", True),
        max_workers=config["tasks"],
        clock=lambda: datetime.now(UTC) + offset,
    )
    data = PNG + b"x" * (size - len(PNG))
    saved = 0
    refused = 0
    finished = 0  # loops that stopped because the budget was full, not at the time bound
    errors: list[str] = []
    deadline = time.monotonic() + config["seconds"]
    delay = config["start_at"] - time.time()
    if delay > 0:
        await asyncio.sleep(delay)

    async def full() -> bool:
        stats = await manager.stats()
        return not stats.leases and stats.global_bytes + size > stats.global_limit_bytes

    async def loop(task: int) -> None:
        nonlocal saved, refused, finished
        n = 0
        while time.monotonic() < deadline:
            uid = str(config["first_user"] + task * 100_000 + n % config["members"])
            n += 1
            try:
                res = await manager.reserve(uid, size_bytes=size)
                await manager.save_image(res, data)
            except GlobalStorageFull:
                refused += 1
                if await full():
                    finished += 1
                    return
                await asyncio.sleep(0.02)
                continue
            except StorageError as exc:
                errors.append(repr(exc))
                await asyncio.sleep(0.05)
                continue
            saved += 1
            print(json.dumps({"saved": saved}), flush=True)

    await asyncio.gather(*(loop(t) for t in range(config["tasks"])))
    settles = manager.escrow.settles if manager.escrow is not None else 0
    await manager.aclose()
    recovered = manager.accounts.recovered_leases
    return {
        "saved": saved,
        "refused": refused,
        "errors": errors,
        "settles": settles,
        "recovered": recovered,
        "done": finished == config["tasks"],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
