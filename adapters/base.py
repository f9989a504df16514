"""The contract every head kind follows: fit on features, predict probabilities, save as tensors.

A head is a scikit-learn style estimator. The constructor only stores hyperparameters;
``fit(X, y)`` validates and returns ``self``; learned state ends in ``_`` (``classes_``);
``predict_proba`` columns follow ``classes_``. ``to_state`` / ``from_state`` turn a fitted head
into a :class:`HeadState` (a JSON config plus named float tensors) and back, which is all that is
ever stored: no pickle, so loading a head can never run code.

Every single-label head also carries a softmax ``temperature_`` (1 until training calibrates
it on cross-validated predictions) and an optional ``abstain_threshold_``: the base class applies
both, so the kinds only compute raw probabilities and their own state.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

#: Which token states a head reads: those entering the backbone's top layer, or its output.
TokenLayer = Literal["below_top", "top"]


class NotFittedError(RuntimeError):
    """A head was used before ``fit`` (or ``from_state``) gave it learned state."""


class TrainingDataError(ValueError):
    """The examples cannot train this kind of head (too few labels, mismatched lengths, ...)."""


class HeadStateError(ValueError):
    """Stored state does not describe a valid head of the kind it names."""


@dataclass(frozen=True)
class HeadState:
    """A head's complete saved form: JSON-serialisable ``config`` and named float32 ``tensors``."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    def config_json(self) -> str:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":"))

    def tensor_bytes(self) -> bytes:
        return save_tensors({name: np.ascontiguousarray(t) for name, t in self.tensors.items()})

    @classmethod
    def from_serialized(cls, config_json: str, tensor_bytes: bytes) -> HeadState:
        try:
            config = json.loads(config_json)
            tensors = load_tensors(tensor_bytes)
        except Exception as exc:
            raise HeadStateError(f"unreadable head state: {exc}") from exc
        if not isinstance(config, dict) or "kind" not in config:
            raise HeadStateError("head config must be a JSON object with a 'kind'")
        return cls(config=config, tensors=tensors)

    @property
    def nbytes(self) -> int:
        """Approximate in-memory size: tensors plus the config text."""
        return sum(t.nbytes for t in self.tensors.values()) + len(self.config_json())


def as_features(X: Any) -> np.ndarray:
    """Check a feature matrix: 2-D, finite, float32."""
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim != 2:
        raise TrainingDataError(f"features must be a 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise TrainingDataError("features contain NaN or infinite values")
    return arr


def as_labels(y: Sequence[str], n_rows: int) -> np.ndarray:
    labels = np.asarray([str(v) for v in y], dtype=object)
    if labels.shape != (n_rows,):
        raise TrainingDataError(f"got {n_rows} feature rows but {labels.shape[0]} labels")
    return labels


def a_head_of(kind: str) -> str:
    """ "a linear head", "an mlp head", "an auto head": the kind as an error message says it."""
    return f"{'an' if kind in ('auto', 'mlp') else 'a'} {kind} head"


def tempered(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: temperature scaling applied to probabilities (the logits' shift
    does not matter to a softmax, so ``log p`` stands in for them)."""
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


class Head(ABC):
    """Base class of every head kind; subclasses set ``kind`` and implement the four methods
    ``fit``, ``_proba`` (uncalibrated probabilities), ``_state`` and ``_from_state``."""

    kind: ClassVar[str]
    #: The smallest number of distinct labels this kind can learn from.
    min_labels: ClassVar[int] = 2
    #: Multilabel heads score each label on its own; the others rank labels against each other.
    multilabel: ClassVar[bool] = False
    #: Tuned and matching heads read :class:`~adapters.tuned.TokenStates`, not pooled features:
    #: a tuned head those that enter the backbone's top layer ("below_top"), a matching head
    #: those that leave it ("top"). None: the head reads pooled features.
    token_layer: ClassVar[TokenLayer | None] = None
    #: Hybrid heads read :class:`~adapters.hybrid.TextFeatures`: pooled features and the texts.
    takes_texts: ClassVar[bool] = False
    #: Matching heads keep their examples, and each matches its own tokens: their accuracy on
    #: them says nothing (1.0 on every banking77 draw, 1 to 10 shots), and measuring it costs a
    #: pass of every example against the whole bank, as much as all the folds' matching. Their
    #: report leaves it out.
    keeps_its_examples: ClassVar[bool] = False

    classes_: list[str]
    n_features_in_: int
    temperature_: float = 1.0
    abstain_threshold_: float | None = None

    @abstractmethod
    def fit(self, X: Any, y: Any) -> Self:
        """``X``: pooled features (n x dim), token states for a tuned head, or features with
        their texts for a hybrid head."""

    @abstractmethod
    def _proba(self, X: Any) -> np.ndarray: ...

    @abstractmethod
    def _state(self) -> HeadState: ...

    @classmethod
    @abstractmethod
    def _from_state(cls, state: HeadState) -> Self: ...

    @property
    def params(self) -> dict[str, Any]:
        """The hyperparameters, as stored."""
        return dict(self._state().config["params"])

    @property
    def reported_params(self) -> dict[str, Any]:
        """The hyperparameters as a training report shows them: as stored, but where one is
        left for the fit to choose (stored as ``None``), the value it chose."""
        return self.params

    def predict_proba(self, X: Any) -> np.ndarray:
        return tempered(self._proba(self._check_predict_input(X)), self.temperature_)

    def to_state(self) -> HeadState:
        self._check_fitted()
        state = self._state()
        config = {**state.config, "temperature": float(self.temperature_)}
        if self.abstain_threshold_ is not None:
            config["abstain_threshold"] = float(self.abstain_threshold_)
        return HeadState(config, state.tensors)

    def resident_bytes(self, stored_bytes: int) -> int:
        """The memory this head holds once loaded from a state of ``stored_bytes`` bytes
        (:attr:`HeadState.nbytes`): what a cache of fitted heads counts. The same, unless a kind
        holds its tensors wider than it stores them."""
        return stored_bytes

    @classmethod
    def from_state(cls, state: HeadState) -> Self:
        cls._check_state_kind(state)
        head = cls._from_state(state)
        head.temperature_ = float(state.config.get("temperature", 1.0))
        threshold = state.config.get("abstain_threshold")
        head.abstain_threshold_ = None if threshold is None else float(threshold)
        if not head.temperature_ > 0:
            raise HeadStateError("a head's temperature must be positive")
        return head

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _check_training_data(self, X: Any, y: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        features = as_features(X)
        labels = as_labels(y, features.shape[0])
        n_labels = len(set(labels.tolist()))
        if n_labels < self.min_labels:
            raise TrainingDataError(
                f"{a_head_of(self.kind)} needs at least {self.min_labels} distinct labels, "
                f"got {n_labels}"
            )
        return features, labels

    def _check_predict_input(self, X: Any) -> np.ndarray:
        self._check_fitted()
        features = as_features(X)
        if features.shape[1] != self.n_features_in_:
            raise TrainingDataError(
                f"head expects {self.n_features_in_} features per row, got {features.shape[1]}"
            )
        return features

    @classmethod
    def _check_state_kind(cls, state: HeadState) -> None:
        if state.kind != cls.kind:
            raise HeadStateError(f"state is for a {state.kind!r} head, not {cls.kind!r}")
