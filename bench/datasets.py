"""The real datasets: banking77 intents (``data/``) and Oxford-IIIT Pet photos (``examples/``)."""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PETS = ROOT / "examples" / "pets"


@dataclass(frozen=True)
class Labelled:
    text: str
    label: str


def banking77(split: str) -> list[Labelled]:
    """``split`` is "train" (10,003 rows) or "test" (3,080 rows), in file order."""
    with open(DATA / "banking77" / f"{split}.csv", newline="", encoding="utf-8") as handle:
        return [Labelled(row["text"], row["category"]) for row in csv.DictReader(handle)]


def few_shot(rows: list[Labelled], per_label: int, seed: int) -> list[Labelled]:
    """``per_label`` random rows of every label (all of a label's rows if it has fewer)."""
    by_label: dict[str, list[Labelled]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append(row)
    rng = random.Random(seed)
    drawn: list[Labelled] = []
    for label in sorted(by_label):
        pool = by_label[label]
        drawn.extend(rng.sample(pool, min(per_label, len(pool))))
    return drawn


def held_out_sample(size: int = 500) -> list[Labelled]:
    """A fixed, label-spread slice of the test split: every 6th row, the first ``size``."""
    return banking77("test")[::6][:size]


@dataclass(frozen=True)
class Photo:
    path: Path
    breed: str  # e.g. "Bengal" (cats are capitalised) or "beagle"
    species: str  # "cat" or "dog"

    def base64(self) -> str:
        import base64

        return base64.b64encode(self.path.read_bytes()).decode("ascii")


def pets(split: str) -> list[Photo]:
    """``split`` is "train" (5 photos per breed, 185) or "test" (3 per breed, 111), by name."""
    return [
        Photo(path, path.stem.rsplit("_", 1)[0], path.parent.name.removesuffix("s"))
        for path in sorted((PETS / split).glob("*/*.jpg"))
    ]
