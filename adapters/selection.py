"""Cross-validation on the submitted batch: choosing settings, estimating accuracy, calibrating.

Few-shot training sets are too small to spare a validation split, so every estimate here comes
from stratified k-fold predictions on the examples themselves (out-of-fold, "OOF"): each example
is predicted by a head that never saw it. The same OOF probabilities choose a kind's settings,
estimate accuracy and macro-F1, fit the softmax temperature, and set an abstention threshold.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from adapters.base import Head, tempered
from adapters.hybrid import TextFeatures
from adapters.scope import OUT_OF_SCOPE, answers, labels_of
from adapters.stopping import checkpoint
from adapters.tuned import TokenStates

#: At most this many folds. Each fold's head trains on 4/5 of the examples, so it is nearly as
#: sure as the final head: with 3 folds (2/3 of the examples) the abstention threshold came out
#: low, and a linear head's ``"auto"`` refused 21.5% of out-of-scope queries at a cost of 1.0
#: point; with 5 it refuses 25.3 to 25.4% at 1.3 (bench/RESULTS-quality.md). 10 folds overshot the
#: 2-point budget on one draw of three (3.1 points, offline). The CV estimates are closer to
#: the test split's, and the choice of ``C`` a little better (+0.15 points at 10 shots).
MAX_FOLDS = 5
#: Above this many examples, cross-validation would cost more than the head is worth.
MAX_CV_EXAMPLES = 6000
#: "auto" abstention may cost at most this share of in-scope answers that were right.
ABSTAIN_IN_SCOPE_LOSS = 0.02
#: Leaving the probabilities as they are counts as this many out-of-fold examples' worth of
#: evidence when the temperature is fitted. Without it, a set that cross-validation gets all
#: right drives the temperature to its bound of 0.05: 8 banking77 intents with 2 examples each
#: then scored 0.995 on average on unseen sentences, of which 87.5% were right.
TEMPERATURE_PRIOR_EXAMPLES = 1.0
#: Labels held out per round when estimating how unseen intents score.
HOLDOUT_ROUNDS = 3

HeadFactory = Callable[[], Head]
#: What heads learn from: pooled features, token states (tuned), features with texts (hybrid).
Features = np.ndarray | TokenStates | TextFeatures


def scored_rows(n_rows: int, teach_only: np.ndarray | None) -> np.ndarray:
    """Indices of the rows an estimate scores: all but the ``teach_only`` ones (label
    descriptions, which every fold learns from and none is judged on)."""
    if teach_only is None:
        return np.arange(n_rows)
    return np.flatnonzero(~teach_only)


@dataclass
class CVResult:
    """Out-of-fold predictions of one candidate (a kind with settings)."""

    kind: str
    params: dict[str, Any]
    classes: list[str]
    proba: np.ndarray  # n_examples x n_classes, columns follow ``classes``
    accuracy: float
    macro_f1: float
    log_loss: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "params": self.params,
            "cv_accuracy": round(self.accuracy, 4),
            "cv_macro_f1": round(self.macro_f1, 4),
            "cv_log_loss": round(self.log_loss, 4),
            "seconds": round(self.seconds, 2),
        }


def n_folds(labels: Sequence[str], n_examples: int) -> int:
    """Folds for stratified CV, or 0 when it cannot (a label with one example) or should not.

    Out-of-scope examples do not set the count: a few of them are spread over the folds as
    they fall, and a fold without any still scores the labels."""
    counts = Counter(labels)
    counts.pop(OUT_OF_SCOPE, None)
    if n_examples > MAX_CV_EXAMPLES or not counts:
        return 0
    smallest = min(counts.values())
    return min(MAX_FOLDS, smallest) if smallest >= 2 else 0


def why_no_folds(labels: Sequence[str], n_examples: int) -> str:
    """Why :func:`n_folds` gives 0 for these labels, in words a caller can act on."""
    if n_examples > MAX_CV_EXAMPLES:
        return f"which Graft skips above {MAX_CV_EXAMPLES:,} examples (this set has {n_examples:,})"
    single = sorted(label for label, n in Counter(labels_of(labels)).items() if n < 2)
    shown = ", ".join(repr(label) for label in single[:3]) + (", ..." if len(single) > 3 else "")
    verb = "has" if len(single) == 1 else "have"
    return f"which needs at least 2 examples of every label ({shown} {verb} only 1)"


def cross_validate(
    kind: str,
    params: dict[str, Any],
    make: HeadFactory,
    X: Features,
    y: np.ndarray,
    folds: int,
    teach_only: np.ndarray | None = None,
    on_fold: Callable[[], None] | None = None,
) -> CVResult:
    """Out-of-fold predictions of the scored rows; every fold also learns from the
    ``teach_only`` rows. The result's rows are the scored rows, in order. ``on_fold`` is told
    of each fold fitted."""
    started = time.perf_counter()
    scored = scored_rows(len(y), teach_only)
    always = np.setdiff1d(np.arange(len(y)), scored)
    truth_labels = y[scored]
    classes = sorted(set(y.tolist()))
    proba = np.zeros((len(scored), len(classes)), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    with warnings.catch_warnings():  # fewer out-of-scope examples than folds: they may
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(np.zeros(len(scored)), truth_labels))
    for train, test in splits:
        checkpoint()
        learns_from = np.concatenate([scored[train], always])
        head = make().fit(X[learns_from], y[learns_from])
        columns = [classes.index(c) for c in head.classes_]
        proba[np.ix_(test, columns)] = head.predict_proba(X[scored[test]])
        if on_fold is not None:
            on_fold()
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    truth = np.searchsorted(classes, truth_labels)
    # Scored as a caller sees it: on in-scope examples, over the labels; an answer the
    # out-of-scope class takes is wrong, and refusing an out-of-scope example is no answer.
    asked = truth_labels != OUT_OF_SCOPE
    return CVResult(
        kind=kind,
        params=params,
        classes=classes,
        proba=proba,
        accuracy=float(accuracy_score(truth_labels[asked], predicted[asked])),
        macro_f1=float(
            f1_score(
                truth_labels[asked],
                predicted[asked],
                labels=labels_of(classes),
                average="macro",
                zero_division=0,
            )
        ),
        log_loss=_nll(proba, truth),
        seconds=time.perf_counter() - started,
    )


def _nll(proba: np.ndarray, truth: np.ndarray) -> float:
    picked = proba[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def fit_temperature(result: CVResult, y: np.ndarray) -> float:
    """The softmax temperature that makes the out-of-fold probabilities best calibrated
    (``y``: the labels of the rows cross-validation scored), drawn towards 1 by a weak prior
    (``TEMPERATURE_PRIOR_EXAMPLES``)."""
    truth = np.searchsorted(result.classes, y)
    weight = TEMPERATURE_PRIOR_EXAMPLES / len(truth)

    def loss(log_t: float) -> float:
        return _nll(tempered(result.proba, float(np.exp(log_t))), truth) + weight * log_t**2

    best = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


@dataclass(frozen=True)
class AbstainCalibration:
    threshold: float
    #: Estimated share of queries about labels the head never saw that it would refuse; None
    #: with fewer than 3 labels, where holding one out would leave one label to train on.
    out_of_scope_rejected: float | None
    #: Estimated share of in-scope queries it would refuse (right or wrong answers).
    in_scope_rejected: float
    #: Share of the out-of-scope examples it refuses out of fold; None without any.
    out_of_scope_examples_rejected: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        # The threshold to 6 places: a few-shot head's can be 0.99997, which 4 would show as 1.
        return {
            k: None if v is None else round(v, 6 if k == "threshold" else 4)
            for k, v in self.__dict__.items()
        }


def calibrate_abstention(
    result: CVResult,
    make: HeadFactory,
    X: Features,
    y: np.ndarray,
    temperature: float,
    teach_only: np.ndarray | None = None,
    on_round: Callable[[], None] | None = None,
) -> AbstainCalibration:
    """Pick the threshold on the calibrated top probability for ``"abstain": "auto"``.

    In-scope confidences are the out-of-fold ones. Out-of-scope stand-ins come from holding
    whole labels out: a head trained without them scores their examples, exactly as a
    deployed head meets a query about an intent it was never taught. The threshold is the
    highest that costs at most ``ABSTAIN_IN_SCOPE_LOSS`` of the in-scope answers that were
    right; wrong answers that fall below it are refused at no cost.

    Out-of-scope examples (:data:`~adapters.scope.OUT_OF_SCOPE`) are no in-scope queries:
    the right answers their class refuses out of fold spend the budget first, and the share of
    them refused is reported.
    """
    scored = scored_rows(len(y), teach_only)
    best, confidence = answers(result.classes, tempered(result.proba, temperature))
    truth = y[scored]
    in_scope = truth != OUT_OF_SCOPE
    right = np.asarray(result.classes, dtype=object)[best] == truth
    affordable = int(ABSTAIN_IN_SCOPE_LOSS * in_scope.sum())
    right_conf = np.sort(confidence[right & in_scope])
    threshold = float(right_conf[affordable]) if affordable < len(right_conf) else 0.0
    threshold = max(threshold, 0.0)  # the class's refusals alone spent the budget
    unseen = _unseen_label_confidences(make, X, y, temperature, scored, on_round)
    return AbstainCalibration(
        threshold=threshold,
        out_of_scope_rejected=float(np.mean(unseen < threshold)) if len(unseen) else None,
        in_scope_rejected=float(np.mean(confidence[in_scope] < threshold)),
        out_of_scope_examples_rejected=(
            float(np.mean(confidence[~in_scope] < threshold)) if (~in_scope).any() else None
        ),
    )


def holdout_rounds(n_labels: int) -> int:
    """Rounds of holding labels out for ``"abstain": "auto"``: at most a third of the labels
    out per round, so at least two are left to train on; none for fewer than 3 labels."""
    return min(HOLDOUT_ROUNDS, n_labels) if n_labels >= 3 else 0


def _unseen_label_confidences(
    make: HeadFactory,
    X: Features,
    y: np.ndarray,
    temperature: float,
    scored: np.ndarray,
    on_round: Callable[[], None] | None,
) -> np.ndarray:
    classes = labels_of(sorted(set(y.tolist())))  # the out-of-scope class is never held out
    rounds = holdout_rounds(len(classes))
    if not rounds:
        return np.zeros(0, dtype=np.float32)  # holding one out would leave a single label
    shuffled = np.random.default_rng(0).permutation(np.asarray(classes, dtype=object))
    found = []
    for held in np.array_split(shuffled, rounds):
        checkpoint()
        unseen = np.isin(y, held)  # a held-out label's description is held out with it
        head = make().fit(X[~unseen], y[~unseen])
        # The holdout heads are not calibrated on their own: the full head's temperature is.
        head.temperature_ = temperature
        asked = scored[unseen[scored]]
        found.append(answers(head.classes_, head.predict_proba(X[asked]))[1])
        if on_round is not None:
            on_round()
    return np.concatenate(found)
