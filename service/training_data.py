"""A version's training set as stored bytes: its features, labels and input digests.

Kept so that ``"base_version"`` can add examples to a head without the caller resending the
old ones, and without embedding them again. Features are float16 (half the bytes; a head fitted
on them differs from one fitted on float32 in the fourth decimal), inputs are kept only as
digests, for the duplicate and conflict warnings: no text is stored twice. Safetensors again,
labels in its JSON metadata, so reading it back can never run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from service.errors import InvalidExamples


def digest(item: Hashable) -> str:
    """A short stable digest of an input (a text, or an image's bytes)."""
    data = item if isinstance(item, bytes) else str(item).encode()
    return hashlib.blake2b(data, digest_size=12).hexdigest()


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray
    labels: list[Any]  # strings, or tuples of strings for multilabel heads
    digests: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def to_bytes(self) -> bytes:
        labels = [list(v) if isinstance(v, tuple) else v for v in self.labels]
        meta = {"labels": json.dumps(labels), "digests": json.dumps(self.digests)}
        return save({"features": self.features.astype(np.float16)}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingSet:
        features = load(data)["features"].astype(np.float32)
        # The format's header (JSON after its 8-byte little-endian length) holds the metadata.
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + length])["__metadata__"]
        labels = [tuple(v) if isinstance(v, list) else v for v in json.loads(meta["labels"])]
        return cls(features, labels, json.loads(meta["digests"]))

    def extended(self, other: TrainingSet) -> TrainingSet:
        multilabel = {isinstance(v, tuple) for v in self.labels + other.labels}
        if len(multilabel) > 1:
            raise InvalidExamples(
                "the base version and these examples mix single labels and label lists",
                field="examples",
            )
        return TrainingSet(
            np.vstack([self.features, other.features]),
            self.labels + other.labels,
            self.digests + other.digests,
        )


def training_set(
    features: np.ndarray, labels: Sequence[Any], inputs: Sequence[Hashable]
) -> TrainingSet:
    return TrainingSet(features, list(labels), [digest(item) for item in inputs])
