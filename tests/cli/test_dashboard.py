"""``abby dashboard --json``: its startup line is the one JSON object, printed once it listens."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import Invoke, one_json

TOKEN = "a-dashboard-token-0123456789"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_in_use_is_the_only_json_object(
    abby: Invoke, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    result = abby("dashboard", "--host", "127.0.0.1", "--port", str(taken_port), "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "not_configured" and str(taken_port) in error["message"]


def test_the_startup_line_as_json(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DASHBOARD_TOKEN": TOKEN, "STORAGE_ROOT": str(tmp_path / "shared")}
    repo = Path(__file__).parents[2]
    env["PYTHONPATH"] = str(repo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "abby_cli", "dashboard", "--host", "127.0.0.1", "--port", str(port), "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = json.loads(lines.get(timeout=120))
        assert first == {"ok": True, "url": f"http://127.0.0.1:{port}", "listening": f"127.0.0.1:{port}",
                         "sign_in": ["token"]}
        with socket.create_connection(("127.0.0.1", port), timeout=30):  # it does listen
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=60)
