"""Load and concurrency: exact quotas under contention, exact bytes, a loop that keeps turning.

Already covered elsewhere, not repeated here: 2 processes x 50 bare reserves+saves for one
user with 5 left, on one folder and on one bucket (``tests/storage/test_multiprocess.py``),
and 50 concurrent reserves in one process (``tests/storage/test_manager.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from abby_core.generation import OfflineProvider
from abby_core.storage import StorageBackend, StorageManager
from tests.reliability import scenarios
from tests.reliability.scenarios import ESTIMATE_MB, FixedProvider, noise_png


@pytest.mark.slow
async def test_two_processes_full_generations_exact(
    backend: StorageBackend, backend_name: str, config: dict[str, Any]
) -> None:
    out = await scenarios.two_processes(backend, config, backend_name=backend_name)
    assert out.failed == []
    assert (out.successes, out.refusals, out.errors) == (5, 95, 0)


@pytest.mark.slow
async def test_fifty_users_under_a_small_global_limit(
    managers: Callable[..., StorageManager], backend_name: str
) -> None:
    manager = managers(
        max_user_daily_gens=5, image_gen_size_mb=ESTIMATE_MB, max_global_storage_mb=60 * ESTIMATE_MB
    )
    out = await scenarios.many_users(manager, backend_name=backend_name)
    assert out.failed == []
    assert out.attempts == 200 and out.successes >= 40 and out.successes + out.refusals == 200


async def test_storage_does_not_block_the_event_loop(
    managers: Callable[..., StorageManager], backend_name: str
) -> None:
    manager = managers(max_user_daily_gens=5)
    provider = FixedProvider([noise_png(64) for _ in range(50)], delay=0.02)
    out = await scenarios.loop_lag(manager, provider, backend_name=backend_name)
    assert out.failed == []


@pytest.mark.parametrize("backend_name", ["filesystem"], indirect=True)
async def test_offline_renderer_does_not_block_the_event_loop(managers: Callable[..., StorageManager]) -> None:
    # Rendering is CPU work (tens of ms an image); it must run off the loop.
    manager = managers(max_user_daily_gens=5)
    out = await scenarios.loop_lag(manager, OfflineProvider(), backend_name="filesystem")
    assert out.failed == []


@pytest.mark.parametrize("kind", ["text_to_image", "image_to_image", "upscale"])
async def test_offline_rendering_runs_off_the_loop_thread(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    import threading

    from abby_core.generation import offline, validate_image_to_image, validate_text_to_image, validate_upscale

    threads: list[int] = []
    real_encode = offline._encode

    def spy(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(offline, "_encode", spy)
    provider = OfflineProvider()
    source = noise_png(96)
    request = {
        "text_to_image": lambda: validate_text_to_image("a fox"),
        "image_to_image": lambda: validate_image_to_image(source, "a fox", limits=provider.input_limits),
        "upscale": lambda: validate_upscale(source, limits=provider.input_limits),
    }[kind]()
    await getattr(provider, kind)(request)
    assert threads and threading.get_ident() not in threads
