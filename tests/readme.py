"""README.md as test data: its settings table, and the walkthrough commands with their output."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)
_NUMBER = re.compile(r"^-?\d+(\.\d+)?%?$")


@dataclass(frozen=True)
class Step:
    command: str
    language: str  # of the expected output: "json" or "text"
    expected: str


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def walkthrough_steps(title: str = "Walkthrough") -> list[Step]:
    """Each ```bash block immediately followed by a ```json or ```text block of its output."""
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in _FENCE.finditer(section(title))]
    steps = []
    for (lang, body, _, end), (out_lang, out_body, out_start, _) in itertools.pairwise(blocks):
        if lang == "bash" and out_lang in ("json", "text") and out_start - end < 80:
            steps.append(Step(body.strip(), out_lang, out_body.strip()))
    return steps


def run_walkthrough(title: str, port: int, cwd: Path, timeout: float = 120) -> int:
    """Run each step of section ``title`` as written against ``port``; check what it prints."""
    steps = walkthrough_steps(title)
    for step in steps:
        command = step.command.replace("localhost:3000", f"127.0.0.1:{port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr
        assert_same_output(step, done.stdout)
    return len(steps)


def settings_block() -> str:
    text = README.read_text()
    start = text.index("<!-- settings-table -->") + len("<!-- settings-table -->")
    return text[start : text.index("<!-- /settings-table -->")].strip()


def assert_same_output(step: Step, actual: str, tolerance: float = 0.05) -> None:
    """Labels, names and integers must match exactly; scores may differ by ``tolerance``."""
    if step.language == "json":
        _assert_close(json.loads(step.expected), json.loads(actual), tolerance, "$")
        return
    expected_lines = step.expected.splitlines()
    actual_lines = actual.strip().splitlines()
    assert len(actual_lines) == len(expected_lines), (step.expected, actual)
    for want_line, got_line in zip(expected_lines, actual_lines, strict=True):
        want, got = want_line.split(), got_line.split()
        assert len(want) == len(got), (want_line, got_line)
        for w, g in zip(want, got, strict=True):
            if _NUMBER.match(w) and "." in w and _NUMBER.match(g):
                assert abs(float(w.rstrip("%")) - float(g.rstrip("%"))) <= tolerance, (w, g)
            else:
                assert w == g, (want_line, got_line)


def _assert_close(want: Any, got: Any, tolerance: float, path: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, want, got)
        for key in want:
            _assert_close(want[key], got[key], tolerance, f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, want, got)
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _assert_close(w, g, tolerance, f"{path}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float | int) and abs(got - want) <= tolerance, (path, want, got)
    else:
        assert got == want, (path, want, got)
