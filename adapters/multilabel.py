"""Several labels per input: one logistic regression per label, each with its own sigmoid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from threadpoolctl import threadpool_limits

from adapters.base import Head, HeadState, HeadStateError, TrainingDataError, as_features


class MultilabelHead(Head):
    """``sigmoid(X @ coef_.T + intercept_)`` per label; a label applies at ``threshold`` or more.

    ``y`` holds a list of labels per row (a row may have none: it is a negative for every
    label; a plain string is a list of one). Scores are independent probabilities, so they do
    not sum to one and no softmax temperature applies.
    """

    kind: ClassVar[str] = "multilabel"
    multilabel: ClassVar[bool] = True

    def __init__(self, C: float = 20.0, threshold: float = 0.5, max_iter: int = 500) -> None:
        self.C = C
        self.threshold = threshold
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: Sequence[Any]) -> Self:
        features = as_features(X)
        label_sets = [[row] if isinstance(row, str) else [str(v) for v in row] for row in y]
        if len(label_sets) != features.shape[0]:
            raise TrainingDataError(
                f"got {features.shape[0]} feature rows but {len(label_sets)} label lists"
            )
        binarizer = MultiLabelBinarizer()
        targets = binarizer.fit_transform(label_sets)
        if targets.shape[1] < 1:
            raise TrainingDataError("a multilabel head needs at least one label")
        always = [str(c) for c, col in zip(binarizer.classes_, targets.T, strict=True) if col.all()]
        if always:
            raise TrainingDataError(
                f"every example carries {always[0]!r}: a label needs examples without it too"
            )
        with threadpool_limits(limits=1):
            model = OneVsRestClassifier(LogisticRegression(C=self.C, max_iter=self.max_iter))
            model.fit(features, targets)
        self.classes_ = [str(c) for c in binarizer.classes_]
        self.coef_ = np.vstack([e.coef_ for e in model.estimators_]).astype(np.float32)
        self.intercept_ = np.concatenate([e.intercept_ for e in model.estimators_]).astype(
            np.float32
        )
        self.n_features_in_ = features.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._proba(self._check_predict_input(X))

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(expit(X @ self.coef_.T + self.intercept_), dtype=np.float32)

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {"C": self.C, "threshold": self.threshold, "max_iter": self.max_iter},
        }
        return HeadState(config, {"coef": self.coef_, "intercept": self.intercept_})

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        head = cls(**state.config["params"])
        head.classes_ = list(state.config["classes"])
        head.coef_ = state.tensors["coef"]
        head.intercept_ = state.tensors["intercept"]
        head.n_features_in_ = head.coef_.shape[1]
        if head.coef_.shape[0] != len(head.classes_):
            raise HeadStateError("multilabel head tensors do not match its classes")
        return head
