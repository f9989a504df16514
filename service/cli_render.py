"""How the ``graft`` CLI shows answers to people: rich tables and progress bars (not --json)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from service.schemas import (
    EvaluateResponse,
    HeadsResponse,
    HeadSummary,
    JobResponse,
    JobsResponse,
    Prediction,
    TrainResponse,
)

#: Longer texts are cut to this many characters in tables.
TEXT_WIDTH = 60
#: A confusion matrix is drawn only for heads with at most this many labels.
MAX_MATRIX_LABELS = 15


def printable(text: str) -> str:
    """A string from a tenant or a server with each character that is not printable written as
    Python writes it (``\\t``, ``\\x1b``): a tab or newline broke a table's row, and an escape
    character reached the terminal raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def plain(text: str, style: str = "") -> Text:
    """A string from a tenant or a server as rich should print it: never read as markup (a label
    "[/]" crashed a table, and escaping one that ends in a backslash showed two), and printable."""
    return Text(printable(text), style=style)


def error_line(head: str, message: str) -> Text:
    """``head`` in red, then a server's or a file's message as it is."""
    return Text.assemble((head, "red"), " ", printable(message))


def _table(*columns: str | Column, **options: Any) -> Table:
    """A table whose cells fold onto more lines on a narrow terminal: cut with "…", a job id or a
    label could no longer be read, or copied."""
    folded = [Column(c, overflow="fold") if isinstance(c, str) else c for c in columns]
    return Table(*folded, **options)


#: The width of output that is not a terminal: wide enough never to cut a cell.
UNCUT_WIDTH = 1000


def make_console(*, stderr: bool = False) -> Console:
    """A console for people on a terminal, and for scripts off one: rich assumes 80 columns
    off a terminal and cuts table cells to fit, so a piped table lost its job ids and long
    labels. ``COLUMNS``, where set, still decides."""
    if (sys.stderr if stderr else sys.stdout).isatty():
        return Console(stderr=stderr)
    width = None if "COLUMNS" in os.environ else UNCUT_WIDTH  # rich reads COLUMNS itself
    return Console(file=cast(IO[str], _Unpadded(stderr=stderr)), width=width)


class _Unpadded:
    """The console's stream off a terminal, without the spaces that end a line: rich pads every
    row of a table to its widest, and one 220-character ``labels`` row made a piped train
    answer 220 columns wide on every line. Looked up on each write, as rich does, so that a
    test runner's swapped ``sys.stdout`` is the one written to."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._line = ""

    @property
    def _stream(self) -> Any:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        *lines, self._line = (self._line + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._line:
            self._stream.write(self._line)
            self._line = ""
        self._stream.flush()


def upload_progress(console: Console) -> Progress:
    """Bytes sent, then (same bar) the wait for the answer; nothing off a terminal."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # off one, a finished bar left a blank line
    )


