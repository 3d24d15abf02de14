"""Per-member limits bought or granted: role tiers, premium subscriptions and credit packs.

Each list variable is written as ``A:B:C`` entries separated by commas (``QUOTA_TIERS=123:20:2000``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from abby_core.config._fields import Section, entries

__all__ = ["CreditPack", "CreditPacks", "PremiumTier", "PremiumTiers", "QuotaTier", "QuotaTiers"]


class PremiumTier(Section):
    """Limits for members subscribed to a Discord SKU of the app (``PREMIUM_TIERS``)."""

    sku_id: int
    daily_gens: int
    storage_mb: float


class CreditPack(Section):
    """A consumable Discord SKU that gives the member credits (``CREDIT_PACKS``)."""

    sku_id: int
    credits: int


class QuotaTier(Section):
    """Limits for members holding a Discord role (``QUOTA_TIERS``)."""

    role_id: int
    daily_gens: int
    storage_mb: float


def _tiers(value: Any) -> Any:
    def check(tier: dict[str, Any]) -> str | None:
        if tier["role_id"] < 1 or tier["daily_gens"] < 1 or not 0 < tier["storage_mb"] <= 100_000_000:
            return "must have a role id, daily gens and storage above 0"
        return "allows more than 100000 generations a day" if tier["daily_gens"] > 100_000 else None

    return entries(value, (("role_id", int), ("daily_gens", int), ("storage_mb", float)), check)


def _premium(value: Any) -> Any:
    def check(tier: dict[str, Any]) -> str | None:
        daily_ok = 1 <= tier["daily_gens"] <= 100_000
        if tier["sku_id"] < 1 or not daily_ok or not 0 < tier["storage_mb"] <= 100_000_000:
            return "needs a SKU id, 1 to 100000 daily gens and storage above 0"
        return None

    return entries(value, (("sku_id", int), ("daily_gens", int), ("storage_mb", float)), check)


def _packs(value: Any) -> Any:
    def check(pack: dict[str, Any]) -> str | None:
        from abby_core.storage.rules import MAX_CREDITS  # the rule's home; it imports this package

        if pack["sku_id"] < 1 or not 1 <= pack["credits"] <= MAX_CREDITS:
            return f"needs a SKU id and 1 to {MAX_CREDITS} credits"
        return None

    return entries(value, (("sku_id", int), ("credits", int)), check)


#: ``QUOTA_TIERS``, ``PREMIUM_TIERS`` and ``CREDIT_PACKS`` as the fields that declare them hold them.
QuotaTiers = Annotated[tuple[QuotaTier, ...], BeforeValidator(_tiers)]
PremiumTiers = Annotated[tuple[PremiumTier, ...], BeforeValidator(_premium)]
CreditPacks = Annotated[tuple[CreditPack, ...], BeforeValidator(_packs)]
