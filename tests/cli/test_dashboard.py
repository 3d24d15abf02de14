"""``abby dashboard`` as an operator runs it: one clear line when the port is taken, no secrets in the access
log, and with ``--json`` its startup line is the one JSON object, printed once it listens."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Invoke, one_json

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "correct-horse-battery-staple-42"
DEADLINE = 60.0  # seconds; only reached when something is wrong


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
        "DASHBOARD_TOKEN": TOKEN, "DASHBOARD_SECRET_KEY": "a-test-secret-key-0123456789abcdef0123",
        "STORAGE_ROOT": str(tmp_path / "store"), "LOG_LEVEL": "INFO",
    }


def command(port: int) -> list[str]:
    return [sys.executable, "-m", "abby_cli", "dashboard", "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture
def taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_a_taken_port_is_one_clear_line(tmp_path: Path, taken: int) -> None:
    result = subprocess.run(command(taken), cwd=tmp_path, env=environment(tmp_path), capture_output=True,
                            text=True, timeout=DEADLINE)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"✘ port_in_use: port {taken} is in use on 127.0.0.1: stop what uses it, or choose another port "
        "with --port or DASHBOARD_PORT."
    ]
    assert result.returncode == 2


def test_the_access_log_leaves_out_the_sign_in_callbacks_query(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    process = subprocess.Popen(command(port), cwd=tmp_path, env=environment(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                httpx.get(url + "/login", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.05)
        httpx.get(url + "/auth/callback", params={"code": "c0de-from-discord", "state": "st4te-value"}, timeout=5)
        httpx.get(url + "/login", params={"next": "/storage"}, timeout=5)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=DEADLINE)
    assert "c0de-from-discord" not in output and "st4te-value" not in output
    assert '"GET /auth/callback HTTP/1.1"' in output
    assert "\"GET /login?next=%2Fstorage HTTP/1.1\"" in output  # other routes are logged as they were


def test_a_port_in_use_is_the_only_json_object(
    abby: Invoke, taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_TOKEN", TOKEN)
    result = abby("dashboard", "--host", "127.0.0.1", "--port", str(taken), "--json")
    assert result.exit_code == 2
    error = one_json(result)["error"]
    assert error["code"] == "port_in_use" and str(taken) in error["message"]


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
