"""One generation, start to finish: check → reserve → generate → store → commit.

The Discord cogs and the CLI both call :class:`ImageService`, so the story is told once::

    result = await service.imagine(user_id, "a lighthouse at dawn")
    result.stored.link, result.image.seed, result.status.daily_left

Input is checked before any quota is held; quota is held before any paid call; a
failure anywhere after that releases the hold, so a failed generation costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Unpack, get_args

from abby_core.analytics import INTERRUPTED, OK, EventKind, EventLog, UsageEvent
from abby_core.config import AnalyticsSettings, Settings
from abby_core.errors import AbbyError, InvalidPrompt, NotConfigured, StorageError
from abby_core.generation import (
    GeneratedImage,
    GenerationRequest,
    ImageGenerator,
    ProgressCallback,
    validate_image_to_image,
    validate_text_to_image,
    validate_upscale,
)
from abby_core.generation.params import ImagineOptions, Img2ImgOptions, UpscaleOptions
from abby_core.generation.stability import NOT_CONFIGURED
from abby_core.images import clean_prompt, compress_for_storage
from abby_core.metrics import Metrics
from abby_core.moderation import REFUSAL, Blocklist, load_blocklist
from abby_core.storage import MemberId, QuotaStatus, StorageManager, StoredImage, check_user_id

__all__ = ["GenerationResult", "ImageService", "event_log"]

log = logging.getLogger("abby.pipeline")
# One line per refused request, with its reason (for operators and, later, the analytics).
events = logging.getLogger("abby.events")
Kind = Literal["imagine", "img2img", "upscale"]


def event_log(storage: StorageManager, analytics: AnalyticsSettings | None = None) -> EventLog:
    """The usage and audit log kept in ``storage`` beside its images, on the storage's clock.

    For every adapter that reads or records events (the bot, ``abby stats``, the dashboard):
    ``analytics`` (``ANALYTICS_*``) says whether prompts are kept and for how many days
    events are; without it, the defaults (no prompts, 90 days).
    """
    if analytics is None:
        return EventLog(storage.backend, clock=storage.clock)
    return EventLog(
        storage.backend,
        clock=storage.clock,
        store_prompts=analytics.store_prompts,
        retention_days=analytics.retention_days,
    )


@dataclass(frozen=True)
class GenerationResult:
    """What a member gets back: the stored image, how it was made, and their quota now."""

    kind: Kind
    stored: StoredImage
    image: GeneratedImage
    status: QuotaStatus
    prompt: str | None
    bytes_before_compression: int
    paid_with_credit: bool = False  # past the daily allowance: one of the member's credits paid

    @property
    def data(self) -> bytes:
        return self.image.data


class ImageService:
    """Generation with quotas, over one :class:`StorageManager` and one :class:`ImageGenerator`."""

    def __init__(
        self,
        storage: StorageManager,
        generator: ImageGenerator,
        *,
        store_format: Literal["png", "webp"] = "png",
        store_quality: int = 90,
        store_lossless: bool = False,
        blocklist: Blocklist | None = None,
        events: EventLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.storage = storage
        self.generator = generator
        self.blocklist = blocklist or Blocklist()
        self.events = events
        self.metrics = metrics
        if metrics is not None:
            metrics.start(generator.provider_name, get_args(Kind))
        self._recording: set[asyncio.Task[bool]] = set()
        self.store_format: Literal["png", "webp"] = store_format
        self.store_quality = store_quality
        self.store_lossless = store_lossless

    @classmethod
    def from_settings(cls, settings: Settings, storage: StorageManager, generator: ImageGenerator) -> ImageService:
        """The service with the storage format (``IMAGE_STORE_*``) and the prompt blocklist applied.

        With ``METRICS_PORT`` set it also counts into a new :class:`Metrics` (``service.metrics``),
        which the entry point serves; without it ``metrics`` is None.
        """
        api = settings.api
        return cls(
            storage,
            generator,
            store_format=api.store_format,
            store_quality=api.store_quality,
            store_lossless=api.store_lossless,
            blocklist=load_blocklist(settings.moderation),
            events=event_log(storage, settings.analytics),
            metrics=Metrics() if settings.metrics.enabled else None,
        )

    def record(
        self,
        kind: EventKind,
        user_id: object,
        outcome: str,
        *,
        guild_id: int | None = None,
        stored: int = 0,
        latency: float | None = None,
        prompt: str | None = None,
        paid_with_credit: bool = False,
    ) -> None:
        """Record one outcome in the usage events (in the background) and the metrics: never fails, never waits."""
        if self.events is None and self.metrics is None:
            return
        try:
            event = UsageEvent(
                time=self.storage.clock(),
                user_id=str(user_id),
                guild_id=str(guild_id) if guild_id else None,
                kind=kind,
                provider=self.generator.provider_name,
                outcome=outcome,
                bytes_stored=stored,
                latency_seconds=latency,
                prompt=prompt,
                paid_with_credit=paid_with_credit,
            )
        except ValueError:
            log.warning("Not recording an event for %r: it is not a valid user.", user_id)
            return
        if self.metrics is not None:
            try:
                self.metrics.observe(event)
            except Exception:
                log.exception("Could not count event %s in the metrics.", event.outcome)
        if self.events is None:
            return
        task = asyncio.get_running_loop().create_task(self.events.arecord(event))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def flush_events(self) -> None:
        """Wait for events still being written (before a one-shot command exits)."""
        if self._recording:
            await asyncio.gather(*self._recording, return_exceptions=True)

    def check_prompt(self, prompt: str) -> str:
        """The prompt cleaned and checked against the blocklist (:class:`InvalidPrompt` if refused)."""
        cleaned = clean_prompt(prompt)
        found = self.blocklist.find(cleaned)
        if found is not None:
            # The operator sees which entry matched; the member is never told (it would teach evasion).
            events.info("refused code=blocked_prompt entry=%r", found.entry)
            raise InvalidPrompt(REFUSAL)
        return cleaned

    async def precheck(
        self,
        user_id: object,
        *,
        prompt: str | None = None,
        role_ids: Iterable[int] = (),
        sku_ids: Iterable[int] = (),
        kind: EventKind = "imagine",
    ) -> None:
        """Refuse early what :meth:`imagine` and friends would refuse, without holding anything.

        For adapters that must answer before they start a long task (Discord shows a
        public "thinking…" message once it defers): checks the user id, the prompt, that
        generation is configured, and the member's quota as it stands (blocked, daily
        limit, user and global storage for one more image). Raises the same errors as
        the real call. Only a hint: the reservation inside the real call still decides.
        """
        uid = check_user_id(user_id)
        try:
            if prompt is not None:
                self.check_prompt(prompt)
            if not self.generator.configured:
                raise NotConfigured(NOT_CONFIGURED)
            await self.storage.precheck(uid, role_ids=tuple(role_ids), sku_ids=tuple(sku_ids))
        except AbbyError as exc:
            self.record(kind, uid, exc.code)
            raise

    async def imagine(
        self,
        user_id: object,
        prompt: str,
        *,
        role_ids: Iterable[int] = (),
        sku_ids: Iterable[int] = (),
        progress: ProgressCallback | None = None,
        **options: Unpack[ImagineOptions],
    ) -> GenerationResult:
        """Text to image for ``user_id`` (``/imagine``, ``abby imagine``); ``options`` as
        :func:`~abby_core.generation.validate_text_to_image` takes them."""
        uid = check_user_id(user_id)
        request = validate_text_to_image(prompt, **options)
        return await self._run("imagine", uid, request, request.prompt, (tuple(role_ids), tuple(sku_ids)), progress)

    async def img2img(
        self,
        user_id: object,
        image: bytes,
        prompt: str,
        *,
        role_ids: Iterable[int] = (),
        sku_ids: Iterable[int] = (),
        progress: ProgressCallback | None = None,
        **options: Unpack[Img2ImgOptions],
    ) -> GenerationResult:
        """A new image from ``image`` and a prompt (``/imgimg``, variations); ``options`` as
        :func:`~abby_core.generation.validate_image_to_image` takes them."""
        uid = check_user_id(user_id)
        request = await asyncio.to_thread(
            validate_image_to_image, image, prompt, limits=self.generator.input_limits, **options
        )
        return await self._run("img2img", uid, request, request.prompt, (tuple(role_ids), tuple(sku_ids)), progress)

    async def upscale(
        self,
        user_id: object,
        image: bytes,
        *,
        role_ids: Iterable[int] = (),
        sku_ids: Iterable[int] = (),
        progress: ProgressCallback | None = None,
        **options: Unpack[UpscaleOptions],
    ) -> GenerationResult:
        """A larger copy of ``image`` (``/upscale``); ``options`` as
        :func:`~abby_core.generation.validate_upscale` takes them."""
        uid = check_user_id(user_id)
        request = await asyncio.to_thread(validate_upscale, image, limits=self.generator.input_limits, **options)
        return await self._run("upscale", uid, request, request.prompt, (tuple(role_ids), tuple(sku_ids)), progress)

    async def _run(
        self,
        kind: Kind,
        uid: MemberId,
        request: GenerationRequest,
        prompt: str | None,
        tiers: tuple[tuple[int, ...], tuple[int, ...]],
        progress: ProgressCallback | None,
    ) -> GenerationResult:
        try:
            result, latency = await self._generate(kind, uid, request, prompt, tiers, progress)
        except AbbyError as exc:
            self.record(kind, uid, exc.code, prompt=prompt)
            raise
        except asyncio.CancelledError:
            self.record(kind, uid, INTERRUPTED, prompt=prompt)
            raise
        self.record(
            kind, uid, OK, stored=result.stored.size, latency=latency, prompt=prompt,
            paid_with_credit=result.paid_with_credit,
        )
        return result

    async def _generate(
        self,
        kind: Kind,
        uid: MemberId,
        request: GenerationRequest,
        prompt: str | None,
        tiers: tuple[tuple[int, ...], tuple[int, ...]],
        progress: ProgressCallback | None,
    ) -> tuple[GenerationResult, float | None]:
        if prompt is not None:
            self.check_prompt(prompt)
        if not self.generator.configured:
            raise NotConfigured(NOT_CONFIGURED)
        roles, skus = tiers  # the member's role ids, and the SKU ids of their subscriptions
        reservation = await self.storage.reserve(uid, role_ids=roles, sku_ids=skus)
        latency: float | None = None
        try:
            started = time.monotonic()
            image = await self.generator.generate(request, progress=progress)
            latency = time.monotonic() - started
            compressed = await asyncio.to_thread(
                compress_for_storage,
                image.data,
                fmt=self.store_format,
                quality=self.store_quality,
                lossless=self.store_lossless,
            )
            stored = await self.storage.save_image(reservation, compressed.data, content_type=compressed.content_type)
        except BaseException:
            # Shielded: a cancelled command (the member left, the bot stops) still refunds.
            # If storage is down the hold ends by itself when it expires; the member sees
            # what actually went wrong, not the failed release.
            try:
                await asyncio.shield(self.storage.release(reservation))
            except StorageError as exc:
                log.warning("Release of reservation %s deferred to its expiry: %s", reservation.id, exc)
            raise
        try:
            status = await self.storage.get_quota_status(uid, role_ids=roles, sku_ids=skus, allow_cached=True)
        except asyncio.CancelledError:
            # Interrupted before the success was reported: it costs nothing after all.
            try:
                await self.storage.discard(reservation, stored)
            except StorageError as exc:
                log.warning("Taking back interrupted generation %s is retried later: %s", reservation.id, exc)
            raise
        # The image is stored and charged: from here nothing may turn it into a failure.
        result = GenerationResult(
            kind, stored, image, status, prompt, compressed.bytes_before, paid_with_credit=reservation.credit
        )
        return result, latency
