"""The real packaged backbone: offline loading, frozen weights, fingerprints, truncation, dtypes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adapters.tuned import TokenStates, pretrained_features
from service.backbone import TextInputs, TextModel, text_model_dir, text_top_layer
from service.settings import DEFAULT_TEXT_BACKBONE
from tests.integration.conftest import graft_client, registry_snapshot

MODEL_DIR = text_model_dir(DEFAULT_TEXT_BACKBONE)


def load(dtype: torch.dtype, model_dir: Path = MODEL_DIR) -> TextModel:
    return TextModel(model_dir, name=DEFAULT_TEXT_BACKBONE, dtype=dtype)


@pytest.fixture(scope="module")
def tokens() -> TextInputs:
    return TextInputs(MODEL_DIR, max_tokens=256)


@pytest.fixture(scope="module")
def fp32() -> TextModel:
    return load(torch.float32)


def test_backbone_is_frozen(fp32):
    assert not fp32.model.training
    assert all(not p.requires_grad for p in fp32.model.parameters())


def test_fixture_features_are_what_the_backbone_computes(fp32, tokens, features):
    live = fp32.forward(tokens.prepare(features.test_text))
    cosine = np.sum(live * features.test_X, axis=1) / np.linalg.norm(features.test_X, axis=1)
    assert cosine.min() > 0.999
    assert fp32.info.fingerprint == features.fingerprint


def test_features_match_sentence_transformers(fp32, tokens, features):
    """The reference implementation of this model, loaded from the same package."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(MODEL_DIR), device="cpu")
    texts = features.test_text[:20]
    expected = reference.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(fp32.forward(tokens.prepare(texts)), expected, atol=1e-5)


def test_bfloat16_features_match_float32(fp32, tokens, features):
    bf16 = load(torch.bfloat16)
    assert bf16.info.fingerprint == fp32.info.fingerprint  # same weights, features up to rounding
    assert bf16.info.dtype == "bfloat16"
    texts = features.test_text[:40]
    a = fp32.forward(tokens.prepare(texts))
    b = bf16.forward(tokens.prepare(texts))
    assert np.sum(a * b, axis=1).min() > 0.999


def test_long_texts_are_truncated_to_the_model_limit(fp32, tokens):
    ids = tokens.prepare(["word " * 2000, "short"])
    assert len(ids[0]) == 256
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP] survive truncation
    assert len(ids[1]) == 3  # [CLS] short [SEP]
    assert fp32.forward(ids).shape == (2, 384)


def test_features_are_unit_vectors(fp32, tokens):
    out = fp32.forward(tokens.prepare(["a", "some longer sentence about a card payment"]))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def cls_pooled_copy(tmp_path: Path) -> Path:
    """The same weights with CLS pooling: a different feature extractor, so another fingerprint."""
    source = text_model_dir(DEFAULT_TEXT_BACKBONE)
    copy = tmp_path / "minilm-cls"
    shutil.copytree(source, copy, symlinks=False, ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").symlink_to(source / "model.safetensors")
    pooling = copy / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling.write_text(json.dumps(config))
    return copy


def test_fingerprint_changes_with_the_feature_extractor(fp32, tmp_path):
    other = load(torch.float32, cls_pooled_copy(tmp_path))
    assert other.pooling == "cls"
    assert other.info.fingerprint != fp32.info.fingerprint


def test_head_from_another_backbone_is_refused_with_409(tmp_path):
    home = tmp_path / "home"
    examples = [
        {"text": "I love it", "label": "pos"},
        {"text": "great", "label": "pos"},
        {"text": "I hate it", "label": "neg"},
        {"text": "awful", "label": "neg"},
    ]
    with graft_client(home, backbone=str(cls_pooled_copy(tmp_path))) as other:
        trained = other.post("/v1/heads/train", json={"head": "mood", "examples": examples})
        assert trained.status_code == 200
        foreign = trained.json()["backbone"]["fingerprint"]
    before = registry_snapshot(home)
    with graft_client(home) as default:
        response = default.post("/v1/predict", json={"head": "mood", "inputs": ["nice"]})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "backbone_mismatch"
    assert foreign in error["message"]
    assert registry_snapshot(home) == before


def test_token_states_through_a_copy_of_the_top_layer_give_the_backbone_features(fp32, tokens):
    """A tuned head's starting point computes exactly what the frozen top layer computes."""
    texts = ["a", "where is my new card?", "I was charged twice for one transfer last week"]
    items = tokens.prepare(texts)
    features, states = fp32.forward_with_states(items, [(row, "below_top") for row in range(3)])
    assert [len(s) for s in states] == [len(i) for i in items]
    assert states[0].dtype == np.float32
    top = text_top_layer(MODEL_DIR)
    assert top is not None and top.config["d_model"] == 384
    copied = pretrained_features(TokenStates.from_rows(states, top), precision="float32")
    np.testing.assert_allclose(copied, features, atol=1e-5)


def test_the_top_layers_output_tokens_pool_to_the_backbone_features(fp32, tokens):
    """What a matching head reads: the tokens whose mean is the sentence's features, asked for
    beside another row's states of the other layer in the same pass."""
    texts = ["where is my new card?", "I was charged twice for one transfer last week"]
    items = tokens.prepare(texts)
    features, states = fp32.forward_with_states(items, [(1, "top"), (0, "below_top"), (0, "top")])
    assert [len(s) for s in states] == [len(items[1]), len(items[0]), len(items[0])]
    for row, tokens_out in ((1, states[0]), (0, states[2])):
        mean = tokens_out.mean(axis=0)
        np.testing.assert_allclose(mean / np.linalg.norm(mean), features[row], atol=1e-6)
    assert not np.allclose(states[1], states[2])  # entering the top layer is not leaving it
