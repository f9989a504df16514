"""Classic transfer learning: a per-tenant, fine-tuned copy of the backbone's top transformer layer.

The backbone's lower layers stay shared and frozen. A tuned head takes the token states that
enter the backbone's top layer (:class:`TokenStates`), runs its own trainable copy of that layer
(:class:`TopLayer` is where the copy starts), pools and normalises as the backbone does, and
classifies with a linear layer. Training starts the classifier where the linear head would end
(logistic regression on the frozen top's features) and then fine-tunes layer and classifier
together for a few epochs, so it can only move away from the linear head where the examples
pull it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from adapters.base import (
    Head,
    HeadState,
    HeadStateError,
    TokenLayer,
    TrainingDataError,
    as_labels,
)
from adapters.linear import LinearHead
from adapters.stopping import checkpoint

#: Prefix of the layer's tensors in a tuned head's saved state.
LAYER_PREFIX = "layer."


@dataclass(frozen=True)
class TopLayer:
    """The backbone's top transformer layer: its shape and pretrained weights, the starting point.

    ``weights`` use the parameter names of :class:`torch.nn.TransformerEncoderLayer`, which
    computes exactly what a BERT layer does (post-norm attention and GELU feed-forward).
    """

    config: dict[str, Any]  # d_model, nhead, dim_feedforward, layer_norm_eps, pooling
    weights: dict[str, np.ndarray]

    @classmethod
    def from_bert(cls, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> TopLayer:
        """From a BERT layer's tensors, named as in transformers without the layer prefix."""

        def both(name: str) -> tuple[np.ndarray, np.ndarray]:
            return tensors[f"{name}.weight"], tensors[f"{name}.bias"]

        q, k, v = (both(f"attention.self.{part}") for part in ("query", "key", "value"))
        weights = {
            "self_attn.in_proj_weight": np.concatenate([q[0], k[0], v[0]]),
            "self_attn.in_proj_bias": np.concatenate([q[1], k[1], v[1]]),
        }
        for ours, theirs in (
            ("self_attn.out_proj", "attention.output.dense"),
            ("norm1", "attention.output.LayerNorm"),
            ("linear1", "intermediate.dense"),
            ("linear2", "output.dense"),
            ("norm2", "output.LayerNorm"),
        ):
            weights[f"{ours}.weight"], weights[f"{ours}.bias"] = both(theirs)
        return cls(config, {n: np.asarray(t, dtype=np.float32) for n, t in weights.items()})


@dataclass(frozen=True)
class TokenStates:
    """What a tuned head reads: per input, the token states that enter the backbone's top layer.

    ``hidden`` is zero-padded to the longest input (n x tokens x dim), ``lengths`` says how many
    tokens each input really has. ``top`` travels with training data: it is where a new head's
    layer starts; a fitted head has its own copy and ignores it.
    """

    hidden: np.ndarray
    lengths: np.ndarray
    top: TopLayer | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], top: TopLayer | None = None) -> TokenStates:
        dim = rows[0].shape[1] if rows else 0
        lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
        hidden = np.zeros((len(rows), int(lengths.max(initial=0)), dim), dtype=np.float32)
        for i, row in enumerate(rows):
            hidden[i, : len(row)] = row
        return cls(hidden, lengths, top)

    def rows(self) -> list[np.ndarray]:
        return [self.hidden[i, :n] for i, n in enumerate(self.lengths)]

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: Any) -> TokenStates:
        """The states of some inputs (an index array or a boolean mask), padded to their longest."""
        lengths = self.lengths[index]
        longest = int(lengths.max(initial=0))
        return TokenStates(self.hidden[index][:, :longest], lengths, self.top)

    def concat(self, other: TokenStates) -> TokenStates:
        return TokenStates.from_rows(self.rows() + other.rows(), self.top or other.top)

    def with_top(self, top: TopLayer | None) -> TokenStates:
        return replace(self, top=top)


