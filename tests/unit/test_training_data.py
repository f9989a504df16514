"""A version's stored training set: what "base_version" builds on, read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from adapters import TokenStates
from service.errors import InvalidExamples
from service.training_data import TrainingSet, digest, training_set


def test_round_trip_keeps_features_labels_and_digests(features):
    stored = training_set(features.train_X, features.train_y, features.train_text)
    data = stored.to_bytes()
    assert features.train_text[0].encode() not in data  # digests only, never the texts
    back = TrainingSet.from_bytes(data)
    assert back.labels == features.train_y
    assert back.digests == [digest(text) for text in features.train_text]
    # float16 storage: the features come back to within half a float16 step.
    np.testing.assert_allclose(back.features, features.train_X, atol=1e-3)
    assert back.features.dtype == np.float32


def test_multilabel_sets_stay_tuples():
    stored = training_set(np.ones((2, 4), np.float32), [("a", "b"), ()], ["x", "y"])
    assert TrainingSet.from_bytes(stored.to_bytes()).labels == [("a", "b"), ()]


def test_extending_appends_and_refuses_mixed_label_forms():
    single = training_set(np.ones((1, 4), np.float32), ["a"], ["x"])
    more = training_set(np.zeros((2, 4), np.float32), ["b", "c"], ["y", "z"])
    grown = single.extended(more)
    assert grown.labels == ["a", "b", "c"] and grown.features.shape == (3, 4)
    with pytest.raises(InvalidExamples, match="mix single labels and label lists"):
        single.extended(training_set(np.ones((1, 4), np.float32), [("a",)], ["w"]))


def token_states(lengths: list[int], seed: int = 0) -> TokenStates:
    rng = np.random.default_rng(seed)
    return TokenStates.from_rows([rng.normal(size=(n, 4)).astype(np.float32) for n in lengths])


def test_token_states_round_trip_row_by_row_with_their_lengths():
    states = token_states([3, 1, 5])
    assert states.hidden.shape == (3, 5, 4)
    assert states.hidden[1, 1:].sum() == 0  # padding past an input's own tokens
    back = TrainingSet.from_bytes(training_set(states, ["a", "b", "a"], ["x", "y", "z"]).to_bytes())
    assert isinstance(back.features, TokenStates)
    assert back.features.lengths.tolist() == [3, 1, 5]
    for got, want in zip(back.features.rows(), states.rows(), strict=True):
        np.testing.assert_allclose(got, want, atol=5e-3)  # float16 storage


def test_token_states_select_rows_and_trim_the_padding():
    states = token_states([3, 1, 5, 2])
    picked = states[np.array([1, 3])]
    assert picked.lengths.tolist() == [1, 2]
    assert picked.hidden.shape == (2, 2, 4)  # padded to the longest picked, not to 5
    masked = states[np.array([True, False, False, True])]
    np.testing.assert_array_equal(masked.hidden[1], states.hidden[3, :3])


def test_a_tuned_set_does_not_extend_a_pooled_one_either_way():
    pooled = training_set(np.ones((1, 4), np.float32), ["a"], ["x"])
    tuned = training_set(token_states([2]), ["b"], ["y"])
    assert len(tuned.extended(training_set(token_states([4]), ["c"], ["z"]))) == 2
    with pytest.raises(InvalidExamples, match="kept its examples as pooled features") as found:
        pooled.extended(tuned)
    assert found.value.field == "base_version"
    with pytest.raises(InvalidExamples, match="kept its examples as the token states that enter"):
        tuned.extended(pooled)


def test_a_matching_set_keeps_its_layer_and_extends_only_a_matching_one():
    matched = training_set(token_states([3]), ["a"], ["x"], token_layer="top")
    back = TrainingSet.from_bytes(matched.to_bytes())
    assert back.token_layer == "top"
    tuned = TrainingSet.from_bytes(training_set(token_states([2]), ["b"], ["y"]).to_bytes())
    assert tuned.token_layer == "below_top"
    grown = back.extended(training_set(token_states([4]), ["c"], ["z"], token_layer="top"))
    assert (len(grown), grown.token_layer) == (2, "top")
    with pytest.raises(InvalidExamples) as found:
        back.extended(tuned)
    assert "a matching head's and kept its examples as the token states that leave" in str(
        found.value
    )
    assert 'send "kind": "matching"' in str(found.value)
    with pytest.raises(InvalidExamples, match="that enter the top layer, which only a tuned"):
        tuned.extended(matched)


def test_a_hybrid_set_keeps_its_texts_exactly():
    texts = ["Où est ma carte ? 💳", "", "my card\nnever came", "x" * 3000]
    stored = training_set(np.ones((4, 4), np.float32), ["a", "b", "a", "b"], texts, keep_texts=True)
    back = TrainingSet.from_bytes(stored.to_bytes())
    assert back.texts == texts
    learns_from = back.with_texts()
    assert learns_from.features.shape == (4, 4) and learns_from.ngrams.shape == (4, 4096)
    assert learns_from.ngrams[1].nnz == 0 < learns_from.ngrams[0].nnz  # "" has no n-grams


def test_a_hybrid_head_cannot_grow_from_a_set_without_texts():
    hybrid = training_set(np.ones((1, 4), np.float32), ["a"], ["x"], keep_texts=True)
    plain = training_set(np.zeros((2, 4), np.float32), ["b", "c"], ["y", "z"])
    assert hybrid.extended(hybrid).texts == ["x", "x"]
    assert hybrid.extended(plain).texts is None  # a linear head may still grow from it
    with pytest.raises(InvalidExamples, match="kept no texts") as refused:
        plain.extended(hybrid).kept_texts()
    assert refused.value.field == "base_version"


def test_descriptions_are_kept_marked_and_replaced_label_by_label():
    base = training_set(
        np.arange(12, dtype=np.float32).reshape(4, 3), list("abab"), list("wxyz"), descriptions=2
    )
    assert (len(base), base.n_examples, base.teach_only_mask()) == (
        4,
        2,
        [False, False, True, True],
    )
    back = TrainingSet.from_bytes(base.to_bytes())
    assert back.teach_only == frozenset({2, 3})
    grown = back.extended(
        training_set(np.ones((2, 3), np.float32), ["a", "b"], ["u", "v"], descriptions=1)
    )
    assert grown.teach_only == frozenset({2, 3, 5})
    replaced = grown.without_descriptions_of({"a"})  # row 2 describes "a"
    assert replaced.labels == ["a", "b", "b", "a", "b"]
    assert replaced.teach_only == frozenset({2, 4})
    assert replaced.features[2].tolist() == [9.0, 10.0, 11.0]
    assert training_set(np.ones((1, 3), np.float32), ["a"], ["x"]).teach_only_mask() is None
