"""What a check returns: a :class:`Check` verdict, the checks' names and titles in report order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from abby_core.errors import ConfigError

__all__ = ["CHECK_NAMES", "TITLES", "Check", "Status", "config_failed", "fail", "ok", "skip"]

Status = Literal["ok", "fail", "skip"]

TITLES: dict[str, str] = {
    "config": "Configuration",
    "storage": "Storage reachable",
    "privacy": "Bucket private",
    "lifecycle": "Lifecycle rule",
    "conditional_writes": "Conditional writes",
    "presigned_link": "Presigned links",
    "clock": "Clock",
    "stability": "Stability API key",
    "image_server": "Image server",
    "discord_token": "Discord token",
}
CHECK_NAMES: tuple[str, ...] = tuple(TITLES)


@dataclass(frozen=True)
class Check:
    """One verdict. ``fix`` says what to do when ``status`` is ``fail``."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "title": self.title, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def fail(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, "fail", detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def config_failed(error: ConfigError) -> list[Check]:
    """The report when the settings did not load: the config check fails, the rest are skipped."""
    problems = "; ".join(error.problems) if error.problems else error.message
    first = fail("config", problems, "Fix the variables named above in .env or the environment.")
    return [first, *(skip(name, "needs a valid configuration") for name in CHECK_NAMES[1:])]
