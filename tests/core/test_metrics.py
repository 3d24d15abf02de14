"""Metrics: what observe() counts, the storage and queue gauges, the settings, and ImageService feeding it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from abby_core.analytics import UsageEvent
from abby_core.config import load_settings
from abby_core.errors import ConfigError, DailyLimitExceeded
from abby_core.generation import ImageGenerator, OfflineProvider
from abby_core.metrics import Metrics
from abby_core.pipeline import ImageService
from abby_core.storage import GlobalStats, StorageManager

USER = "123456789012345678"


def event(outcome: str = "ok", **kw: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "time": datetime.now(UTC), "user_id": USER, "kind": "imagine", "provider": "stability", "outcome": outcome,
    }
    values.update(kw)
    return UsageEvent(**values)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_observe_counts_generations_by_kind_provider_and_outcome() -> None:
    metrics = Metrics()
    metrics.observe(event())
    metrics.observe(event())
    metrics.observe(event(kind="upscale", provider="comfyui"))
    metrics.observe(event("daily_limit"))
    assert value(metrics, "abby_generations_total", kind="imagine", provider="stability", outcome="ok") == 2
    assert value(metrics, "abby_generations_total", kind="upscale", provider="comfyui", outcome="ok") == 1
    assert value(metrics, "abby_generations_total", kind="imagine", provider="stability", outcome="daily_limit") == 1
    assert value(metrics, "abby_generations_total", kind="img2img", provider="stability", outcome="ok") is None


def test_refusals_and_provider_errors_are_counted_apart() -> None:
    metrics = Metrics()
    for outcome in ("daily_limit", "daily_limit", "blocked_prompt", "content_filtered"):
        metrics.observe(event(outcome))
    metrics.observe(event("generation_timeout", provider="comfyui"))
    metrics.observe(event("generation_auth"))
    metrics.observe(event())
    assert value(metrics, "abby_refusals_total", reason="daily_limit") == 2
    assert value(metrics, "abby_refusals_total", reason="blocked_prompt") == 1
    assert value(metrics, "abby_refusals_total", reason="content_filtered") == 1, "the provider said no: a refusal"
    assert value(metrics, "abby_provider_errors_total", provider="comfyui", code="generation_timeout") == 1
    assert value(metrics, "abby_provider_errors_total", provider="stability", code="generation_auth") == 1
    assert value(metrics, "abby_provider_errors_total", provider="stability", code="daily_limit") is None
    assert value(metrics, "abby_refusals_total", reason="generation_timeout") is None
    assert value(metrics, "abby_refusals_total", reason="ok") is None
    assert value(metrics, "abby_provider_errors_total", provider="stability", code="ok") is None


def test_the_histogram_observes_provider_latency_and_bytes_are_summed() -> None:
    metrics = Metrics()
    metrics.observe(event(latency_seconds=4.0, bytes_stored=1000))
    metrics.observe(event(latency_seconds=0.3, bytes_stored=500))
    metrics.observe(event("generation_timeout", latency_seconds=600.0))
    metrics.observe(event("daily_limit"))  # no provider call: no latency
    assert value(metrics, "abby_generation_seconds_count", provider="stability") == 3
    assert value(metrics, "abby_generation_seconds_sum", provider="stability") == pytest.approx(604.3)
    assert value(metrics, "abby_generation_seconds_bucket", provider="stability", le="0.25") == 0
    assert value(metrics, "abby_generation_seconds_bucket", provider="stability", le="0.5") == 1
    assert value(metrics, "abby_generation_seconds_bucket", provider="stability", le="5.0") == 2
    assert value(metrics, "abby_generation_seconds_bucket", provider="stability", le="600.0") == 3
    assert value(metrics, "abby_generation_seconds_bucket", provider="stability", le="+Inf") == 3
    assert value(metrics, "abby_stored_bytes_total") == 1500


def test_storage_and_queue_gauges() -> None:
    metrics = Metrics()
    waiting = [3]
    metrics.track_queue(waiting=lambda: waiting[0], running=lambda: 2)
    assert value(metrics, "abby_queue_length") == 3
    waiting[0] = 0
    assert value(metrics, "abby_queue_length") == 0, "read at each scrape"
    assert value(metrics, "abby_generations_running") == 2
    metrics.set_storage(GlobalStats(global_bytes=1234, global_limit_bytes=5000, users=2, in_flight=0, top_users=[]))
    assert value(metrics, "abby_storage_used_bytes") == 1234
    assert value(metrics, "abby_storage_limit_bytes") == 5000
    assert value(metrics, "abby_storage_users") == 2
    assert value(metrics, "abby_storage_up") == 1
    metrics.set_storage(None)
    assert value(metrics, "abby_storage_up") == 0
    assert value(metrics, "abby_storage_used_bytes") == 1234, "the last read stays"


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe(event())
    assert value(second, "abby_generations_total", kind="imagine", provider="stability", outcome="ok") is None
    text = generate_latest(first.registry).decode()
    assert "# TYPE abby_generations_total counter" in text
    assert "# TYPE abby_generation_seconds histogram" in text


async def test_the_service_counts_what_it_records_even_without_an_event_log(tmp_path: Path) -> None:
    storage = StorageManager(storage_root=tmp_path / "shared", max_user_daily_gens=1)
    generator = ImageGenerator(provider=OfflineProvider())
    metrics = Metrics()
    service = ImageService(storage, generator, metrics=metrics)
    assert service.events is None
    try:
        result = await service.imagine(USER, "a lighthouse at dawn")
        with pytest.raises(DailyLimitExceeded):
            await service.imagine(USER, "one more")
    finally:
        await generator.aclose()
        await storage.aclose()
    provider = generator.provider_name
    assert value(metrics, "abby_generations_total", kind="imagine", provider=provider, outcome="ok") == 1
    assert value(metrics, "abby_refusals_total", reason="daily_limit") == 1
    assert value(metrics, "abby_generation_seconds_count", provider=provider) == 1
    assert value(metrics, "abby_stored_bytes_total") == result.stored.size


def test_metrics_settings_are_off_by_default_and_checked() -> None:
    settings = load_settings(env_file=None)
    assert not settings.metrics.enabled and settings.metrics.host == "127.0.0.1"
    on = load_settings(env_file=None, METRICS_PORT="9108", METRICS_HOST="0.0.0.0")
    assert on.metrics.port == 9108 and on.metrics.url == "http://0.0.0.0:9108/metrics"
    assert load_settings(env_file=None, METRICS_PORT=" ").metrics.port is None
    for bad in ({"METRICS_PORT": "70000"}, {"METRICS_PORT": "0"}, {"METRICS_HOST": "not a host"}):
        with pytest.raises(ConfigError, match="METRICS_"):
            load_settings(env_file=None, **bad)


async def test_the_service_from_settings_has_metrics_only_when_a_port_is_set(tmp_path: Path) -> None:
    storage = StorageManager(storage_root=tmp_path / "shared")
    generator = ImageGenerator(provider=OfflineProvider())
    try:
        off = ImageService.from_settings(load_settings(env_file=None), storage, generator)
        on = ImageService.from_settings(load_settings(env_file=None, METRICS_PORT="9108"), storage, generator)
    finally:
        await generator.aclose()
        await storage.aclose()
    assert off.metrics is None and isinstance(on.metrics, Metrics)


async def test_a_service_starts_every_known_series_at_zero(tmp_path: Path) -> None:
    # A series that first appears with its first count in it hides that count from rate()
    # and increase(): after each restart an alert on ">= 5 failures" would need 6.
    storage = StorageManager(storage_root=tmp_path / "shared")
    generator = ImageGenerator(provider=OfflineProvider())
    metrics = Metrics()
    try:
        ImageService(storage, generator, metrics=metrics)
    finally:
        await generator.aclose()
        await storage.aclose()
    provider = generator.provider_name
    for kind in ("imagine", "img2img", "upscale"):
        for outcome in ("ok", "daily_limit", "generation_unavailable", "interrupted"):
            assert value(metrics, "abby_generations_total", kind=kind, provider=provider, outcome=outcome) == 0
    for code in ("generation_unavailable", "provider_unreachable", "generation_timeout", "generation_auth",
                 "storage_unavailable", "interrupted"):
        assert value(metrics, "abby_provider_errors_total", provider=provider, code=code) == 0, code
    # A provider with no key was never asked: a refusal of the configuration, not its failure.
    assert value(metrics, "abby_provider_errors_total", provider=provider, code="not_configured") is None
    for reason in ("daily_limit", "user_storage_full", "global_storage_full", "blocked_prompt", "content_filtered",
                   "not_configured"):
        assert value(metrics, "abby_refusals_total", reason=reason) == 0, reason
    assert value(metrics, "abby_provider_errors_total", provider=provider, code="daily_limit") is None
    assert value(metrics, "abby_refusals_total", reason="generation_timeout") is None
    assert value(metrics, "abby_generation_seconds_count", provider=provider) == 0


def test_starting_the_series_keeps_what_was_counted() -> None:
    metrics = Metrics()
    metrics.observe(event("generation_timeout"))
    metrics.start("stability", ["imagine", "upscale"])
    metrics.observe(event("generation_timeout"))
    assert value(metrics, "abby_provider_errors_total", provider="stability", code="generation_timeout") == 2
    assert value(metrics, "abby_generations_total", kind="upscale", provider="stability", outcome="ok") == 0
