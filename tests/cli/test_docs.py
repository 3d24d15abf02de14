"""The examples in docs/CLI.md and the README's try-it are the program's own output.

``python -m tests.cli.test_docs`` rewrites the console examples with what the program prints
now (the JSON examples are mended by hand: they show one of each key, on purpose).

Each document is replayed as one session in an empty folder (filesystem storage, the offline
provider): every ``$ abby ...`` line in a ```` ```console ```` block is run in order and what
it prints is compared with the lines under it, and every ```` ```json ```` block is compared,
key by key, with the object the command named in the ``<!-- output of: abby ... -->``
comment above it prints. A block whose comment says ``<!-- not run: why -->`` is skipped
(it needs S3, a Discord token or a server that keeps running).

Before comparing, both sides are normalised: the session folder reads ``/home/me/abby``;
image names, dates and times, latencies, sizes, numbers, bar-chart blocks and table rules
are placeholders; runs of spaces are one space. So the words, the lines, their order and the
JSON keys must match; sizes, seeds and dates need not.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from abby_cli.commands.generate import Provider, UpscaleMode
from abby_cli.main import app
from abby_core.generation.offline import LABEL, caption_text

ROOT = Path(__file__).resolve().parents[2]
USER = "123456789012345678"
HOME = "/home/me/abby"
_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{16}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\+00:00)?)?")
_BAR = re.compile(r"[█▏▎▍▌▋▊▉]+")
_RULE = re.compile(r"[━─]+")  # a table's rules are as wide as its columns' contents
_DURATION = re.compile(r"\b\d+(?:\.\d+)? m?s\b")  # a latency: "81 ms" on one machine, "1.2 s" on another
_SIZE = re.compile(r"\b\d+(?:\.\d+)? [KMG]?B\b")  # "999.9 KB" in one run, "1.0 MB" in the next
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
_PLACEHOLDERS = ((_NAME, "NAME"), (_TIME, "DATE"), (_BAR, "BAR"), (_DURATION, "TIME"), (_SIZE, "SIZE"),
                 (_RULE, "─"), (_NUMBER, "N"))  # in this order: a name holds digits, a size a number
_MARK = re.compile(r"<!-- (output of|not run): ((?:(?!-->).)*?) -->\s*\Z", re.S)  # right above the fence


def normalise(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, placeholder in _PLACEHOLDERS:
            line = pattern.sub(placeholder, line)
        lines.append(" ".join(line.split()))
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclass
class Block:
    lang: str
    body: str
    mark: tuple[str, str] | None  # ("output of", command) or ("not run", reason)
    line: int


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()]
        mark = _MARK.search(before.rstrip() + " ")
        found.append(Block(match.group(1), match.group(2), (mark.group(1), mark.group(2)) if mark else None,
                           before.count("\n") + 1))
    return found


def commands(body: str) -> list[tuple[str, str, str]]:
    """``(command, as written, expected output)`` of a console block; ``\\`` continues a command."""
    found: list[tuple[str, list[str], list[str]]] = []
    lines = iter(body.splitlines())
    for line in lines:
        if line.startswith("$ "):
            written = [line]
            while written[-1].endswith("\\"):
                written.append(next(lines))
            found.append(("".join(w.rstrip("\\").strip() + " " for w in written)[2:].strip(), written, []))
        elif found:
            found[-1][2].append(line)
        else:
            raise AssertionError(f"output before any command (mark the block <!-- not run: why -->): {line!r}")
    return [(command, "\n".join(written), "\n".join(out)) for command, written, out in found]


@dataclass
class Session:
    """One folder where a document's commands run in order, as a reader would type them."""

    folder: Path
    runner: CliRunner = field(default_factory=CliRunner)

    def latest_image(self) -> str:
        images = sorted((self.folder / "shared" / "images" / "users" / USER).glob("*.png"))
        return images[-1].name if images else "20250301T081500Z-3f2a9c4e1b7d6a05.png"

    def run(self, command: str) -> tuple[int, str, str]:
        """Run ``[NAME=value ...] abby ARGS``; the assignments are the command's own environment."""
        args = shlex.split(command)
        env = {}
        while args and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", args[0]):
            name, _, value = args.pop(0).partition("=")
            env[name] = value
        assert args and args[0] == "abby", command
        # An image name in an example stands for one this session made (the last by name).
        args = [_NAME.sub(self.latest_image()[:-4], arg) for arg in args[1:]]
        result = self.runner.invoke(app, args, env=env)
        out = result.output.replace(str(self.folder), HOME)
        return result.exit_code, out, result.stdout.replace(str(self.folder), HOME)


