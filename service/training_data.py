"""A version's training set as stored bytes: its features, labels and input digests.

Kept so that ``"base_version"`` can add examples to a head without the caller resending the
old ones, and without embedding them again. Features are float16 (half the bytes; a head fitted
on them differs from one fitted on float32 in the fourth decimal); a tuned head's set keeps the
token states that enter the top layer instead, a matching head's those that leave it (every
input's rows, end to end, and their lengths), as float16 too. Inputs are kept as digests, for
the duplicate and conflict warnings; only a hybrid head's set keeps the texts themselves,
because its n-gram model learns from their words.
Label descriptions are rows too, marked ``teach_only``: a head learns from them, and no estimate
or count of examples includes them. Safetensors again, labels in its JSON metadata, so reading
it back can never run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from adapters import HEAD_KINDS, TextFeatures, TokenStates, TopLayer
from adapters.base import TokenLayer
from service.errors import InvalidExamples

#: The kind that reads each layer's token states, for what a refusal suggests instead.
KIND_READING = {cls.token_layer: kind for kind, cls in HEAD_KINDS.items() if cls.token_layer}
_WHICH = {"below_top": "enter the top layer", "top": "leave the top layer"}


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
    teach_only: frozenset[int] = frozenset()  # rows that are label descriptions
    token_layer: TokenLayer = "below_top"  # which token states, where features are those

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_examples(self) -> int:
        return len(self.labels) - len(self.teach_only)

    @property
    def example_labels(self) -> list[Any]:
        """The labels of the rows that are examples, not descriptions."""
        return [label for row, label in enumerate(self.labels) if row not in self.teach_only]

    def teach_only_mask(self) -> list[bool] | None:
        """Which rows are label descriptions, as ``fit_head`` takes it (None: no row is)."""
        if not self.teach_only:
            return None
        return [row in self.teach_only for row in range(len(self))]

    def to_bytes(self) -> bytes:
        labels = [list(v) if isinstance(v, tuple) else v for v in self.labels]
        meta = {"labels": json.dumps(labels), "digests": json.dumps(self.digests)}
        if self.teach_only:
            meta["teach_only"] = json.dumps(sorted(self.teach_only))
        if isinstance(self.features, TokenStates):
            meta["token_layer"] = self.token_layer
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
        teach_only = frozenset(json.loads(meta.get("teach_only", "[]")))
        layer = meta.get("token_layer", "below_top")  # tuned heads' sets came first
        return cls(features, labels, json.loads(meta["digests"]), texts, teach_only, layer)

    def without_descriptions_of(self, labels: Collection[str]) -> TrainingSet:
        """This set less its descriptions of ``labels``: a new version's description of a
        label replaces its base's."""
        dropped = {row for row in self.teach_only if self.labels[row] in labels}
        if not dropped:
            return self
        kept = [row for row in range(len(self)) if row not in dropped]
        renumbered = {row: new for new, row in enumerate(kept)}
        return TrainingSet(
            self.features[np.asarray(kept, dtype=np.int64)],
            [self.labels[row] for row in kept],
            [self.digests[row] for row in kept],
            None if self.texts is None else [self.texts[row] for row in kept],
            frozenset(renumbered[row] for row in self.teach_only - dropped),
            self.token_layer,
        )

    def extended(self, other: TrainingSet) -> TrainingSet:
        multilabel = {isinstance(v, tuple) for v in self.labels + other.labels}
        if len(multilabel) > 1:
            raise InvalidExamples(
                "the base version and these examples mix single labels and label lists",
                field="examples",
            )
        mine, theirs = self.features, other.features
        same_layer = self.token_layer == other.token_layer
        if isinstance(mine, TokenStates) and isinstance(theirs, TokenStates) and same_layer:
            features: np.ndarray | TokenStates = mine.concat(theirs)
        elif isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray):
            features = np.vstack([mine, theirs])
        elif isinstance(mine, TokenStates):
            base_kind = KIND_READING[self.token_layer]
            raise InvalidExamples(
                f"the base version is a {base_kind} head's and kept its examples as the token "
                f"states that {_WHICH[self.token_layer]}, which only a {base_kind} head learns "
                f'from: send "kind": "{base_kind}" (a new version does not take its base\'s '
                "kind), or train this kind with all its examples",
                field="base_version",
            )
        else:
            raise InvalidExamples(
                "the base version kept its examples as pooled features, and tuned and matching "
                "heads learn from token states: grow it with a frozen-feature kind (linear, mlp, "
                "prototype, auto, or hybrid from a hybrid base), or train this kind with all its "
                "examples",
                field="base_version",
            )
        texts = None
        if self.texts is not None and other.texts is not None:
            texts = self.texts + other.texts
        teach_only = self.teach_only | {len(self) + row for row in other.teach_only}
        return TrainingSet(
            features,
            self.labels + other.labels,
            self.digests + other.digests,
            texts,
            teach_only,
            self.token_layer,
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
        return replace(self, features=self.features.with_top(top))


def training_set(
    features: np.ndarray | TokenStates,
    labels: Sequence[Any],
    inputs: Sequence[Hashable],
    *,
    keep_texts: bool = False,
    descriptions: int = 0,
    token_layer: TokenLayer = "below_top",
) -> TrainingSet:
    """A set of ``inputs``, the last ``descriptions`` of them label descriptions."""
    texts = [str(item) for item in inputs] if keep_texts else None
    teach_only = frozenset(range(len(inputs) - descriptions, len(inputs)))
    digests = [digest(item) for item in inputs]
    return TrainingSet(features, list(labels), digests, texts, teach_only, token_layer)
