"""Fitting a head from labelled features and reporting what a user can act on.

``fit_head`` is the one training path: it cross-validates the kind's candidate settings on the
batch (``auto``: every kind's), keeps the best, calibrates its probabilities and, if asked, its
abstention threshold, fits the winner on all examples, and reports what it found.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from adapters import HEAD_KINDS, Head, TextFeatures, TokenStates, TrainingDataError
from adapters.base import a_head_of
from adapters.scope import OUT_OF_SCOPE, labels_of
from adapters.selection import (
    CVResult,
    Features,
    calibrate_abstention,
    cross_validate,
    fit_temperature,
    holdout_rounds,
    n_folds,
    scored_rows,
    why_no_folds,
)
from adapters.stopping import StopCheck, checkpoint, stoppable

#: A label with this many times fewer examples than the largest one is called imbalanced.
IMBALANCE_RATIO = 3.0
#: Settings tried by cross-validation, per kind, in order: the first is kept unless a later one
#: clearly beats it (see ``_choose``). The linear head's optimum on sentence embeddings moves
#: with the number of shots, so its regularisation is searched, the stronger first.
CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "linear": [{"C": 16.0}, {"C": 96.0}],
    "prototype": [{}],
    "mlp": [{}],
    "multilabel": [{}],
    "tuned": [{}],
    "hybrid": [{}],
    "matching": [{}],
}
#: Cross-validation only ranks candidates and estimates accuracy: a looser fit is enough there
#: and halves its cost (the head that is kept is fitted to the full tolerance).
#: A tuned head's folds train one epoch, not four: its estimate is a little pessimistic, and
#: cross-validation does not triple its training time.
CV_SHORTCUTS: dict[str, dict[str, Any]] = {
    "linear": {"tol": 1e-3},
    "mlp": {"epochs": 50},
    "tuned": {"epochs": 1},
    "hybrid": {"tol": 1e-3},
    "matching": {"tol": 1e-3},
}
#: The kinds ``auto`` chooses from, cheapest first so a tight budget still gets an answer.
#: Not ``tuned`` nor ``matching``: they read token states, not features.
AUTO_KINDS = ("prototype", "linear", "mlp")
#: A kind's cross-validation time relative to one linear candidate's, measured on banking77 (5
#: and 10 shots, and the 8-intent test fixture): ``auto`` foresees from the candidates it has
#: timed whether the next one still fits its budget, and an mlp's 50 torch epochs per fold cost
#: 30 to 45 times a linear fit.
RELATIVE_CV_COST = {"prototype": 0.5, "linear": 1.0, "mlp": 40.0}
#: A final fit's cost in cross-validation folds, for the progress a fit reports: it trains on
#: all the examples (a fold on 4/5), to the full tolerance or for all its epochs (a tuned
#: head's folds train one epoch of four, an mlp's 50 of 100).
FINAL_FIT_FOLDS = {"tuned": 5.0, "mlp": 2.5}
#: What ``auto`` keeps unless another kind clearly does better (see ``_choose``).
AUTO_DEFAULT = "linear"

#: ``False``, a threshold on the calibrated top probability, or ``"auto"``.
Abstain = bool | float | str
#: Told the share of a fit done, 0 to 1, on the fitting thread.
ProgressHook = Callable[[float], None]


@dataclass
class TrainingReport:
    kind: str
    params: dict[str, Any]
    examples_per_label: dict[str, int]
    #: Accuracy on its own examples; None for a head that keeps them (``keeps_its_examples``).
    train_accuracy: float | None
    cv_folds: int
    cv_accuracy: float | None
    cv_macro_f1: float | None
    temperature: float
    abstain: dict[str, float | None] | None
    fit_ms: float
    #: Rows taught but never scored (label descriptions): not in ``examples_per_label``.
    label_descriptions: int = 0
    #: Examples of no label ("out_of_scope"), which the head learns to refuse.
    out_of_scope_examples: int = 0
    candidates: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def data_warnings(inputs: Sequence[Hashable], labels: Sequence[Hashable]) -> list[str]:
    """Problems in a training set that still trains: duplicates, conflicts, thin labels."""
    warnings: list[str] = []
    labels_of: dict[Hashable, set[Hashable]] = defaultdict(set)
    seen: Counter[tuple[Hashable, Hashable]] = Counter()
    for item, label in zip(inputs, labels, strict=True):
        labels_of[item].add(label)
        seen[(item, label)] += 1
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    if duplicates:
        warnings.append(f"{duplicates} duplicated example(s) (same input, same label)")
    conflicts = sum(1 for found in labels_of.values() if len(found) > 1)
    if conflicts:
        aside = " (or under a label and as out of scope)" if OUT_OF_SCOPE in labels else ""
        warnings.append(f"{conflicts} input(s) appear under more than one label{aside}")
    counts = _label_counts(labels)
    counts.pop(OUT_OF_SCOPE, None)
    single = sorted(label for label, n in counts.items() if n == 1)
    if single:
        shown = ", ".join(single[:5]) + (", ..." if len(single) > 5 else "")
        warnings.append(f"{len(single)} label(s) have a single example: {shown}")
    if len(counts) > 1 and max(counts.values()) >= IMBALANCE_RATIO * min(counts.values()):
        warnings.append(
            f"imbalanced labels: {max(counts.values())} examples for the largest label, "
            f"{min(counts.values())} for the smallest"
        )
    lookalikes = _lookalike_labels(counts)
    if lookalikes:
        shown = "; ".join(" and ".join(map(repr, group)) for group in lookalikes[:3])
        more = ", ..." if len(lookalikes) > 3 else ""
        warnings.append(f"labels that differ only in case or spaces: {shown}{more}")
    return warnings


def _lookalike_labels(counts: dict[str, int]) -> list[list[str]]:
    """Labels that read the same once case and spacing are ignored ("pos" and "pos "): a stray
    space in a file splits a label in two, and every table shows them alike."""
    by_form: dict[str, list[str]] = defaultdict(list)
    for label in sorted(counts):
        by_form[" ".join(label.split()).casefold()].append(label)
    return [group for group in by_form.values() if len(group) > 1]


def _label_counts(labels: Sequence[Hashable]) -> dict[str, int]:
    """Examples per label; a multilabel example (a tuple of labels) counts for each of them."""
    counts: Counter[str] = Counter()
    for label in labels:
        counts.update(label if isinstance(label, tuple) else (str(label),))
    return dict(sorted(counts.items()))


def fit_head(
    kind: str,
    features: Features,
    labels: Sequence[Any],
    inputs: Sequence[Hashable],
    *,
    abstain: Abstain = False,
    budget_s: float = 5.0,
    should_stop: StopCheck | None = None,
    teach_only: Sequence[bool] | None = None,
    on_progress: ProgressHook | None = None,
) -> tuple[Head, TrainingReport]:
    """Fit a head of ``kind`` (or the best kind, for ``"auto"``) and report on it.

    ``features`` are pooled features, :class:`TokenStates` for ``tuned`` and ``matching``, or
    :class:`TextFeatures` for ``hybrid``. ``labels`` are
    strings, or lists of strings for ``multilabel``; ``inputs`` (texts, image
    hashes) only feed the warnings. ``budget_s`` bounds the time ``auto`` spends comparing.
    ``should_stop`` is asked between the fit's steps; once it answers True the fit raises
    :class:`~adapters.stopping.FitStopped`. ``teach_only`` marks rows (label descriptions)
    that every head learns from and no estimate scores: cross-validation, the temperature, the
    abstention threshold and the report count the other rows, the examples. ``on_progress``
    is told the share of the fit done (0 to 1) after each of its steps, on the fitting thread.
    """
    with stoppable(should_stop):
        return _fit_head(kind, features, labels, inputs, abstain, budget_s, teach_only, on_progress)


def _fit_head(
    kind: str,
    features: Features,
    labels: Sequence[Any],
    inputs: Sequence[Hashable],
    abstain: Abstain,
    budget_s: float,
    teach_only: Sequence[bool] | None,
    on_progress: ProgressHook | None,
) -> tuple[Head, TrainingReport]:
    started = time.perf_counter()
    form, described = _input_form(kind)
    if not isinstance(features, form):
        raise TrainingDataError(f"{a_head_of(kind)} learns from {described}")
    check_label_form(kind, labels)
    taught = _teach_only_mask(kind, labels, teach_only)
    scored = scored_rows(len(labels), taught)
    example_labels = [labels[i] for i in scored]
    check_label_count(kind, example_labels)
    check_abstain_option(kind, example_labels, abstain)
    if kind == "multilabel":
        assert isinstance(features, np.ndarray)
        return _fit_multilabel(features, labels, inputs, started)
    y = np.asarray([str(label) for label in labels], dtype=object)
    folds = n_folds(y[scored].tolist(), len(scored))
    plan = _FitPlan.of(kind, folds, len(set(y.tolist())), abstain, on_progress)
    candidates = _candidates(kind, features, y, folds, started, budget_s, taught, plan.step)
    best = _choose(kind, candidates, len(scored))
    if best is not None:
        chosen_kind, params = best.kind, best.params
    else:  # nothing to cross-validate on: the kind's first settings (auto: the default kind's)
        chosen_kind = AUTO_DEFAULT if kind == "auto" else kind
        params = CANDIDATES[chosen_kind][0]
    make = _factory(chosen_kind, params)
    checkpoint()
    head = make().fit(features, y)
    plan.step(plan.final)
    # A prototype head calibrates its own scale by leave-one-out over every row it is given,
    # label descriptions too; with descriptions, the out-of-fold examples correct it.
    calibrated = best is not None and (chosen_kind != "prototype" or taught is not None)
    temperature = fit_temperature(best, y[scored]) if best and calibrated else 1.0
    head.temperature_ = temperature
    calibration = None
    if abstain == "auto":
        assert best is not None
        quick = _factory(chosen_kind, {**params, **CV_SHORTCUTS.get(chosen_kind, {})})
        found = calibrate_abstention(best, quick, features, y, temperature, taught, plan.step)
        head.abstain_threshold_ = found.threshold
        calibration = found.to_dict()
    elif abstain is not False and abstain is not True:
        head.abstain_threshold_ = float(abstain)
        calibration = {"threshold": float(abstain)}
    example_counts = _label_counts(y[scored].tolist())
    report = TrainingReport(
        kind=chosen_kind,
        params=head.reported_params,
        examples_per_label={k: n for k, n in example_counts.items() if k != OUT_OF_SCOPE},
        train_accuracy=_train_accuracy(head, features, y, scored, taught),
        cv_folds=folds,
        cv_accuracy=round(best.accuracy, 4) if best else None,
        cv_macro_f1=round(best.macro_f1, 4) if best else None,
        temperature=round(temperature, 4),
        abstain=calibration,
        fit_ms=round((time.perf_counter() - started) * 1000, 1),
        label_descriptions=len(y) - len(scored),
        out_of_scope_examples=example_counts.get(OUT_OF_SCOPE, 0),
        candidates=[r.summary() for r in candidates] if len(candidates) > 1 else [],
        warnings=data_warnings([inputs[i] for i in scored], y[scored].tolist())
        + _abstain_warnings(calibration),
    )
    return head, report


def _abstain_warnings(calibration: dict[str, float | None] | None) -> list[str]:
    if calibration is None or calibration.get("out_of_scope_rejected", 0.0) is not None:
        return []
    return [
        '"abstain": "auto" holds no label out to stand for unseen intents with fewer than 3 '
        "labels: its threshold only bounds the refusals of known ones, and how many "
        "out-of-scope queries it refuses is unknown (measure it with /v1/heads/evaluate)"
    ]


@dataclass
class _FitPlan:
    """A fit's steps, each weighted by its rough cost in folds: the share done goes to
    ``hook``. An ``auto`` fit that skips kinds past its budget jumps ahead."""

    hook: ProgressHook | None
    total: float
    final: float
    done: float = 0.0

    @classmethod
    def of(
        cls, kind: str, folds: int, n_labels: int, abstain: Abstain, hook: ProgressHook | None
    ) -> _FitPlan:
        kinds = AUTO_KINDS if kind == "auto" else (kind,)
        cv_fits = folds * sum(len(CANDIDATES[each]) for each in kinds)
        rounds = holdout_rounds(n_labels) if abstain == "auto" else 0
        final = FINAL_FIT_FOLDS.get(kind, 1.0)
        return cls(hook, cv_fits + rounds + final, final)

    def step(self, weight: float = 1.0) -> None:
        self.done += weight
        if self.hook is not None:
            self.hook(min(self.done / self.total, 1.0))


def _teach_only_mask(
    kind: str, labels: Sequence[Any], teach_only: Sequence[bool] | None
) -> np.ndarray | None:
    """``teach_only`` as a mask, refused where it cannot work: it must mark rows of labels
    that also have examples, and a multilabel head takes no descriptions."""
    if teach_only is None or not any(teach_only):
        return None
    mask = np.asarray(teach_only, dtype=bool)
    if mask.shape != (len(labels),):
        raise TrainingDataError(f"got {len(labels)} labels but {len(mask)} teach-only flags")
    if kind == "multilabel":
        raise TrainingDataError("multilabel heads take no label descriptions")
    with_examples = {str(label) for label, only in zip(labels, mask, strict=True) if not only}
    bare = sorted({str(label) for label, only in zip(labels, mask, strict=True) if only})
    bare = [label for label in bare if label not in with_examples]
    if bare:
        shown = ", ".join(repr(label) for label in bare[:3]) + (", ..." if len(bare) > 3 else "")
        raise TrainingDataError(f"a label description needs examples of its label too: {shown}")
    return mask


def check_label_form(kind: str, labels: Sequence[Any]) -> None:
    """A list of labels per example for ``multilabel``, a single label for every other kind."""
    for index, label in enumerate(labels):
        is_list = isinstance(label, list | tuple)
        if kind == "multilabel" and label == OUT_OF_SCOPE:
            raise TrainingDataError(
                'a multilabel head learns "none of these" from examples with "labels": [], '
                f'not "out_of_scope": true (example {index})'
            )
        if kind == "multilabel" and not is_list:
            raise TrainingDataError(
                'a multilabel head takes a list of labels per example ("labels": [...], maybe '
                f"empty), not a single label (example {index} has {label!r})"
            )
        if kind != "multilabel" and is_list:
            raise TrainingDataError(
                f"only multilabel heads take a list of labels per example (example {index})"
            )


def check_label_count(kind: str, labels: Sequence[Any]) -> None:
    """Enough distinct labels for ``kind``: a caller can ask before any embedding (``auto``
    needs what its default kind needs; multilabel heads check their labels themselves)."""
    if kind == "multilabel":
        return
    cls = HEAD_KINDS.get(AUTO_DEFAULT if kind == "auto" else kind)
    needed = cls.min_labels if cls is not None else 2
    distinct = {str(label) for label in labels}
    found = len(labels_of(sorted(distinct)))
    if found < needed:
        aside = " (out-of-scope examples are no label)" if OUT_OF_SCOPE in distinct else ""
        raise TrainingDataError(
            f"{a_head_of(kind)} needs at least {needed} distinct labels, got {found}{aside}"
        )


def check_abstain_option(kind: str, labels: Sequence[Any], abstain: Abstain) -> None:
    """Refuse an ``abstain`` option that a training of ``kind`` on ``labels`` could not
    honour; it needs only the labels, so a caller can ask before any embedding."""
    if abstain is False:
        return
    if kind == "multilabel":
        raise TrainingDataError(
            "multilabel heads abstain by their per-label threshold, not an abstain option"
        )
    if abstain == "auto":
        y = [str(label) for label in labels]
        if not n_folds(y, len(y)):
            raise TrainingDataError(
                f'"abstain": "auto" calibrates on cross-validation, {why_no_folds(y, len(y))}; '
                "give a threshold instead"
            )


def _train_accuracy(
    head: Head, features: Features, y: np.ndarray, scored: np.ndarray, taught: np.ndarray | None
) -> float | None:
    if head.keeps_its_examples:
        return None
    asked = scored[y[scored] != OUT_OF_SCOPE]  # in-scope examples, as cv_accuracy counts
    examples = features[asked] if len(asked) < len(y) else features
    predicted = np.asarray(head.classes_, dtype=object)[head.predict_proba(examples).argmax(axis=1)]
    return round(float(np.mean(predicted == y[asked])), 4)


def _choose(kind: str, candidates: list[CVResult], n_examples: int) -> CVResult | None:
    """The candidate to keep: each kind's first settings unless later ones clearly beat them,
    then, for ``auto``, the default kind unless another kind clearly beats it.

    "Clearly" is by more than one standard error of the kept candidate's CV accuracy (the
    one-standard-error rule). A smaller lead is noise, and following it made the pick flip with
    the features' rounding: linear's two ``C`` values tie within a sentence on banking77, and a
    bfloat16 forward pass rounds a text differently in another batch, so the same set trained
    as a job and as a call got different heads. The folds also train on fewer examples than
    the final head, which flatters the kinds that need fewer: at 5 shots on banking77, with 3
    folds, ``prototype`` often tied or led ``linear`` by a sentence or two in CV and then lost
    by 2 to 5 points on the test split (bench/RESULTS-quality.md)."""
    by_kind: dict[str, list[CVResult]] = defaultdict(list)
    for result in candidates:
        by_kind[result.kind].append(result)
    finalists = [
        _unless_clearly_beaten(tried[0], tried[1:], n_examples) for tried in by_kind.values()
    ]
    if not finalists:
        return None
    default = next((c for c in finalists if c.kind == AUTO_DEFAULT), None)
    if kind != "auto" or default is None:
        return max(finalists, key=_merit)
    return _unless_clearly_beaten(default, [c for c in finalists if c is not default], n_examples)


def _unless_clearly_beaten(
    kept: CVResult, challengers: list[CVResult], n_examples: int
) -> CVResult:
    if not challengers:
        return kept
    best = max(challengers, key=_merit)
    error = math.sqrt(kept.accuracy * (1 - kept.accuracy) / n_examples)
    return best if best.accuracy > kept.accuracy + error else kept


def _merit(result: CVResult) -> tuple[float, float]:
    """Higher CV accuracy wins; on a tie, the better calibrated (lower log-loss) candidate."""
    return round(result.accuracy, 6), -result.log_loss


def _input_form(kind: str) -> tuple[type, str]:
    """What a kind learns from, and its name in an error."""
    cls = HEAD_KINDS.get(kind)
    if cls is not None and cls.token_layer is not None:
        return TokenStates, "token states"
    if cls is not None and cls.takes_texts:
        return TextFeatures, "pooled features with their texts"
    return np.ndarray, "pooled features"


def _factory(kind: str, params: dict[str, Any]) -> Any:
    cls = HEAD_KINDS[kind]
    return lambda: cls(**params)


def _candidates(
    kind: str,
    X: Features,
    y: np.ndarray,
    folds: int,
    started: float,
    budget_s: float,
    teach_only: np.ndarray | None,
    on_fold: Callable[[], None],
) -> list[CVResult]:
    """Cross-validated candidates; ``auto`` stops trying kinds once its budget is spent."""
    if not folds:
        return []
    kinds = AUTO_KINDS if kind == "auto" else (kind,)
    results: list[CVResult] = []
    for each in kinds:
        for params in CANDIDATES[each]:
            if kind == "auto" and results and _would_overrun(results, each, started, budget_s):
                return results
            quick = _factory(each, {**params, **CV_SHORTCUTS.get(each, {})})
            results.append(cross_validate(each, params, quick, X, y, folds, teach_only, on_fold))
    return results


def _would_overrun(results: list[CVResult], kind: str, started: float, budget_s: float) -> bool:
    """Whether a candidate of ``kind`` would end past the budget, foreseen from the timed ones
    (a loaded machine slows them all alike, so it skips the slow kinds, not the budget)."""
    foreseen = max(r.seconds * RELATIVE_CV_COST[kind] / RELATIVE_CV_COST[r.kind] for r in results)
    return time.perf_counter() - started + foreseen > budget_s


def _fit_multilabel(
    features: np.ndarray,
    labels: Sequence[Any],
    inputs: Sequence[Hashable],
    started: float,
) -> tuple[Head, TrainingReport]:
    label_sets = [tuple(sorted({str(v) for v in row})) for row in labels]
    head = HEAD_KINDS["multilabel"]().fit(features, label_sets)
    proba = head.predict_proba(features)
    threshold = head.params["threshold"]
    truth = np.asarray([[c in row for c in head.classes_] for row in label_sets])
    exact = float(np.mean(((proba >= threshold) == truth).all(axis=1)))
    report = TrainingReport(
        kind="multilabel",
        params=head.params,
        examples_per_label=_label_counts(label_sets),
        train_accuracy=round(exact, 4),
        cv_folds=0,
        cv_accuracy=None,
        cv_macro_f1=None,
        temperature=1.0,
        abstain=None,
        fit_ms=round((time.perf_counter() - started) * 1000, 1),
        warnings=data_warnings(inputs, label_sets),
    )
    return head, report
