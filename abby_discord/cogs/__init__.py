"""One cog package per feature; each ``__init__`` holds only ``setup()``."""

EXTENSIONS = (
    "abby_discord.cogs.generate",
    "abby_discord.cogs.gallery",
    "abby_discord.cogs.admin",
)
#: Loaded only when the server sells quota through Discord's store (``PREMIUM_TIERS``, ``CREDIT_PACKS``).
STORE_EXTENSION = "abby_discord.cogs.store"

__all__ = ["EXTENSIONS", "STORE_EXTENSION"]
