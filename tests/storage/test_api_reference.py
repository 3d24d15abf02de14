"""docs/STORAGE_API_REFERENCE.md describes every public method of StorageManager and the
parameters of its builders, so an addition without its documentation fails here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

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


PROPERTIES = sorted(name for name, value in vars(StorageManager).items()
                    if not name.startswith("_") and isinstance(value, property) and name != "ledger")


def test_the_properties_are_read() -> None:
    assert {"default_limits", "quota_tiers", "estimate_bytes"} <= set(PROPERTIES)


@pytest.mark.parametrize("name", PROPERTIES)
def test_every_public_property_is_in_the_reference(name: str) -> None:
    assert f"`.{name}`" in REFERENCE, name
