"""A version's training set as stored bytes: its features, labels and input digests.

Kept so that ``"base_version"`` can add examples to a head without the caller resending the
old ones, and without embedding them again. Features are float16 (half the bytes; a head fitted
on them differs from one fitted on float32 in the fourth decimal); a tuned head's set keeps the
token states below the top layer instead (every input's rows, end to end, and their lengths),
as float16 too. Inputs are kept as digests, for the duplicate and conflict warnings; only a
hybrid head's set keeps the texts themselves, because its n-gram model learns from their words.
Safetensors again, labels in its JSON metadata, so reading it back can never run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from adapters import TextFeatures, TokenStates, TopLayer
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
    texts: list[str] | None = None  # hybrid heads' sets only

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
        if self.texts is not None:
            # UTF-8 bytes end to end, not JSON metadata: the format caps its header at 100 MB.
            encoded = [text.encode() for text in self.texts]
            tensors["text_bytes"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            tensors["text_lengths"] = np.asarray([len(e) for e in encoded], dtype=np.int64)
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
        texts = None
        if "text_bytes" in tensors:
            ends = np.cumsum(tensors["text_lengths"]).tolist()
            joined = tensors["text_bytes"].tobytes()
            texts = [joined[a:b].decode() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        return cls(features, labels, json.loads(meta["digests"]), texts)

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
        elif isinstance(mine, TokenStates):
            raise InvalidExamples(
                "the base version is a tuned head and kept its examples as token states, which "
                'only a tuned head learns from: send "kind": "tuned" (a new version does not take '
                "its base's kind), or train this kind with all its examples",
                field="base_version",
            )
        else:
            raise InvalidExamples(
                "the base version kept its examples as pooled features, and a tuned head learns "
                "from token states: grow it with a frozen-feature kind (linear, mlp, prototype, "
                "hybrid, auto), or train a tuned head with all its examples",
                field="base_version",
            )
        texts = None
        if self.texts is not None and other.texts is not None:
            texts = self.texts + other.texts
        return TrainingSet(
            features, self.labels + other.labels, self.digests + other.digests, texts
        )

    def kept_texts(self) -> list[str]:
        """The texts a hybrid head learns from; refused for a base version that kept none."""
        if self.texts is None:
            raise InvalidExamples(
                "the base version kept no texts (only hybrid heads keep them), and a hybrid "
                "head learns from their words; train it with all its examples instead",
                field="base_version",
            )
        return self.texts

    def with_texts(self) -> TextFeatures:
        """What a hybrid head learns from: the features and their texts' n-grams, counted."""
        assert isinstance(self.features, np.ndarray)
        return TextFeatures.of(self.features, self.kept_texts())

    def with_top(self, top: TopLayer) -> TrainingSet:
        """A tuned head's set with the layer a new head starts from (it is not stored)."""
        assert isinstance(self.features, TokenStates)
        return TrainingSet(self.features.with_top(top), self.labels, self.digests)


def training_set(
    features: np.ndarray | TokenStates,
    labels: Sequence[Any],
    inputs: Sequence[Hashable],
    *,
    keep_texts: bool = False,
) -> TrainingSet:
    texts = [str(item) for item in inputs] if keep_texts else None
    return TrainingSet(features, list(labels), [digest(item) for item in inputs], texts)
