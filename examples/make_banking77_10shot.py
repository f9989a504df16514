"""Writes examples/banking77-10shot.jsonl: 10 random training examples for each of the 77 labels.

.venv/bin/python examples/make_banking77_10shot.py
"""

import json
from pathlib import Path

from bench.datasets import banking77, few_shot

OUT = Path(__file__).with_name("banking77-10shot.jsonl")

if __name__ == "__main__":
    rows = few_shot(banking77("train"), per_label=10, seed=0)
    with OUT.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"text": row.text, "label": row.label}) + "\n")
    print(f"wrote {len(rows)} examples to {OUT}")
