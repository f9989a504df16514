"""The matching head on small synthetic token states: its scores, its saved state, what it refuses.

Learning real intents from the real backbone's output is tested over HTTP in
tests/integration/test_quality.py; here 8-wide states keep the mechanics fast to check.
"""

from __future__ import annotations

import numpy as np
import pytest

from adapters import (
    HeadState,
    HeadStateError,
    MatchingHead,
    TokenStates,
    TrainingDataError,
    head_from_state,
)
from adapters.base import tempered
from adapters.matching import content_tokens, max_sim
from adapters.training import fit_head
from service.cache import HeadCache
from tests.unit.test_tuned import WIDTH, two_topics


def test_max_sim_is_each_query_tokens_best_match_per_label_averaged():
    rng = np.random.default_rng(0)
    bank = content_tokens(rng.normal(size=(9, WIDTH)).astype(np.float32))  # 7 rows: [1:-1]
    counts = [3, 1, 3]
    queries = [rng.normal(size=(n, WIDTH)).astype(np.float32) for n in (2, 5, 7, 3)]
    got = max_sim(queries, bank.T.copy(), counts)
    owners = np.repeat([0, 1, 2], counts)
    for query, row in zip(queries, got, strict=True):
        tokens = content_tokens(query)
        sims = tokens @ bank.T
        expected = [sims[:, owners == label].max(axis=1).mean() for label in range(3)]
        np.testing.assert_allclose(row, expected, rtol=1e-5)


def test_a_query_made_of_one_labels_tokens_matches_that_label_perfectly():
    rng = np.random.default_rng(1)
    bank = content_tokens(rng.normal(size=(8, WIDTH)).astype(np.float32))
    query = np.vstack([np.zeros((1, WIDTH)), bank[4:6], np.zeros((1, WIDTH))])  # [CLS] x x [SEP]
    scores = max_sim([query.astype(np.float32)], bank.T.copy(), [4, 2])[0]
    assert scores[1] == pytest.approx(1.0)
    assert scores[0] < 0.99


def test_a_matching_head_learns_and_round_trips_through_its_state():
    states, labels = two_topics(40)
    head = MatchingHead().fit(states, labels)
    test, truth = two_topics(20, seed=2)
    predicted = np.asarray(head.classes_)[head.predict_proba(test).argmax(axis=1)]
    assert (predicted == np.asarray(truth)).mean() >= 0.9
    state = head.to_state()
    content = int(states.lengths.sum()) - 2 * int((states.lengths > 2).sum())
    assert state.tensors["bank"].shape == (content, WIDTH)
    assert state.tensors["bank"].dtype == np.float16
    assert sum(state.config["bank_tokens_per_label"]) == content
    assert state.tensors["coef"].shape == (2, 2 * WIDTH)  # mean and max pooled
    assert set(state.tensors) == {"bank", "coef", "intercept"}
    back = head_from_state(HeadState.from_serialized(state.config_json(), state.tensor_bytes()))
    np.testing.assert_array_equal(back.predict_proba(test), head.predict_proba(test))


def test_a_matching_state_whose_tensors_do_not_fit_is_refused():
    states, labels = two_topics(20)
    state = MatchingHead().fit(states, labels).to_state()
    for name, broken in (
        ("bank", np.zeros((3, WIDTH), np.float16)),  # fewer tokens than its labels hold
        ("coef", np.zeros((2, WIDTH), np.float32)),  # the mean alone, no max
    ):
        with pytest.raises(HeadStateError):
            head_from_state(HeadState(state.config, {**state.tensors, name: broken}))


def test_fit_head_cross_validates_and_calibrates_a_matching_head():
    states, labels = two_topics(40)
    told: list[float] = []
    head, report = fit_head("matching", states, labels, list(range(40)), on_progress=told.append)
    # 5 folds and the final fit; no pass of every example against the whole bank for the
    # report, whose accuracy on the head's own examples would say nothing.
    assert told == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert (report.kind, report.cv_folds, report.train_accuracy) == ("matching", 5, None)
    assert report.cv_accuracy is not None and report.cv_accuracy >= 0.9
    direct = MatchingHead().fit(states, labels)
    # The same fit, its probabilities then tempered by the cross-validated temperature.
    assert head.temperature_ != 1.0
    np.testing.assert_allclose(
        head.predict_proba(states), tempered(direct.predict_proba(states), head.temperature_)
    )


def test_matching_heads_read_token_states_with_their_top_layer():
    states, labels = two_topics(12)
    with pytest.raises(TrainingDataError, match="a matching head reads token states"):
        MatchingHead().fit(np.zeros((12, WIDTH), np.float32), labels)
    with pytest.raises(TrainingDataError, match="a matching head learns from token states"):
        fit_head("matching", np.zeros((12, WIDTH), np.float32), labels, list(range(12)))
    with pytest.raises(TrainingDataError, match="expects 8-wide token states, got 3"):
        MatchingHead().fit(states, labels).predict_proba(TokenStates.from_rows([np.ones((2, 3))]))


def test_a_matching_head_counts_its_float32_bank_as_the_memory_it_holds():
    states, labels = two_topics(40)
    stored = MatchingHead().fit(states, labels).to_state()
    head = head_from_state(HeadState.from_serialized(stored.config_json(), stored.tensor_bytes()))
    held = head.sentence_.coef_.nbytes + head.sentence_.intercept_.nbytes
    held += head.bank_columns_.nbytes  # float32: twice the stored float16 bank
    held += len(stored.config_json())  # as a state's size counts it
    assert head.resident_bytes(stored.nbytes) == held
    assert held == stored.nbytes + stored.tensors["bank"].nbytes
    # A cache whose budget fits the stored tensors but not the loaded head does not keep it.
    cache = HeadCache(max_bytes=held - 1)
    cache.put(1, head, head.resident_bytes(stored.nbytes))
    assert cache.get(1) is None
