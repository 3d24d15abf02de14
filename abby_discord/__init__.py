"""Abby's Discord adapter: a thin ``commands.Bot`` over :mod:`abby_core`.

``run_bot(settings)`` is the entry point (``abby run``, ``python -m abby_discord``);
``AbbyBot`` takes its collaborators ready-made so tests can hand in their own.
"""

from abby_discord.bot import AbbyBot, run_bot

__all__ = ["AbbyBot", "run_bot"]
