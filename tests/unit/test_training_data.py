"""A version's stored training set: what "base_version" builds on, read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

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
