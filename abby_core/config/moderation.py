"""The moderation section: prompt blocklist and where images may be made."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator

from abby_core.config._fields import Ids, Section, var

__all__ = ["ModerationSettings"]


def _blocklist(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(p.strip() for p in re.split(r"[,\n]", value) if p.strip())
    return value


class ModerationSettings(Section):
    """Content controls that work the same for every provider."""

    blocklist: Annotated[tuple[str, ...], BeforeValidator(_blocklist)] = var(
        (), "PROMPT_BLOCKLIST", "words or re:patterns separated by commas (or newlines)"
    )
    blocklist_file: Path | None = var(
        None, "PROMPT_BLOCKLIST_FILE", "a text file with one word or re:pattern per line"
    )
    channel_ids: Ids = var(
        (), "IMAGE_CHANNEL_IDS", "channel ids separated by commas, or empty for every channel"
    )
    age_restricted_only: bool = var(False, "IMAGE_AGE_RESTRICTED_ONLY", "true or false")
