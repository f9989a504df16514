"""Cross-tenant batching on a real server: shared forward passes, yet each answer is its own."""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import pytest

from bench.datasets import banking77, few_shot

TENANTS = ["acme", "globex", "initech", "umbrella"]


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [
        # float32: a text's features do not depend on what it is batched with (to 1e-7).
        ("float32", 1e-5),
        # bfloat16 rounds each matmul's output; padding to a longer neighbour changes the
        # rounding, which moves probabilities by up to about 1e-3 raw (measured up to 5e-4).
        # The calibrated heads' temperature (about 0.5 here) doubles logit gaps and so these
        # moves: measured up to 7.3e-3.
        ("bfloat16", 1.5e-2),
    ],
)
def test_mixed_batches_answer_as_alone(serve, dtype, tolerance):
    server = serve(max_inputs="4", backbone_dtype=dtype)
    rows = banking77("train")
    for index, tenant in enumerate(TENANTS):  # each tenant: its own head from its own draw
        draw = few_shot(rows, per_label=3, seed=index)
        examples = [{"text": r.text, "label": r.label} for r in draw]
        trained = server.post(
            "/v1/heads/train",
            {"head": "intents", "examples": examples},
            headers={"X-Tenant-ID": tenant},
        )
        assert trained.status_code == 200, trained.text

    rng = random.Random(3)
    texts = [r.text for r in banking77("test")]
    requests = [(rng.choice(TENANTS), rng.sample(texts, rng.randint(1, 4))) for _ in range(48)]

    def body(inputs):
        return {"head": "intents", "inputs": inputs, "top_k": 5}

    alone = []
    for tenant, inputs in requests:  # one at a time: every request is a batch of its own
        response = server.post("/v1/predict", body(inputs), headers={"X-Tenant-ID": tenant})
        assert response.status_code == 200, response.text
        alone.append(response.json()["predictions"])

    bad = {7: [], 19: texts[:5], 33: ["   "]}  # empty, over GRAFT_MAX_INPUTS, blank
    passes_before = metric(server, "graft_backbone_batch_size_count")

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            calls = []
            for i, (tenant, inputs) in enumerate(requests):
                if i in bad:
                    calls.append(
                        client.post(
                            "/v1/predict", json=body(bad[i]), headers={"X-Tenant-ID": tenant}
                        )
                    )
                calls.append(
                    client.post("/v1/predict", json=body(inputs), headers={"X-Tenant-ID": tenant})
                )
            return await asyncio.gather(*calls)

    responses = asyncio.run(send_all())
    passes = metric(server, "graft_backbone_batch_size_count") - passes_before
    assert passes < len(requests) / 2, (
        f"{passes} forward passes for {len(requests)} requests: not batched"
    )

    good = iter(responses)
    for i, expected in enumerate(alone):
        if i in bad:
            refused = next(good)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"]["code"] in {"invalid_request", "limit_exceeded"}
        response = next(good)
        assert response.status_code == 200, response.text
        got = response.json()["predictions"]
        assert len(got) == len(expected)  # one prediction per input, in order
        for mine, theirs in zip(got, expected, strict=True):
            scores = {t["label"]: t["score"] for t in theirs["top"]}
            margin = theirs["top"][0]["score"] - theirs["top"][1]["score"]
            if margin > 2 * tolerance:  # a label can only swap with a near-tie
                assert mine["label"] == theirs["label"]
            for entry in mine["top"]:
                if entry["label"] in scores:
                    assert abs(entry["score"] - scores[entry["label"]]) <= tolerance, entry
