"""A file of minimal pairs (`gbcli pairs --file`): TSV or JSON Lines with BLiMP's field names, each line a pair or
the reason it is not one; and, with `--output --resume`, the check that a record read back is of the same pair,
models and conventions.

The scoring itself is `gbcli.tasks.pairs`; this module reads and checks what goes into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.inputs import read_lines
from gbcli.jobs.jsonl_output import checker
from gbcli.loading.models import LoadedModel
from gbcli.render.common import to_jsonable
from gbcli.tasks.pairs import LineFailure, PairInput, Tally, check_pair_fits, check_pair_text
from gbcli.tasks.scoring import ScoreSettings, conventions

GROUP_FIELDS = ("UID", "phenomenon", "linguistics_term", "field")  # BLiMP's fields, finest first


@dataclass(frozen=True)
class PairFields:
    """The names of the fields a file's pairs are read from."""

    good: str = "sentence_good"
    bad: str = "sentence_bad"
    group: str | None = None  # None: the first of GROUP_FIELDS the file has


def file_format(path: str, lines: list[str], chosen: str) -> Literal["tsv", "jsonl"]:
    if chosen not in ("auto", "tsv", "jsonl"):
        raise usage_error(f"Unknown --format '{chosen}'.", "Choose from: auto, tsv, jsonl.")
    if chosen != "auto":
        return chosen  # type: ignore[return-value]
    if path.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if path.endswith((".tsv", ".tab")):
        return "tsv"
    first = next((line for line in lines if line.strip()), "")
    return "jsonl" if first.lstrip().startswith("{") else "tsv"


def _text(value: Any, name: str) -> str:
    if value is None:
        raise usage_error(f"the field '{name}' is missing.")
    if not isinstance(value, str):
        raise usage_error(f"the field '{name}' is not a string.")
    return value


def _label(value: Any) -> str | None:
    return None if value is None else str(value)


PairEntries = tuple[list["PairInput | LineFailure"], str | None]  # the lines, and the field accuracy is grouped by


def parse_jsonl(lines: list[str], fields: PairFields) -> PairEntries:
    entries: list[PairInput | LineFailure] = []
    group_field = fields.group
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            entries.append(LineFailure(number, f"not valid JSON ({exc.msg} at column {exc.colno})."))
            continue
        if not isinstance(record, dict):
            entries.append(LineFailure(number, "not a JSON object."))
            continue
        try:
            good, bad = _text(record.get(fields.good), fields.good), _text(record.get(fields.bad), fields.bad)
        except GbcliError as error:
            entries.append(LineFailure(number, error.message))
            continue
        if group_field is None:
            group_field = next((name for name in GROUP_FIELDS if name in record), None)
        entries.append(
            PairInput(
                line=number,
                good=good,
                bad=bad,
                uid=_label(record.get("UID")),
                phenomenon=_label(record.get("phenomenon", record.get("linguistics_term"))),
                field=_label(record.get("field")),
                pair_id=record.get("pair_id"),
                group=_label(record.get(group_field)) if group_field else None,
            )
        )
    return entries, group_field


def parse_tsv(lines: list[str], fields: PairFields) -> PairEntries:
    """Two tab-separated columns, good then bad; or, under a header line, the columns it names."""
    entries: list[PairInput | LineFailure] = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    columns: dict[str, int] | None = None
    header: list[str] = []
    if numbered:
        header = [cell.strip() for cell in numbered[0][1].split("\t")]
        if fields.good in header and fields.bad in header:
            columns = {name: k for k, name in enumerate(header)}
            numbered = numbered[1:]
        elif [h.lower() for h in header[:2]] == ["good", "bad"]:
            columns = {fields.good: 0, fields.bad: 1, **{name: k for k, name in enumerate(header)}}
            numbered = numbered[1:]
    group_field = fields.group or next((name for name in GROUP_FIELDS if columns and name in columns), None)
    for number, line in numbered:
        cells = line.split("\t")
        if columns is None:
            if len(cells) != 2:
                entries.append(LineFailure(number, f"{len(cells)} tab-separated columns, not 2 (good, bad)."))
                continue
            entries.append(PairInput(line=number, good=cells[0], bad=cells[1]))
            continue
        # The header's width, not len(columns): a `good bad` header also names the columns --good and --bad ask for.
        if len(cells) < len(header):
            entries.append(LineFailure(number, f"{len(cells)} tab-separated columns, the header has {len(header)}."))
            continue

        def cell(name: str) -> str | None:
            return cells[columns[name]] if name in columns else None  # noqa: B023 - used in this iteration only

        entries.append(
            PairInput(
                line=number,
                good=cells[columns[fields.good]],
                bad=cells[columns[fields.bad]],
                uid=cell("UID"),
                phenomenon=cell("phenomenon") or cell("linguistics_term"),
                field=cell("field"),
                pair_id=cell("pair_id"),
                group=cell(group_field) if group_field else None,
            )
        )
    return entries, group_field


def read_pair_file(path: str, chosen_format: str, fields: PairFields) -> PairEntries:
    """Every non-empty line of the file as a pair, or as the reason it is not one; and the group field."""
    lines = read_lines(path)
    parser = parse_jsonl if file_format(path, lines, chosen_format) == "jsonl" else parse_tsv
    return parser(lines, fields)


# --output with --resume (gbcli.jobs.jsonl_output)


def resumed_check(models: list[LoadedModel], settings: ScoreSettings, path: str):
    """A resumed record must be of the same pair (good and bad), models and conventions."""
    return checker(
        path,
        lambda r: (r.get("good"), r.get("bad")),
        [(lm.family, lm.name, to_jsonable(conventions(lm, settings))) for lm in models],
        column_keys,
        ("conventions", "--bos/--pll/--bits/--words"),
    )


def column_keys(record: dict) -> list[tuple]:
    """The models and conventions a `score` or `pairs` record was made with."""
    return [(c.get("family"), c.get("model"), c.get("conventions")) for c in record.get("columns", [])]


@dataclass
class FileRun:
    """A --file run, ready to go: the pairs still to score and what is already known."""

    pairs: list[PairInput]  # every valid pair of the file (chunks are cut from this list)
    failures: list[LineFailure]
    group_field: str | None
    tally: Tally


def prepare_file_run(
    models: list[LoadedModel], entries: list[PairInput | LineFailure], group_field: str | None
) -> FileRun:
    """Check every line against the models: the pairs to score, and the lines that cannot be."""
    failures = [e for e in entries if isinstance(e, LineFailure)]
    pairs = []
    for entry in entries:
        if isinstance(entry, LineFailure):
            continue
        try:
            check_pair_text(entry)
            check_pair_fits(entry, models)
        except GbcliError as error:
            failures.append(LineFailure(entry.line, error.message))
            continue
        pairs.append(entry)
    tally = Tally([(lm.family, lm.name) for lm in models])
    return FileRun(pairs, sorted(failures, key=lambda f: f.line), group_field, tally)
