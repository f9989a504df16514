"""The README's walkthrough, run as written against a real server: same labels, same answers."""

from __future__ import annotations

from tests.e2e.conftest import ROOT
from tests.readme import run_walkthrough


def test_walkthrough_prints_what_the_readme_shows(serve):
    server = serve()
    assert run_walkthrough("Walkthrough", server.port, ROOT) >= 4
