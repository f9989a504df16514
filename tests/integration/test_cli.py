"""The ``graft`` CLI and the Python client against the real app in-process."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from bench.datasets import banking77, few_shot
from bench.server import GRAFT
from service import cli_remote, cli_render
from service.cli import app
from service.client import GraftAPIError, GraftClient
from service.schemas import JobResponse, JobsResponse, Prediction

SENTIMENT = [
    ("I love this, it works perfectly", "positive"),
    ("Absolutely wonderful service, thank you", "positive"),
    ("Great app, very happy with it", "positive"),
    ("This is terrible and broken", "negative"),
    ("Awful experience, I want my money back", "negative"),
    ("Worst support I have ever had", "negative"),
]


@pytest.fixture
def http(jobs_client):
    return jobs_client


@pytest.fixture
def made(http, monkeypatch) -> list[dict[str, Any]]:
    """Every CLI command's client goes to the in-process app; the options it got are kept."""
    calls: list[dict[str, Any]] = []

    def factory(url: str, *, key: str | None = None, tenant: str | None = None) -> GraftClient:
        calls.append({"url": url, "key": key, "tenant": tenant})
        return GraftClient(url, key=key, tenant=tenant, http=http)

    monkeypatch.setattr(cli_remote, "client_factory", factory)
    return calls


def graft(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), env=env, input=input)
    return result


