"""A version's training set as stored bytes: its features, labels and input digests.

Kept so that ``"base_version"`` can add examples to a head without the caller resending the
old ones, and without embedding them again. Features are float16 (half the bytes; a head fitted
on them differs from one fitted on float32 in the fourth decimal); a tuned head's set keeps the
token states below the top layer instead (every input's rows, end to end, and their lengths),
as float16 too. Inputs are kept only as
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

from adapters import TokenStates, TopLayer
from service.errors import InvalidExamples


def digest(item: Hashable) -> str:
    """A short stable digest of an input (a text, or an image's bytes)."""
    data = item if isinstance(item, bytes) else str(item).encode()
    return hashlib.blake2b(data, digest_size=12).hexdigest()


@dataclass(frozen=True)
class TrainingSet:
    features: np.ndarray | TokenStates
    labels: list[Any]  # strings, or tuples of strings for multilabel heads
    digests: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def to_bytes(self) -> bytes:
        labels = [list(v) if isinstance(v, tuple) else v for v in self.labels]
        meta = {"labels": json.dumps(labels), "digests": json.dumps(self.digests)}
        tensors: dict[str, np.ndarray]
        if isinstance(self.features, TokenStates):
            rows = self.features.rows()
            tensors = {
                "states": np.concatenate(rows).astype(np.float16),
                "lengths": self.features.lengths.astype(np.int64),
            }
        else:
            tensors = {"features": self.features.astype(np.float16)}
        return save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainingSet:
        tensors = load(data)
        features: np.ndarray | TokenStates
        if "states" in tensors:
            ends = np.cumsum(tensors["lengths"])
            rows = np.split(tensors["states"].astype(np.float32), ends[:-1])
            features = TokenStates.from_rows(rows)
        else:
            features = tensors["features"].astype(np.float32)
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
        mine, theirs = self.features, other.features
        if isinstance(mine, TokenStates) and isinstance(theirs, TokenStates):
            features: np.ndarray | TokenStates = mine.concat(theirs)
        elif isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray):
            features = np.vstack([mine, theirs])
        else:
            stored = "token states" if isinstance(mine, TokenStates) else "pooled features"
            raise InvalidExamples(
                f"the base version kept its examples as {stored}, which this kind of head does "
                "not learn from (tuned heads read token states, the others pooled features); "
                "train it with all its examples instead",
                field="base_version",
            )
        return TrainingSet(features, self.labels + other.labels, self.digests + other.digests)

    def with_top(self, top: TopLayer) -> TrainingSet:
        """A tuned head's set with the layer a new head starts from (it is not stored)."""
        assert isinstance(self.features, TokenStates)
        return TrainingSet(self.features.with_top(top), self.labels, self.digests)


def training_set(
    features: np.ndarray | TokenStates, labels: Sequence[Any], inputs: Sequence[Hashable]
) -> TrainingSet:
    return TrainingSet(features, list(labels), [digest(item) for item in inputs])
