"""`bentoml build` from bentofile.yaml, then `bentoml serve <tag>` of that bento: the same API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import psutil
import yaml

from bench.datasets import held_out_sample
from tests.e2e.conftest import ROOT, Server

BENTOML = Path(sys.executable).parent / "bentoml"
EXAMPLES = ROOT / "examples" / "banking77-10shot.jsonl"
# Messages of banking77's test split and the labels the 10-shot head gives them (README).
PROBES = {
    "I transferred the wrong amount and would like to cancel the transaction.": "cancel_transfer",
    "Can I verify the source of my funds?": "verify_source_of_funds",
}


def test_bentofile_asks_for_the_projects_dependencies_with_cpu_torch():
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [dep.replace("torch==2.13.0", "torch==2.13.0+cpu") for dep in project["dependencies"]]
    assert bentofile["python"]["packages"] == wanted
    assert bentofile["service"] == "service:Graft"


def test_built_bento_serves_a_banking77_head(tmp_path):
    store = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(store), "HF_HUB_OFFLINE": "1"}
    built = subprocess.run(
        [str(BENTOML), "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", built.stdout)
    assert tag, built.stdout
    name, version = tag.group(1).split(":")
    bento = store / "bentos" / name / version
    assert (bento / "src" / "service" / "app.py").exists()
    assert (bento / "src" / "adapters" / "linear.py").exists()
    assert (bento / "src" / "service" / "migrations" / "versions" / "0001_initial.py").exists()
    assert not (bento / "src" / "tests").exists()
    assert "torch==2.13.0+cpu" in (bento / "env" / "python" / "requirements.txt").read_text()

    # From the store: the tag names the bento, and its workers run in its own copy of the code.
    command = [str(BENTOML), "serve", tag.group(1), "--host", "127.0.0.1"]
    server = Server(tmp_path / "home", command=command, env=env).start()
    try:
        workers = psutil.Process(server.process.pid).children(recursive=True)  # type: ignore[union-attr]
        assert any(Path(w.cwd()) == bento / "src" for w in workers), "serves the bento's copy"

        examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
        trained = server.post("/v1/heads/train", {"head": "intents", "examples": examples})
        assert trained.status_code == 200, trained.text
        assert trained.json()["version"] == 1
        assert len(trained.json()["labels"]) == 77

        answer = server.post("/v1/predict", {"head": "intents", "inputs": list(PROBES)})
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == list(PROBES.values())

        rows = held_out_sample(100)
        answer = server.post(
            "/v1/predict", {"head": "intents", "inputs": [r.text for r in rows], "top_k": 1}
        )
        assert answer.status_code == 200, answer.text
        labels = [p["label"] for p in answer.json()["predictions"]]
        accuracy = sum(label == r.label for label, r in zip(labels, rows, strict=True)) / len(rows)
        assert accuracy >= 0.75, accuracy  # about 0.85 over 500 rows (test_main_path.py)
    finally:
        server.stop()
