"""`--output F [--resume]` of the file commands (`score`, `pairs`, `fill-mask`): JSON Lines that outlive a crash.

Every record is a whole line, appended and flushed to disk a chunk at a time with Ctrl-C held back meanwhile, so a
crash can leave at most one torn line: the last. `--resume` reads the finished records back (keyed by their input
line), cuts a torn last line off to be redone, and refuses a file some other command, input or model made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gbcli.errors import GbcliError, usage_error
from gbcli.render.common import dumps
from gbcli.terminal import deferred_interrupt


@dataclass(frozen=True)
class RecordShape:
    """What one command's records look like: the key that holds the input line, and fields only they have."""

    command: str  # the command that writes them, for messages
    key: str  # the record's input line number
    fields: tuple[str, ...]  # present in every record of the command
    kind: str | None = None  # the record's "kind", where it has one

    def accepts(self, record: Any) -> bool:
        return (isinstance(record, dict) and isinstance(record.get(self.key), int)
                and all(name in record for name in self.fields)
                and (self.kind is None or record.get("kind") == self.kind))

    def line(self, record: dict) -> int:
        return int(record[self.key])


PAIR_RECORDS = RecordShape("pairs", "line", ("good", "bad", "columns"), kind="pair")
SCORE_RECORDS = RecordShape("score", "index", ("text", "columns"))
FILL_MASK_RECORDS = RecordShape("fill-mask", "line", ("text", "models", "masks", "error"))


@dataclass
class ResumedOutput:
    """The records an earlier run left in --output, keyed by input line."""

    records: dict[int, dict]
    torn: bool  # the last line was cut short (and has been removed, to be done again)


def open_output(path: str, shape: RecordShape, *, resume: bool, force: bool) -> ResumedOutput:
    """Check --output before any model runs; with --resume read what is done, dropping a torn last line."""
    target = Path(path)
    if target.is_dir():
        raise usage_error(f"--output '{path}' is a folder.", "Give a file name.")
    if target.exists() and not resume and not force:
        raise usage_error(f"--output '{path}' already exists.",
                          "Add --resume to continue an interrupted run, or --force to start it again.")
    if not target.exists() or not resume:  # a new file (--resume with no file yet starts from the beginning)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("", encoding="utf-8")
        except OSError as exc:
            raise GbcliError(f"Cannot write --output '{path}': {exc.strerror}.",
                             "Check the folder's permissions.") from exc
        return ResumedOutput({}, False)
    data = target.read_bytes()
    kept_end = 0
    records: dict[int, dict] = {}
    torn = False
    for raw in data.splitlines(keepends=True):
        try:
            record = json.loads(raw.decode("utf-8")) if raw.endswith(b"\n") else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not shape.accepts(record):
            if kept_end + len(raw) == len(data):  # the last line, cut short by a kill: redo it
                torn = True
                break
            raise usage_error(f"--output '{path}' has a line that is not a {shape.command} record (byte {kept_end}).",
                              f"Resume only into a file an earlier `gbcli {shape.command} --output` wrote, "
                              "or use --force.")
        records[shape.line(record)] = record
        kept_end += len(raw)
    if torn:
        with open(target, "r+b") as stream:
            stream.truncate(kept_end)
    return ResumedOutput(records, torn)


def check_resumed(resumed: ResumedOutput, path: str, inputs: dict[int, Any], input_of: Callable[[dict], Any],
                  columns: Any, columns_of: Callable[[dict], Any], options: tuple[str, str]) -> None:
    """A resumed file must come from the same input (each record's `input_of` is what `inputs` has at its line) and
    the same models and options (`columns_of` every record is `columns`), or its lines would be mixed up.
    `options`: what the options are called, and their flags (("conventions", "--bos/--pll/--bits/--words"))."""
    noun, flags = options
    for line, record in resumed.records.items():
        if line not in inputs or input_of(record) != inputs[line]:
            raise usage_error(f"--output '{path}' holds line {line} of another input.",
                              "Resume with the same --file, or start again with --force.")
        if columns_of(record) != columns:
            raise usage_error(f"--output '{path}' was made with other models or {noun} (line {line}).",
                              f"Resume with the same models and {flags}, or use --force.")


def append_records(path: str, lines: list[str]) -> None:
    """Append whole JSON Lines, flushed to disk; Ctrl-C is held back until they are all written."""
    with deferred_interrupt(), open(path, "a", encoding="utf-8") as stream:
        stream.write("".join(lines))
        stream.flush()
        os.fsync(stream.fileno())


def append_results(path: str, results: list[Any]) -> None:
    """Results appended as the JSON Lines `--json` prints for them."""
    append_records(path, [dumps(r, indent=None) + "\n" for r in results])
