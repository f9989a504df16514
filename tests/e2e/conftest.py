"""Real ``graft serve`` (``bentoml serve``) processes on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.server import ROOT, Server

__all__ = ["ROOT", "Server"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Start servers with ``serve(workers=2, auth="off", ...)``; all are stopped afterwards.
    ``ready=False`` returns a server still starting, for ``wait_ready()`` once the others it
    starts beside are launched too."""
    started: list[Server] = []

    def start(home: Path | None = None, *, ready: bool = True, **options: Any) -> Server:
        server = Server(home or tmp_path / "home", **options).launch()
        started.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in started:
        server.stop()
