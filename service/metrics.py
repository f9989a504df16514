"""Graft's Prometheus metrics, served on /metrics and summed over workers by BentoML.

BentoML points ``PROMETHEUS_MULTIPROC_DIR`` at a shared directory before it imports the service,
so these plain ``prometheus_client`` objects write per-process files that its /metrics merges:
counters and histograms are exact sums over every worker. Facts about the shared registry (heads
registered, jobs waiting) are not per-process at all; they are counted in the database when
/metrics is scraped (:func:`registry_exposition`), so every worker and replica reports the same.

Tenants appear as a label only on ``graft_requests_total``, and only for the tenants named in
``GRAFT_METRICS_TENANTS`` (all others count as ``other``), so a deployment with thousands of
tenants keeps a bounded number of series.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

PREDICTIONS = Counter(
    "graft_predictions_total",
    "Predict calls by outcome (ok, client_error, server_error).",
    ["outcome"],
)
PREDICTED_INPUTS = Counter("graft_predicted_inputs_total", "Inputs classified by predict calls.")
TRAININGS = Counter(
    "graft_trainings_total",
    "Trainings (train calls and training jobs) by head kind and outcome (ok, client_error, "
    "server_error, cancelled); kind 'unknown' for calls refused before their body was read.",
    ["kind", "outcome"],
)
KIND_NOT_READ = "unknown"
JOBS = Counter(
    "graft_jobs_total",
    "Training jobs run by this server, by final status (succeeded, failed, cancelled).",
    ["status"],
)
TRAINING_SECONDS = Histogram(
    "graft_training_seconds",
    "Wall time of a successful training, embedding included.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
TRAINING_EXAMPLES = Histogram(
    "graft_training_examples",
    "Examples per successful training.",
    buckets=(2, 10, 50, 100, 500, 1000, 5000, 20000),
)
BATCH_SIZE = Histogram(
    "graft_backbone_batch_size",
    "Inputs per backbone forward pass.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_TOKENS = Histogram(
    "graft_backbone_batch_tokens",
    "Padded tokens (or images) per backbone forward pass.",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384),
)
BATCH_QUEUE_WAIT = Histogram(
    "graft_backbone_queue_wait_seconds",
    "Time an input waited before its forward pass began.",
    buckets=_LATENCY_BUCKETS,
)
HEAD_CACHE_HITS = Counter(
    "graft_head_cache_hits_total", "Head lookups served from the process cache."
)
HEAD_CACHE_MISSES = Counter(
    "graft_head_cache_misses_total", "Head lookups that loaded from the registry."
)
# "livesum": the bytes of every live worker's cache, added up (see forget_dead_workers).
HEAD_CACHE_BYTES = Gauge(
    "graft_head_cache_bytes",
    "Memory held by the head caches of the live workers (each bounded by GRAFT_HEAD_CACHE_BYTES).",
    multiprocess_mode="livesum",
)
HEAD_LOAD_SECONDS = Histogram(
    "graft_head_load_seconds",
    "Time to load a head from the registry and rebuild it.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
)
REQUESTS = Counter(
    "graft_requests_total",
    "/v1 requests by route, status and tenant (opted-in tenants only; others are 'other').",
    ["route", "status", "tenant"],
)
REQUEST_SECONDS = Histogram(
    "graft_request_seconds",
    "Wall time of /v1 requests by route, from taking the request to sending the answer.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
OTHER_TENANTS = "other"


def forget_dead_workers() -> None:
    """Remove the live-gauge files of workers that are gone from the multiprocess directory.

    prometheus_client sums a "livesum" gauge over every process's file until
    ``mark_process_dead`` removes it, and BentoML never calls that: a worker killed and replaced
    would go on adding its last cache size. Each worker calls this as it starts."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _running(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def tenant_label(tenant: str | None, opted_in: Collection[str]) -> str:
    """The tenant's own label if it is one of the few opted in, else ``other``."""
    return tenant if tenant is not None and tenant in opted_in else OTHER_TENANTS


def registry_exposition(heads_registered: int, jobs_by_status: Mapping[str, int]) -> str:
    """The database-wide gauges in Prometheus text format, to append to /metrics."""

    class _Snapshot:
        def collect(self) -> Iterator[Metric]:
            heads = GaugeMetricFamily(
                "graft_heads_registered",
                "Heads with at least one version, over all tenants (counted in the registry).",
            )
            heads.add_metric([], heads_registered)
            yield heads
            waiting = GaugeMetricFamily(
                "graft_jobs_active",
                "Training jobs queued or running, over all replicas (counted in the registry).",
                labels=["status"],
            )
            for status, count in sorted(jobs_by_status.items()):
                waiting.add_metric([status], count)
            yield waiting

    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot())
    return generate_latest(snapshot).decode()
