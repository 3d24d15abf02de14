"""One generation interrupted at every storage call in turn (raise, lost answer, cancel, kill),
on the filesystem and on a real S3 server: what was reported is what is charged."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from abby_core.storage import StorageBackend, StorageManager
from tests.fixtures.clocks import Clock, day_safe_now
from tests.reliability import scenarios
from tests.reliability.crashpoints import ACTIONS, TTL, CrashPoints, crash_child, describe, interrupted, verdict


def _manager(backend: StorageBackend, clock: Clock, *, escrow: bool = False) -> StorageManager:
    return StorageManager(backend, reservation_ttl_seconds=TTL, clock=clock, settle_seconds=1, escrow=escrow)


async def _clean_run(backend: StorageBackend, uid: str, *, escrow: bool = False) -> list[str]:
    """The storage calls of one uninterrupted generation, in order (escrow: from a new lease)."""
    probe = CrashPoints(backend)
    manager = _manager(probe, Clock(day_safe_now()), escrow=escrow)
    try:
        await scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0)).imagine(
            uid, "counting"
        )
    finally:
        await manager.aclose()
    return probe.calls


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_storage_call_interrupted_in_process(backend: StorageBackend, action: str) -> None:
    await _interrupt_every_call(backend, action, escrow=False)


@pytest.mark.parametrize("action", ACTIONS)
async def test_every_storage_call_interrupted_in_process_with_escrow(backend: StorageBackend, action: str) -> None:
    """The same with STORAGE_ESCROW: the lease's refill and settle are storage calls too."""
    await _interrupt_every_call(backend, action, escrow=True)


async def _interrupt_every_call(backend: StorageBackend, action: str, *, escrow: bool) -> None:
    calls = await _clean_run(backend, scenarios.user(8999), escrow=escrow)
    assert len(calls) >= 8, calls  # reserve, upload, commit and their reads at least
    failures: dict[str, list[str]] = {}
    outcomes: set[str] = set()
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(9000 + at)
        clock = Clock(day_safe_now())
        crash = CrashPoints(backend, at=at, action=action)
        manager = _manager(crash, clock, escrow=escrow)
        service = scenarios.service_with(manager, scenarios.FixedProvider([scenarios.noise_png(40)], delay=0))
        reported = await interrupted(crash, partial(service.imagine, uid, f"crash at {at}"))
        outcomes.add(describe(reported))
        try:
            wrong = await verdict(reported, backend, uid, same=manager, clock=clock)
        finally:
            await manager.aclose()
        if wrong:
            failures[f"call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    # The points reach both sides of the commit: some runs fail, and some succeed anyway.
    assert len(outcomes) >= 2, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("escrow", [False, True], ids=["global-writes", "escrow"])
async def test_every_storage_call_killed(backend: StorageBackend, config: dict[str, Any], escrow: bool) -> None:
    """Killed at every call; with escrow the dead process's lease is taken back after its lifetime."""
    calls = await _clean_run(backend, scenarios.user(7999), escrow=escrow)
    failures: dict[str, list[str]] = {}
    killed = 0
    for at in range(1, len(calls) + 1):
        uid = scenarios.user(7000 + at)
        reported = await crash_child(scenarios.spawn(dict(config, mode="crash", user=uid, at=at, escrow=escrow)))
        killed += reported is None
        wrong = await verdict(reported, backend, uid, same=None, clock=Clock(day_safe_now()))
        if wrong:
            failures[f"killed at call {at} ({calls[at - 1]})"] = wrong
    assert failures == {}
    # Points past the child's own calls (it makes fewer: no cached copies to refresh) complete.
    assert killed >= 10, killed
