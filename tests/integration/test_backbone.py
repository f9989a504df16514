"""The real packaged backbone: offline loading, frozen weights, fingerprints, truncation, dtypes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from service.backbone import TextBackbone, text_model_dir
from service.settings import DEFAULT_TEXT_BACKBONE
from tests.integration.conftest import graft_client, registry_snapshot


def load(dtype: torch.dtype, model_dir: Path | None = None) -> TextBackbone:
    return TextBackbone(
        model_dir or text_model_dir(DEFAULT_TEXT_BACKBONE),
        name=DEFAULT_TEXT_BACKBONE,
        dtype=dtype,
        max_tokens=256,
    )


@pytest.fixture(scope="module")
def fp32() -> TextBackbone:
    return load(torch.float32)


def test_backbone_is_frozen(fp32):
    assert not fp32.model.training
    assert all(not p.requires_grad for p in fp32.model.parameters())


def test_fixture_features_are_what_the_backbone_computes(fp32, features):
    live = fp32.forward(fp32.prepare(features.test_text))
    cosine = np.sum(live * features.test_X, axis=1) / np.linalg.norm(features.test_X, axis=1)
    assert cosine.min() > 0.999
    assert fp32.fingerprint == features.fingerprint


def test_bfloat16_features_match_float32(fp32, features):
    bf16 = load(torch.bfloat16)
    assert bf16.fingerprint == fp32.fingerprint  # same weights, same features up to rounding
    texts = features.test_text[:40]
    a = fp32.forward(fp32.prepare(texts))
    b = bf16.forward(bf16.prepare(texts))
    assert np.sum(a * b, axis=1).min() > 0.999


def test_long_texts_are_truncated_to_the_model_limit(fp32):
    ids = fp32.prepare(["word " * 2000, "short"])
    assert len(ids[0]) == 256
    assert len(ids[1]) == 3  # [CLS] short [SEP]
    assert fp32.forward(ids).shape == (2, 384)


def test_features_are_unit_vectors(fp32):
    out = fp32.forward(fp32.prepare(["a", "some longer sentence about a card payment"]))
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
    assert other.pooling.mode == "cls"
    assert other.fingerprint != fp32.fingerprint


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
