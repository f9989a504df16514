"""One hidden layer with dropout, trained in torch on the frozen features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from adapters.base import Head, HeadState, HeadStateError
from adapters.stopping import checkpoint


def _network(n_features: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
    )


class MLPHead(Head):
    """``Linear → GELU → Dropout → Linear``, fitted with AdamW on label-smoothed cross-entropy.

    Few-shot sets are tiny, so training is a fixed number of epochs over shuffled mini-batches
    with a fixed seed: the same examples always give the same head.
    """

    kind: ClassVar[str] = "mlp"

    def __init__(
        self,
        hidden: int = 512,
        dropout: float = 0.5,
        epochs: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 1e-2,
        seed: int = 0,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, X: np.ndarray, y: Sequence[str]) -> Self:
        features, labels = self._check_training_data(X, y)
        classes, index = np.unique(labels, return_inverse=True)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)  # the initial weights
        network = _network(features.shape[1], self.hidden, len(classes), self.dropout)
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        inputs = torch.from_numpy(features)
        targets = torch.from_numpy(index.astype(np.int64))
        batch = 128
        network.train()
        for _ in range(self.epochs):
            checkpoint()
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), batch):
                rows = order[start : start + batch]
                loss = nn.functional.cross_entropy(
                    network(inputs[rows]), targets[rows], label_smoothing=0.1
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        network.eval()
        self.classes_ = [str(c) for c in classes]
        self.n_features_in_ = features.shape[1]
        self._set_network(network)
        return self

    def _set_network(self, network: nn.Sequential) -> None:
        self.network_ = network.eval().requires_grad_(False)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = self.network_(torch.from_numpy(np.ascontiguousarray(X)))
            return torch.softmax(logits, dim=1).numpy()

    def _state(self) -> HeadState:
        config: dict[str, Any] = {
            "kind": self.kind,
            "classes": self.classes_,
            "params": {
                "hidden": self.hidden,
                "dropout": self.dropout,
                "epochs": self.epochs,
                "lr": self.lr,
                "weight_decay": self.weight_decay,
                "seed": self.seed,
            },
        }
        tensors = {
            name.replace(".", "_"): t.detach().numpy().astype(np.float32)
            for name, t in self.network_.state_dict().items()
        }
        return HeadState(config, tensors)

    @classmethod
    def _from_state(cls, state: HeadState) -> Self:
        head = cls(**state.config["params"])
        head.classes_ = list(state.config["classes"])
        first = state.tensors["0_weight"]
        network = _network(first.shape[1], head.hidden, len(head.classes_), head.dropout)
        try:
            network.load_state_dict(
                {
                    name: torch.from_numpy(np.array(state.tensors[name.replace(".", "_")]))
                    for name in network.state_dict()
                }
            )
        except RuntimeError as exc:  # shapes that do not match the config
            raise HeadStateError(f"mlp head tensors do not match its config: {exc}") from exc
        head.n_features_in_ = first.shape[1]
        head._set_network(network)
        return head
