"""``make bench``: the shared backbone against the machine's limit and against a model per tenant.

Runs, in one go and on the same cores:

1. the backbone alone, in-process: batches of 32 banking77 test texts, then one text at a time;
2. a real ``graft serve`` holding 100 tenants' banking77 heads and 10,000 more registered heads:
   one client one text; 32 concurrent clients sending 1 to 4 texts for a random tenant; the
   770-example training call; first predicts on heads not yet in the cache;
3. the peer (``bench/peer.py``): one full model per tenant in an LRU of 3, under the same load.

It prints a table, then one ``FIGURE name value`` line per figure, and writes both to
``bench/RESULTS.md``.

    .venv/bin/python -m bench.run [--seconds 20] [--workers 1] [--cold-heads 10000]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adapters import HeadState, LinearHead
from bench.datasets import banking77
from bench.load import LoadRequest, RequestFactory, run_load
from bench.machine import cpu_name
from bench.peer import write_tenant
from bench.server import ROOT, Server
from bench.tenants import register_cold_heads, register_tenant_heads
from service.backbone import (
    TextInputs,
    TextModel,
    configure_torch_threads,
    resolve_torch_dtype,
    text_model_dir,
)
from service.batcher import cut_batches
from service.database import create_registry_engine, upgrade_schema
from service.registry import Registry
from service.settings import Settings

RESULTS = ROOT / "bench" / "RESULTS.md"
TENANTS = [f"tenant-{i:03d}" for i in range(100)]
EXAMPLES = ROOT / "examples" / "banking77-10shot.jsonl"


def _time_per_call(call: Callable[[], Any], seconds: float) -> list[float]:
    timings = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def load_model_here(settings: Settings) -> tuple[TextInputs, TextModel]:
    """The backbone alone, in this process, exactly as the backbone process loads it."""
    configure_torch_threads(settings.threads_per_worker)
    model_dir = text_model_dir(settings.backbone_name)
    model = TextModel(
        model_dir, name=settings.backbone_name, dtype=resolve_torch_dtype(settings.backbone_dtype)
    )
    model.warm_up()
    return TextInputs(model_dir, max_tokens=settings.max_tokens), model


def raw_figures(
    inputs: TextInputs, model: TextModel, texts: list[str], seconds: float
) -> dict[str, float]:
    rng = random.Random(0)
    shuffled = texts[:]
    rng.shuffle(shuffled)
    batches = [inputs.prepare(shuffled[i : i + 32]) for i in range(0, len(shuffled) - 31, 32)]
    cursor = itertools.cycle(batches)
    per_batch = _time_per_call(lambda: model.forward(next(cursor)), seconds)
    ordered = sorted((item for batch in batches for item in batch), key=len)
    sorted_batches = [ordered[i : i + 32] for i in range(0, len(ordered), 32)]
    sorted_cursor = itertools.cycle(sorted_batches)
    per_sorted = _time_per_call(lambda: model.forward(next(sorted_cursor)), seconds / 2)
    singles = itertools.cycle([inputs.prepare([t]) for t in shuffled[:500]])
    per_single = _time_per_call(lambda: model.forward(next(singles)), seconds / 2)
    return {
        "raw_batched_texts_per_s": 32 / statistics.median(per_batch),
        "raw_sorted_texts_per_s": 32 / statistics.median(per_sorted),
        "raw_single_ms": statistics.median(per_single) * 1000,
    }


def training_pass_ms(inputs: TextInputs, model: TextModel, texts: list[str]) -> float:
    """The embedding pass of the 770-example train call, cut as the batcher cuts it."""
    embed_sorted(inputs, model, texts)  # shapes seen once, as after a server's first training
    return (
        statistics.median(_time_per_call(lambda: embed_sorted(inputs, model, texts), seconds=6.0))
        * 1000
    )


def embed_sorted(inputs: TextInputs, model: TextModel, texts: list[str]) -> np.ndarray:
    items = inputs.prepare(texts)
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    out = np.empty((len(items), model.info.dim), dtype=np.float32)
    settings = Settings()
    for batch in cut_batches(
        order, lambda i: len(items[i]), settings.batch_max_tokens, settings.batch_max_items
    ):
        out[batch] = model.forward([items[i] for i in batch])
    return out


def mixed_requests(tenants: list[str], pool: list[str], *, graft: bool) -> RequestFactory:
    """1 to 4 random test texts for a random tenant; Graft takes the tenant as a header."""

    def make(rng: random.Random) -> LoadRequest:
        tenant = rng.choice(tenants)
        inputs = rng.sample(pool, rng.randint(1, 4))
        if graft:
            body = {"head": "intents", "inputs": inputs, "top_k": 1}
            return LoadRequest("/v1/predict", body, len(inputs), {"X-Tenant-ID": tenant})
        return LoadRequest("/predict", {"tenant": tenant, "inputs": inputs}, len(inputs))

    return make


def one_text_request(pool: list[str]) -> RequestFactory:
    """One random test text for the first tenant: the latency of a lone caller."""

    def make(rng: random.Random) -> LoadRequest:
        body = {"head": "intents", "inputs": [rng.choice(pool)], "top_k": 1}
        return LoadRequest("/v1/predict", body, 1, {"X-Tenant-ID": TENANTS[0]})

    return make


def sequential_latencies(
    server: Server, bodies: list[tuple[str, dict[str, Any], dict[str, str]]]
) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for path, body, headers in bodies:
            started = time.perf_counter()
            response = client.post(path, json=body, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each load phase")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cold-heads", type=int, default=10_000)
    parser.add_argument("--no-peer", action="store_true", help="skip the one-model-per-tenant peer")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = parser.parse_args()

    work = ROOT / "bench" / "out" / "run"
    shutil.rmtree(work, ignore_errors=True)
    os.environ["GRAFT_HOME"] = str(work / "graft")
    settings = Settings()
    test_texts = [row.text for row in banking77("test")]
    figures: dict[str, float] = {}
    notes: list[str] = []

    print("1/3 backbone alone, in-process ...", flush=True)
    inputs, model = load_model_here(settings)
    figures.update(raw_figures(inputs, model, test_texts, seconds=min(args.seconds, 15)))
    train_texts = [json.loads(line)["text"] for line in EXAMPLES.read_text().splitlines()]
    figures[f"raw_train_pass_{model.info.dtype}_ms"] = training_pass_ms(inputs, model, train_texts)
    if model.info.dtype != "float32":  # what the native bfloat16 buys, measured beside it
        fp32 = TextModel(model.model_dir, name=model.info.name, dtype=torch.float32)
        figures["raw_train_pass_float32_ms"] = training_pass_ms(inputs, fp32, train_texts)
        del fp32

    print(
        f"    registering {len(TENANTS)} tenants' heads and {args.cold_heads} cold heads ...",
        flush=True,
    )
    engine = create_registry_engine(settings.registry_url)
    upgrade_schema(engine)
    registry = Registry(engine)
    started = time.perf_counter()
    embed = functools.partial(embed_sorted, inputs, model)
    register_tenant_heads(registry, embed, model.info, banking77("train"), TENANTS, per_label=10)
    template_ref = registry.resolve(TENANTS[0], "intents", None)
    template = LinearHead.from_state(
        HeadState.from_serialized(*registry.load_weights(template_ref.id))
    )
    cold_tenants = register_cold_heads(registry, template, model.info, args.cold_heads)
    notes.append(f"registry populated in {time.perf_counter() - started:.0f} s (not a figure)")
    backbone_dtype = model.info.dtype
    del model  # the in-process copy is idle from here on; free its memory for the servers

    print("2/3 graft serve ...", flush=True)
    server = Server(work / "graft", workers=args.workers).start()
    try:
        # Every tenant's head is loaded once first: the mixed phase measures the steady state.
        sequential_latencies(
            server,
            [
                ("/v1/predict", {"head": "intents", "inputs": ["hi"]}, {"X-Tenant-ID": t})
                for t in TENANTS
            ],
        )

        single = run_load(
            server.url, one_text_request(test_texts), clients=1, seconds=min(args.seconds, 15)
        )
        figures["http_single_p50_ms"] = single.p50_ms
        figures["http_single_p99_ms"] = single.percentile_ms(99)
        mixed = run_load(
            server.url,
            mixed_requests(TENANTS, test_texts, graft=True),
            clients=32,
            seconds=args.seconds,
        )
        figures["http_mixed_texts_per_s"] = mixed.texts_per_s
        figures["http_mixed_p50_ms"] = mixed.p50_ms
        figures["http_mixed_p99_ms"] = mixed.percentile_ms(99)
        if mixed.errors:
            notes.append(f"graft mixed load: {mixed.errors} non-200 answers {mixed.statuses}")
        examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
        train_ms = sequential_latencies(
            server, [("/v1/heads/train", {"head": "bench-train", "examples": examples}, {})] * 5
        )
        figures["train_770_ms"] = statistics.median(train_ms)
        before_cold_mb = server.memory_mb()
        cold = sequential_latencies(
            server,
            [
                (
                    "/v1/predict",
                    {"head": "intents", "inputs": ["Where is my card?"]},
                    {"X-Tenant-ID": t},
                )
                for t in random.Random(1).sample(cold_tenants, min(300, len(cold_tenants)))
            ],
        )
        figures["cold_head_p50_ms"] = percentile(cold, 50)
        figures["cold_head_p99_ms"] = percentile(cold, 99)
        figures["cached_head_kb"] = (server.memory_mb() - before_cold_mb) * 1024 / len(cold)
        figures["graft_memory_mb"] = server.memory_mb()
    finally:
        server.stop()

    if not args.no_peer:
        print("3/3 peer: one model per tenant, LRU of 3 ...", flush=True)
        peer_models = work / "peer-models"
        model_dir = text_model_dir(settings.backbone_name)
        for tenant in TENANTS:
            ref = registry.resolve(tenant, "intents", None)
            head = LinearHead.from_state(HeadState.from_serialized(*registry.load_weights(ref.id)))
            write_tenant(peer_models, tenant, model_dir, head.coef_, head.intercept_, head.classes_)
        bentoml = str(Path(sys.executable).parent / "bentoml")
        peer = Server(
            work / "peer",
            command=[bentoml, "serve", "bench.peer:Peer"],
            env={"PEER_MODELS": str(peer_models), "PEER_DTYPE": backbone_dtype},
        )
        peer.start()
        try:
            peer_mixed = run_load(
                peer.url,
                mixed_requests(TENANTS, test_texts, graft=False),
                clients=32,
                seconds=args.seconds,
            )
            figures["peer_mixed_texts_per_s"] = peer_mixed.texts_per_s
            figures["peer_mixed_p50_ms"] = peer_mixed.p50_ms
            if peer_mixed.errors:
                notes.append(
                    f"peer mixed load: {peer_mixed.errors} non-200 answers {peer_mixed.statuses}"
                )
            peer_cold = sequential_latencies(
                peer,
                [
                    ("/predict", {"tenant": t, "inputs": ["Where is my card?"]}, {})
                    for t in TENANTS[:40]
                ],
            )
            figures["peer_cold_p50_ms"] = percentile(peer_cold, 50)
            figures["peer_cold_p99_ms"] = percentile(peer_cold, 99)
            figures["peer_memory_mb"] = peer.memory_mb()
        finally:
            peer.stop()
        figures["ratio_mixed_vs_peer"] = (
            figures["http_mixed_texts_per_s"] / figures["peer_mixed_texts_per_s"]
        )
        figures["ratio_cold_vs_peer"] = figures["cold_head_p50_ms"] / figures["peer_cold_p50_ms"]
    figures["ratio_mixed_vs_raw"] = (
        figures["http_mixed_texts_per_s"] / figures["raw_batched_texts_per_s"]
    )
    # The train call against its own embedding pass, in the same run: how much of it is not
    # the backbone, whatever the machine's speed that day.
    figures["ratio_train_vs_raw_pass"] = (
        figures["train_770_ms"] / figures[f"raw_train_pass_{backbone_dtype}_ms"]
    )
    engine.dispose()

    report = render(figures, notes, args, backbone_dtype)
    print(report)
    if not args.no_write:
        RESULTS.write_text(report + "\n")


FIGURE_NOTES = {
    "raw_batched_texts_per_s": "backbone alone, batches of 32 test texts in random order",
    "raw_sorted_texts_per_s": "backbone alone, batches of 32 texts of similar length",
    "raw_single_ms": "backbone alone, one text per forward pass (median)",
    "raw_train_pass_bfloat16_ms": "backbone alone, the 770 training texts, bfloat16",
    "raw_train_pass_float32_ms": "backbone alone, the 770 training texts, float32",
    "http_single_p50_ms": "one client, one text per request, over HTTP",
    "http_single_p99_ms": "",
    "http_mixed_texts_per_s": "32 clients, 1-4 texts per request, random one of 100 tenants",
    "http_mixed_p50_ms": "",
    "http_mixed_p99_ms": "",
    "train_770_ms": "the 770-example banking77 train call, median of 5",
    "cold_head_p50_ms": "first predict on a head not in the cache, 10,000 heads registered",
    "cold_head_p99_ms": "",
    "cached_head_kb": "server memory growth per newly cached 77-label linear head",
    "graft_memory_mb": "server PSS (all its processes) after serving all 100 tenants",
    "peer_mixed_texts_per_s": "same load against one model per tenant, LRU of 3",
    "peer_mixed_p50_ms": "",
    "peer_cold_p50_ms": "first predict on a tenant whose model is not loaded",
    "peer_cold_p99_ms": "",
    "peer_memory_mb": "peer PSS with 3 tenants' models loaded",
    "ratio_mixed_vs_raw": "goal: at least 0.70",
    "ratio_mixed_vs_peer": "",
    "ratio_cold_vs_peer": "cold-head latency, Graft / peer",
    "ratio_train_vs_raw_pass": "train call / the backbone's pass over its 770 texts",
}


def render(
    figures: dict[str, float],
    notes: list[str],
    args: argparse.Namespace,
    dtype: str,
    *,
    title: str = "Benchmark results",
    figure_notes: dict[str, str] | None = None,
    command: str | None = None,
) -> str:
    """The results file: the machine, the command, a table of figures and FIGURE lines."""
    cpu = cpu_name()
    figure_notes = FIGURE_NOTES if figure_notes is None else figure_notes
    if command is None:
        command = (
            f"`make bench` (`.venv/bin/python -m bench.run --seconds {args.seconds:g} "
            f"--workers {args.workers} --cold-heads {args.cold_heads}`)"
        )
    lines = [
        f"# {title}",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores, {_memory_gb():.0f} GiB, "
        f"Python {platform.python_version()}, torch {torch.__version__}, backbone dtype {dtype}",
        f"- command: {command}",
        "- the load generator (aiohttp, one process) runs on the same cores as the server, and "
        "this machine is shared with other work: compare ratios from one run, not absolute "
        "figures across runs",
        *(f"- {note}" for note in notes),
        "",
        "| figure | value | what |",
        "|---|---:|---|",
        *(
            f"| `{name}` | {value:.2f} | {figure_notes.get(name, '')} |"
            for name, value in figures.items()
        ),
        "",
        "```",
        *(f"FIGURE {name} {value:.3f}" for name, value in figures.items()),
        "```",
    ]
    return "\n".join(lines)


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
