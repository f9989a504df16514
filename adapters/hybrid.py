"""Sentence features plus the words themselves: a linear head and a character n-gram model.

A small sentence encoder blurs the surface of a text: "PIN" and "pin", "Apple Pay" and "Google
Pay" land close together. A few-shot intent is often carried by exactly such a word. A hybrid
head fits two logistic regressions on the same examples, one on the frozen sentence features
(the linear head) and one on TF-IDF weighted character n-grams of the texts, and adds their
log-probabilities, the n-gram side down-weighted. On banking77 at 10 shots that is worth about
0.6 points of accuracy over the linear head alone, for about a second more training.

The n-grams are hashed into a fixed number of buckets, not looked up in a learned vocabulary:
counting them is one pass over the texts whatever they hold (a vocabulary of random 10,000-
character texts runs to millions of n-grams, and sorting and pruning it took five times as long
and a gigabyte), the counts do not depend on the examples so cross-validation counts once, and
the head stores only tensors. It reads :class:`TextFeatures`, so it needs a text backbone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
from scipy import sparse
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from adapters.base import Head, HeadState, HeadStateError, TrainingDataError, as_features
from adapters.linear import LinearHead
from adapters.stopping import checkpoint

#: Hash buckets of the character n-grams. On banking77 (5 and 10 shots) 4,096 buckets score
#: within 0.15 points of a 4,000-n-gram vocabulary and of 16,384 buckets.
NGRAM_BUCKETS = 4096
#: Characters counted between two stop checks: a quarter to half a second of counting here.
COUNT_CHARS = 500_000
#: Character 2- to 5-grams within word boundaries (scikit-learn's ``char_wb``), raw counts: the
#: TF-IDF weighting is learnt from each head's own examples.
_COUNTER = HashingVectorizer(
    analyzer="char_wb",
    ngram_range=(2, 5),
    n_features=NGRAM_BUCKETS,
    alternate_sign=False,
    norm=None,
    dtype=np.float32,
)


@dataclass(frozen=True)
class TextFeatures:
    """What a hybrid head reads: pooled features and, row for row, their texts' n-gram counts."""

    features: np.ndarray
    ngrams: sparse.csr_matrix  # rows x NGRAM_BUCKETS

    @classmethod
    def of(cls, features: np.ndarray, texts: Sequence[str]) -> TextFeatures:
        """Count the texts' n-grams (pure Python per character: run it off an event loop)."""
        if len(texts) != len(features):
            raise TrainingDataError(f"got {len(features)} feature rows but {len(texts)} texts")
        # In chunks, so that a cancelled training stops between two (a large set takes seconds).
        counted = [_COUNTER.transform(chunk) for chunk in _by_characters(texts)]
        if not counted:
            return cls(features, sparse.csr_matrix((0, NGRAM_BUCKETS), dtype=np.float32))
        return cls(features, sparse.vstack(counted, format="csr"))

    def __len__(self) -> int:
        return int(self.ngrams.shape[0])

    def __getitem__(self, index: np.ndarray) -> TextFeatures:
        """The rows an index array or a boolean mask picks, as numpy would pick them."""
        rows = np.arange(len(self))[index]
        return TextFeatures(self.features[rows], self.ngrams[rows])


def _by_characters(texts: Sequence[str]) -> Iterator[list[str]]:
    """The texts in chunks of about ``COUNT_CHARS`` characters, asking whether to stop before
    each."""
    chunk: list[str] = []
    size = 0
    for text in map(str, texts):
        if chunk and size + len(text) > COUNT_CHARS:
            checkpoint()
            yield chunk
            chunk, size = [], 0
        chunk.append(text)
        size += len(text)
    if chunk:
        checkpoint()
        yield chunk


