"""docs/STORAGE_API_REFERENCE.md describes every public method of StorageManager and the
parameters of its builders, and its errors table lists every core error with its code and its
fixed messages as the code writes them, so an addition without its documentation fails here."""

from __future__ import annotations

import inspect
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from abby_core import errors
from abby_core.storage import StorageManager

REFERENCE = (Path(__file__).resolve().parents[2] / "docs" / "STORAGE_API_REFERENCE.md").read_text(encoding="utf-8")
PUBLIC = sorted(name for name, value in vars(StorageManager).items()
                if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, classmethod)))


def test_the_reference_is_read() -> None:
    assert "restore_archived" in PUBLIC and "from_settings" in PUBLIC and "ledger" not in PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_method_is_in_the_reference(name: str) -> None:
    assert f"`{name}(" in REFERENCE or f".{name}(" in REFERENCE or f"/ `{name}(" in REFERENCE, name


@pytest.mark.parametrize(("builder", "written"), [("from_settings", "StorageManager.from_settings("),
                                                  ("__init__", "StorageManager(backend")])
def test_every_builder_parameter_is_in_the_reference(builder: str, written: str) -> None:
    params = [p for p in inspect.signature(getattr(StorageManager, builder)).parameters if p != "self"]
    line = next(line for line in REFERENCE.splitlines() if f"`{written}" in line)
    assert params and all(p in line for p in params), (params, line)


def _error_rows() -> dict[str, str]:
    """The errors table: each backticked name in a row's first cell -> the row."""
    start = REFERENCE.index("## Errors and their messages")
    rows = {}
    for line in REFERENCE[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        if line.startswith("| `"):
            for name in line.split("|")[1].split("`")[1::2]:
                rows.setdefault(name, line)
    return rows


def test_every_core_error_is_in_the_errors_table() -> None:
    rows = _error_rows()
    for name in errors.__all__:
        cls = getattr(errors, name)
        listed = rows.get(name)
        if cls in (errors.AbbyError, errors.QuotaExceeded):
            continue  # bases, not raised themselves
        assert listed is not None, name
        assert f"`{cls.code}`" in listed, (name, cls.code)


_EXAMPLES = [
    errors.UserBlocked("123"),
    errors.DailyLimitExceeded(used=5, limit=5, resets_at=datetime(2026, 12, 1, tzinfo=UTC)),
    errors.UserStorageFull(used=500_000_000, limit=500_000_000),
    errors.GlobalStorageFull(used=500_000_000, limit=500_000_000),
    errors.ImageNotFound("x.png"),
    errors.ArchivedImageNotFound("x.png"),
]


@pytest.mark.parametrize("exc", _EXAMPLES, ids=lambda e: type(e).__name__)
def test_a_fixed_message_is_shown_as_the_code_writes_it(exc: errors.AbbyError) -> None:
    assert f"`{exc.message}`" in _error_rows()[type(exc).__name__]


def test_the_errors_table_does_not_address_the_reader() -> None:
    messages = [cell for row in _error_rows().values() for cell in row.split("`")[1::2]]
    assert not [m for m in messages if re.search(r"\b(please|your|you)\b", m, re.IGNORECASE)]


PROPERTIES = sorted(name for name, value in vars(StorageManager).items()
                    if not name.startswith("_") and isinstance(value, property) and name != "ledger")


def test_the_properties_are_read() -> None:
    assert {"default_limits", "quota_tiers", "estimate_bytes"} <= set(PROPERTIES)


@pytest.mark.parametrize("name", PROPERTIES)
def test_every_public_property_is_in_the_reference(name: str) -> None:
    assert f"`.{name}`" in REFERENCE, name
