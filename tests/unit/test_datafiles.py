"""Reading examples and inputs for the CLI: every format, and errors that say where."""

from __future__ import annotations

import pytest

from service.datafiles import DataFileError, read_examples, read_inputs


def test_csv_with_a_bom_quoted_line_breaks_and_other_columns(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(
        '\ufeffid,utterance,intent\n1,"two\nlines",card_arrival\n2,"a, b",top_up\n',
        encoding="utf-8",
    )
    assert read_examples(path, "utterance", "intent") == [
        {"text": "two\nlines", "label": "card_arrival"},
        {"text": "a, b", "label": "top_up"},
    ]
    assert read_inputs(path, "utterance") == ["two\nlines", "a, b"]


def test_tsv_jsonl_and_json(tmp_path):
    tsv = tmp_path / "data.tsv"
    tsv.write_text("text\tlabel\nhello\tgreeting\n")
    assert read_examples(tsv) == [{"text": "hello", "label": "greeting"}]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "hi", "label": ["a", "b"]}\n\n{"text": "yo", "label": "c"}\n')
    assert read_examples(jsonl) == [
        {"text": "hi", "labels": ["a", "b"]},  # multilabel heads take lists
        {"text": "yo", "label": "c"},
    ]
    fenced = tmp_path / "fenced.jsonl"
    fenced.write_text('{"text": "yo", "label": "c"}\n{"text": "weather?", "out_of_scope": true}\n')
    assert read_examples(fenced) == [
        {"text": "yo", "label": "c"},
        {"text": "weather?", "out_of_scope": True},  # in place of a label, not beside one
    ]
    array = tmp_path / "data.json"
    array.write_text('[{"text": "hi", "label": "a"}]')
    assert read_examples(array) == [{"text": "hi", "label": "a"}]


def test_text_files_hold_one_input_a_line(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text("first text\n\n  \nsecond text\n")
    assert read_inputs(path) == ["first text", "second text"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "text,category\nhi,x\n", r"a.csv:2: no column 'label' \(columns: 'text', 'cat"),
        ("b.csv", "text,label\nhi,x\n ,y\n", r"b.csv:3: 'text' is empty"),
        ("c.jsonl", '{"text": "hi", "label": "x"}\n{"text": "hi",\n', r"c.jsonl:2: not JSON"),
        ("d.jsonl", '["hi", "x"]\n', r"d.jsonl:1: expected a JSON object"),
        ("e.json", '{"text": "hi"}', r"e.json: expected a JSON array"),
        ("f.xlsx", "", r"unknown format '.xlsx'"),
        ("g.csv", "text,label\n", r"g.csv: no examples"),
        ("h.jsonl", '{"text": "hi", "label": ""}\n', r"h.jsonl:1: 'label' is empty"),
        (
            "i.jsonl",
            '{"text": "hi", "out_of_scope": "yes"}\n',
            r"i.jsonl:1: 'out_of_scope' is true or false, not 'yes'",
        ),
        (
            "j.jsonl",
            '{"text": "hi", "label": "x", "out_of_scope": true}\n',
            r"j.jsonl:1: 'label' or 'out_of_scope': true, not both",
        ),
    ],
)
def test_problems_name_the_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFileError, match=message):
        read_examples(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(DataFileError, match="No such file"):
        read_examples(tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataFileError, match="not UTF-8"):
        read_examples(latin)
