"""One cog package per feature; each ``__init__`` holds only ``setup()``."""

EXTENSIONS = (
    "abby_discord.cogs.generate",
    "abby_discord.cogs.gallery",
    "abby_discord.cogs.admin",
)

__all__ = ["EXTENSIONS"]