#: The column names write_csv uses.
COLUMNS = ["--text-column", "utterance", "--label-column", "intent"]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    lines = ["utterance,intent", *(f'"{text}",{label}' for text, label in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_predict_show_and_delete(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", SENTIMENT)
    trained = graft("train", "--head", "mood", "--file", str(data), *COLUMNS, "--tenant", "cli")
    assert trained.exit_code == 0, trained.output
    assert "version" in trained.stdout and "2 (negative, positive)" in trained.stdout
    # piped, rich pads each row to the widest (a 77-label head's labels row: 220 columns)
    assert [line for line in trained.stdout.splitlines() if line.endswith(" ")] == []

    as_json = graft("train", "--head", "mood", "--file", str(data), *COLUMNS, "--json")
    assert json.loads(as_json.stdout)["version"] == 1  # the default tenant's first version

    predicted = graft(
        "predict", "--head", "mood", "what a lovely day", "this is awful", "--tenant", "cli"
    )
    assert predicted.exit_code == 0, predicted.output
    assert "head mood, version 1" in predicted.stdout
    assert "positive" in predicted.stdout and "negative" in predicted.stdout

    texts = tmp_path / "texts.txt"
    texts.write_text("I am so happy\nterrible, just terrible\nwonderful\n")
    labelled = graft(
        "predict", "--head", "mood", "--file", str(texts), "--batch-size", "2", "--json",
        "--top-k", "2", "--tenant", "cli",
    )  # fmt: skip
    answer = json.loads(labelled.stdout)
    assert [p["label"] for p in answer["predictions"]] == ["positive", "negative", "positive"]
    assert len(answer["predictions"][0]["top"]) == 2

    listed = json.loads(graft("heads", "list", "--json", "--tenant", "cli").stdout)
    assert [h["head"] for h in listed["heads"]] == ["mood"]
    shown = graft("heads", "show", "mood", "--tenant", "cli")
    assert shown.exit_code == 0 and "labels of version 1: negative, positive" in shown.stdout

    for only in ([], ["--version", "1"]):  # its only version: deleting it deletes the head
        kept = graft("heads", "delete", "mood", *only, "--tenant", "cli", input="n\n")
        assert kept.exit_code == 1 and "Aborted" in kept.output
        assert kept.stdout == ""  # click's prompt wrote the space after its question here
    assert "Delete version 1 of head 'mood'?" in kept.stderr
    assert graft("heads", "show", "mood", "--tenant", "cli").exit_code == 0
    deleted = graft("heads", "delete", "mood", "--yes", "--json", "--tenant", "cli")
    assert json.loads(deleted.stdout) == {"head": "mood", "deleted_versions": [1]}
    gone = graft("heads", "show", "mood", "--tenant", "cli")
    assert gone.exit_code == 1
    assert "404 head_not_found (head)" in gone.stderr
    assert made[0] == {"url": "http://127.0.0.1:3000", "key": None, "tenant": "cli"}


def test_large_files_train_as_jobs_with_progress(made, http, tmp_path):
    rows = few_shot(banking77("train"), per_label=4, seed=2)[:120]
    data = tmp_path / "intents.jsonl"
    data.write_text("".join(json.dumps({"text": r.text, "label": r.label}) + "\n" for r in rows))
    env = {"GRAFT_URL": "http://graft.internal:3000", "GRAFT_API_KEY": ""}
    trained = graft("train", "--head", "intents", "--file", str(data), "--job", "--json", env=env)
    assert trained.exit_code == 0, trained.output
    assert trained.stderr == ""  # progress bars are for a terminal: each left a blank line here
    answer = json.loads(trained.stdout)  # the job's result: what /v1/heads/train answers
    assert (answer["head"], answer["version"], answer["n_examples"]) == ("intents", 1, 120)
    assert made[-1]["url"] == "http://graft.internal:3000"

    started = graft("train", "--head", "intents", "--file", str(data), "--no-wait", "--json")
    job = json.loads(started.stdout)["job"]
    shown = graft("jobs", "show", job, "--json")
    assert json.loads(shown.stdout)["job"] == job
    assert GraftClient(http=http).wait_for_job(job).version == 2
    refused = graft("jobs", "cancel", job)
    assert refused.exit_code == 1 and "409 job_finished" in refused.stderr
    listed = json.loads(graft("jobs", "list", "--head", "intents", "--json").stdout)["jobs"]
    assert [(j["job"] == job, j["version"]) for j in listed] == [(True, 2), (False, 1)]
    table = graft("jobs", "list", "--status", "succeeded", "--limit", "1")
    assert table.exit_code == 0, table.output
    assert job in table.stdout and "succeeded" in table.stdout
    assert "error" not in table.stdout  # no failed job listed: no error column
    failing = graft("train", "--head", "nothing", "--file", str(data), "--base-version", "3")
    assert failing.exit_code == 1 and "head_not_found" in failing.stderr
    lost = graft("train", "--head", "nothing", "--file", str(data), "--base-version", "3", "--job")
    assert lost.exit_code == 1 and "head_not_found" in lost.stderr
    failed = graft("jobs", "list", "--status", "failed", "--limit", "1")
    assert "error" in failed.stdout and "head_not_found" in failed.stdout


def test_evaluate_prints_metrics_and_the_confusion_matrix(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", SENTIMENT)
    assert graft("train", "--head", "judge", "--file", str(data), *COLUMNS).exit_code == 0
    held_out = write_csv(
        tmp_path / "held_out.csv",
        [("I really enjoyed it", "positive"), ("It broke after a day", "negative")],
    )
    table = graft("evaluate", "--head", "judge", "--file", str(held_out), *COLUMNS)
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.stdout and "confusion matrix" in table.stdout
    scored = json.loads(
        graft("evaluate", "--head", "judge", "--file", str(held_out), *COLUMNS, "--json").stdout
    )
    assert (scored["accuracy"], scored["n_examples"]) == (1.0, 2)
    judged = graft(
        "evaluate",
        "--head",
        "judge",
        "--file",
        str(held_out),
        *COLUMNS,
        "--abstain-threshold",
        "0.5",
    )
    assert "accuracy on the answered 1.000" in " ".join(judged.stdout.split())
    assert scored["confusion_matrix"] == [[1, 0], [0, 1]]
    out_of_scope = write_csv(tmp_path / "other.csv", [("Where is your nearest branch?", "branch")])
    args = ("evaluate", "--head", "judge", "--file", str(out_of_scope), *COLUMNS)
    refused = graft(*args, "--abstain-threshold", "1")  # every answer refused
    assert refused.exit_code == 0, refused.output
    shown = " ".join(refused.stdout.split())
    assert "unknown labels 1 (branch)" in shown
    assert "refused unknown 100.0% of 1 examples" in shown


def test_mistakes_exit_with_a_message(made, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhello,x\n")
    result = graft("train", "--head", "h", "--file", str(bad))
    assert result.exit_code == 2
    assert "no column 'label'" in result.stderr
    assert graft("predict", "--head", "h").exit_code == 2  # no texts at all
    unknown = graft("predict", "--head", "nothing-here", "hello")
    assert unknown.exit_code == 1 and "head_not_found" in unknown.stderr


def test_an_unreachable_server_is_one_line(monkeypatch):
    monkeypatch.setattr(cli_remote, "client_factory", GraftClient)
    result = graft("heads", "list", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot reach Graft at http://127.0.0.1:9" in result.stderr


def test_a_delete_with_stdin_closed_stops_and_says_to_give_yes():
    # The real command in a shell that closes its stdin: input() cannot read, nothing is sent.
    closed = subprocess.run(
        ["bash", "-c", f'"{GRAFT}" heads delete mood --version 1 --url http://127.0.0.1:9 <&-'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert closed.returncode == 1
    assert "Traceback" not in closed.stderr and "cannot reach" not in closed.stderr
    assert "no answer on stdin; give --yes to go ahead without asking" in closed.stderr


def test_a_delete_with_stdin_at_its_end_stops_and_says_to_give_yes(made, tmp_path):
    """``</dev/null``: click read the end of input as a no, and printed "Aborted!" alone."""
    data = write_csv(tmp_path / "mood.csv", SENTIMENT)
    assert graft("train", "--head", "kept", "--file", str(data), *COLUMNS).exit_code == 0
    unanswered = graft("heads", "delete", "kept", input="")
    assert unanswered.exit_code == 1
    assert "no answer on stdin; give --yes to go ahead without asking" in unanswered.stderr
    assert "Aborted" not in unanswered.stderr
    assert graft("heads", "show", "kept").exit_code == 0


def test_the_client_raises_typed_errors(http):
    client = GraftClient(tenant="typed", http=http)
    with pytest.raises(GraftAPIError) as caught:
        client.predict("missing", ["hello"])
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        404,
        "head_not_found",
        "head",
    )
    with pytest.raises(GraftAPIError) as limited:
        client.predict("missing", ["x" * 20_000])
    assert limited.value.code == "limit_exceeded"
    assert limited.value.details == {"limit": "GRAFT_MAX_TEXT_CHARS", "value": 10_000}


def test_train_shows_the_abstention_threshold(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", SENTIMENT)
    trained = graft("train", "--head", "shy", "--file", str(data), *COLUMNS, "--abstain", "0.7")
    assert trained.exit_code == 0, trained.output
    assert "abstains" in trained.stdout and "below 0.7000" in trained.stdout


def test_train_can_describe_each_label_by_its_name(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", SENTIMENT)
    args = ("train", "--head", "named", "--file", str(data), *COLUMNS, "--describe-by-name")
    trained = graft(*args)
    assert trained.exit_code == 0, trained.output
    assert "label descriptions  2" in trained.stdout
    as_json = json.loads(graft(*args, "--json").stdout)
    assert as_json["report"]["label_descriptions"] == 2
    assert as_json["n_examples"] == len(SENTIMENT)


def test_an_abstained_prediction_shows_the_label_it_refused(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", [*SENTIMENT, ("Meh [see attached]", "[neutral]")])
    trained = graft(
        "train", "--head", "guarded", "--file", str(data), *COLUMNS, "--abstain", "0.99"
    )
    assert trained.exit_code == 0, trained.output
    found = graft("predict", "--head", "guarded", "Meh [see attached]")
    assert found.exit_code == 0, found.output
    (row,) = [line for line in found.stdout.splitlines() if line.startswith("│ 1 ")]
    # Measured 0.867, below the 0.99 threshold: refused, naming what it would have said. The
    # tenant's strings come out as written, not read as markup.
    assert "│ Meh [see attached] │ (none of these; [neutral]?) │" in row


def test_piped_output_at_a_set_width_has_no_trailing_spaces(monkeypatch, capsys):
    """COLUMNS sets the width off a terminal; rich then padded every line to it."""
    monkeypatch.setenv("COLUMNS", "150")
    table = Table.grid(padding=(0, 2))
    table.add_row("head", "mood")
    table.add_row("labels", "x" * 100)
    cli_render.make_console().print(table)
    out = capsys.readouterr().out
    assert out.splitlines() == ["head    mood", "labels  " + "x" * 100]


def test_labels_in_the_also_column_are_printed_as_written(made, tmp_path):
    """A label "[/]" in the second place crashed the table with rich's MarkupError."""
    data = write_csv(
        tmp_path / "marks.csv",
        [(text, "[/]" if label == "negative" else label) for text, label in SENTIMENT],
    )
    assert graft("train", "--head", "marks", "--file", str(data), *COLUMNS).exit_code == 0
    found = graft("predict", "--head", "marks", "I love it", "--top-k", "2")
    assert found.exit_code == 0, found.output
    (row,) = [line for line in found.stdout.splitlines() if line.startswith("│ 1 ")]
    assert "│ positive │" in row and "│ [/] 0." in row


def test_an_error_message_with_brackets_is_printed_whole(made, tmp_path):
    data = write_csv(tmp_path / "mood.csv", [("Meh", "[neutral]"), *SENTIMENT])
    refused = graft(
        "train", "--head", "topics", "--file", str(data), *COLUMNS, "--kind", "multilabel"
    )
    assert refused.exit_code == 1
    assert "not a single label (example 0 has '[neutral]')" in " ".join(refused.stderr.split())


def test_a_label_with_a_tab_or_an_escape_character_stays_in_its_row(made, tmp_path):
    """A tab or newline in a label broke the table's row, and an escape reached the terminal."""
    marked = {"positive": "good\tday", "negative": "bad\x1b[31m"}
    data = tmp_path / "marks.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": marked[label]}) + "\n" for t, label in SENTIMENT)
    )
    assert graft("train", "--head", "tabs", "--file", str(data)).exit_code == 0
    found = graft("predict", "--head", "tabs", "I love it", "Awful, broken", "--top-k", "2")
    assert found.exit_code == 0, found.output
    rows = [line for line in found.stdout.splitlines() if line.startswith("│ ")]
    assert len(rows) == 2  # one line per text
    assert "│ good\\tday   │" in rows[0] and "bad\\x1b[31m 0." in rows[0]
    assert "\x1b" not in found.stdout and "\t" not in found.stdout


def drawn(renderable: Any, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_a_label_ending_in_a_backslash_is_shown_with_one():
    """Escaped as markup, a trailing backslash was doubled and rich printed both."""
    top = [{"label": "C:\\", "score": 0.7}, {"label": "D:\\", "score": 0.3}]
    found = Prediction(label="C:\\", score=0.7, abstained=False, top=top)
    (row,) = [line for line in drawn(cli_render.predictions(["x"], [found], 2)).splitlines()[3:4]]
    assert "│ C:\\ " in row and "│ D:\\ 0.30 │" in row and "\\\\" not in row
    refused = Prediction(label=None, score=0.7, abstained=True, top=top)
    assert "(none of these; C:\\?)" in drawn(cli_render.predictions(["x"], [refused], 1))


def test_job_ids_fold_on_a_narrow_terminal_so_they_can_be_copied():
    job = "7c9f0e2b4d5a4e6f8a1b3c5d7e9f0a2b"
    state = JobResponse.model_validate(
        {
            "job": job,
            **{"head": "intents", "kind": "linear", "status": "succeeded", "n_examples": 9},
            "progress": {"phase": "done", "fraction": 1.0},
            **{"created": "2026-12-04T12:00:00", "updated": "2026-12-04T12:00:01"},
            **{"finished": None, "error": None, "version": 1, "result": None},
        }
    )
    lines = drawn(cli_render.jobs(JobsResponse(jobs=[state])), width=60).splitlines()
    assert "…" not in "".join(lines)
    cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert "".join(cells) == job


def test_a_long_label_on_a_narrow_terminal_is_folded_not_cut():
    """At 80 columns rich cut the label column with "…" while the text column wrapped."""
    label = "balance_not_updated_after_cheque_or_cash_deposit"
    found = Prediction(
        label=label, score=0.9, abstained=False, top=[{"label": label, "score": 0.9}]
    )
    console = Console(file=io.StringIO(), width=50)
    console.print(cli_render.predictions(["Where is the cheque I paid in?"], [found], 1))
    drawn = console.file.getvalue()  # type: ignore[attr-defined]
    assert "…" not in drawn
    cells = [line.split("│")[3].strip() for line in drawn.splitlines() if line.startswith("│")]
    assert "".join(cells) == label


def test_train_from_json_lines_with_out_of_scope_rows(made, tmp_path):
    rows = [{"text": text, "label": label} for text, label in SENTIMENT]
    rows += [
        {"text": text, "out_of_scope": True}
        for text in (
            "Will it rain in Paris tomorrow?",
            "What is the capital of Peru?",
            "How do I boil an egg?",
        )
    ]
    data = tmp_path / "fenced.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trained = graft("train", "--head", "fenced", "--file", str(data))
    assert trained.exit_code == 0, trained.output
    assert "out-of-scope examples  3" in trained.stdout
    found = graft("predict", "--head", "fenced", "Is it going to snow in Rome this weekend?")
    assert found.exit_code == 0, found.output
    (row,) = [line for line in found.stdout.splitlines() if line.startswith("│ 1 ")]
    assert "(none of these; " in row  # refused by the out-of-scope class, no threshold set
    kept = graft("predict", "--head", "fenced", "--json", "Great app, I love it")
    assert json.loads(kept.stdout)["predictions"][0]["label"] == "positive"
