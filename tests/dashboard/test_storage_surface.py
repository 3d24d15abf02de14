"""The dashboard reads the storage manager only through its public, documented surface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import abby_dashboard.pages
from abby_core.storage import StorageManager

PAGES = Path(abby_dashboard.pages.__file__)


def _read_from_manager() -> set[str]:
    """Every name the pages read off the manager (``dash.storage.x``, or ``store.x`` after ``store = dash.storage``)."""
    names = set()
    for node in ast.walk(ast.parse(PAGES.read_text())):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in {"dash.storage", "store"}:
            names.add(node.attr)
    return names


def test_the_pages_read_the_manager_through_documented_methods_and_properties() -> None:
    names = _read_from_manager()
    assert {"stats", "limits_for", "default_limits"} <= names  # the walk finds what the pages read
    for name in sorted(names):
        assert not name.startswith("_"), name
        member = inspect.getattr_static(StorageManager, name, None)
        assert isinstance(member, property) or inspect.isfunction(member), (
            f"pages.py reads StorageManager.{name}, which is not a method or property of the class"
        )
        assert inspect.getdoc(member), f"StorageManager.{name} has no docstring"
