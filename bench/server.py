"""Running a real server process (``graft serve`` or any command) and talking to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
GRAFT = Path(sys.executable).parent / "graft"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One server process group, its log, and a small HTTP client for it."""

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        **settings: str,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = command or [str(GRAFT), "serve", "--workers", str(workers)]
        self.log_path = home / f"server-{self.port}.log"
        self.env = {
            **os.environ,
            "GRAFT_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            **{f"GRAFT_{k.upper()}": v for k, v in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> Server:
        return self.launch().wait_ready(timeout)

    def launch(self) -> Server:
        """Start the process and return at once: servers launched together start in parallel
        (most of a start is one process importing and loading the backbone)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 180.0) -> Server:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9 of every process of the server at once: no shutdown hook, no flush.

        BentoML's arbiter starts its workers in sessions of their own, so killing the process
        group is not enough: the whole tree is collected first, then killed together."""
        if self.process is None or self.process.poll() is not None:
            return
        root = psutil.Process(self.process.pid)
        tree = [root, *root.children(recursive=True)]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)
        self.process.wait(timeout=30)

    def post(self, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=300, **kwargs)

    def access_log(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"graft.access"' in line:
                records.append(json.loads(line))
        return records

    def memory_mb(self) -> float:
        """Proportional set size of the whole process tree (shared pages counted once)."""
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20
