"""Fitting a head from labelled features and reporting what a user can act on."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adapters import new_head
from adapters.base import Head

#: A label with this many times fewer examples than the largest one is called imbalanced.
IMBALANCE_RATIO = 3.0


@dataclass
class TrainingReport:
    examples_per_label: dict[str, int]
    train_accuracy: float
    fit_ms: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_warnings(inputs: Sequence[Hashable], labels: Sequence[str]) -> list[str]:
    """Problems in a training set that still trains: duplicates, conflicts, thin labels."""
    warnings: list[str] = []
    labels_of: dict[Hashable, set[str]] = defaultdict(set)
    seen: Counter[tuple[Hashable, str]] = Counter()
    for item, label in zip(inputs, labels, strict=True):
        labels_of[item].add(label)
        seen[(item, label)] += 1
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    if duplicates:
        warnings.append(f"{duplicates} duplicated example(s) (same input, same label)")
    conflicts = sum(1 for found in labels_of.values() if len(found) > 1)
    if conflicts:
        warnings.append(f"{conflicts} input(s) appear under more than one label")
    counts = Counter(labels)
    single = sorted(label for label, n in counts.items() if n == 1)
    if single:
        shown = ", ".join(single[:5]) + (", ..." if len(single) > 5 else "")
        warnings.append(f"{len(single)} label(s) have a single example: {shown}")
    if len(counts) > 1 and max(counts.values()) >= IMBALANCE_RATIO * min(counts.values()):
        warnings.append(
            f"imbalanced labels: {max(counts.values())} examples for the largest label, "
            f"{min(counts.values())} for the smallest"
        )
    return warnings


def fit_head(
    kind: str, features: np.ndarray, labels: Sequence[str], inputs: Sequence[Hashable]
) -> tuple[Head, TrainingReport]:
    """Fit a fresh head of ``kind``; ``inputs`` (texts, image hashes) only feed the warnings."""
    started = time.perf_counter()
    head = new_head(kind).fit(features, labels)
    fit_ms = (time.perf_counter() - started) * 1000
    predicted = np.asarray(head.classes_, dtype=object)[head.predict_proba(features).argmax(axis=1)]
    report = TrainingReport(
        examples_per_label=dict(sorted(Counter(labels).items())),
        train_accuracy=round(float(np.mean(predicted == np.asarray(labels, dtype=object))), 4),
        fit_ms=round(fit_ms, 1),
        warnings=data_warnings(inputs, labels),
    )
    return head, report
