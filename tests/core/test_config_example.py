""".env.example lists exactly the variables the sections declare, each with its default."""

from __future__ import annotations

import re
from pathlib import Path

from abby_core.config import VARIABLES, describe_settings, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
COMPOSE_ONLY = "# docker compose only"  # below this heading: variables Abby itself does not read


def _listed() -> list[tuple[str, str]]:
    """``(NAME, value)`` for every ``NAME=value`` line Abby reads, and every ``# NAME=value`` left unset.

    A commented line is a listing only when it is nothing else (prose such as
    ``# SHARD_IDS=1 in the other`` has spaces after the ``=``).
    """
    ours = ENV_EXAMPLE.read_text(encoding="utf-8").split(COMPOSE_ONLY)[0]
    found = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$|^# ([A-Z][A-Z0-9_]*)=(\S*)$", ours, re.M)
    return [(name or commented, value or commented_value) for name, value, commented, commented_value in found]


def test_every_declared_variable_is_listed_once_and_nothing_else() -> None:
    names = [name for name, _ in _listed()]
    assert sorted(names) == sorted(VARIABLES)  # no name twice, none missing, none unknown


def test_listed_values_are_the_defaults() -> None:
    defaults = describe_settings(load_settings(env_file=None))
    for name, value in _listed():
        if defaults[name] is None:  # unset by default: the file may show an example
            continue
        assert describe_settings(load_settings(env_file=None, **{name: value}))[name] == defaults[name], name


STORAGE_DOC = ENV_EXAMPLE.parent / "docs" / "STORAGE_API_REFERENCE.md"


def _documented() -> list[tuple[str, str]]:
    """``(NAME, default as written)`` from the settings table of the storage reference."""
    section = STORAGE_DOC.read_text(encoding="utf-8").split("## Configuration")[1]
    rows = re.findall(r"^\| (`[A-Z][^|]*) \| ([^|]*) \|", section, re.M)
    found = []
    for names, default in rows:
        values = re.findall(r"`([^`]*)`", default) or ["" for _ in names.split(",")]
        found += list(zip(re.findall(r"`([A-Z][A-Z0-9_]*)`", names), values, strict=True))
    return found


def test_the_storage_reference_table_states_the_declared_defaults() -> None:
    defaults = describe_settings(load_settings(env_file=None))
    documented = _documented()
    assert len(documented) > 20
    for name, default in documented:
        assert name in VARIABLES, name
        shown = None if default == "" else describe_settings(load_settings(env_file=None, **{name: default}))[name]
        assert shown == defaults[name], name
    section = STORAGE_DOC.read_text(encoding="utf-8").split("## Configuration")[1]
    for name, (path, _) in VARIABLES.items():
        if path in (("storage",), ("s3",)):
            assert f"`{name}`" in section, name
