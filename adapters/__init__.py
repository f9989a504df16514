"""The learning side of Graft: head kinds that turn frozen features into label probabilities.

Nothing here knows about HTTP, storage, tenants or BentoML: heads take arrays (pooled features;
for tuned and matching heads token states, entering or leaving the backbone's top layer; for
hybrid heads the features with their texts) and give arrays, and save themselves as a
:class:`~adapters.base.HeadState` (JSON config + float tensors).
"""

from __future__ import annotations

from adapters.base import Head, HeadState, HeadStateError, NotFittedError, TrainingDataError
from adapters.hybrid import HybridHead, TextFeatures
from adapters.linear import LinearHead
from adapters.matching import MatchingHead
from adapters.mlp import MLPHead
from adapters.multilabel import MultilabelHead
from adapters.prototype import PrototypeHead
from adapters.tuned import TokenStates, TopLayer, TunedHead

#: Every head kind by the name a caller uses for it.
HEAD_KINDS: dict[str, type[Head]] = {
    LinearHead.kind: LinearHead,
    PrototypeHead.kind: PrototypeHead,
    MLPHead.kind: MLPHead,
    MultilabelHead.kind: MultilabelHead,
    TunedHead.kind: TunedHead,
    HybridHead.kind: HybridHead,
    MatchingHead.kind: MatchingHead,
}


def new_head(kind: str) -> Head:
    """A fresh, unfitted head of ``kind`` with its default hyperparameters."""
    try:
        return HEAD_KINDS[kind]()
    except KeyError:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEAD_KINDS)}") from None


def head_from_state(state: HeadState) -> Head:
    """Rebuild a fitted head from its saved state, whatever its kind."""
    cls = HEAD_KINDS.get(state.kind)
    if cls is None:
        raise HeadStateError(f"unknown head kind {state.kind!r} in stored state")
    try:
        return cls.from_state(state)
    except (KeyError, TypeError, IndexError) as exc:
        raise HeadStateError(f"incomplete {state.kind} head state: {exc}") from exc


__all__ = [
    "HEAD_KINDS",
    "Head",
    "HeadState",
    "HeadStateError",
    "HybridHead",
    "LinearHead",
    "MLPHead",
    "MatchingHead",
    "MultilabelHead",
    "NotFittedError",
    "PrototypeHead",
    "TextFeatures",
    "TokenStates",
    "TopLayer",
    "TrainingDataError",
    "TunedHead",
    "head_from_state",
    "new_head",
]
