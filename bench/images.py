"""``make bench-images``: the image backbone alone, then a real ``graft serve`` on it, one run.

Runs, on the same cores:

1. the backbone alone, in-process: the Oxford-IIIT Pet photos decoded and cropped as the server
   does (``decode_image_ms``), then forward passes of the batches the batcher forms
   (GRAFT_BATCH_MAX_TOKENS / 49 = 20 images) and of one image;
2. a real ``graft serve`` with ``GRAFT_BACKBONE_KIND=image`` holding a 37-breed head for each
   of 100 tenants: the 185-photo training call; one client sending one photo; 32 concurrent
   clients sending 1 to 4 held-out photos for a random tenant.

``ratio_mixed_vs_raw_images`` is the second against the first: what the HTTP path, decoding
and the shared batching keep of the backbone's own throughput. It writes
``bench/RESULTS-images.md``.

    .venv/bin/python -m bench.images [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from typing import Any

import numpy as np

from adapters import LinearHead
from bench.datasets import pets
from bench.load import LoadRequest, RequestFactory, run_load
from bench.run import _time_per_call, render, sequential_latencies
from bench.server import ROOT, Server
from service.backbone import configure_torch_threads, resolve_torch_dtype
from service.database import create_registry_engine, upgrade_schema
from service.registry import NewVersion, Registry
from service.schemas import ImageInput
from service.settings import Settings
from service.vision import IMAGE_COST, ImageInputs, ImageModel, set_child_environment

RESULTS = ROOT / "bench" / "RESULTS-images.md"
TENANTS = [f"tenant-{i:03d}" for i in range(100)]

FIGURE_NOTES = {
    "decode_image_ms": "server process: base64, checks, decode, centre crop of one photo (median)",
    "raw_batched_images_per_s": "backbone alone, batches of 20 photos (the batcher's size)",
    "raw_single_image_ms": "backbone alone, one photo per forward pass (median)",
    "train_185_images_ms": "the 185-photo, 37-breed train call over HTTP, median of 3",
    "http_single_image_p50_ms": "one client, one photo per request, over HTTP",
    "http_single_image_p99_ms": "",
    "http_mixed_images_per_s": "32 clients, 1-4 photos per request, random one of 100 tenants",
    "http_mixed_images_p50_ms": "",
    "http_mixed_images_p99_ms": "",
    "graft_images_memory_mb": "server PSS (all its processes) after the mixed load",
    "ratio_mixed_vs_raw_images": "http_mixed_images_per_s / raw_batched_images_per_s",
}


def raw_figures(
    inputs: ImageInputs, model: ImageModel, encoded: list[str], seconds: float
) -> dict[str, float]:
    photos = [ImageInput(image=data) for data in encoded]
    decode = _time_per_call(lambda: inputs.prepare([random.choice(photos)]), seconds=3)
    crops = inputs.prepare(photos)
    batch = Settings().batch_max_tokens // IMAGE_COST
    rng = random.Random(0)
    per_batch = _time_per_call(lambda: model.forward(rng.sample(crops, batch)), seconds)
    per_single = _time_per_call(lambda: model.forward([rng.choice(crops)]), seconds / 2)
    return {
        "decode_image_ms": statistics.median(decode) * 1000,
        "raw_batched_images_per_s": batch / statistics.median(per_batch),
        "raw_single_image_ms": statistics.median(per_single) * 1000,
    }


def register_breed_heads(registry: Registry, model: ImageModel, inputs: ImageInputs) -> None:
    """One 37-breed head per tenant, fitted here once and stored through the registry's own
    ``register_version`` (faster than 100 train calls; the server sees the same rows)."""
    train = pets("train")
    crops = inputs.prepare([ImageInput(image=p.base64()) for p in train])
    features = np.vstack([model.forward(crops[i : i + 20]) for i in range(0, len(crops), 20)])
    head = LinearHead().fit(features, [p.breed for p in train])
    state = head.to_state()
    for tenant in TENANTS:
        registry.register_version(
            tenant,
            "breeds",
            NewVersion(
                kind=head.kind,
                labels=list(head.classes_),
                n_examples=len(train),
                backbone=model.info.name,
                fingerprint=model.info.fingerprint,
                config_json=state.config_json(),
                weights=state.tensor_bytes(),
                report={"source": "bench"},
                train_ms=0.0,
            ),
            max_heads=10,
            keep_versions=5,
        )


def mixed_requests(pool: list[str]) -> RequestFactory:
    def make(rng: random.Random) -> LoadRequest:
        inputs = [{"image": data} for data in rng.sample(pool, rng.randint(1, 4))]
        body = {"head": "breeds", "inputs": inputs, "top_k": 1}
        return LoadRequest("/v1/predict", body, len(inputs), {"X-Tenant-ID": rng.choice(TENANTS)})

    return make


def one_image_request(pool: list[str]) -> RequestFactory:
    def make(rng: random.Random) -> LoadRequest:
        body = {"head": "breeds", "inputs": [{"image": rng.choice(pool)}], "top_k": 1}
        return LoadRequest("/v1/predict", body, 1, {"X-Tenant-ID": TENANTS[0]})

    return make


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each load phase")
    parser.add_argument("--no-write", action="store_true", help="do not write the results file")
    args = parser.parse_args()
    if "OMP_WAIT_POLICY" not in os.environ:
        # The backbone process runs with OpenMP's passive waiting (service.vision), which
        # OpenMP reads once, as torch is imported: measure the backbone alone under the same.
        set_child_environment()
        os.execv(sys.executable, [sys.executable, "-m", "bench.images", *sys.argv[1:]])

    work = ROOT / "bench" / "out" / "images"
    shutil.rmtree(work, ignore_errors=True)
    os.environ["GRAFT_HOME"] = str(work / "graft")
    os.environ["GRAFT_BACKBONE_KIND"] = "image"
    settings = Settings()
    figures: dict[str, float] = {}
    test_pool = [p.base64() for p in pets("test")]

    print("1/2 image backbone alone, in-process ...", flush=True)
    configure_torch_threads(settings.threads_per_worker)
    inputs = ImageInputs(settings)
    model = ImageModel(settings.backbone_name, dtype=resolve_torch_dtype(settings.backbone_dtype))
    model.warm_up()
    figures.update(raw_figures(inputs, model, test_pool, seconds=args.seconds))
    engine = create_registry_engine(settings.registry_url)
    upgrade_schema(engine)
    register_breed_heads(Registry(engine), model, inputs)
    engine.dispose()
    dtype = model.info.dtype
    del model  # idle from here on: its memory goes back before the server starts

    print("2/2 graft serve on the image backbone ...", flush=True)
    server = Server(work / "graft", backbone_kind="image").start()
    try:
        # Every tenant's head is loaded once first: the mixed phase measures the steady state.
        photo = {"image": test_pool[0]}
        sequential_latencies(
            server,
            [
                ("/v1/predict", {"head": "breeds", "inputs": [photo]}, {"X-Tenant-ID": tenant})
                for tenant in TENANTS
            ],
        )
        examples = [{"image": p.base64(), "label": p.breed} for p in pets("train")]
        train: list[tuple[str, dict[str, Any], dict[str, str]]] = [
            ("/v1/heads/train", {"head": "bench-train", "examples": examples}, {})
        ] * 3
        figures["train_185_images_ms"] = statistics.median(sequential_latencies(server, train))
        single = run_load(server.url, one_image_request(test_pool), clients=1, seconds=args.seconds)
        figures["http_single_image_p50_ms"] = single.p50_ms
        figures["http_single_image_p99_ms"] = single.percentile_ms(99)
        mixed = run_load(server.url, mixed_requests(test_pool), clients=32, seconds=args.seconds)
        figures["http_mixed_images_per_s"] = mixed.texts_per_s
        figures["http_mixed_images_p50_ms"] = mixed.p50_ms
        figures["http_mixed_images_p99_ms"] = mixed.percentile_ms(99)
        figures["graft_images_memory_mb"] = server.memory_mb()
        notes = [f"{mixed.errors} non-200 answers {mixed.statuses}"] if mixed.errors else []
    finally:
        server.stop()
    figures["ratio_mixed_vs_raw_images"] = (
        figures["http_mixed_images_per_s"] / figures["raw_batched_images_per_s"]
    )

    report = render(
        figures,
        notes,
        args,
        dtype,
        title="Image benchmark results",
        figure_notes=FIGURE_NOTES,
        command="`make bench-images` "
        f"(`.venv/bin/python -m bench.images --seconds {args.seconds:g}`)",
    )
    print(report)
    if not args.no_write:
        RESULTS.write_text(report + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f} s")
