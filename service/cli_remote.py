"""The ``graft`` commands that talk to a running server: train, predict, evaluate, heads, jobs.

Each takes ``--url`` / ``--key`` (or ``GRAFT_URL`` / ``GRAFT_API_KEY``), prints rich tables for
people and, with ``--json``, exactly the server's JSON answer for scripts. Progress bars and
messages go to stderr, so ``--json`` output can be piped. Exit codes: 0 done, 1 the server
refused or failed (its error code is printed), 2 a usage or data-file mistake, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from service import cli_render as render
from service.client import (
    DEFAULT_URL,
    GraftAPIError,
    GraftClient,
    GraftClientError,
)
from service.datafiles import DataFileError, read_examples, read_inputs
from service.schemas import JobResponse, PredictResponse, TrainResponse

#: Files with more examples than this train through the jobs API (progress, no HTTP timeout).
JOB_THRESHOLD = 1000

out = render.make_console()
err = render.make_console(stderr=True)
#: How commands get their client; tests point it at an in-process server.
client_factory: Callable[..., GraftClient] = GraftClient

heads_app = typer.Typer(help="The tenant's heads on the server.", no_args_is_help=True)
jobs_app = typer.Typer(help="Training jobs on the server.", no_args_is_help=True)

Url = Annotated[
    str, typer.Option("--url", envvar="GRAFT_URL", help="The Graft server (GRAFT_URL).")
]
Key = Annotated[
    str | None,
    typer.Option(
        "--key", envvar="GRAFT_API_KEY", show_default=False, help="API key (GRAFT_API_KEY)."
    ),
]
Tenant = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="GRAFT_TENANT",
        help="Tenant for servers with GRAFT_AUTH=off (X-Tenant-ID); a key decides it otherwise.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the server's JSON answer.")]
HeadName = Annotated[str, typer.Option("--head", help="The head's name.")]
DataFile = Annotated[
    Path,
    typer.Option(
        "--file", exists=True, dir_okay=False, help="Examples: .csv, .tsv, .jsonl or .json."
    ),
]
TextColumn = Annotated[str, typer.Option(help="Column (or JSON key) of the texts.")]
LabelColumn = Annotated[str, typer.Option(help="Column (or JSON key) of the labels.")]
Version = Annotated[
    str | None, typer.Option("--version", help="A version number or alias (default: newest).")
]


@contextlib.contextmanager
def _session(url: str, key: str | None, tenant: str | None) -> Iterator[GraftClient]:
    """A client, with every failure turned into a message and an exit code."""
    try:
        with client_factory(url, key=key, tenant=tenant) as client:
            yield client
    except GraftAPIError as exc:
        where = f" ({exc.field})" if exc.field else ""
        err.print(render.error_line(f"error {exc.status} {exc.code}{where}:", exc.message))
        raise typer.Exit(1) from None
    except GraftClientError as exc:
        err.print(render.error_line("error:", str(exc)))
        raise typer.Exit(1) from None


def _read(reader: Callable[..., Any], *args: Any) -> Any:
    try:
        return reader(*args)
    except DataFileError as exc:
        err.print(render.error_line("error:", str(exc)))
        raise typer.Exit(2) from None


def _version(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _probability(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise typer.BadParameter("'auto' or a number from 0 to 1", param_hint="--abstain") from None


def _emit(model: Any, as_json: bool, rendered: Callable[[Any], Any]) -> None:
    """The answer as JSON on stdout (for scripts), or as ``rendered`` makes it for people."""
    if as_json:
        _print_json(model)
    else:
        out.print(rendered(model))


def _print_json(model: Any) -> None:
    if hasattr(model, "model_dump_json"):
        print(model.model_dump_json())
    else:
        print(json.dumps(model))


def train(
    head: HeadName,
    file: DataFile,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    kind: Annotated[str | None, typer.Option(help="Head kind (default: the server's).")] = None,
    abstain: Annotated[
        str | None,
        typer.Option(help="'auto', or a probability below which a prediction abstains."),
    ] = None,
    base_version: Annotated[
        str | None,
        typer.Option(help="Add to this version's examples (a number or alias) instead."),
    ] = None,
    describe_by_name: Annotated[
        bool,
        typer.Option(
            "--describe-by-name",
            help="Teach each label's name (with _ and - as spaces) as one more example of it: "
            "worth 0.4 to 2.4 points on banking77, whose names say what its labels mean.",
        ),
    ] = False,
    job: Annotated[
        bool | None,
        typer.Option(
            "--job/--no-job",
            help=f"Train as a job (default: for more than {JOB_THRESHOLD} examples).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the job (else print its id).")
    ] = True,
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Train a new version of a head from a file of labelled examples."""
    examples = _read(read_examples, file, text_column, label_column)
    options: dict[str, Any] = {"kind": kind}
    if abstain is not None:
        options["abstain"] = abstain if abstain == "auto" else _probability(abstain)
    if base_version is not None:
        options["base_version"] = _version(base_version)
    if describe_by_name:
        options["label_descriptions"] = described_by_name(examples)
    as_job = job if job is not None else len(examples) > JOB_THRESHOLD or not wait
    with _session(url, key, tenant) as client:
        if not as_job:
            answer = _train_now(client, head, examples, options)
        else:
            started = _start_job(client, head, examples, options)
            if not wait:
                _emit(started, as_json, render.job)
                return
            answer = _wait_for(client, started)
    _emit(answer, as_json, render.trained)


