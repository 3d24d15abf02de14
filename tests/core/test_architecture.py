"""The layout rules that keep core and adapters apart, checked rather than hoped for."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import abby_core

ROOT = Path(__file__).resolve().parents[2]


def _core_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(abby_core.__path__, "abby_core."))


def test_core_never_loads_discord_typer_or_rich() -> None:
    modules = _core_modules()
    assert "abby_core.storage.s3" in modules and "abby_core.pipeline" in modules
    code = (
        "import importlib, sys\n"
        # httpx's own command line (httpx._main) loads click and rich whenever both are
        # installed (the dashboard's uvicorn brings click); it is not Abby's import.
        "sys.modules['httpx._main'] = None\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(','.join(m for m in ('discord', 'typer', 'rich', 'aiohttp', 'abby_dashboard', 'starlette')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def _imports(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_adapters_reach_http_and_s3_only_through_core() -> None:
    for package in ("abby_discord", "abby_cli"):
        folder = ROOT / package
        if not folder.exists():
            continue
        for path, names in _imports(folder).items():
            forbidden = names & {"httpx", "boto3", "botocore"}
            assert not forbidden, f"{path} imports {forbidden}"


def test_core_never_imports_the_dashboard() -> None:
    for path, names in _imports(ROOT / "abby_core").items():
        assert not names & {"abby_dashboard", "abby_discord", "abby_cli", "starlette", "jinja2"}, path


def test_dashboard_never_imports_discord_and_reaches_http_in_one_module() -> None:
    for path, names in _imports(ROOT / "abby_dashboard").items():
        assert not names & {"discord", "abby_discord", "typer", "rich", "boto3", "botocore"}, path
        if "httpx" in names:
            assert path.endswith("discord_api.py"), f"{path} imports httpx (only discord_api.py may)"


def test_only_config_reads_the_environment() -> None:
    for path, _ in _imports(ROOT / "abby_core").items():
        text = (ROOT / path).read_text(encoding="utf-8")
        assert "os.environ" not in text and "getenv" not in text, path