def shape_problems(example: Any, actual: Any, where: str = "") -> list[str]:
    """Where the example's keys differ from the program's (``"..."`` stands for anything)."""
    if example == "...":
        return []
    if isinstance(example, dict):
        if not isinstance(actual, dict):
            return [f"{where or 'top'}: the program prints {type(actual).__name__}, not an object"]
        problems = []
        shown = set(example) - {"..."}
        if "..." not in example:  # with "...", some of the object's keys (or a map's entries) are shown
            if missing := set(actual) - shown:
                problems.append(f"{where or 'top'}: the program also prints {sorted(missing)}")
            if extra := shown - set(actual):
                problems.append(f"{where or 'top'}: the program does not print {sorted(extra)}")
        for key in shown & set(actual):
            problems += shape_problems(example[key], actual[key], f"{where}.{key}")
        return problems
    if isinstance(example, list):
        items = [item for item in example if item != "..."]
        if not isinstance(actual, list):
            return [f"{where}: the program prints {type(actual).__name__}, not a list"]
        if not actual:  # nothing to compare the example's items with in this session
            return []
        return [p for item in items for p in shape_problems(item, actual[0], f"{where}[0]")]
    return []


def replay(
    path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *, write: bool = False
) -> list[str]:
    """What differs between ``path``'s examples and the program; ``write`` puts the printed output in instead."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("COLUMNS", "80")  # rich's width when not on a terminal, whatever the shell says
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    text = path.read_text()
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (40, 90, 160)).save(buf, format="JPEG")
    (folder / "photo.jpg").write_bytes(buf.getvalue())
    session = Session(folder)
    problems: list[str] = []
    for block in blocks(path):
        if block.mark and block.mark[0] == "not run":
            continue
        where = f"{path.name}:{block.line}"
        if block.lang == "console":
            printed = []
            for command, written, expected in commands(block.body):
                _, output, _ = session.run(command)
                printed.append(f"{written}\n{output}")
                if normalise(output) != normalise(expected):
                    problems.append(f"{where}: $ {command}\n--- documented\n{expected}\n--- printed\n{output}")
            if write:
                text = text.replace(f"```console\n{block.body}```", "```console\n" + "".join(printed) + "```", 1)
        elif block.lang == "json":
            if block.mark is None:
                problems.append(f"{where}: a JSON example needs <!-- output of: abby ... --> or <!-- not run: ... -->")
                continue
            _, _, stdout = session.run(block.mark[1])
            try:
                example = json.loads(block.body)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: the example is not JSON ({exc})")
                continue
            problems += [f"{where}: {block.mark[1]}: {p}" for p in shape_problems(example, json.loads(stdout))]
    if write:
        path.write_text(text)
    return problems


def test_cli_md_examples_are_what_the_program_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = replay(ROOT / "docs" / "CLI.md", tmp_path, monkeypatch, {"IMAGE_PROVIDER": "offline"})
    assert not problems, "\n\n".join(problems)


def test_readme_try_it_is_what_the_program_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh folder, no .env, no key: the try-it command, then ``abby doctor`` passes."""
    problems = replay(ROOT / "README.md", tmp_path, monkeypatch, {})
    assert not problems, "\n\n".join(problems)
    readme = (ROOT / "README.md").read_text()
    assert f'"{caption_text(LABEL)[0]}"' in readme  # the label as the image shows it


def test_cli_md_lists_the_choices_the_program_takes() -> None:
    text = (ROOT / "docs" / "CLI.md").read_text()
    for listed in re.findall(r"`--provider ([a-z0-9]+(?:\|[a-z0-9]+)+)`", text):
        assert listed.split("|") == [p.value for p in Provider], listed
    for listed in re.findall(r"`--mode ([a-z]+(?:\|[a-z]+)+)`", text):
        assert listed.split("|") == [m.value for m in UpscaleMode], listed


def test_the_checker_catches_drift() -> None:
    """The comparison is not vacuous: a changed word, a missing line or a missing key is caught."""
    assert normalise("✔ Saved a.png (1.2 KB, seed 42)") == normalise("✔ Saved a.png (268.9 KB, seed 7)")
    assert normalise("server: 999.9 KB of 5.0 GB") == normalise("server: 1.0 MB of 5.0 GB")
    assert normalise("Local preview — x") != normalise("Local preview - x")
    assert normalise("a\nb") != normalise("a")
    assert shape_problems({"ok": True}, {"ok": True, "credits": 1})
    assert shape_problems({"ok": True, "leases": []}, {"ok": True})
    assert not shape_problems({"ok": True, "...": "..."}, {"ok": True, "credits": 1})
    assert shape_problems({"a": [{"x": 1}]}, {"a": [{"x": 1, "y": 2}]})
    assert not shape_problems({"a": {"b": 1, "...": "..."}}, {"a": {"c": 2}})  # a map's entries


if __name__ == "__main__":  # python -m tests.cli.test_docs: put what the program prints into the console examples
    import sys
    import tempfile

    import tests.conftest

    for doc, env in ((ROOT / "docs" / "CLI.md", {"IMAGE_PROVIDER": "offline"}), (ROOT / "README.md", {})):
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
            for name in tests.conftest._OURS:  # settings come only from the example, as in the suite
                patch.delenv(name, raising=False)
            left = replay(doc, Path(tmp).resolve(), patch, env, write=True)
            print(f"{doc.name}: console examples rewritten; to mend by hand:", *left, sep="\n", file=sys.stderr)
