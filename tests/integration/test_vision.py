"""The real image backbone: packaged weights, frozen, faithful to its reference, fingerprinted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.datasets import pets
from service.schemas import ImageInput
from service.settings import DEFAULT_IMAGE_BACKBONE, Settings
from service.vision import PIXEL_MEAN, PIXEL_STD, ImageInputs, ImageModel, weights_path

#: Oxford-IIIT breeds that are ImageNet-1k classes, with the class index (timm's
#: imagenet_synsets.txt order, the standard one).
IMAGENET_CLASS = {
    "Persian": 283,
    "Siamese": 284,
    "basset_hound": 161,
    "beagle": 162,
    "boxer": 242,
    "chihuahua": 151,
    "english_cocker_spaniel": 219,
    "english_setter": 212,
    "german_shorthaired": 210,
    "great_pyrenees": 257,
    "japanese_chin": 152,
    "keeshond": 261,
    "leonberger": 255,
    "miniature_pinscher": 237,
    "newfoundland": 256,
    "pomeranian": 259,
    "pug": 254,
    "saint_bernard": 247,
    "samoyed": 258,
    "scottish_terrier": 199,
    "staffordshire_bull_terrier": 179,
    "yorkshire_terrier": 187,
}


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """The 111 held-out photos, decoded and cropped as the server does."""
    inputs = ImageInputs(Settings(backbone_kind="image"))
    return inputs.prepare([ImageInput(image=p.base64()) for p in pets("test")])


@pytest.fixture(scope="module")
def fp32() -> ImageModel:
    return ImageModel(DEFAULT_IMAGE_BACKBONE, dtype=torch.float32)


def reference_model() -> torch.nn.Module:
    """The package's own loader, unchanged: no folded batch norms, NCHW, its classifier."""
    from efficientnet_lite_pytorch import EfficientNet

    path = str(weights_path(DEFAULT_IMAGE_BACKBONE))
    return EfficientNet.from_pretrained(DEFAULT_IMAGE_BACKBONE, weights_path=path).eval()


def normalised(crops: list[np.ndarray]) -> torch.Tensor:
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(torch.float32)
    return (pixels - PIXEL_MEAN) / PIXEL_STD


def embed(model: ImageModel, crops: list[np.ndarray]) -> np.ndarray:
    return np.vstack([model.forward(crops[i : i + 20]) for i in range(0, len(crops), 20)])


def test_backbone_is_frozen(fp32):
    assert not fp32.model.training
    assert all(not p.requires_grad for p in fp32.model.parameters())
    assert (fp32.info.kind, fp32.info.dim) == ("image", 1280)


def test_features_match_the_reference_implementation(fp32, crops):
    reference = reference_model()
    with torch.inference_mode():
        pooled = reference.extract_features(normalised(crops[:20])).mean(dim=(2, 3))
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    np.testing.assert_allclose(fp32.forward(crops[:20]), expected, atol=1e-5)


def test_weights_and_preprocessing_recognise_imagenet_breeds(fp32):
    """The packaged ImageNet classifier, on the served model's pooled features of our crops,
    names the breed of most photos whose breed is an ImageNet class: 78 % top-1 and 98 % top-5
    measured on all 176 photos of those breeds. The ImageNet mean and deviation instead of the
    model's (x - 127) / 128 give 74 % top-1, and BGR instead of RGB 70 %."""
    photos = [p for p in pets("train") + pets("test") if p.breed in IMAGENET_CLASS]
    inputs = ImageInputs(Settings(backbone_kind="image"))
    pixels = normalised(inputs.prepare([ImageInput(image=p.base64()) for p in photos]))
    state = torch.load(weights_path(DEFAULT_IMAGE_BACKBONE), map_location="cpu", weights_only=True)
    with torch.inference_mode():
        pooled = torch.cat(
            [
                fp32.model.extract_features(
                    batch.contiguous(memory_format=torch.channels_last)
                ).mean(dim=(2, 3))
                for batch in pixels.split(32)
            ]
        )
        logits = pooled @ state["_fc.weight"].T + state["_fc.bias"]
    top5 = logits.topk(5).indices.numpy()
    want = np.array([IMAGENET_CLASS[p.breed] for p in photos])
    top1_accuracy = np.mean(top5[:, 0] == want)
    top5_accuracy = np.mean((top5 == want[:, None]).any(axis=1))
    print(f"ImageNet top-1 {top1_accuracy:.3f}, top-5 {top5_accuracy:.3f} on {len(photos)}")
    assert top1_accuracy >= 0.75 and top5_accuracy >= 0.95


def test_features_are_unit_vectors_independent_of_the_batch(fp32, crops):
    batched = fp32.forward(crops[:20])
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    alone = np.vstack([fp32.forward([crop]) for crop in crops[:3]])
    np.testing.assert_allclose(alone, batched[:3], atol=1e-5)


def test_bfloat16_features_match_float32(fp32, crops):
    bf16 = ImageModel(DEFAULT_IMAGE_BACKBONE, dtype=torch.bfloat16)
    assert bf16.info.fingerprint == fp32.info.fingerprint
    assert bf16.info.dtype == "bfloat16"
    cosine = np.sum(embed(fp32, crops[:40]) * embed(bf16, crops[:40]), axis=1)
    assert cosine.min() > 0.995  # measured 0.998 on all 111 held-out photos


def test_fingerprint_follows_the_weights_not_the_path(fp32, tmp_path):
    state = torch.load(weights_path(DEFAULT_IMAGE_BACKBONE), map_location="cpu", weights_only=True)
    same = tmp_path / "lite0.pth"
    torch.save(state, same)
    assert ImageModel(str(same), dtype=torch.float32).info.fingerprint == fp32.info.fingerprint
    state["_blocks.3._project_conv.weight"][0, 0] += 0.01  # one weight of 3.4 million
    changed = tmp_path / "lite0-tuned.pth"
    torch.save(state, changed)
    assert ImageModel(str(changed), dtype=torch.float32).info.fingerprint != fp32.info.fingerprint


def test_an_unknown_image_backbone_fails_at_start_up():
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        ImageInputs(Settings(backbone_kind="image", backbone="resnet-50"))