def described_by_name(examples: list[dict[str, Any]]) -> dict[str, str]:
    """Each label of ``examples`` described by its own name: "card_arrival" as "card arrival"."""
    labels = {str(example["label"]) for example in examples if "label" in example}
    named = {label: label.replace("_", " ").replace("-", " ").strip() for label in sorted(labels)}
    return {label: name for label, name in named.items() if name}


def _train_now(
    client: GraftClient, head: str, examples: list[dict[str, Any]], options: dict[str, Any]
) -> TrainResponse:
    with render.upload_progress(err) as bar:
        task = bar.add_task(f"uploading {len(examples)} examples", total=None)

        def sent(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if done == total:
                bar.update(task, description="training")

        return client.train(head, examples, on_upload=sent, **options)


def _start_job(
    client: GraftClient, head: str, examples: list[dict[str, Any]], options: dict[str, Any]
) -> JobResponse:
    with render.upload_progress(err) as bar:
        task = bar.add_task(f"uploading {len(examples)} examples", total=None)
        return client.start_training_job(
            head,
            examples,
            on_upload=lambda done, total: bar.update(task, completed=done, total=total),
            **options,
        )


def _wait_for(client: GraftClient, started: JobResponse) -> TrainResponse:
    try:
        with render.job_progress(err) as bar:
            task = bar.add_task(render.job_description(started), total=1.0)

            def show(state: JobResponse) -> None:
                bar.update(
                    task,
                    description=render.job_description(state),
                    completed=state.progress.fraction,
                )

            final = client.wait_for_job(started.job, on_progress=show)
    except KeyboardInterrupt:
        err.print(
            f"job {started.job} goes on on the server; `graft jobs cancel {started.job}` stops it"
        )
        raise typer.Exit(130) from None
    if final.status != "succeeded" or final.result is None:
        reason = f": {final.error.code}: {final.error.message}" if final.error else ""
        err.print(render.error_line(f"job {final.job} {final.status}", reason.removeprefix(" ")))
        raise typer.Exit(1)
    return final.result


def predict(
    head: HeadName,
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", exists=True, dir_okay=False, help="Texts: .txt (one a line) or a table."
        ),
    ] = None,
    text_column: TextColumn = "text",
    version: Version = None,
    top_k: Annotated[int, typer.Option(min=1, help="Ranked labels per text.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per request.")] = 64,
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Label texts given as arguments or in a file."""
    inputs = list(texts or []) + (_read(read_inputs, file, text_column) if file else [])
    if not inputs:
        raise typer.BadParameter("give texts as arguments or --file", param_hint="TEXTS")
    answers: list[PredictResponse] = []
    with _session(url, key, tenant) as client:
        chunks = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
        with render.job_progress(err) as bar:
            task = bar.add_task("labelling", total=len(inputs), visible=len(chunks) > 1)
            for chunk in chunks:
                answers.append(client.predict(head, chunk, version=_version(version), top_k=top_k))
                bar.advance(task, len(chunk))
                version = str(answers[0].version)  # one version for the whole file
    merged = PredictResponse(
        head=answers[0].head,
        version=answers[0].version,
        predictions=[p for answer in answers for p in answer.predictions],
    )
    if as_json:
        _print_json(merged)
    else:
        out.print(f"head {merged.head}, version {merged.version}")
        out.print(render.predictions(inputs, merged.predictions, top_k))


def evaluate(
    head: HeadName,
    file: DataFile,
    text_column: TextColumn = "text",
    label_column: LabelColumn = "label",
    version: Version = None,
    abstain_threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Judge abstention at this threshold (default: the head's)."
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Score a head on labelled examples: accuracy, macro-F1, per label, confusion matrix."""
    examples = _read(read_examples, file, text_column, label_column)
    with _session(url, key, tenant) as client, render.upload_progress(err) as bar:
        task = bar.add_task(f"evaluating on {len(examples)} examples", total=None)
        answer = client.evaluate(
            head,
            examples,
            version=_version(version),
            on_upload=lambda done, total: bar.update(task, completed=done, total=total),
            abstain_threshold=abstain_threshold,
        )
    _emit(answer, as_json, render.evaluation)


