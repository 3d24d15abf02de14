"""Core errors carry data and neutral sentences; each adapter words them for its reader."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

from abby_core import errors
from abby_core.generation import ImageGenerator
from abby_core.generation.stability import NOT_CONFIGURED


def test_core_quota_messages_name_no_button_and_no_command() -> None:
    for exc in (errors.UserStorageFull(used=3, limit=2), errors.GlobalStorageFull(used=3, limit=2)):
        lowered = exc.message.lower()
        assert "button" not in lowered and "abby " not in lowered and "/gallery" not in lowered
        assert (exc.used, exc.limit) == (3, 2)


def test_not_configured_carries_the_setting() -> None:
    assert errors.NotConfigured(NOT_CONFIGURED).setting == "STABILITY_API_KEY"
    assert errors.NotConfigured("DISCORD_TOKEN is not set").setting == "DISCORD_TOKEN"
    assert errors.NotConfigured("a message").setting is None
    assert errors.NotConfigured("no key", setting="STABILITY_API_KEY").setting == "STABILITY_API_KEY"


async def test_the_generator_names_the_missing_key() -> None:
    async with ImageGenerator(None) as generator:
        with pytest.raises(errors.NotConfigured) as refused:
            await generator.text_to_image("a fox")
    assert refused.value.setting == "STABILITY_API_KEY"


def test_discord_keeps_its_own_wording() -> None:
    from abby_discord.errors import user_message

    full = user_message(errors.UserStorageFull(used=3_000_000, limit=3_000_000))
    assert "Delete button" in full and "/gallery" in full and "3.0 MB of 3.0 MB" in full
    assert "abby " not in full


_READER = re.compile(r"\b(please|your|yours|you|you're|you've)\b", re.IGNORECASE)
_CORE = Path(errors.__file__).resolve().parent

#: String constants in abby_core that match ``_READER`` but do not address a reader
#: (file relative to abby_core, the constant's text). Keep it empty unless one is not prose.
ALLOWED: set[tuple[str, str]] = set()


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (written for programmers, not readers)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _reader_strings() -> list[tuple[str, int, str]]:
    hits = []
    for path in sorted(_CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        name = path.relative_to(_CORE).as_posix()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and _READER.search(node.value)
                and (name, node.value) not in ALLOWED
            ):
                hits.append((name, node.lineno, node.value))
    return hits


def test_no_core_string_addresses_the_reader() -> None:
    """Prose for a member or an operator belongs to the adapter that knows who reads it."""
    assert _reader_strings() == []


def test_the_scan_finds_a_sentence_for_the_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.py").write_text('"""You may read this."""\nRAISED = "Please try again."\n', encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "_CORE", tmp_path)
    assert _reader_strings() == [("x.py", 2, "Please try again.")]
