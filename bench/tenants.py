"""Populating a registry for the benchmarks: real banking77 heads for many tenants.

The heads are fitted in this process on features from the real backbone and stored through the
registry's own ``register_version`` (the path a train call ends in), which is much faster than
100 or 10,000 HTTP training calls and gives the server exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from adapters import LinearHead
from bench.datasets import Labelled
from service.backbone import BackboneInfo
from service.registry import NewVersion, Registry

Embed = Callable[[list[str]], np.ndarray]


def _new_version(head: LinearHead, backbone: BackboneInfo, n_examples: int) -> NewVersion:
    state = head.to_state()
    return NewVersion(
        kind=head.kind,
        labels=list(head.classes_),
        n_examples=n_examples,
        backbone=backbone.name,
        fingerprint=backbone.fingerprint,
        config_json=state.config_json(),
        weights=state.tensor_bytes(),
        report={"source": "bench"},
        train_ms=0.0,
    )


def register_tenant_heads(
    registry: Registry,
    embed: Embed,
    backbone: BackboneInfo,
    pool: list[Labelled],
    tenants: list[str],
    *,
    per_label: int,
) -> None:
    """One banking77 head named ``intents`` per tenant, each from its own random few-shot draw."""
    features = embed([row.text for row in pool])
    labels = np.asarray([row.label for row in pool])
    by_label = {label: np.flatnonzero(labels == label) for label in sorted(set(labels.tolist()))}
    for index, tenant in enumerate(tenants):
        rng = np.random.default_rng(index)
        rows = np.concatenate(
            [
                rng.choice(ids, size=min(per_label, len(ids)), replace=False)
                for ids in by_label.values()
            ]
        )
        head = LinearHead().fit(features[rows], labels[rows].tolist())
        registry.register_version(
            tenant,
            "intents",
            _new_version(head, backbone, len(rows)),
            max_heads=10,
            keep_versions=5,
        )


def register_cold_heads(
    registry: Registry, template: LinearHead, backbone: BackboneInfo, count: int
) -> list[str]:
    """``count`` tenants with one distinct 77-label head each (the template, perturbed)."""
    rng = np.random.default_rng(12345)
    tenants = [f"cold-{i:05d}" for i in range(count)]
    for tenant in tenants:
        head = LinearHead.from_state(template.to_state())
        head.coef_ = (template.coef_ + rng.normal(0, 1e-3, template.coef_.shape)).astype(np.float32)
        registry.register_version(
            tenant, "intents", _new_version(head, backbone, 0), max_heads=10, keep_versions=5
        )
    return tenants