@heads_app.command("list")
def heads_list(
    url: Url = DEFAULT_URL, key: Key = None, tenant: Tenant = None, as_json: Json = False
) -> None:
    """The tenant's heads, with their versions and aliases."""
    with _session(url, key, tenant) as client:
        found = client.list_heads()
    _emit(found, as_json, render.heads)


@heads_app.command("show")
def heads_show(
    name: Annotated[str, typer.Argument(help="The head's name.")],
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """One head: every version with its kind, labels, size and training report."""
    with _session(url, key, tenant) as client:
        found = client.get_head(name)
    _emit(found, as_json, render.head)


def _confirm(question: str) -> None:
    """Ask on stderr and read the answer from stdin; stop (exit 1) unless it is yes, and with no
    answer to read (stdin closed, or at its end), say to give --yes. Not click's prompt: it
    writes the space after the question to stdout, into a script's output."""
    err.print(render.plain(f"{question} [y/N] "), end="")
    try:
        answer = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):  # a stdin that cannot be read
        answer = ""
    if not answer:
        err.print("\nno answer on stdin; give --yes to go ahead without asking")
        raise typer.Exit(1)
    if answer.strip().lower() not in ("y", "yes"):
        err.print("Aborted." if sys.stdin.isatty() else "\nAborted.")
        raise typer.Exit(1)
    if not sys.stdin.isatty():  # the answer was not echoed: end the question's line
        err.print()


@heads_app.command("delete")
def heads_delete(
    name: Annotated[str, typer.Argument(help="The head's name.")],
    version: Annotated[
        int | None, typer.Option("--version", help="Only this version (default: all).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Delete one version of a head, or the whole head."""
    if not yes:
        # One version can be the head's last, and deleting it deletes the head: ask either way.
        what = "every version" if version is None else f"version {version}"
        _confirm(f"Delete {what} of head {name!r}?")
    with _session(url, key, tenant) as client:
        deleted = client.delete_head(name, version)
    if as_json:
        _print_json(deleted)
    else:
        shown = ", ".join(map(str, deleted.deleted_versions))
        out.print(f"deleted head {deleted.head}, version(s) {shown}")


@jobs_app.command("show")
def jobs_show(
    job: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """A training job's status and progress."""
    with _session(url, key, tenant) as client:
        state = client.get_job(job)
    _emit(state, as_json, render.job)


@jobs_app.command("list")
def jobs_list(
    head: Annotated[str | None, typer.Option("--head", help="Only this head's jobs.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only jobs in this status (queued, running, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Your training jobs, newest first: where to find a job id you lost."""
    with _session(url, key, tenant) as client:
        found = client.list_jobs(head=head, status=status, limit=limit)
    _emit(found, as_json, render.jobs)


@jobs_app.command("cancel")
def jobs_cancel(
    job: Annotated[str, typer.Argument(help="The job's id.")],
    url: Url = DEFAULT_URL,
    key: Key = None,
    tenant: Tenant = None,
    as_json: Json = False,
) -> None:
    """Cancel a queued or running training job; it registers nothing."""
    with _session(url, key, tenant) as client:
        state = client.cancel_job(job)
    _emit(state, as_json, render.job)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``graft`` app."""
    app.command()(train)
    app.command()(predict)
    app.command()(evaluate)
    app.add_typer(heads_app, name="heads")
    app.add_typer(jobs_app, name="jobs")
