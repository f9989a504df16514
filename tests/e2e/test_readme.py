"""The README's walkthrough, run as written against a real server: same labels, same answers."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import ROOT
from tests.readme import assert_same_output, walkthrough_steps


def test_walkthrough_prints_what_the_readme_shows(serve):
    steps = walkthrough_steps()
    assert len(steps) >= 4
    server = serve()
    for step in steps:
        command = step.command.replace("localhost:3000", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert_same_output(step, done.stdout)
