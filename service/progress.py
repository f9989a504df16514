"""How a long training reports its progress, and how it is told to stop.

``HeadService.train`` calls these hooks at its checkpoints (after each chunk of examples is
embedded, and when it moves on to fitting and to registering); a training job's hooks write the
progress to the job's row and raise :class:`TrainingStopped` once the job has been cancelled, so
the training ends at the next checkpoint and never registers a version. While the head is
fitted, the fit asks :meth:`TrainingProgress.stopped` between its steps (folds, epochs), and
tells :meth:`TrainingProgress.fitted` the share of it done after each fold and holdout round.
"""

from __future__ import annotations

from typing import Protocol

#: Examples embedded between two progress checkpoints: one full backbone batch (the bulk lane
#: runs one batch per round anyway), so a cancel is noticed within one forward pass.
EMBED_CHUNK = 64


class TrainingStopped(Exception):
    """The training was cancelled (or its job failed elsewhere): stop without registering."""


class TrainingProgress(Protocol):
    async def embedded(self, done: int, total: int) -> None:
        """``done`` of ``total`` examples have their features; may raise TrainingStopped."""

    async def phase(self, name: str) -> None:
        """The training enters phase ``name`` (fitting, registering); may raise TrainingStopped."""

    def stopped(self) -> bool:
        """Whether the training should stop now: asked on the fitting thread between its steps."""

    def fitted(self, fraction: float) -> None:
        """``fraction`` of the fit is done: told on the fitting thread, so it must not block
        for long, and must not raise."""
