"""Out-of-scope examples: the reserved class that teaches a head "none of these", and its reading.

A tenant may send examples that belong to none of its labels: the questions its assistant
must not answer. Every single-label kind learns them as one more class, :data:`OUT_OF_SCOPE`
(the empty string, which no label can be), so no kind needs code of its own for them, and the
softmax over labels and that class stays a calibrated probability.

Reading a head's probabilities, the class is never an answer: a row's answer is its likeliest
label, with that label's probability as its score, and the row is refused where the class is
likelier than every label. Held-out-label calibration alone refuses about a third of unseen
banking77 intents at its 2-point budget, since the frozen features place them among the taught
ones; a few examples of what is out of scope mark where those intents lie
(bench/out_of_scope.py: 20 of them took a linear head from 27 % to 51 % at 1.7 points).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The class out-of-scope examples are taught as: an empty label, which no caller can send.
OUT_OF_SCOPE = ""
#: The score of a row the out-of-scope class wins: below every threshold, 0 included.
REFUSED = -1.0


def label_columns(classes: Sequence[str]) -> np.ndarray:
    """Indices of the columns that are labels, not the out-of-scope class."""
    columns = np.arange(len(classes))
    if not learns_out_of_scope(classes):  # most heads: every column, without a Python loop
        return columns
    return np.delete(columns, list(classes).index(OUT_OF_SCOPE))


def learns_out_of_scope(classes: Sequence[str]) -> bool:
    return OUT_OF_SCOPE in classes


def answers(classes: Sequence[str], proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column of the likeliest label and a score to compare with an abstention
    threshold: that label's probability, or :data:`REFUSED` where the out-of-scope class is
    likelier than every label."""
    if not learns_out_of_scope(classes):
        best = proba.argmax(axis=1)
        return best, proba[np.arange(len(proba)), best].astype(np.float64)
    columns = label_columns(classes)
    best = columns[proba[:, columns].argmax(axis=1)]
    score = proba[np.arange(len(proba)), best].astype(np.float64)
    refused = proba[:, list(classes).index(OUT_OF_SCOPE)] > score
    return best, np.where(refused, REFUSED, score)


def labels_of(classes: Sequence[str]) -> list[str]:
    """A head's labels, without the out-of-scope class."""
    return [label for label in classes if label != OUT_OF_SCOPE]
