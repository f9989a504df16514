"""The tuned head on a small synthetic layer: its saved state, and what it refuses to read.

Learning real intents with the real backbone's top layer is tested over HTTP in
tests/integration/test_quality.py; here a 8-wide layer keeps the mechanics fast to check.
"""

from __future__ import annotations

import numpy as np
import pytest

from adapters import (
    HeadState,
    HeadStateError,
    TokenStates,
    TopLayer,
    TrainingDataError,
    TunedHead,
    head_from_state,
)
from adapters.training import fit_head

WIDTH = 8


def top_layer(seed: int = 0) -> TopLayer:
    """A BERT-named layer with random weights, as text_top_layer would read from a file."""
    rng = np.random.default_rng(seed)
    shapes = {
        "attention.self.query": (WIDTH, WIDTH),
        "attention.self.key": (WIDTH, WIDTH),
        "attention.self.value": (WIDTH, WIDTH),
        "attention.output.dense": (WIDTH, WIDTH),
        "intermediate.dense": (4 * WIDTH, WIDTH),
        "output.dense": (WIDTH, 4 * WIDTH),
    }
    tensors = {}
    for name, shape in shapes.items():
        tensors[f"{name}.weight"] = rng.normal(0, 0.2, shape).astype(np.float32)
        tensors[f"{name}.bias"] = np.zeros(shape[0], np.float32)
    for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
        tensors[f"{norm}.weight"] = np.ones(WIDTH, np.float32)
        tensors[f"{norm}.bias"] = np.zeros(WIDTH, np.float32)
    config = {"d_model": WIDTH, "nhead": 2, "dim_feedforward": 4 * WIDTH, "layer_norm_eps": 1e-12}
    return TopLayer.from_bert(tensors, config)


def two_topics(n: int, seed: int = 1) -> tuple[TokenStates, list[str]]:
    """Inputs of 2 to 6 tokens whose states lean one way per label."""
    rng = np.random.default_rng(seed)
    direction = {"up": np.eye(WIDTH)[0] * 3, "down": -np.eye(WIDTH)[0] * 3}
    labels = ["up" if i % 2 else "down" for i in range(n)]
    rows = [
        rng.normal(size=(int(rng.integers(2, 7)), WIDTH)).astype(np.float32) + direction[label]
        for label in labels
    ]
    return TokenStates.from_rows(rows, top_layer()), labels


def test_a_tuned_head_learns_and_round_trips_through_its_state():
    states, labels = two_topics(40)
    head = TunedHead(epochs=3, precision="float32").fit(states, labels)
    test, truth = two_topics(20, seed=2)
    predicted = np.asarray(head.classes_)[head.predict_proba(test).argmax(axis=1)]
    assert (predicted == np.asarray(truth)).mean() >= 0.9
    state = head.to_state()
    assert {"layer.linear1.weight", "layer.self_attn.in_proj_weight", "coef"} <= set(state.tensors)
    back = head_from_state(HeadState.from_serialized(state.config_json(), state.tensor_bytes()))
    np.testing.assert_array_equal(back.predict_proba(test), head.predict_proba(test))


def test_a_tuned_state_whose_tensors_do_not_fit_its_layer_is_refused():
    states, labels = two_topics(20)
    state = TunedHead(epochs=1, precision="float32").fit(states, labels).to_state()
    for name, broken in (
        ("coef", np.zeros((3, WIDTH), np.float32)),  # three rows for two classes
        ("layer.linear1.weight", np.zeros((5, WIDTH), np.float32)),
    ):
        tensors = {**state.tensors, name: broken}
        with pytest.raises(HeadStateError):
            head_from_state(HeadState(state.config, tensors))


def test_tuned_heads_read_token_states_and_the_others_pooled_features():
    states, labels = two_topics(12)
    with pytest.raises(TrainingDataError, match="reads token states"):
        TunedHead().fit(np.zeros((12, WIDTH), np.float32), labels)
    with pytest.raises(TrainingDataError, match="a linear head learns from pooled features"):
        fit_head("linear", states, labels, list(range(12)))
    with pytest.raises(TrainingDataError, match="a tuned head learns from token states"):
        fit_head("tuned", np.zeros((12, WIDTH), np.float32), labels, list(range(12)))
    with pytest.raises(TrainingDataError, match="needs the backbone's top layer"):
        TunedHead().fit(states.with_top(None), labels)
