"""`--output F [--resume]` of the file commands (`score`, `pairs`, `fill-mask`): JSON Lines that outlive a crash.

Every record is a whole line, appended and flushed to disk a chunk at a time with Ctrl-C held back meanwhile, so a
crash can leave at most one torn line: the last. One run writes a file at a time: it holds an advisory lock
(`OUTPUT.lock`, naming its process) from the first check to the last record, and a second run is refused.

`--resume` reads the file back a record at a time (memory does not grow with it): every record must be a record of
the command, in strictly increasing input order, of the same input line and made with the same models and options;
a torn last line is cut off. A chunk of the input is done when all its records are there; the records of a chunk
only partly there are dropped and the chunk is done again whole, because a record's numbers depend (in their last
bits) on the texts batched with it: so a resumed file is the uninterrupted file, byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gbcli.errors import GbcliError, explain_os_error, usage_error
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
        return (
            isinstance(record, dict)
            and isinstance(record.get(self.key), int)
            and all(name in record for name in self.fields)
            and (self.kind is None or record.get("kind") == self.kind)
        )

    def line(self, record: dict) -> int:
        return int(record[self.key])


PAIR_RECORDS = RecordShape("pairs", "line", ("good", "bad", "columns"), kind="pair")
SCORE_RECORDS = RecordShape("score", "index", ("text", "columns"))
FILL_MASK_RECORDS = RecordShape("fill-mask", "line", ("text", "models", "masks", "error"))


# ---------------------------------------------------------------------------------------------------------------
# One writer at a time
# ---------------------------------------------------------------------------------------------------------------


def lock_path(output: str) -> Path:
    return Path(f"{output}.lock")


class OutputLock:
    """An advisory lock on --output for the whole run (`flock` on OUTPUT.lock, which names the holder's process).

    The lock file is removed at the end; a run that finds it removed under its lock (the holder finished between
    its open and its lock) takes the new one. A killed run's file stays, unlocked, and is taken over."""

    def __init__(self, output: str, command: str) -> None:
        self.output = output
        self.command = command
        self.descriptor: int | None = None

    def __enter__(self) -> OutputLock:
        import fcntl  # late: platform (not on Windows)

        path = lock_path(self.output)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GbcliError(
                f"Cannot write --output '{self.output}': {exc.strerror}.", "Check the folder's permissions."
            ) from exc
        while True:
            try:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise GbcliError(
                    f"Cannot write --output '{self.output}': {exc.strerror} (its lock, {path.name}).",
                    "Check the folder's permissions; remove that file if it is not gbcli's.",
                ) from exc
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").split("\n", 1)
                os.close(descriptor)
                pid = holder[0].strip() or "unknown"
                what = holder[1].strip() if len(holder) > 1 and holder[1].strip() else "gbcli"
                raise GbcliError(
                    f"--output '{self.output}' is being written by another run (process {pid}: {what}).",
                    "Wait for it to finish (or stop it), or write to another --output: two runs into one file "
                    "would mix their records.",
                ) from None
            try:
                same = os.fstat(descriptor).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)  # the holder removed it as we opened it: lock the one that is there now
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n{_command_line(self.command)}\n".encode("utf-8", "replace"), 0)
        self.descriptor = descriptor
        return self

    def __exit__(self, *exc: object) -> None:
        if self.descriptor is None:
            return
        try:
            if os.stat(lock_path(self.output), follow_symlinks=False).st_ino == os.fstat(self.descriptor).st_ino:
                lock_path(self.output).unlink()
        except OSError:
            pass
        os.close(self.descriptor)
        self.descriptor = None


def _command_line(command: str) -> str:
    arguments = [a for a in sys.argv[1:] if a.isprintable()][:12]
    return " ".join(["gbcli", *arguments]) if arguments else f"gbcli {command}"


def check_not_input(output: str, file: str | None) -> None:
    """--output must not be --file itself (by name, symlink or hard link): opening it would empty the input."""
    if file is None or file == "-":
        return
    try:
        same = os.path.samefile(output, file)
    except OSError:  # one of them does not exist (yet)
        same = os.path.realpath(output) == os.path.realpath(file)
    if same:
        raise usage_error(
            f"--output '{output}' is the input file '{file}' itself: writing it would replace the input.",
            "Write the records to another file.",
        )


