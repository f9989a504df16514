"""The multiprocess metrics files a killed worker leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys

from service.metrics import forget_dead_workers


def test_a_dead_workers_live_gauges_are_forgotten_and_the_living_kept(tmp_path, monkeypatch):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead = int(gone.stdout)
    files = {
        "dead_gauge": tmp_path / f"gauge_livesum_{dead}.db",
        "own_gauge": tmp_path / f"gauge_livesum_{os.getpid()}.db",
        "dead_counter": tmp_path / f"counter_{dead}.db",  # counters outlive their process
    }
    for path in files.values():
        path.write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    forget_dead_workers()
    assert {name for name, path in files.items() if path.exists()} == {"own_gauge", "dead_counter"}
