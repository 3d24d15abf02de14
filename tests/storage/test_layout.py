"""The storage package stays readable: each module holds one job and stays short.

Modules hold one idea and stay at a few hundred lines; one past 500 has grown a second job,
which gets a module of its own (as the S3 clients, the credit book, restore and the worker
threads did).
"""

from __future__ import annotations

from pathlib import Path

import abby_core.storage

MAX_LINES = 500


def test_no_storage_module_is_over_500_lines() -> None:
    folder = Path(abby_core.storage.__file__).parent
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in folder.glob("*.py")}
    assert "manager.py" in sizes and "s3.py" in sizes
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
