"""Labelled examples and inputs from files (CSV, TSV, JSON Lines, JSON), for the ``graft`` CLI.

The format follows the file's suffix. Columns (CSV) and keys (JSON) are named by the caller,
``text`` and ``label`` by default; a problem names the file, the line and what is missing, so
a bad row is found before anything is uploaded.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


class DataFileError(ValueError):
    """A file the CLI cannot read examples or inputs from; the message says where and why."""


def read_examples(
    path: Path, text_column: str = "text", label_column: str = "label"
) -> list[dict[str, Any]]:
    """``[{"text", "label"}]`` from every row; a JSON list of labels becomes ``"labels"``
    (multilabel heads), and a JSON row with ``"out_of_scope": true`` in place of its label an
    out-of-scope example."""
    examples = []
    for where, row in _rows(path):
        text = _field(row, text_column, where)
        if not isinstance(text, str) or not text.strip():
            raise DataFileError(f"{where}: {text_column!r} is empty")
        if _out_of_scope(row, label_column, where):
            examples.append({"text": text, "out_of_scope": True})
            continue
        label = _field(row, label_column, where)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataFileError(f"{where}: {label_column!r} is empty")
        if isinstance(label, list):
            examples.append({"text": text, "labels": label})
        else:
            examples.append({"text": text, "label": label})
    if not examples:
        raise DataFileError(f"{path}: no examples")
    return examples


def _out_of_scope(row: dict[str, Any], label_column: str, where: str) -> bool:
    """Whether a row is an out-of-scope example: ``"out_of_scope": true`` in place of a label."""
    flag = row.get("out_of_scope", False)
    if flag is not True and flag is not False:
        raise DataFileError(f"{where}: 'out_of_scope' is true or false, not {flag!r}")
    if flag and label_column in row:
        raise DataFileError(f"{where}: {label_column!r} or 'out_of_scope': true, not both")
    return flag


def read_inputs(path: Path, text_column: str = "text") -> list[str]:
    """Texts to label: one per line of a ``.txt`` file, or a column of any other format."""
    if path.suffix.lower() == ".txt":
        texts = [line for line in _text(path).splitlines() if line.strip()]
    else:
        texts = []
        for where, row in _rows(path):
            text = _field(row, text_column, where)
            if not isinstance(text, str) or not text.strip():
                raise DataFileError(f"{where}: {text_column!r} is empty")
            texts.append(text)
    if not texts:
        raise DataFileError(f"{path}: no texts")
    return texts


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        # newline="" keeps the line breaks inside quoted fields, as the csv module needs.
        source = io.StringIO(_text(path), newline="")
        reader = csv.DictReader(source, delimiter=TABLE_SUFFIXES[suffix])
        for row in reader:
            yield f"{path}:{reader.line_num}", row
    elif suffix in JSON_LINES_SUFFIXES:
        for number, line in enumerate(_text(path).splitlines(), start=1):
            if line.strip():
                where = f"{path}:{number}"
                yield where, _object(json_loads(line, where), where)
    elif suffix == ".json":
        rows = json_loads(_text(path), str(path))
        if not isinstance(rows, list):
            raise DataFileError(f"{path}: expected a JSON array of objects")
        for number, row in enumerate(rows, start=1):
            yield f"{path}: item {number}", _object(row, f"{path}: item {number}")
    else:
        raise DataFileError(
            f"{path}: unknown format {suffix or '(no suffix)'!r}; use .csv, .tsv, .jsonl or .json"
        )


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerates the BOM spreadsheets write
    except OSError as exc:
        raise DataFileError(f"{path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def json_loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{where}: not JSON ({exc.msg})") from exc


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFileError(f"{where}: expected a JSON object")
    return value


def _field(row: dict[str, Any], name: str, where: str) -> Any:
    if name not in row:
        known = ", ".join(repr(k) for k in row if k is not None) or "none"
        raise DataFileError(f"{where}: no column {name!r} (columns: {known})")
    return row[name]
