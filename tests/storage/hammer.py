"""Run by the multi-process tests as ``python -m tests.storage.hammer CONFIG_JSON``.

Waits until the shared start time, fires ``attempts`` concurrent reserve(+save) calls
for one user, and prints ``{"granted": n, "refused": n, "errors": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from abby_core.errors import QuotaExceeded
from abby_core.storage import FilesystemBackend, StorageBackend, StorageManager
from abby_core.storage.s3 import S3Backend


def build_backend(config: dict[str, Any]) -> StorageBackend:
    if config["backend"] == "filesystem":
        return FilesystemBackend(config["root"])
    from tests.storage.conftest import s3_settings

    return S3Backend(
        s3_settings(config["endpoint"], config["access_key"], config["secret_key"], bucket=config["bucket"])
    )


async def main(config: dict[str, Any]) -> dict[str, Any]:
    manager = StorageManager(build_backend(config), max_user_daily_gens=config["daily"], max_workers=8)
    delay = config["start_at"] - time.time()
    if delay > 0:
        await asyncio.sleep(delay)

    async def one() -> str:
        try:
            reservation = await manager.reserve(config["user"])
        except QuotaExceeded:
            return "refused"
        if config.get("save"):
            await manager.save_image(reservation, b"\x89PNG\r\n\x1a\n" + b"x" * 100)
        return "granted"

    results = await asyncio.gather(*(one() for _ in range(config["attempts"])), return_exceptions=True)
    await manager.aclose()
    return {
        "granted": sum(r == "granted" for r in results),
        "refused": sum(r == "refused" for r in results),
        "errors": [repr(r) for r in results if isinstance(r, BaseException)],
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
