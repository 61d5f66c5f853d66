"""Reading the user's text: an argument, `-` for stdin, or a file of one text per line."""

from __future__ import annotations

import sys
from pathlib import Path

from gbcli.errors import GbcliError, usage_error


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise GbcliError(
            f"{source} is not valid UTF-8: byte 0x{data[exc.start]:02x} at line {line}, byte {column + 1} "
            f"(offset {exc.start}).",
            "Convert it first, e.g. iconv -f latin1 -t utf-8.",
            exit_code=2,
        ) from exc


def read_stdin() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    text = _decode(data, "standard input")
    if not text.strip():
        raise usage_error("Standard input is empty.", "Pipe some text in, or give it as an argument.")
    return text


def read_text(argument: str | None, what: str = "text") -> str:
    """The text argument itself, or stdin for `-`; empty text is a usage error."""
    if argument is None:
        raise usage_error(f"No {what} given.", f"Give the {what} as an argument, or - to read stdin.")
    if argument == "-":
        return read_stdin().rstrip("\n")
    if not argument.strip():
        raise usage_error(f"The {what} is empty.", f"Give the {what} as a non-empty argument, or - to read stdin.")
    return argument


def read_lines(path: str) -> list[str]:
    """The lines of a text file (or stdin for `-`), without their line endings."""
    if path == "-":
        return read_stdin().splitlines()
    file = Path(path)
    if not file.exists():
        raise usage_error(f"File '{path}' does not exist.", "Check the path.")
    if file.is_dir():
        raise usage_error(f"'{path}' is a folder, not a file.", "Give a text file with one text per line.")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise GbcliError(f"Cannot read '{path}': {exc.strerror}.", "Check the file's permissions.") from exc
    lines = _decode(data, f"'{path}'").splitlines()
    if not any(line.strip() for line in lines):
        raise usage_error(f"File '{path}' has no text.", "Give a file with one text per line.")
    return lines


def numbered_texts(arguments: list[str] | None, file: str | None) -> list[tuple[int, str]]:
    """(index, text) pairs: the arguments numbered from 1 (`-` reads one text from stdin), or a file's non-empty
    lines numbered by line."""
    if arguments and file is not None:
        raise usage_error("Give texts as arguments or --file, not both.")
    if file is not None:
        return [(number, line) for number, line in enumerate(read_lines(file), start=1) if line.strip()]
    if not arguments:
        raise usage_error("No text to score.", "Give one or more texts, - to read stdin, or --file F.")
    return [(number, read_text(argument)) for number, argument in enumerate(arguments, start=1)]
