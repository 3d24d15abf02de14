"""The generation package stays readable: each module holds one job and stays short."""

from __future__ import annotations

from pathlib import Path

import abby_core.generation

LIMIT = 500


def test_no_generation_module_reaches_500_lines() -> None:
    folder = Path(abby_core.generation.__file__).parent
    lengths = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in folder.glob("*.py")}
    assert "comfyui.py" in lengths and "automatic1111.py" in lengths
    assert {name: n for name, n in lengths.items() if n >= LIMIT} == {}
