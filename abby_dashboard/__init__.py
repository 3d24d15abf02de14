"""The web dashboard (``abby dashboard``): an adapter over ``abby_core``, like the bot and the CLI.

Starlette + Jinja2 templates, sessions in signed cookies, Chart.js served from ``static/``.
It never imports ``discord``, and core never imports it.
"""

from abby_dashboard.app import AccessLogRedaction, create_app
from abby_dashboard.discord_api import DiscordAPI, DiscordAPIError

__all__ = ["AccessLogRedaction", "DiscordAPI", "DiscordAPIError", "create_app"]
