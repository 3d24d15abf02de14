"""Fixtures shared by the whole suite.

Settings come only from the test: the autouse fixture removes every variable Abby
reads from the environment, and tests build settings with ``load_settings(env_file=None, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from abby_core.config import VARIABLES
from tests.fixtures.fake_stability import fake_stability  # noqa: F401
from tests.fixtures.seaweedfs import seaweedfs  # noqa: F401

_OURS = set(VARIABLES)


# Loggers a test (or the bot's own set-up) may turn up to DEBUG: left there, every later test
# formats each S3 request's headers, and a failure prints thousands of lines of them.
_LOGGERS = ("", "abby", "botocore", "boto3", "urllib3", "httpx", "httpcore", "discord", "uvicorn")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import logging
    import os

    for name in list(os.environ):
        if name.upper() in _OURS or name.upper().startswith(("AWS_", "ABBY_")):
            monkeypatch.delenv(name, raising=False)
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