class _Tuned(nn.Module):
    """The head's network: its copy of the top layer, mean pooling, L2 norm, a linear classifier."""

    def __init__(self, layer_config: dict[str, Any], n_classes: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            d_model=int(layer_config["d_model"]),
            nhead=int(layer_config["nhead"]),
            dim_feedforward=int(layer_config["dim_feedforward"]),
            dropout=dropout,
            activation="gelu",
            layer_norm_eps=float(layer_config["layer_norm_eps"]),
            batch_first=True,
            norm_first=False,
        )
        self.classifier = nn.Linear(int(layer_config["d_model"]), n_classes)
        self.pooling = str(layer_config.get("pooling", "mean"))

    def features(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(hidden.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        out = self.layer(hidden, src_key_padding_mask=~mask)
        if self.pooling == "cls":
            return nn.functional.normalize(out[:, 0], dim=-1)
        weights = mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(hidden, lengths))


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Mini-batches of inputs of similar length (little padding), in a shuffled order."""
    order = np.argsort(lengths + rng.random(len(lengths)), kind="stable")
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class TunedHead(Head):
    """A fine-tuned copy of the backbone's top layer plus a linear classifier.

    ``lr`` is the layer's learning rate (the classifier's is ten times higher: it starts from
    a fit, the layer from pretrained weights it should only nudge); ``C`` regularises the
    logistic regression that starts the classifier. ``precision`` is that of training's matrix
    products: ``"auto"`` runs them in bfloat16 where the CPU has it natively (about 1.5x
    faster), the weights and optimiser staying float32; predictions are always float32.
    """

    kind: ClassVar[str] = "tuned"
    token_layer: ClassVar[TokenLayer | None] = "below_top"

    def __init__(
        self,
        epochs: int = 4,
        lr: float = 1e-4,
        batch: int = 64,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        C: float = 16.0,
        seed: int = 0,
        precision: str = "auto",
    ) -> None:
        self.epochs = epochs
        self.lr = lr
        self.batch = batch
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.C = C
        self.seed = seed
        self.precision = precision

    def fit(self, X: TokenStates, y: Sequence[str]) -> Self:
        states = check_token_states(X, self.kind)
        if states.top is None:
            raise TrainingDataError("a tuned head needs the backbone's top layer to start from")
        labels = as_labels(y, len(states))
        classes, index = np.unique(labels, return_inverse=True)
        if len(classes) < self.min_labels:
            raise TrainingDataError(
                f"a tuned head needs at least {self.min_labels} distinct labels, got {len(classes)}"
            )
        torch.manual_seed(self.seed)
        network = _pretrained(states.top, len(classes), self.dropout).eval()
        width = int(states.top.config["d_model"])
        frozen = _apply(network.features, states, width, mixed=_mixed(self.precision))
        start = LinearHead(C=self.C).fit(frozen, labels.tolist())  # classes_ sorted, as np.unique's
        with torch.no_grad():
            network.classifier.weight.copy_(torch.from_numpy(start.coef_))
            network.classifier.bias.copy_(torch.from_numpy(start.intercept_))
        hidden = torch.from_numpy(states.hidden)
        lengths = torch.from_numpy(states.lengths)
        self._train(network, hidden, lengths, torch.from_numpy(index.astype(np.int64)))
        self.classes_ = [str(c) for c in classes]
        self.n_features_in_ = int(states.top.config["d_model"])
        self.layer_config_ = dict(states.top.config)
        self.network_ = network.eval().requires_grad_(False)
        return self

    def _train(
        self, network: _Tuned, hidden: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
    ) -> None:
        optimiser = torch.optim.AdamW(
            [
                {"params": network.layer.parameters(), "lr": self.lr},
                {"params": network.classifier.parameters(), "lr": self.lr * 10},
            ],
            weight_decay=0.01,
        )
        rng = np.random.default_rng(self.seed)
        mixed = _mixed(self.precision)
        network.train()
        for _ in range(self.epochs):
            checkpoint()
            for rows in _batches(lengths.numpy(), self.batch, rng):
                picked = torch.from_numpy(rows)
                longest = int(lengths[picked].max())
                # Weights and optimiser stay float32; only the matrix products run in bfloat16.
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
                    logits = network(hidden[picked, :longest], lengths[picked])
                loss = nn.functional.cross_entropy(
                    logits.float(), targets[picked], label_smoothing=self.label_smoothing
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    def _check_predict_input(self, X: Any) -> Any:
        self._check_fitted()
        states = check_token_states(X, self.kind)
        if states.hidden.shape[2] != self.n_features_in_:
            raise TrainingDataError(
                f"head expects token states of width {self.n_features_in_}, "
                f"got {states.hidden.shape[2]}"
            )
        return states

    def _proba(self, X: Any) -> np.ndarray:
        # float32 here whatever ``precision`` says: bfloat16 rounding would make a text's
        # scores move with the padding of the batch it came in (by about 1e-5).
        logits = _apply(self.network_, X, len(self.classes_), mixed=False)
        return np.asarray(softmax(logits, axis=1), dtype=np.float32)

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {
                "epochs": self.epochs,
                "lr": self.lr,
                "batch": self.batch,
                "dropout": self.dropout,
                "label_smoothing": self.label_smoothing,
                "C": self.C,
                "seed": self.seed,
                "precision": self.precision,
            },
            "layer": self.layer_config_,
        }
        tensors = {
            LAYER_PREFIX + name: t.numpy() for name, t in self.network_.layer.state_dict().items()
        }
        tensors["coef"] = self.network_.classifier.weight.numpy()
        tensors["intercept"] = self.network_.classifier.bias.numpy()
        return HeadState(config, tensors)

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        head = cls(**state.config["params"])
        head.classes_ = list(state.config["classes"])
        head.layer_config_ = dict(state.config["layer"])
        head.n_features_in_ = int(head.layer_config_["d_model"])
        network = _Tuned(head.layer_config_, len(head.classes_), head.dropout)
        layer = {
            name.removeprefix(LAYER_PREFIX): torch.from_numpy(np.asarray(t, dtype=np.float32))
            for name, t in state.tensors.items()
            if name.startswith(LAYER_PREFIX)
        }
        try:
            network.layer.load_state_dict(layer)
            network.classifier.weight.data = torch.from_numpy(state.tensors["coef"])
            network.classifier.bias.data = torch.from_numpy(state.tensors["intercept"])
        except RuntimeError as exc:
            raise HeadStateError(f"tuned head tensors do not fit its layer: {exc}") from exc
        if network.classifier.weight.shape != (len(head.classes_), head.n_features_in_):
            raise HeadStateError("tuned head classifier does not match its classes")
        head.network_ = network.eval().requires_grad_(False)
        return head


def _apply(function: Any, states: TokenStates, width: int, *, mixed: bool) -> np.ndarray:
    """``function(hidden, lengths)`` over inputs of similar length at a time: padding every
    input to the longest of the set would make a short query pay for a long one."""
    out = np.empty((len(states), width), dtype=np.float32)
    order = np.argsort(states.lengths, kind="stable")
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=mixed):
        for start in range(0, len(order), 64):
            rows = order[start : start + 64]
            part = states[rows]
            result = function(torch.from_numpy(part.hidden), torch.from_numpy(part.lengths))
            out[rows] = result.float().numpy()
    return out


def pretrained_features(states: TokenStates, *, precision: str = "auto") -> np.ndarray:
    """What the backbone's own top layer makes of ``states``: its pooled, normalised features."""
    if states.top is None:
        raise TrainingDataError("these token states carry no top layer to run them through")
    network = _pretrained(states.top, n_classes=1, dropout=0.0).eval()
    width = int(states.top.config["d_model"])
    return _apply(network.features, states, width, mixed=_mixed(precision))


def _pretrained(top: TopLayer, n_classes: int, dropout: float) -> _Tuned:
    network = _Tuned(top.config, n_classes, dropout)
    network.layer.load_state_dict({name: torch.from_numpy(w) for name, w in top.weights.items()})
    return network


def _mixed(precision: str) -> bool:
    return precision == "bfloat16" or (precision == "auto" and bf16_is_native())


def bf16_is_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): 2-3x faster there."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # private helpers moved: be conservative
        return False


def check_token_states(X: Any, kind: str) -> TokenStates:
    """``X`` as token states a head of ``kind`` can read, or why not."""
    if not isinstance(X, TokenStates):
        raise TrainingDataError(f"a {kind} head reads token states, not pooled features")
    if not np.isfinite(X.hidden).all():
        raise TrainingDataError("token states contain NaN or infinite values")
    if (X.lengths < 1).any():
        raise TrainingDataError("every input needs at least one token")
    return X
