"""``python -m abby_discord``: start the bot with the settings from the environment and ``.env``.

Exit codes: 0 stopped normally, 2 configuration problem (printed as one line or a short list).
"""

from __future__ import annotations

import sys

from abby_core.config import load_settings
from abby_core.errors import ConfigError, NotConfigured
from abby_discord.bot import run_bot


def main() -> int:
    try:
        run_bot(load_settings())
    except (ConfigError, NotConfigured) as exc:
        print(f"abby: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