# ---------------------------------------------------------------------------------------------------------------
# Reading a file of records back
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """One record of --output: its input line, the record, and where its bytes are in the file."""

    line: int
    record: dict
    start: int
    end: int


class RecordReader:
    """The records of a file, one at a time, checked: each a record of `shape`, in strictly increasing line order.
    A last line that is not a whole record (cut by a kill) ends the records; `torn_at` says where it begins."""

    def __init__(self, path: str, shape: RecordShape) -> None:
        self.path = path
        self.shape = shape
        self.torn_at: int | None = None
        self.count = 0

    def __iter__(self) -> Iterator[StoredRecord]:
        shape, path = self.shape, self.path
        with open(path, "rb") as stream:
            offset = 0
            previous: int | None = None
            raw = stream.readline()
            while raw:
                following = stream.readline()
                try:
                    record = json.loads(raw.decode("utf-8")) if raw.endswith(b"\n") else None
                except (UnicodeDecodeError, json.JSONDecodeError):
                    record = None
                if not shape.accepts(record):
                    if not following:  # the last line, cut short by a kill: redo it
                        self.torn_at = offset
                        return
                    raise usage_error(
                        f"--output '{path}' has a line that is not a {shape.command} record (byte {offset}).",
                        f"Resume only into a file an earlier `gbcli {shape.command} --output` wrote, or use --force.",
                    )
                line = shape.line(record)
                if previous is not None and line <= previous:
                    what = "twice" if line == previous else f"after line {previous}"
                    raise usage_error(
                        f"--output '{path}' holds line {line} {what} (byte {offset}): two runs wrote "
                        "it, or it was edited.",
                        "Start again with --force (or write to another --output).",
                    )
                previous = line
                self.count += 1
                yield StoredRecord(line, record, offset, offset + len(raw))
                offset += len(raw)
                raw = following


def each_record(path: str, shape: RecordShape) -> Iterator[dict]:
    """The records of a finished --output, in order, one at a time."""
    for stored in RecordReader(path, shape):
        yield stored.record


def open_output(path: str, shape: RecordShape, *, resume: bool, force: bool) -> None:
    """Check --output before any model runs: a new file made empty, or with --resume an existing one read through
    (every line a record of the command, in order) and a torn last line cut off, to be done again."""
    target = Path(path)
    if target.is_dir():
        raise usage_error(f"--output '{path}' is a folder.", "Give a file name.")
    if target.exists() and not resume and not force:
        raise usage_error(
            f"--output '{path}' already exists.",
            "Add --resume to continue an interrupted run, or --force to start it again.",
        )
    if not target.exists() or not resume:  # a new file (--resume with no file yet starts from the beginning)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("", encoding="utf-8")
        except OSError as exc:
            raise GbcliError(
                f"Cannot write --output '{path}': {exc.strerror}.", "Check the folder's permissions."
            ) from exc
        return
    reader = RecordReader(path, shape)
    for _ in reader:
        pass
    if reader.torn_at is not None:
        with open(target, "r+b") as stream:
            stream.truncate(reader.torn_at)


# ---------------------------------------------------------------------------------------------------------------
# Which chunks of the input are done
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    """A piece of the input done at once (in the batches one process uses): its place among the chunks, the input
    lines it writes records for (in order), what each record must show of its input, and the work itself."""

    index: int
    lines: list[int]
    inputs: list[Any]
    work: Any


@dataclass
class Settled:
    """What --output holds of the input: the chunks done whole, their records, and the records still to write."""

    done: set[int]
    kept: int
    todo: int


