"""Where should the backbone run? The same Graft, three ways, under the same loads, side by side.

- ``process``: the shipped design; forward passes in a child process of each server process;
- ``thread``: forward passes in a thread of the server process (the GIL is shared with the event
  loop);
- ``service``: a separate BentoML service reached through ``bentoml.depends`` (an HTTP hop per
  batch; BentoML runs it as its own process).

    .venv/bin/python -m bench.placement [--seconds 10] [--rounds 3]

Each variant is served by ``bentoml serve bench.placement:<Service>`` with ``GRAFT_PLACEMENT`` set;
the registry comes from ``make bench`` (bench/out/run/graft), so run that first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import bentoml
import numpy as np

from service import backbone_process
from service.app import Graft
from service.backbone import BackboneInfo, Model
from service.gateway import Gateway
from service.settings import Settings

PLACEMENT = os.environ.get("GRAFT_PLACEMENT", "process")
RESULTS = Path(__file__).resolve().parent / "RESULTS-placement.md"


def _spec(settings: Settings) -> backbone_process.ModelSpec:
    return backbone_process.ModelSpec(
        settings.backbone_kind,
        settings.backbone_name,
        settings.backbone_dtype,
        settings.threads_per_worker,
    )


class ThreadBackbone:
    """The model in this process; each pass in one worker thread."""

    def __init__(self, spec: backbone_process.ModelSpec) -> None:
        from service.backbone import configure_torch_threads

        configure_torch_threads(spec.threads)
        self.model: Model = backbone_process.load_model(spec)
        self.model.warm_up()
        self.executor = ThreadPoolExecutor(1)

    def wait_ready(self) -> BackboneInfo:
        return self.model.info

    async def forward(self, items: Sequence[Any]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, self.model.forward, items
        )

    def close(self) -> None:
        self.executor.shutdown()


@bentoml.service(name="Backbone", logging={"access": {"enabled": False}})
class BackboneService:
    def __init__(self) -> None:
        self.local = ThreadBackbone(_spec(Settings()))

    @bentoml.api
    async def forward(self, items: list[list[int]]) -> np.ndarray:
        return await anyio.to_thread.run_sync(self.local.model.forward, items)


class RemoteBackbone:
    """The model behind ``bentoml.depends``: one HTTP call per batch."""

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def wait_ready(self) -> BackboneInfo:
        # BentoML connects the proxy only after this service's __init__; the description is
        # what the Backbone service would answer, read from a local copy of the same model.
        info = backbone_process.load_model(_spec(Settings())).info
        return info

    async def forward(self, items: Sequence[Any]) -> np.ndarray:
        return np.asarray(await self.proxy.forward(items=list(items)))

    def close(self) -> None:
        pass


if PLACEMENT == "thread":
    backbone_process.BackboneProcess = ThreadBackbone  # type: ignore[misc,assignment]


@bentoml.service(
    name="GraftWithBackboneService",
    traffic={"timeout": 600},
    logging={"access": {"enabled": False}},
)
class GraftWithBackboneService(Graft.inner):  # type: ignore[name-defined]
    backbone_service = bentoml.depends(BackboneService)

    def __init__(self) -> None:
        proxy = self.backbone_service
        backbone_process.BackboneProcess = lambda spec: RemoteBackbone(proxy)  # type: ignore[misc,assignment,return-value]
        super().__init__()


GraftWithBackboneService.add_asgi_middleware(Gateway)


def main() -> None:
    from bench.datasets import banking77
    from bench.load import run_load
    from bench.run import TENANTS, mixed_requests, one_text_request
    from bench.server import Server

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(__file__).resolve().parent / "out" / "run" / "graft"
    if not (home / "graft.db").exists():
        sys.exit("run `make bench` first: it builds the registry this benchmark serves")
    texts = [row.text for row in banking77("test")]
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    services = {
        "process": "bench.placement:Graft",
        "thread": "bench.placement:Graft",
        "service": "bench.placement:GraftWithBackboneService",
    }
    results: dict[str, dict[str, list[float]]] = {k: {"mixed": [], "single": []} for k in services}
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
        for placement, target in services.items():
            server = Server(
                home, command=[bentoml_cli, "serve", target], env={"GRAFT_PLACEMENT": placement}
            ).start()
            try:
                run_load(
                    server.url, mixed_requests(TENANTS, texts, graft=True), clients=32, seconds=3
                )
                mixed = run_load(
                    server.url,
                    mixed_requests(TENANTS, texts, graft=True),
                    clients=32,
                    seconds=args.seconds,
                )
                single = run_load(
                    server.url, one_text_request(texts), clients=1, seconds=args.seconds / 2
                )
            finally:
                server.stop()
            results[placement]["mixed"].append(mixed.texts_per_s)
            results[placement]["single"].append(single.p50_ms)
            print(f"{placement:8s} mixed {mixed.texts_per_s:7.1f} texts/s", end="   ")
            print(f"single p50 {single.p50_ms:6.2f} ms", flush=True)
    medians = {
        placement: (statistics.median(f["mixed"]), statistics.median(f["single"]))
        for placement, f in results.items()
    }
    lines = [
        "# Where the backbone runs: results",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, shared machine",
        f"- command: `.venv/bin/python -m bench.placement --seconds {args.seconds:g} "
        f"--rounds {args.rounds}` (after `make bench`); rounds interleave the variants",
        "- load: 32 async clients, 1-4 banking77 test texts per request, 100 tenants; then one "
        "client, one text; the load generator shares the cores",
        "",
        "| backbone runs in | mixed texts/s (median) | single p50 ms (median) | every round |",
        "|---|---:|---:|---|",
        *(
            f"| {p} | {m:.1f} | {s:.2f} | "
            + ", ".join(
                f"{a:.0f}/{b:.1f}"
                for a, b in zip(results[p]["mixed"], results[p]["single"], strict=True)
            )
            + " |"
            for p, (m, s) in medians.items()
        ),
        "",
        "```",
        *(
            line
            for p, (m, s) in medians.items()
            for line in (
                f"FIGURE placement_{p}_mixed_texts_per_s {m:.3f}",
                f"FIGURE placement_{p}_single_p50_ms {s:.3f}",
            )
        ),
        "```",
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.write_text(report + "\n")


if __name__ == "__main__":
    main()
