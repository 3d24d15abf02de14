""".env.example lists exactly the variables the sections declare, each with its default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from abby_core.config import VARIABLES, Settings, describe_settings, load_settings

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


def _declarations(model: type[BaseModel]) -> list[str]:
    """Every variable name ``model`` and the models of its fields declare, counting repeats."""
    names: list[str] = []
    for info in model.model_fields.values():
        if info.alias:
            names.append(info.alias)
        names += [n for arg in (info.annotation, *get_args(info.annotation)) for n in _model_declarations(arg)]
    return names


def _model_declarations(annotation: object) -> list[str]:
    return _declarations(annotation) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def test_each_variable_is_declared_once_in_one_section() -> None:
    names = _declarations(Settings)
    assert sorted(names) == sorted(set(names)) == sorted(VARIABLES)
    for name, info in Settings.model_fields.items():  # Settings itself declares no variable: only sections
        assert info.alias is None and isinstance(info.annotation, type), name
        assert issubclass(info.annotation, BaseModel), name


def test_every_declared_variable_is_listed_once_and_nothing_else() -> None:
    names = [name for name, _ in _listed()]
    assert sorted(names) == sorted(VARIABLES)  # no name twice, none missing, none unknown


def test_listed_values_are_the_defaults() -> None:
    defaults = describe_settings(load_settings(env_file=None))
    for name, value in _listed():
        if defaults[name] is None:  # unset by default: the file may show an example
            continue
        assert describe_settings(load_settings(env_file=None, **{name: value}))[name] == defaults[name], name


DOCS = ENV_EXAMPLE.parent / "docs"
#: The docs with a table of variables and their defaults, and the sections each covers in full.
TABLES = {"STORAGE_API_REFERENCE.md": (("storage",), ("s3",)), "DISCORD.md": (), "DASHBOARD.md": ()}


def _tables(doc: str) -> list[tuple[str, str]]:
    """``(NAME, default as written)`` from the doc's tables headed ``| Variable | Default |`` ("empty": "")."""
    found: list[tuple[str, str]] = []
    text = (DOCS / doc).read_text(encoding="utf-8")
    for table in re.findall(r"^\| [Vv]ariable \| [Dd]efault \|.*\n\|[-| ]+\|\n((?:\|.*\n)+)", text, re.M):
        for names, default in re.findall(r"^\| (`[A-Z][^|]*) \| ([^|]*) \|", table, re.M):
            variables = re.findall(r"`([A-Z][A-Z0-9_]*)`", names)
            if "{" in default:  # derived from other variables, e.g. http://{host}:{port}
                continue
            empty = default.strip().startswith(("empty", "\u2014"))
            values = [""] * len(variables) if empty else re.findall(r"`([^`]*)`", default) or [default.strip()]
            found += list(zip(variables, values, strict=True))
    return found


@pytest.mark.parametrize("doc", sorted(TABLES))
def test_the_docs_settings_tables_state_the_declared_defaults(doc: str) -> None:
    defaults = describe_settings(load_settings(env_file=None))
    documented = _tables(doc)
    assert len(documented) > 10
    for name, default in documented:
        assert name in VARIABLES, name
        assert describe_settings(load_settings(env_file=None, **{name: default}))[name] == defaults[name], name
    text = (DOCS / doc).read_text(encoding="utf-8")
    for name, (path, _) in VARIABLES.items():
        if path in TABLES[doc]:
            assert f"`{name}`" in text, name
