"""Abstention on banking77 with and without out-of-scope examples, side by side on the same draws.

    make bench-out-of-scope   # = .venv/bin/python -m bench.out_of_scope [--draws 3]

The issue's setting, as ``bench.quality`` runs it: 10 of the 77 labels held out as out of
scope, 10 examples of each of the other 67, ``"abstain": "auto"``, scored on the whole test
split. Each draw trains a head twice through the service's training path (``fit_head``):
from the examples alone, and from the same examples plus a few out-of-scope sentences of the
training split (``"out_of_scope": true``): 4 of each of 5 of the 10 held-out intents, 20 in
all. The out-of-scope share refused is reported over all 10 held-out intents' test sentences,
and apart for the 5 intents the head saw examples of and the 5 it never did.

The in-scope cost is against the head trained from the examples alone, never refusing: the
right answers that the other head refuses, or that its out-of-scope class takes away.
Writes bench/RESULTS-out-of-scope.md, with ``FIGURE name value`` lines.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from adapters.scope import OUT_OF_SCOPE, answers
from adapters.training import fit_head
from bench.datasets import Labelled, banking77, few_shot
from bench.machine import cpu_name
from bench.quality import OUT_OF_SCOPE_LABELS, Encoder, States, head_input, write_results
from service.backbone import configure_torch_threads

RESULTS = Path(__file__).with_name("RESULTS-out-of-scope.md")
KINDS = ("linear", "matching")
#: Held-out intents the tenant gives out-of-scope examples of, and how many of each.
TAUGHT_INTENTS = 5
PER_TAUGHT_INTENT = 4
REPORTED = (
    "in_scope_cost",
    "out_of_scope_refused",
    "taught_refused",
    "never_taught_refused",
    "train_s",
)


def run_draw(
    kind: str,
    encode: Encoder,
    train: list[Labelled],
    test: list[Labelled],
    test_X: np.ndarray,
    test_states: States,
    seed: int,
) -> dict[str, float]:
    labels = sorted({row.label for row in train})
    unseen = random.Random(seed).sample(labels, OUT_OF_SCOPE_LABELS)
    taught = set(random.Random(100 + seed).sample(unseen, TAUGHT_INTENTS))
    draw = few_shot([row for row in train if row.label not in unseen], per_label=10, seed=seed)
    fence = few_shot(
        [r for r in train if r.label in taught], per_label=PER_TAUGHT_INTENT, seed=seed
    )
    test_texts = [row.text for row in test]
    truth = np.asarray([row.label for row in test], dtype=object)
    in_scope = ~np.isin(truth, unseen)
    heads = {}
    labelled = [row.label for row in draw]
    for name, rows, y in (
        ("plain", draw, labelled),
        ("fenced", draw + fence, labelled + [OUT_OF_SCOPE] * len(fence)),
    ):
        texts = [row.text for row in rows]
        started = time.perf_counter()
        X, states = encode(texts)
        head, _report = fit_head(kind, head_input(kind, X, states, texts), y, texts, abstain="auto")
        train_s = time.perf_counter() - started
        proba = head.predict_proba(head_input(kind, test_X, test_states, test_texts))
        best, score = answers(head.classes_, proba)
        right = np.asarray(head.classes_, dtype=object)[best] == truth
        refused = score < (head.abstain_threshold_ or 0.0)
        heads[name] = (right, refused, train_s)
    plain_right = heads["plain"][0][in_scope].mean()
    found: dict[str, float] = {"in_scope_accuracy": float(plain_right)}
    for name, (right, refused, train_s) in heads.items():
        kept = (right & ~refused)[in_scope].mean()
        found[f"{name}_in_scope_cost"] = float(plain_right - kept)
        found[f"{name}_out_of_scope_refused"] = float(refused[~in_scope].mean())
        found[f"{name}_train_s"] = train_s
        for part, intents in (("taught", taught), ("never_taught", set(unseen) - taught)):
            found[f"{name}_{part}_refused"] = float(refused[np.isin(truth, list(intents))].mean())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="backbone dtype (float32, auto)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_torch_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    train, test = banking77("train"), banking77("test")
    encode = Encoder(args.dtype)
    test_X, test_states = encode([row.text for row in test])
    results: dict[str, list[dict[str, float]]] = {}
    for kind in KINDS:
        results[kind] = []
        for seed in range(args.draws):
            found = run_draw(kind, encode, train, test, test_X, test_states, seed)
            results[kind].append(found)
            print(f"{kind} seed {seed} {found}", flush=True)
    write(results, args)


def write(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    figures: dict[str, float] = {}
    rows = [
        "| kind | out-of-scope examples | in-scope cost (points) | out-of-scope refused "
        "| of the 5 intents taught | of the 5 never taught | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, found in results.items():
        for name, given in (("plain", "none"), ("fenced", "20")):
            values = {key: statistics.fmean(f[f"{name}_{key}"] for f in found) for key in REPORTED}
            for key, value in values.items():
                figures[f"{kind}_{name}_{key}"] = value
            rows.append(
                f"| {kind} | {given} | {100 * values['in_scope_cost']:.2f} "
                f"| {values['out_of_scope_refused']:.4f} | {values['taught_refused']:.4f} "
                f"| {values['never_taught_refused']:.4f} | {values['train_s']:.2f} |"
            )
    lines = [
        "# Abstention with out-of-scope examples, on banking77",
        "",
        f"`.venv/bin/python -m bench.out_of_scope --draws {args.draws} --dtype {args.dtype}` "
        f"(`make bench-out-of-scope` runs the defaults), on {cpu_name()}, {os.cpu_count()} "
        f"cores. 10 of 77 labels held out, 10 shots of the other 67, "
        f'`"abstain": "auto"`, {args.draws} draws, means over draws. "20" is '
        f"{PER_TAUGHT_INTENT} training sentences of each of {TAUGHT_INTENTS} held-out intents, "
        f'sent as `"out_of_scope": true`. The in-scope cost is against the head trained '
        f"without them, never refusing (issue 6's budget: 2 points). Train s is the embedding "
        f"pass, with the token states `matching` reads, for every kind, plus the fit.",
        "",
        *rows,
    ]
    write_results(RESULTS, lines, figures)


if __name__ == "__main__":
    main()
