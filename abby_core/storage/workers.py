"""The storage manager's worker threads: blocking storage work off the event loop, safe to cancel.

A worker cannot be interrupted, so a cancelled caller waits for its worker before the
cancellation goes on: the work's effects are then known, and whatever undoes them (a release
after a cancelled reserve, a discard after a cancelled save) cannot race it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from abby_core.errors import StorageError

__all__ = ["Workers"]

log = logging.getLogger("abby.storage")
_T = TypeVar("_T")


class Workers:
    """A pool of ``max_workers`` threads; ``before`` runs on the worker ahead of every call
    (the manager retries the undos storage refused earlier)."""

    def __init__(self, max_workers: int, *, before: Callable[[], object]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="abby-storage")
        self._before = before
        self.closed = False

    async def run(
        self, fn: Callable[..., _T], *args: Any, on_cancel: Callable[[_T], object] | None = None, **kwargs: Any
    ) -> _T:
        """Run ``fn`` on a worker thread.

        When the caller is cancelled this waits for the worker to finish before the
        cancellation goes on; ``on_cancel(result)`` undoes a result nobody will receive (a
        reservation, a saved image). A failed undo is logged. Closed: :class:`StorageError`.
        """
        if self.closed:
            raise StorageError("The storage manager is closed.")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, partial(self._call, fn, *args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            try:
                result = await future
            except Exception:
                raise asyncio.CancelledError from None  # it failed: it already undid itself
            if on_cancel is not None:
                try:
                    await loop.run_in_executor(self._executor, on_cancel, result)
                except Exception:
                    log.exception("Could not undo an interrupted storage call; its hold ends when it expires.")
            raise

    def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        self._before()
        return fn(*args, **kwargs)

    def shutdown(self) -> None:
        """Refuse new calls and wait for the running ones to finish (blocks). Safe to call twice."""
        self.closed = True
        self._executor.shutdown()

    async def aclose(self) -> None:
        """Refuse new calls at once, then wait, off the event loop, for the running ones to finish."""
        self.closed = True
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
