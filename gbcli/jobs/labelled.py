"""Labelled examples from a file: the data that `gbcli probe` (and `gbcli finetune`) learn from.

A file is JSONL (one JSON object a line), CSV or TSV (a header line naming the columns), chosen by its extension
(.jsonl/.json, .csv, .tsv/.tab) or by an explicit `file_format`. Each example has a text and a label:

- `text` and `label` columns (renamed with `text_field`, `label_field`); labels are any strings (a JSON number or
  boolean is read as its text, `1`, `true`);
- an optional `word` column (or one `word` for every line) makes a **word-level** example: the word's first
  whole-word occurrence in the text (not inside a longer word: `bank` is not in `banks`) is what is probed;
- optional `text_a` and `text_b` columns, in place of `text`, make a **pair** example (inference-style tasks); the
  example's `text` is then text_a and its `text_b` the second text.

Every bad input is a `GbcliError` with exit code 2 that names the file and the line: a missing column, an empty
text or label, a word not in its text, bad UTF-8, a line that is not a JSON object, an empty file, a file with
one label only. Other columns are ignored (a built-in task writes some for the reader's eyes).

    data = read_labelled("train.csv")            # or read_labelled(path, file_format="tsv", text_field="sentence")
    data.examples[0]                             # LabelledExample(text=..., label=..., word=None, text_b=None, ...)
    data.labels, data.level                      # ['neg', 'pos'], 'sentence'

Nothing here imports torch; the reader is stdlib only.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.inputs import check_input_file

# The dataclasses live with the tasks that compute on them (tasks never import jobs); this module reads files.
from gbcli.tasks.labelled_data import LabelledData, LabelledExample, Level, example_level, word_pattern

__all__ = [
    "FORMATS",
    "LabelledData",
    "LabelledExample",
    "Level",
    "detect_format",
    "parse_labelled",
    "read_labelled",
    "word_pattern",
]

FileFormat = Literal["jsonl", "csv", "tsv"]
FORMATS: tuple[FileFormat, ...] = ("jsonl", "csv", "tsv")
EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
PAIR_FIELDS = ("text_a", "text_b")
UTF8_BOM = "\ufeff"


def detect_format(path: str, file_format: str | None = None) -> FileFormat:
    """The format asked for, else the one the extension says; a usage error when neither says."""
    if file_format is not None:
        chosen = file_format.strip().lower()
        if chosen not in FORMATS:
            raise usage_error(f"Unknown format '{file_format}'.", f"Choose from: {', '.join(FORMATS)}.")
        return chosen  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise usage_error(
            f"Cannot tell the format of '{path}' from its extension.",
            "Name it .jsonl, .csv or .tsv, or give --format jsonl|csv|tsv.",
        )
    return EXTENSIONS[suffix]


def read_labelled(
    path: str,
    *,
    file_format: str | None = None,
    text_field: str = "text",
    label_field: str = "label",
    word_field: str = "word",
    word: str | None = None,
    min_labels: int = 2,
) -> LabelledData:
    """The labelled examples of the file at `path` (see the module's docstring); `word` probes that word on
    every line (a word-level task from a sentence file). `min_labels=1` reads a file that is only scored, never
    learned from (a dev or test set may hold one label)."""
    chosen = detect_format(path, file_format)
    file = check_input_file(path, "Give a .jsonl, .csv or .tsv file.")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise GbcliError(f"Cannot read '{path}': {exc.strerror}.", "Check the file's permissions.") from exc
    return parse_labelled(
        _decode(data, path),
        chosen,
        path,
        text_field=text_field,
        label_field=label_field,
        word_field=word_field,
        word=word,
        min_labels=min_labels,
    )


def parse_labelled(
    content: str,
    file_format: FileFormat,
    source: str,
    *,
    text_field: str = "text",
    label_field: str = "label",
    word_field: str = "word",
    word: str | None = None,
    min_labels: int = 2,
) -> LabelledData:
    """The labelled examples of `content` (a whole file's text) in `file_format`; `source` names it in messages."""
    fields = _Fields(text_field, label_field, word_field, word)
    rows = _json_rows(content, source) if file_format == "jsonl" else _table_rows(content, source, file_format)
    examples = [_example(row, number, source, fields) for number, row in rows]
    if not examples:
        raise usage_error(
            f"'{source}' holds no example.", f"Give one example a line with a '{text_field}' and a '{label_field}'."
        )
    level = example_level(examples[0])
    mixed = next((e for e in examples if example_level(e) != level), None)
    if mixed is not None:
        raise usage_error(
            f"Line {mixed.line_number} of '{source}' is a {example_level(mixed)} example, but line "
            f"{examples[0].line_number} is a {level} example.",
            "Give every line the same columns: a word on all of them, pairs on all, or neither.",
        )
    data = LabelledData(source, examples)
    if len(data.labels) < min_labels:
        raise usage_error(
            f"Every example of '{source}' has the label '{data.labels[0]}': there is nothing to tell apart.",
            "Give examples of at least two labels.",
        )
    return data


@dataclass(frozen=True)
class _Fields:
    text: str
    label: str
    word: str
    word_for_all: str | None


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8").removeprefix(UTF8_BOM)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise usage_error(
            f"'{source}' is not valid UTF-8: byte 0x{data[exc.start]:02x} on line {line}.",
            "Convert it first, e.g. iconv -f latin1 -t utf-8.",
        ) from exc


def _json_rows(content: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise usage_error(
                f"Line {number} of '{source}' is not valid JSON: {exc.msg} (column {exc.colno}).",
                'Give one JSON object a line, e.g. {"text": "...", "label": "..."}.',
            ) from exc
        if not isinstance(row, dict):
            raise usage_error(
                f"Line {number} of '{source}' is a JSON {type(row).__name__}, not an object.",
                'Give one JSON object a line, e.g. {"text": "...", "label": "..."}.',
            )
        rows.append((number, row))
    return rows


def _table_rows(content: str, source: str, file_format: FileFormat) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(content, newline=""), delimiter="\t" if file_format == "tsv" else ",")
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise usage_error(
                f"'{source}' is empty.", "Give a header line naming the columns, then one example a line."
            )
        names = [cell.strip() for cell in header]
        rows = []
        end = reader.line_num
        for cells in reader:
            number, end = end + 1, reader.line_num  # a quoted field may span lines: the row starts after the last
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(names):
                raise usage_error(
                    f"Line {number} of '{source}' has {len(cells)} fields, but the header names {len(names)}.",
                    "Quote a field that holds the separator.",
                )
            rows.append((number, dict(zip(names, cells, strict=False))))
    except csv.Error as exc:
        raise usage_error(
            f"Line {reader.line_num} of '{source}' is not valid {file_format.upper()}: {exc}.", "Check its quoting."
        ) from exc
    return rows


def _value(row: dict[str, Any], name: str, number: int, source: str, what: str) -> str:
    if name not in row or row[name] is None:
        present = ", ".join(str(key) for key in row) or "none"
        raise usage_error(
            f"Line {number} of '{source}' has no '{name}' column ({what}); its columns: {present}.",
            f"Name the column '{name}', or say which column it is (--{what}-field).",
        )
    value = row[name]
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise usage_error(
            f"Line {number} of '{source}': '{name}' is a JSON {type(value).__name__}, not a string.",
            "Give a string (or a number for a label).",
        )
    if not value.strip():
        raise usage_error(f"Line {number} of '{source}' has an empty {what}.", f"Give every line a {what}.")
    return value


def _example(row: dict[str, Any], number: int, source: str, fields: _Fields) -> LabelledExample:
    label = _value(row, fields.label, number, source, "label").strip()
    text_b = None
    if fields.text not in row and all(name in row for name in PAIR_FIELDS):
        text = _value(row, PAIR_FIELDS[0], number, source, "text")
        text_b = _value(row, PAIR_FIELDS[1], number, source, "text")
    else:
        text = _value(row, fields.text, number, source, "text")
    word = fields.word_for_all
    if word is None and row.get(fields.word) not in (None, ""):
        word = _value(row, fields.word, number, source, "word").strip()
    if word is not None:
        if text_b is not None:
            raise usage_error(
                f"Line {number} of '{source}' is a pair with a word.", "A word-level example has one text."
            )
        if word_pattern(word).search(text) is None:
            raise usage_error(
                f"The word '{word}' of line {number} of '{source}' is not in its text.",
                "Write the word as it stands in the text, as a whole word.",
            )
    return LabelledExample(text, label, number, word, text_b)
