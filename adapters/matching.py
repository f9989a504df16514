"""Late interaction: every token of a query matched to the closest token of each label's examples.

Mean pooling blurs a sentence into one point, and a few-shot intent is often carried by one or
two of its words ("PIN", "Apple Pay", "refund"). A matching head keeps its examples' token
states as the backbone's top layer leaves them, and scores a query against each label by how
closely each of the query's tokens is matched by some token of that label's examples (the
MaxSim of late-interaction retrieval, ColBERT's). It adds that score's log-softmax to a linear
head's on the sentence features (mean and max pooled), as a hybrid head adds its n-grams.

It reads :class:`TokenStates` of the backbone's output, which the shared pass computes anyway
(``token_layer = "top"``). On banking77 at 10 shots it is about 1.4 points more accurate than a
hybrid head (bench/RESULTS-quality.md). Its size grows with its examples: 768 bytes per token
stored (float16), about 8 MB for 770 short sentences, and twice that in memory (float32, so
that a predict does not convert the bank each time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
from scipy.special import log_softmax, softmax

from adapters.base import Head, HeadState, HeadStateError, TokenLayer, TrainingDataError
from adapters.linear import LinearHead
from adapters.stopping import checkpoint
from adapters.tuned import TokenStates, check_token_states

#: Query tokens scored against the bank at a time: a 10,000-token bank's similarity block then
#: stays near the cache (256 at a time measured 20 % faster than 1,024, 40 % than 4,096).
QUERY_TOKENS_PER_STEP = 256


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def pooled(outputs: Sequence[np.ndarray], max_weight: float) -> np.ndarray:
    """Sentence features: the normalised mean of the tokens (the backbone's own features) beside
    their normalised element-wise maximum, weighted by ``max_weight``."""
    mean = _unit(np.stack([tokens.mean(axis=0) for tokens in outputs]))
    peak = _unit(np.stack([tokens.max(axis=0) for tokens in outputs]))
    return np.hstack([mean, max_weight * peak]).astype(np.float32)


def content_tokens(tokens: np.ndarray) -> np.ndarray:
    """The normalised tokens of an input without its first and last ([CLS] and [SEP]), which
    every input has and which would match any query."""
    inner = tokens[1:-1] if len(tokens) > 2 else tokens
    return _unit(inner.astype(np.float32))


def max_sim(
    queries: Sequence[np.ndarray], columns: np.ndarray, counts: Sequence[int]
) -> np.ndarray:
    """Per query and label, the mean over the query's content tokens of their best cosine with
    any token of that label's examples. ``columns`` (dim x tokens, float32) holds the labels'
    tokens label after label, ``counts[i]`` of them for label ``i`` (every count at least 1)."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
    scores = np.zeros((len(queries), len(counts)), dtype=np.float32)
    start = 0
    while start < len(queries):
        checkpoint()
        stop, tokens = start, 0
        while stop < len(queries) and (stop == start or tokens < QUERY_TOKENS_PER_STEP):
            tokens += len(queries[stop])
            stop += 1
        part = [content_tokens(q) for q in queries[start:stop]]
        best = np.maximum.reduceat(np.vstack(part) @ columns, starts, axis=1)
        sizes = np.asarray([len(p) for p in part])
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        scores[start:stop] = np.add.reduceat(best, firsts, axis=0) / sizes[:, None]
        start = stop
    return scores


class MatchingHead(Head):
    """``log_softmax(linear) + match_weight * log_softmax(max_sim / match_temperature)``.

    The weights were chosen on banking77 draws of 10 shots, scored on the training split's
    other sentences (not the test split): the optimum is flat between a temperature of 0.02
    with weight 0.3 and 0.05 with weight 1.
    """

    kind: ClassVar[str] = "matching"
    token_layer: ClassVar[TokenLayer | None] = "top"
    keeps_its_examples: ClassVar[bool] = True

    def __init__(
        self,
        C: float = 50.0,
        max_weight: float = 1.5,
        match_weight: float = 1.0,
        match_temperature: float = 0.05,
        max_iter: int = 500,
        tol: float = 1e-4,
    ) -> None:
        self.C = C
        self.max_weight = max_weight
        self.match_weight = match_weight
        self.match_temperature = match_temperature
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: TokenStates, y: Sequence[str]) -> Self:
        outputs = check_token_states(X, self.kind).rows()
        features, labels = self._check_training_data(pooled(outputs, self.max_weight), y)
        sentence = LinearHead(C=self.C, max_iter=self.max_iter, tol=self.tol)
        sentence.fit(features, labels.tolist())
        index = {label: i for i, label in enumerate(sentence.classes_)}
        by_label = np.argsort([index[label] for label in labels], kind="stable")
        tokens = [content_tokens(outputs[i]) for i in by_label]
        self.sentence_ = sentence
        self.bank_columns_ = _columns(np.vstack(tokens).astype(np.float16))
        owners = np.asarray([index[labels[i]] for i in by_label])
        sizes = [len(t) for t in tokens]
        self.bank_counts_ = np.bincount(owners, weights=sizes, minlength=len(index)).astype(int)
        self.classes_ = sentence.classes_
        self.n_features_in_ = int(X.hidden.shape[-1])
        return self

    def _check_predict_input(self, X: Any) -> list[np.ndarray]:  # type: ignore[override]
        self._check_fitted()
        states = check_token_states(X, self.kind)
        if states.hidden.shape[-1] != self.n_features_in_:
            raise TrainingDataError(
                f"head expects {self.n_features_in_}-wide token states, "
                f"got {states.hidden.shape[-1]}"
            )
        return states.rows()

    def _proba(self, X: list[np.ndarray]) -> np.ndarray:
        sentence = self.sentence_.logits(pooled(X, self.max_weight))
        matched = max_sim(X, self.bank_columns_, self.bank_counts_.tolist())
        logits = log_softmax(sentence, axis=1) + self.match_weight * log_softmax(
            matched / self.match_temperature, axis=1
        )
        return np.asarray(softmax(logits, axis=1), dtype=np.float32)

    def resident_bytes(self, stored_bytes: int) -> int:
        # The bank is stored as float16 and held as float32: two more bytes per value.
        return stored_bytes + 2 * self.bank_columns_.size

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {
                "C": self.C,
                "max_weight": self.max_weight,
                "match_weight": self.match_weight,
                "match_temperature": self.match_temperature,
                "max_iter": self.max_iter,
                "tol": self.tol,
            },
            "bank_tokens_per_label": self.bank_counts_.tolist(),
        }
        tensors = {
            "coef": self.sentence_.coef_,
            "intercept": self.sentence_.intercept_,
            "bank": self.bank_columns_.T.astype(np.float16),
        }
        return HeadState(config, tensors)

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        config, tensors = state.config, state.tensors
        head = cls(**config["params"])
        classes = list(config["classes"])
        counts = np.asarray(config["bank_tokens_per_label"], dtype=int)
        width = tensors["bank"].shape[-1]
        if (
            counts.shape != (len(classes),)
            or (counts < 1).any()
            or tensors["bank"].shape != (counts.sum(), width)
            or tensors["coef"].shape != (len(classes), 2 * width)
            or tensors["intercept"].shape != (len(classes),)
        ):
            raise HeadStateError("matching head tensors do not match its classes")
        head.sentence_ = LinearHead.with_weights(
            classes,
            tensors["coef"],
            tensors["intercept"],
            C=head.C,
            max_iter=head.max_iter,
            tol=head.tol,
        )
        head.bank_columns_ = _columns(tensors["bank"])
        head.bank_counts_ = counts
        head.classes_ = classes
        head.n_features_in_ = width
        return head


def _columns(bank: np.ndarray) -> np.ndarray:
    """The stored float16 bank (tokens x dim) as float32 columns, once: converting 10,000 rows
    took 10 ms, against 1 ms for the product with a one-text query."""
    return np.ascontiguousarray(bank.astype(np.float32).T)