def checker(
    path: str,
    input_of: Callable[[dict], Any],
    columns: Any,
    columns_of: Callable[[dict], Any],
    options: tuple[str, str],
) -> Callable[[int, dict, Any], None]:
    """A resumed record must show its line's input (`input_of`) and the same models and options (`columns_of` is
    `columns`), or the file would mix two inputs or two kinds of record. `options`: what the options are called,
    and their flags (("conventions", "--bos/--pll/--bits/--words"))."""
    noun, flags = options

    def check(line: int, record: dict, expected: Any) -> None:
        if input_of(record) != expected:
            raise usage_error(
                f"--output '{path}' holds line {line} of another input.",
                "Resume with the same --file, or start again with --force.",
            )
        if columns_of(record) != columns:
            raise usage_error(
                f"--output '{path}' was made with other models or {noun} (line {line}).",
                f"Resume with the same models and {flags}, or use --force.",
            )

    return check


def settle(
    path: str, shape: RecordShape, chunks: Iterable[Chunk], check: Callable[[int, dict, Any], None], *, drop: bool
) -> Settled:
    """Read --output beside the input's chunks: every record checked against its line's input, the chunks all of
    whose records are there counted done, and (with `drop`) the records of the others removed from the file, so
    that those chunks are done again whole. Without `drop` (a torchrun rank) the file is only read: the merge at the
    end keeps the newer record of a line."""
    reader = RecordReader(path, shape) if Path(path).exists() else iter(())
    records = iter(reader)
    pending = next(records, None)
    settled = Settled(set(), 0, 0)
    dropped: list[tuple[int, int]] = []
    last_kept_end = 0
    for chunk in chunks:
        wanted = dict(zip(chunk.lines, chunk.inputs, strict=True))
        found: list[StoredRecord] = []
        while pending is not None and pending.line <= chunk.lines[-1]:
            if pending.line not in wanted:
                raise _foreign(path, pending.line)
            check(pending.line, pending.record, wanted[pending.line])
            found.append(pending)
            pending = next(records, None)
        if found and len(found) == len(chunk.lines):
            settled.done.add(chunk.index)
            settled.kept += len(found)
            last_kept_end = found[-1].end
        else:
            settled.todo += len(chunk.lines)
            dropped.extend((stored.start, stored.end) for stored in found)
    if pending is not None:
        raise _foreign(path, pending.line)
    if drop and dropped:
        _drop(path, dropped, last_kept_end)
    return settled


def _foreign(path: str, line: int) -> GbcliError:
    return usage_error(
        f"--output '{path}' holds a record of line {line}, which the input has no text for.",
        "Resume with the same --file, or start again with --force.",
    )


def _drop(path: str, dropped: list[tuple[int, int]], last_kept_end: int) -> None:
    """Remove the byte ranges `dropped` from the file: cut the end off when they are all after the last kept
    record (one process: the chunk it was in the middle of), else write the rest to a new file and rename it."""
    if dropped[0][0] >= last_kept_end:
        with deferred_interrupt(), open(path, "r+b") as stream:
            stream.truncate(dropped[0][0])
            os.fsync(stream.fileno())
        return
    temporary = Path(f"{path}.resuming")
    with deferred_interrupt(), open(path, "rb") as source, open(temporary, "wb") as target:
        position = 0
        for start, end in dropped:
            _copy(source, target, position, start)
            position = end
        _copy(source, target, position, None)
        target.flush()
        os.fsync(target.fileno())
        os.replace(temporary, path)


def _copy(source: Any, target: Any, start: int, end: int | None) -> None:
    source.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        block = source.read(1 << 20 if left is None else min(1 << 20, left))
        if not block:
            return
        target.write(block)
        if left is not None:
            left -= len(block)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def append_records(path: str, lines: list[str]) -> None:
    """Append whole JSON Lines, flushed to disk; Ctrl-C is held back until they are all written. A full disk names
    the file."""
    try:
        with deferred_interrupt(), open(path, "a", encoding="utf-8") as stream:
            stream.write("".join(lines))
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as exc:  # a full disk names --output, not standard output
        error = explain_os_error(OSError(exc.errno, exc.strerror, path))
        raise GbcliError(
            error.message,
            f"{error.hint + ' ' if error.hint else ''}The finished lines are kept: run "
            "the same command with --resume to continue.",
        ) from exc


def append_results(path: str, results: list[Any]) -> None:
    """Results appended as the JSON Lines `--json` prints for them."""
    append_records(path, [dumps(r, indent=None) + "\n" for r in results])
