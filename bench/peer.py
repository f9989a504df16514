"""The approach a user would otherwise deploy: one full model per tenant, multiplexed on demand.

Each tenant owns a directory with a complete sentence-transformers model (a fine-tuned copy, in
that approach) and its scikit-learn head's weights. A request loads the tenant's model into an
LRU of 3 models per process, the way model-multiplexing servers do it (Ray Serve's
``@serve.multiplexed``, BentoML's model-per-request patterns), encodes with it and applies the
head. Nothing is shared between tenants, so nothing can be batched across them.

    PEER_MODELS=dir bentoml serve bench.peer:Peer --port 3100
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

#: Models kept in memory per process.
LRU_SIZE = 3


@bentoml.service(name="Peer", traffic={"timeout": 600}, logging={"access": {"enabled": False}})
class Peer:
    def __init__(self) -> None:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        self.root = Path(os.environ["PEER_MODELS"])
        self.dtype = torch.bfloat16 if os.environ.get("PEER_DTYPE") == "bfloat16" else torch.float32
        self.models: OrderedDict[str, tuple[Any, np.ndarray, np.ndarray, list[str]]] = OrderedDict()
        self.lock = threading.Lock()

    def _model(self, tenant: str) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
        with self.lock:
            if tenant in self.models:
                self.models.move_to_end(tenant)
                return self.models[tenant]
            from sentence_transformers import SentenceTransformer

            directory = self.root / tenant
            model = SentenceTransformer(str(directory / "model"), device="cpu").to(self.dtype)
            head = np.load(directory / "head.npz")
            classes = json.loads((directory / "classes.json").read_text())
            entry = (model, head["coef"], head["intercept"], classes)
            self.models[tenant] = entry
            while len(self.models) > LRU_SIZE:
                self.models.popitem(last=False)
            return entry

    @bentoml.api(route="/predict")
    def predict(self, tenant: str, inputs: list[str]) -> dict[str, Any]:
        model, coef, intercept, classes = self._model(tenant)
        features = model.encode(inputs, normalize_embeddings=True, convert_to_numpy=True)
        logits = features.astype(np.float32) @ coef.T + intercept
        return {"labels": [classes[i] for i in logits.argmax(axis=1)]}


def write_tenant(
    root: Path,
    tenant: str,
    model_dir: Path,
    coef: np.ndarray,
    intercept: np.ndarray,
    classes: list[str],
) -> None:
    """A tenant's model directory: the model's files hard-linked (same bytes, no 90 MB copy per
    tenant on disk; loading reads and builds them exactly as a copy) plus the head's weights."""
    target = root / tenant
    for source in model_dir.rglob("*"):
        destination = target / "model" / source.relative_to(model_dir)
        if source.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not destination.exists():
                os.link(source, destination)
    np.savez(target / "head.npz", coef=coef, intercept=intercept)
    (target / "classes.json").write_text(json.dumps(classes))
