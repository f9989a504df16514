"""How good a fitted head is on labelled examples: accuracy, F1, calibration, abstention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from adapters.base import Head, TrainingDataError
from adapters.scope import OUT_OF_SCOPE, answers, learns_out_of_scope

#: Confidence bins of the expected calibration error.
ECE_BINS = 10


@dataclass
class Evaluation:
    n_examples: int
    accuracy: float
    macro_f1: float
    expected_calibration_error: float | None
    per_label: dict[str, dict[str, float]]
    labels: list[str]
    confusion_matrix: list[list[int]] | None
    abstention: dict[str, Any] | None
    #: True labels the head was never taught: out-of-scope examples, or misspelt labels.
    unknown_labels: list[str]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Support-weighted gap between mean confidence and accuracy, over equal-width bins."""
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gap = 0.0
    for b in range(ECE_BINS):
        members = bins == b
        if members.any():
            gap += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(gap)


def check_truth(head: Head, truth: Sequence[Any]) -> None:
    """Refuse true labels in the wrong form for ``head``: lists for a single-label head, or
    single labels for a multilabel one."""
    lists = [isinstance(v, list | tuple) for v in truth]
    if OUT_OF_SCOPE in truth:
        raise TrainingDataError(
            f"example {list(truth).index(OUT_OF_SCOPE)}: evaluate judges out-of-scope examples "
            'under a label the head was never taught ("out_of_scope", say), not as '
            '"out_of_scope": true; refusing them counts as right'
        )
    if head.multilabel and not all(lists):
        raise TrainingDataError(
            f"example {lists.index(False)}: a multilabel head is judged on a list of "
            '"labels" per example, not one "label"'
        )
    if not head.multilabel and any(lists):
        raise TrainingDataError(
            f"example {lists.index(True)}: this {head.kind} head answers one label per input; "
            'give each example a "label", not a list of "labels"'
        )


def evaluate_head(
    head: Head, proba: np.ndarray, truth: Sequence[Any], abstain_threshold: float | None = None
) -> Evaluation:
    """Metrics of ``head``'s probabilities ``proba`` against the true labels ``truth``.

    The label set is scikit-learn's: every label that is true or predicted in these examples.
    Labels the head does not know still count (they can only be predicted wrong), and are
    listed; head labels that neither occur nor are predicted do not drag macro-F1 down.
    Accuracy, F1 and the confusion matrix judge the top label; abstention, if a threshold
    applies, is reported too, with the share of unknown labels' examples it refused (for
    those, refusing is the right answer).
    """
    check_truth(head, truth)
    if head.multilabel:
        return _evaluate_multilabel(head, proba, truth, abstain_threshold)
    y_true = np.asarray([str(v) for v in truth], dtype=object)
    best, score = answers(head.classes_, proba)
    y_pred = np.asarray(head.classes_, dtype=object)[best]
    labels = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    confidence = proba[np.arange(len(proba)), best]
    correct = y_pred == y_true
    unknown = ~np.isin(y_true, np.asarray(head.classes_, dtype=object))
    threshold = head.abstain_threshold_ if abstain_threshold is None else abstain_threshold
    if threshold is None and learns_out_of_scope(head.classes_):
        threshold = 0.0  # it refuses what its out-of-scope class wins, whatever the threshold
    abstention = None
    if threshold is not None:
        abstention = _abstention(threshold, score, correct, unknown)
    return Evaluation(
        n_examples=len(y_true),
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        expected_calibration_error=expected_calibration_error(confidence, correct),
        per_label=_per_label(labels, precision, recall, f1, support),
        labels=labels,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        abstention=abstention,
        unknown_labels=sorted(set(y_true[unknown].tolist())),
    )


def _abstention(
    threshold: float, confidence: np.ndarray, correct: np.ndarray, unknown: np.ndarray
) -> dict[str, Any]:
    answered = confidence >= threshold
    return {
        "threshold": threshold,
        "abstained": int((~answered).sum()),
        "coverage": float(answered.mean()),
        "answered_accuracy": float(correct[answered].mean()) if answered.any() else None,
        "accuracy": float((correct & answered).mean()),
        "open_set_accuracy": float(((correct & answered) | (unknown & ~answered)).mean()),
        "unknown_label_examples": int(unknown.sum()),
        "unknown_label_refused": float((~answered[unknown]).mean()) if unknown.any() else None,
    }


def _per_label(
    labels: list[str], precision: Any, recall: Any, f1: Any, support: Any
) -> dict[str, dict[str, float]]:
    return {
        label: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }


def _evaluate_multilabel(
    head: Head, proba: np.ndarray, truth: Sequence[Any], cut: float | None
) -> Evaluation:
    """Per-label metrics at the head's cut (or ``cut``, as a predict call's
    ``abstain_threshold`` sets it), over the labels true or predicted in these examples.

    Counted here rather than by scikit-learn: a single label's column reads to it as a binary
    target, which it scores as two classes (0 and 1), not one label."""
    sets = [[str(v) for v in row] for row in truth]
    every = sorted(set(head.classes_) | {v for row in sets for v in row})
    binarizer = MultiLabelBinarizer(classes=every).fit([every])
    y_true = binarizer.transform(sets).astype(bool)
    columns = [every.index(c) for c in head.classes_]
    y_pred = np.zeros_like(y_true)
    y_pred[:, columns] = proba >= (head.params["threshold"] if cut is None else cut)
    # As for single-label heads: a label neither true nor predicted here does not count.
    present = (y_true.any(axis=0) | y_pred.any(axis=0)).nonzero()[0]
    labels = [every[i] for i in present]
    t, p = y_true[:, present], y_pred[:, present]
    hits, predicted, support = (t & p).sum(axis=0), p.sum(axis=0), t.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros(len(present)), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros(len(present)), where=support > 0)
    both = predicted + support
    f1 = np.divide(2 * hits, both, out=np.zeros(len(present)), where=both > 0)
    return Evaluation(
        n_examples=len(sets),
        accuracy=float((y_true == y_pred).all(axis=1).mean()),  # every label of a row right
        # No label true or predicted anywhere: every row is right, and nothing is missed.
        macro_f1=float(f1.mean()) if len(present) else 1.0,
        expected_calibration_error=None,
        per_label=_per_label(labels, precision, recall, f1, support),
        labels=labels,
        confusion_matrix=None,
        abstention=None,
        unknown_labels=sorted({v for row in sets for v in row} - set(head.classes_)),
    )