class HybridHead(Head):
    """``log_softmax(linear) + ngram_weight * log_softmax(n-grams)``, renormalised.

    The weight and both regularisations were chosen on banking77 (5 and 10 shots): at 0.5
    the n-grams start to cost accuracy.
    """

    kind: ClassVar[str] = "hybrid"
    takes_texts: ClassVar[bool] = True

    def __init__(
        self,
        C: float = 50.0,
        ngram_C: float = 50.0,
        ngram_weight: float = 0.35,
        max_iter: int = 500,
        tol: float = 1e-4,
    ) -> None:
        self.C = C
        self.ngram_C = ngram_C
        self.ngram_weight = ngram_weight
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: TextFeatures, y: Sequence[str]) -> Self:
        data = _check_text_features(X)
        features, labels = self._check_training_data(data.features, y)
        sentence = LinearHead(C=self.C, max_iter=self.max_iter, tol=self.tol)
        sentence.fit(features, labels.tolist())
        weighting = TfidfTransformer(sublinear_tf=True).fit(data.ngrams)
        # As stored: a head read back predicts exactly what the fitted one did.
        weighting.idf_ = weighting.idf_.astype(np.float32).astype(np.float64)
        with threadpool_limits(limits=1):  # as in the linear head: one BLAS thread is faster
            ngrams = LogisticRegression(C=self.ngram_C, max_iter=self.max_iter, tol=self.tol)
            ngrams.fit(weighting.transform(data.ngrams), labels)
        coef = np.ascontiguousarray(ngrams.coef_, dtype=np.float32)  # as the linear head's
        intercept = ngrams.intercept_.astype(np.float32)
        if coef.shape[0] == 1:  # binary: two rows, as the linear head stores them
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        self.sentence_ = sentence
        self.weighting_ = weighting
        self.ngram_coef_ = coef
        self.ngram_intercept_ = intercept
        self.classes_ = sentence.classes_
        self.n_features_in_ = sentence.n_features_in_
        return self

    def _check_predict_input(self, X: Any) -> TextFeatures:  # type: ignore[override]
        self._check_fitted()
        data = _check_text_features(X)
        if data.features.shape[1] != self.n_features_in_:
            raise TrainingDataError(
                f"head expects {self.n_features_in_} features per row, got {data.features.shape[1]}"
            )
        return data

    def _proba(self, X: TextFeatures) -> np.ndarray:
        sentence = self.sentence_.logits(X.features)
        weighted = self.weighting_.transform(X.ngrams)
        ngrams = weighted @ self.ngram_coef_.T + self.ngram_intercept_
        logits = log_softmax(sentence, axis=1) + self.ngram_weight * log_softmax(ngrams, axis=1)
        return np.asarray(softmax(logits, axis=1), dtype=np.float32)

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {
                "C": self.C,
                "ngram_C": self.ngram_C,
                "ngram_weight": self.ngram_weight,
                "max_iter": self.max_iter,
                "tol": self.tol,
            },
        }
        tensors = {
            "coef": self.sentence_.coef_,
            "intercept": self.sentence_.intercept_,
            "ngram_coef": self.ngram_coef_,
            "ngram_intercept": self.ngram_intercept_,
            "idf": self.weighting_.idf_.astype(np.float32),
        }
        return HeadState(config, tensors)

    def resident_bytes(self, stored_bytes: int) -> int:
        # scikit-learn weighs n-grams by a float64 idf; it is stored as float32.
        return stored_bytes + 4 * self.weighting_.idf_.size

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        config, tensors = state.config, state.tensors
        head = cls(**config["params"])
        classes = list(config["classes"])
        shapes = {
            "coef": (len(classes), tensors["coef"].shape[-1]),
            "intercept": (len(classes),),
            "ngram_coef": (len(classes), NGRAM_BUCKETS),
            "ngram_intercept": (len(classes),),
            "idf": (NGRAM_BUCKETS,),
        }
        for name, shape in shapes.items():
            if tensors[name].shape != shape:
                raise HeadStateError(f"hybrid head tensor {name!r} does not match its classes")
        sentence = LinearHead.with_weights(
            classes,
            tensors["coef"],
            tensors["intercept"],
            C=head.C,
            max_iter=head.max_iter,
            tol=head.tol,
        )
        weighting = TfidfTransformer(sublinear_tf=True)
        weighting.idf_ = tensors["idf"].astype(np.float64)
        weighting.n_features_in_ = NGRAM_BUCKETS
        head.sentence_ = sentence
        head.weighting_ = weighting
        head.ngram_coef_ = tensors["ngram_coef"]
        head.ngram_intercept_ = tensors["ngram_intercept"]
        head.classes_ = classes
        head.n_features_in_ = sentence.n_features_in_
        return head


def _check_text_features(X: Any) -> TextFeatures:
    if not isinstance(X, TextFeatures):
        raise TrainingDataError(
            f"a hybrid head reads features with their texts, not {type(X).__name__}"
        )
    if X.ngrams.shape != (len(X.features), NGRAM_BUCKETS):
        raise TrainingDataError(
            f"a hybrid head reads {NGRAM_BUCKETS} n-gram counts per row, got {X.ngrams.shape}"
        )
    return TextFeatures(as_features(X.features), X.ngrams)
