"""Logging for the bot process, set up once at the entry point.

Console plus a rotating file at ``<STORAGE_ROOT>/logs/abby.log`` (5 files of 5 MB).
If that folder cannot be created the bot logs to the console only and says so.
Secrets never reach a handler: every record is scrubbed of the configured token and
keys, and discord.py's own loggers are kept at INFO or above.
"""

from __future__ import annotations

import logging
import logging.handlers
from collections.abc import Iterable
from pathlib import Path

from abby_core.config import Settings

__all__ = ["LOG_FORMAT", "RedactSecrets", "log_file", "secrets_of", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
_MAX_BYTES = 5 * 1024 * 1024
_BACKUPS = 5
_MARK = "_abby_handler"


class RedactSecrets(logging.Filter):
    """Replace each secret by ``********`` in the formatted message (and drop it from args)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = message
        for secret in self.secrets:
            cleaned = cleaned.replace(secret, "********")
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "********")
        return True


def secrets_of(settings: Settings) -> list[str]:
    values = (settings.discord.token, settings.api.stability_api_key, settings.s3.secret_access_key)
    return [v.get_secret_value() for v in values if v is not None]


def log_file(settings: Settings) -> Path:
    return Path(settings.storage.root) / "logs" / "abby.log"


def setup_logging(settings: Settings) -> Path | None:
    """Configure the root logger; returns the log file, or None when logging to the console only.

    Calling it again replaces the handlers it added before (never anyone else's).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    level = logging.getLevelName(settings.discord.log_level)
    root.setLevel(level)
    redact = RedactSecrets(secrets_of(settings))
    formatter = logging.Formatter(LOG_FORMAT)
    console = logging.StreamHandler()
    handlers: list[logging.Handler] = [console]
    path: Path | None = log_file(settings)
    problem = None
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8")
        )
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc.strerror or exc}"
        path = None
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    # At DEBUG, discord.py logs every payload and botocore/httpx every header (request
    # signatures, the access key id); INFO is what an operator needs from them.
    for noisy in ("discord", "botocore", "boto3", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
    if problem:
        logging.getLogger("abby").warning(
            "Cannot write the log file under %s (%s); logging to the console only.",
            Path(settings.storage.root) / "logs",
            problem,
        )
    return path
