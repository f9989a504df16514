"""One tenant's large request does not hold up another tenant's small one.

The batcher chooses each backbone pass from everything waiting, shortest first, so a one-text
predict that arrives while another tenant's 64 long texts are being embedded rides one of the
next passes instead of waiting for all 16 of theirs.
"""

from __future__ import annotations

import threading
import time

from tests.integration.conftest import graft_client

MOOD = [
    {"text": "I love this, it works perfectly", "label": "positive"},
    {"text": "Great app, very happy with it", "label": "positive"},
    {"text": "This is terrible and broken", "label": "negative"},
    {"text": "Awful experience, I want my money back", "label": "negative"},
]


def test_a_one_text_predict_overtakes_another_tenants_long_request(tmp_path):
    with graft_client(tmp_path) as client:
        trained = client.post(
            "/v1/heads/train", json={"head": "mood", "examples": MOOD}, headers={"X-Tenant-ID": "b"}
        )
        assert trained.status_code == 200, trained.text
        # 64 texts of 256 tokens (truncated): 16 passes of 4 under the default token budget.
        long_texts = [f"{i} " + "my card payment was declined again " * 60 for i in range(64)]
        finished: dict[str, float] = {}

        def embed_long() -> None:
            response = client.post(
                "/v1/embed", json={"inputs": long_texts}, headers={"X-Tenant-ID": "a"}
            )
            assert response.status_code == 200
            finished["long"] = time.monotonic()

        other = threading.Thread(target=embed_long)
        other.start()
        time.sleep(0.3)  # the long request is queued and its passes have begun
        assert "long" not in finished
        small = client.post(
            "/v1/predict",
            json={"head": "mood", "inputs": ["what a lovely app"]},
            headers={"X-Tenant-ID": "b"},
        )
        finished["small"] = time.monotonic()
        other.join()
        assert small.json()["predictions"][0]["label"] == "positive"
        assert finished["small"] < finished["long"]
