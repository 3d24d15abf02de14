"""ruff and mypy keep the code honest; they run with the suite so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_core_and_adapters(tmp_path: Path) -> None:
    result = _run("mypy", "--cache-dir", str(tmp_path), "abby_core", "abby_discord", "abby_cli", "abby_dashboard")
    assert result.returncode == 0, result.stdout + result.stderr