def job_progress(console: Console) -> Progress:
    """A training job's phase and how much of it is done; nothing off a terminal."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # off one, a finished bar left a blank line
    )


def job_description(job: JobResponse) -> str:
    return f"{job.status}: {job.progress.phase}" if job.status == "running" else job.status


def trained(answer: TrainResponse) -> RenderableType:
    table = _fields(
        ("head", answer.head),
        ("version", str(answer.version)),
        ("kind", answer.kind),
        ("labels", _count_and_names(answer.labels)),
        ("examples", str(answer.n_examples)),
        ("train time", f"{answer.train_ms / 1000:.2f} s"),
        *_report_rows(answer.report),
    )
    return table


def predictions(texts: Sequence[str], found: Sequence[Prediction], top_k: int) -> Table:
    table = _table("#", "text", "label", "score", *(["also"] if top_k > 1 else []))
    for index, (text, prediction) in enumerate(zip(texts, found, strict=True), start=1):
        # An abstention still shows the label it would have given, whose score that is.
        best = prediction.top[0].label if prediction.top else "?"
        label = (
            plain(f"(none of these; {best}?)", style="dim")
            if prediction.abstained
            else plain(str(prediction.label))
        )
        row: list[RenderableType] = [str(index), plain(_cut(text)), label]
        row.append(f"{prediction.score:.3f}")
        if top_k > 1:
            row.append(plain(", ".join(f"{t.label} {t.score:.2f}" for t in prediction.top[1:])))
        table.add_row(*row)
    return table


def heads(found: HeadsResponse) -> Table:
    table = _table("head", "latest", "versions", "kind", "labels", "aliases", "created")
    for head in found.heads:
        latest = head.versions[-1]
        table.add_row(
            head.head,
            str(head.latest_version),
            ", ".join(str(v.version) for v in head.versions),
            latest.kind,
            str(len(latest.labels)),
            ", ".join(f"{name}→{version}" for name, version in sorted(head.aliases.items())),
            f"{latest.created:%Y-%m-%d %H:%M}",
        )
    return table


def head(found: HeadSummary) -> RenderableType:
    table = _table(
        "version",
        "kind",
        "labels",
        "examples",
        "train acc.",
        "size",
        "created",
        "aliases",
        title=f"head {found.head}",
    )
    for version in found.versions:
        accuracy = version.report.get("train_accuracy")
        table.add_row(
            str(version.version),
            version.kind,
            str(len(version.labels)),
            str(version.n_examples),
            f"{accuracy:.3f}" if isinstance(accuracy, int | float) else "",
            f"{version.size_bytes / 1024:.1f} KB",
            f"{version.created:%Y-%m-%d %H:%M}",
            ", ".join(version.aliases),
        )
    latest = found.versions[-1]
    labels = ", ".join(latest.labels)
    return Group(table, plain(f"labels of version {latest.version}: {labels}"))


def _phase(state: JobResponse) -> str:
    return f"{state.progress.phase} ({state.progress.fraction:.0%})"


def job(state: JobResponse) -> Table:
    rows: list[tuple[str, RenderableType]] = [
        ("job", state.job),
        ("head", state.head),
        ("kind", state.kind),
        ("status", state.status),
        ("phase", _phase(state)),
        ("examples", str(state.n_examples)),
        ("created", f"{state.created:%Y-%m-%d %H:%M:%S}"),
    ]
    if state.version is not None:
        rows.append(("version", str(state.version)))
    if state.error is not None:
        rows.append(("error", plain(f"{state.error.code}: {state.error.message}")))
    return _fields(*rows)


def jobs(found: JobsResponse) -> RenderableType:
    if not found.jobs:
        return "no jobs"
    failed = any(state.error is not None for state in found.jobs)
    columns = ["job", "head", "kind", "status", "phase", "examples", "version", "created"]
    table = _table(*columns, *(["error"] if failed else []))
    for state in found.jobs:
        row = [
            state.job,
            state.head,
            state.kind,
            state.status,
            _phase(state),
            str(state.n_examples),
            str(state.version) if state.version is not None else "",
            f"{state.created:%Y-%m-%d %H:%M:%S}",
        ]
        if failed:  # the code only: `graft jobs show JOB` has the message
            row.append(state.error.code if state.error is not None else "")
        table.add_row(*row)
    return table


def evaluation(answer: EvaluateResponse) -> RenderableType:
    """Accuracy and macro-F1, the per-label table, and the confusion matrix if it is small."""
    ece = answer.expected_calibration_error
    summary: list[tuple[str, RenderableType]] = [
        ("head", answer.head),
        ("version", str(answer.version)),
        ("examples", str(answer.n_examples)),
        ("accuracy", f"{answer.accuracy:.3f}"),
        ("macro F1", f"{answer.macro_f1:.3f}"),
        *([("calibration error", f"{ece:.3f}")] if ece is not None else []),
    ]
    if answer.abstention is not None:
        kept = answer.abstention
        summary.append(
            (
                "abstained",
                f"{kept.abstained} (threshold {kept.threshold:.2f}, coverage {kept.coverage:.3f}"
                + (
                    f", accuracy on the answered {kept.answered_accuracy:.3f})"
                    if kept.answered_accuracy is not None
                    else ")"
                ),
            )
        )
        if kept.unknown_label_refused is not None:
            summary.append(
                (
                    "refused unknown",
                    f"{kept.unknown_label_refused:.1%} of {kept.unknown_label_examples} examples "
                    "of labels the head was never taught",
                )
            )
    if answer.unknown_labels:
        summary.append(("unknown labels", _count_and_names(answer.unknown_labels)))
    parts: list[RenderableType] = [_fields(*summary)]
    table = _table("label", "precision", "recall", "f1", "support", title="per label")
    unseen = [label for label, metrics in answer.per_label.items() if metrics.support == 0]
    if unseen:  # a 77-label head scored on a few labels' examples: keep the table readable
        labels_are = (
            "label without examples here is"
            if len(unseen) == 1
            else "labels without examples here are"
        )
        table.caption = f"{len(unseen)} {labels_are} not shown"
    for label, metrics in answer.per_label.items():
        if metrics.support == 0:
            continue
        table.add_row(
            plain(label),
            f"{metrics.precision:.3f}",
            f"{metrics.recall:.3f}",
            f"{metrics.f1:.3f}",
            str(metrics.support),
        )
    parts.append(table)
    matrix, labels = answer.confusion_matrix, answer.labels
    if matrix is not None and len(labels) <= MAX_MATRIX_LABELS:
        headers = [Column(plain(label), overflow="fold") for label in labels]
        grid = _table("true \\ predicted", *headers, title="confusion matrix")
        for label, counts in zip(labels, matrix, strict=True):
            grid.add_row(plain(label), *map(str, counts))
        parts.append(grid)
    elif matrix is not None:
        parts.append(f"confusion matrix: {len(labels)} labels, shown with --json only")
    return Group(*parts)


def _report_rows(report: Mapping[str, Any]) -> list[tuple[str, RenderableType]]:
    rows: list[tuple[str, RenderableType]] = []
    for name in ("train_accuracy", "cv_accuracy", "cv_macro_f1"):
        if isinstance(report.get(name), int | float):
            rows.append((name.replace("_", " "), f"{report[name]:.3f}"))
    if report.get("label_descriptions"):
        rows.append(("label descriptions", str(report["label_descriptions"])))
    if report.get("out_of_scope_examples"):
        rows.append(("out-of-scope examples", str(report["out_of_scope_examples"])))
    abstain = report.get("abstain")
    if isinstance(abstain, Mapping) and isinstance(abstain.get("threshold"), int | float):
        row = f"below {abstain['threshold']:.4f}"
        if isinstance(abstain.get("out_of_scope_rejected"), int | float):
            row += f" (refuses about {abstain['out_of_scope_rejected']:.0%} of unseen intents)"
        if isinstance(abstain.get("out_of_scope_examples_rejected"), int | float):
            share = abstain["out_of_scope_examples_rejected"]
            row += f"; refused {share:.0%} of its out-of-scope examples in cross-validation"
        rows.append(("abstains", row))
    for warning in report.get("warnings", []) or []:
        rows.append(("warning", plain(warning, style="yellow")))
    return rows


def _fields(*rows: tuple[str, RenderableType]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _count_and_names(labels: Sequence[str], count: int = 8) -> Text:
    names = ", ".join(labels[:count]) + (", ..." if len(labels) > count else "")
    return plain(f"{len(labels)} ({names})")


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_WIDTH else flat[: TEXT_WIDTH - 1] + "…"
