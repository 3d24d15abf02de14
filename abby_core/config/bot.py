"""The Discord bot's section: token, server, admins, shards, queue and what the server sells."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from abby_core.config._fields import Ids, Section, csv_ints, var
from abby_core.config.tiers import CreditPacks, PremiumTier

__all__ = ["DiscordSettings"]


class DiscordSettings(Section):
    """The bot's Discord side.

    ``shard_count`` None lets Discord pick it and runs every shard in this process; ``shard_ids``
    empty runs every shard of ``shard_count`` here, otherwise only those (each below ``shard_count``).
    ``premium_tiers`` is the storage section's ``PREMIUM_TIERS``, handed over by :class:`Settings`.
    """

    token: SecretStr | None = var(None, "DISCORD_TOKEN", "a bot token")
    guild_id: int | None = var(None, "DISCORD_GUILD_ID", "a server (guild) id, digits only", ge=1)
    admin_role_ids: Ids = var((), "ADMIN_ROLE_IDS", "role ids separated by commas")
    delivery: Literal["attach", "link", "both"] = var("both", "IMAGE_DELIVERY", "'attach', 'link' or 'both'")
    max_concurrent_generations: int = var(
        4, "MAX_CONCURRENT_GENERATIONS", "a whole number from 1 to 256", ge=1, le=256
    )
    log_level: str = var(
        "INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL",
        pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
    )
    shard_count: int | None = var(None, "SHARD_COUNT", "a whole number from 1 to 1000", ge=1, le=1000)
    shard_ids: Annotated[tuple[Annotated[int, Field(ge=0)], ...], BeforeValidator(csv_ints)] = var(
        (), "SHARD_IDS", "shard ids (0, 1, ...) separated by commas"
    )
    # "shared": MAX_CONCURRENT_GENERATIONS and the queue are those of every process on the storage.
    generation_queue: Literal["local", "shared"] = var(
        "local", "GENERATION_QUEUE",
        "'local' (each bot process has its own queue) or 'shared' (one queue for every process)",
    )
    # What the server sells through Discord's store (nothing configured: no store anywhere).
    credit_packs: CreditPacks = var(
        (), "CREDIT_PACKS", "entries SKU_ID:CREDITS separated by commas, e.g. 5678:20"
    )
    premium_tiers: tuple[PremiumTier, ...] = ()

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _consistent(self) -> DiscordSettings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the number of shards all processes share)")
        if self.shard_count is not None and any(i >= self.shard_count for i in self.shard_ids):
            last = self.shard_count - 1
            raise ValueError(f"SHARD_IDS must each be below SHARD_COUNT ({self.shard_count}): from 0 to {last}")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("SHARD_IDS names a shard twice")
        tier_skus = [t.sku_id for t in self.premium_tiers]
        pack_skus = [p.sku_id for p in self.credit_packs]
        if len(set(tier_skus)) != len(tier_skus) or len(set(pack_skus)) != len(pack_skus):
            raise ValueError("PREMIUM_TIERS or CREDIT_PACKS names a SKU twice")
        if set(tier_skus) & set(pack_skus):
            raise ValueError("a SKU is in both PREMIUM_TIERS (subscriptions) and CREDIT_PACKS (consumables)")
        return self

    @property
    def sells(self) -> bool:
        return bool(self.premium_tiers or self.credit_packs)
