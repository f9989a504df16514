"""What machine a benchmark ran on, for its results file: the CPU's model name and the widest
vector instructions PyTorch uses on it (two "AMD EPYC" machines here ran the backbone at
different speeds: one had AVX512-BF16, the other AVX2 only)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from adapters.tuned import bf16_is_native


def cpu_name() -> str:
    """The model name, with what PyTorch computes on it: "AMD EPYC (AVX2)"."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{_model_name()} ({capability}{', native bfloat16' if bf16_is_native() else ''})"


def _model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
