"""Adapters use the storage manager's public surface only: its methods and documented properties.

An adapter that reads ``storage.backend``, ``storage.archiver`` or a copied setting such as
``storage.cleanup_days`` decides with the manager's internals; the core answers the
question instead (for example :func:`abby_core.pipeline.event_log`), or the adapter reads
its own settings section.
"""

from __future__ import annotations

import ast
from pathlib import Path

from abby_core.storage import StorageManager

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ("abby_dashboard", "abby_cli", "abby_discord")
#: The manager's public surface: what its class defines (methods, properties), and the clock
#: that was handed to it (adapters stamp audit records with the same time).
PUBLIC = {name for name in dir(StorageManager) if not name.startswith("_")} | {"clock"}


def _is_manager(node: ast.expr, names: set[str]) -> bool:
    """A name bound to the manager, or ``x.storage`` (not ``settings.storage``, the settings section)."""
    if isinstance(node, ast.Name):
        return node.id in names
    if isinstance(node, ast.Attribute) and node.attr == "storage":
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        return name != "settings"
    return False


def _manager_names(tree: ast.AST) -> set[str]:
    """The names a module gives the manager: ``storage`` (unless a module of that name is
    imported), parameters annotated ``StorageManager`` and names assigned from ``x.storage``."""
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names}
    names = set() if "storage" in imported else {"storage"}
    for node in ast.walk(tree):
        annotation = node.annotation if isinstance(node, ast.arg) else None
        if isinstance(node, ast.arg) and annotation is not None and "StorageManager" in ast.unparse(annotation):
            names.add(node.arg)
        if isinstance(node, ast.Assign) and _is_manager(node.value, names):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _reads_of_internals() -> list[str]:
    found = []
    for package in ADAPTERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = _manager_names(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and _is_manager(node.value, names) and node.attr not in PUBLIC:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


def test_adapters_read_no_storage_manager_internals() -> None:
    assert _reads_of_internals() == []


def test_the_check_sees_a_read_of_an_internal() -> None:
    assert "backend" not in PUBLIC and "accounts" not in PUBLIC and "cleanup_days" not in PUBLIC
    assert {"stats", "default_limits", "quota_tiers", "get_quota_status"} <= PUBLIC
    tree = ast.parse("def f(store: StorageManager) -> None:\n    alias = dash.storage\n")
    assert _manager_names(tree) == {"storage", "store", "alias"}
    assert _is_manager(ast.parse("dash.storage", mode="eval").body, set())
    assert not _is_manager(ast.parse("self.settings.storage", mode="eval").body, set())
