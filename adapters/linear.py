"""Multinomial logistic regression on frozen features: the default head kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from adapters.base import Head, HeadState, HeadStateError


class LinearHead(Head):
    """Softmax over ``X @ coef_.T + intercept_``, fitted by scikit-learn's L-BFGS.

    ``C`` is the inverse L2 strength. On L2-normalised sentence embeddings the few-shot optimum
    is flat between about 10 and 100 (banking77, 5 and 10 shots), hence the default of 20.
    """

    kind: ClassVar[str] = "linear"

    def __init__(self, C: float = 20.0, max_iter: int = 500, tol: float = 1e-4) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: np.ndarray, y: Sequence[str]) -> Self:
        features, labels = self._check_training_data(X, y)
        # One BLAS thread: several OpenMP/OpenBLAS runtimes share the process with torch, and
        # letting each spin up threads makes this fit about three times slower on 2 cores.
        with threadpool_limits(limits=1):
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol)
            model.fit(features, labels)
        # C order, as a stored head reads back: a product's rounding depends on the layout.
        coef = np.ascontiguousarray(model.coef_, dtype=np.float32)
        intercept = model.intercept_.astype(np.float32)
        if coef.shape[0] == 1:
            # Binary: sigmoid(z) is softmax([0, z]); store both rows so prediction is uniform.
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        self.classes_ = [str(c) for c in model.classes_]
        self.coef_ = coef
        self.intercept_ = intercept
        self.n_features_in_ = features.shape[1]
        return self

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Unnormalised log-probabilities (before the temperature): what a hybrid head adds to."""
        return X @ self.coef_.T + self.intercept_

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(softmax(self.logits(X), axis=1), dtype=np.float32)

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {"C": self.C, "max_iter": self.max_iter, "tol": self.tol},
        }
        return HeadState(config, {"coef": self.coef_, "intercept": self.intercept_})

    @classmethod
    def with_weights(
        cls, classes: Sequence[str], coef: np.ndarray, intercept: np.ndarray, **params: Any
    ) -> Self:
        """A fitted head from its weights: what a hybrid or a matching head keeps of its own."""
        head = cls(**params)
        head.classes_ = list(classes)
        head.coef_ = coef
        head.intercept_ = intercept
        head.n_features_in_ = coef.shape[1]
        return head

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        tensors = state.tensors
        head = cls.with_weights(
            state.config["classes"], tensors["coef"], tensors["intercept"], **state.config["params"]
        )
        if head.coef_.shape[0] != len(head.classes_) or head.intercept_.shape != (
            len(head.classes_),
        ):
            raise HeadStateError("linear head tensors do not match its classes")
        return head
