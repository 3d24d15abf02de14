"""GenerationLimiter: one in flight per member, a FIFO queue in front of the global cap."""

from __future__ import annotations

import asyncio

import pytest

from abby_core.admission import GenerationLimiter, QueueTimeout, UserBusy


async def test_one_generation_per_member() -> None:
    limiter = GenerationLimiter(4)
    async with limiter.claim(1):
        assert limiter.busy(1)
        with pytest.raises(UserBusy):
            async with limiter.claim("1"):
                pass
        async with limiter.claim(2):
            pass
    assert not limiter.busy(1)
    async with limiter.claim(1):
        pass


async def test_queue_positions_are_reported_and_served_in_order() -> None:
    limiter = GenerationLimiter(1)
    seen: dict[str, list[int]] = {"b": [], "c": []}
    order: list[str] = []
    release_a, release_b = asyncio.Event(), asyncio.Event()

    async def run(name: str, hold: asyncio.Event | None = None) -> None:
        async with limiter.claim(name) as ticket:

            async def tell(place: int) -> None:
                seen[name].append(place)

            await ticket.wait_turn(tell)
            order.append(name)
            if hold is not None:
                await asyncio.wait_for(hold.wait(), 5)

    a = asyncio.create_task(run("a", release_a))
    await asyncio.sleep(0)
    b = asyncio.create_task(run("b", release_b))
    await asyncio.sleep(0)
    c = asyncio.create_task(run("c"))
    for _ in range(50):
        if limiter.waiting == 2:
            break
        await asyncio.sleep(0)
    assert (limiter.active, limiter.waiting) == (1, 2)
    release_a.set()
    for _ in range(50):
        if seen["c"] == [2, 1]:
            break
        await asyncio.sleep(0)
    assert order == ["a", "b"] and limiter.active == 1
    release_b.set()
    await asyncio.wait_for(asyncio.gather(a, b, c), 5)
    assert order == ["a", "b", "c"]
    assert seen == {"b": [1], "c": [2, 1]}
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    limiter = GenerationLimiter(1)
    positions: list[int] = []
    hold = asyncio.Event()

    async def runner() -> None:
        async with limiter.claim("a") as ticket:
            await ticket.wait_turn()
            await asyncio.wait_for(hold.wait(), 5)

    async def waiter(name: str, record: bool = False) -> None:
        async with limiter.claim(name) as ticket:

            async def tell(place: int) -> None:
                if record:
                    positions.append(place)

            await ticket.wait_turn(tell)

    a = asyncio.create_task(runner())
    await asyncio.sleep(0)
    b = asyncio.create_task(waiter("b"))
    await asyncio.sleep(0)
    c = asyncio.create_task(waiter("c", record=True))
    for _ in range(50):
        if limiter.waiting == 2:
            break
        await asyncio.sleep(0)
    b.cancel()
    for _ in range(50):
        if positions == [2, 1]:
            break
        await asyncio.sleep(0)
    assert positions == [2, 1] and limiter.waiting == 1 and not limiter.busy("b")
    hold.set()
    await asyncio.wait_for(asyncio.gather(a, c), 5)
    assert (limiter.active, limiter.waiting) == (0, 0)


async def test_waiting_too_long_raises_and_frees_the_place() -> None:
    limiter = GenerationLimiter(1, max_wait=0.05)
    async with limiter.claim("a") as running:
        await running.wait_turn()
        async with limiter.claim("b") as ticket:
            with pytest.raises(QueueTimeout):
                await ticket.wait_turn()
            assert limiter.waiting == 0
    assert (limiter.active, limiter.waiting) == (0, 0)


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        GenerationLimiter(0)
