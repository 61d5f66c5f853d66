"""Reading the user's text: an argument, `-` for stdin, or a file of one text per line.

A line is what `wc -l` counts: text up to a `\\n` (a `\\r` before it goes too). `str.splitlines` would also split on
U+2028, form feed, NEL and others that can sit inside a sentence, and shift every later line number. A leading
UTF-8 byte-order mark is an encoding marker, not text, and is dropped. Input is read a line at a time with a cap,
so `/dev/zero` or a file of one gigabyte-long line is refused after reading one capped line, never swallowed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gbcli.errors import GbcliError, usage_error

UTF8_BOM = b"\xef\xbb\xbf"
# The longest text accepted, per argument read from stdin or per line of a file. The longest context of any model
# gbcli runs is far below this many tokens (GPT-2: 1,024; long-context models: some 100,000, i.e. well under 1 MB
# of English), so a longer line can only be refused by a model later, after costing memory first.
MAX_TEXT_BYTES = 1 << 20


def _decode(data: bytes, source: str, line: int = 1, offset: int = 0) -> str:
    """UTF-8 text of `data`, which starts at `offset` bytes, on line `line`, of `source`."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += data[: exc.start].count(b"\n")
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1)
        raise GbcliError(
            f"{source} is not valid UTF-8: byte 0x{data[exc.start]:02x} at line {line}, byte {column + 1} "
            f"(offset {offset + exc.start}).",
            "Convert it first, e.g. iconv -f latin1 -t utf-8.",
            exit_code=2,
        ) from exc


def _stdin_bytes() -> BinaryIO:
    # A test harness's stdin may be text only: read it as the UTF-8 bytes a terminal would send.
    return sys.stdin.buffer if hasattr(sys.stdin, "buffer") else io.BytesIO(sys.stdin.read().encode())


def _too_long(source: str, line: int | None = None) -> GbcliError:
    where = f"line {line} of {source}" if line is not None else source
    return usage_error(
        f"{where[0].upper()}{where[1:]} is longer than {MAX_TEXT_BYTES // (1 << 20)} MiB: longer than any model "
        "here can read, so it was not read further.",
        "Split the text into sentences or paragraphs, one per line.",
    )


def _no_nul(text: str, source: str, line: int) -> str:
    # A NUL byte is never in a text file: this is binary data (or a sparse file), which tokenizes to nonsense.
    if "\x00" in text:
        raise usage_error(
            f"Line {line} of {source} holds a NUL byte: it is binary data, not text.",
            "Give a UTF-8 text file with one text per line.",
        )
    return text


def read_stdin() -> str:
    """All of stdin as one text (a leading BOM dropped), at most MAX_TEXT_BYTES."""
    data = _stdin_bytes().read(MAX_TEXT_BYTES + 1)
    if len(data) > MAX_TEXT_BYTES:
        raise _too_long("standard input")
    data = data.removeprefix(UTF8_BOM)
    text = _no_nul(_decode(data, "standard input"), "standard input", 1)
    if not text.strip():
        raise usage_error("Standard input is empty.", "Pipe some text in, or give it as an argument.")
    return text


def read_text(argument: str | None, what: str = "text") -> str:
    """The text argument itself, or stdin for `-`; empty text is a usage error."""
    if argument is None:
        raise usage_error(f"No {what} given.", f"Give the {what} as an argument, or - to read stdin.")
    if argument == "-":
        return read_stdin().removesuffix("\n").removesuffix("\r")
    if not argument.strip():
        raise usage_error(f"The {what} is empty.", f"Give the {what} as a non-empty argument, or - to read stdin.")
    return valid_argument(argument, f"the {what}")


def valid_argument(argument: str, what: str) -> str:
    """A command-line argument as text. Python hands on bytes that are not UTF-8 as lone surrogates
    (surrogateescape), which no tokenizer takes: refused as a file of such bytes is, naming the byte."""
    named = what[:1].upper() + what[1:]
    try:
        argument.encode("utf-8")
    except UnicodeEncodeError:
        if all(not 0xD800 <= ord(ch) <= 0xDFFF or 0xDC80 <= ord(ch) <= 0xDCFF for ch in argument):
            _decode(argument.encode("utf-8", "surrogateescape"), named)  # raises, naming the first bad byte
        raise usage_error(f"{named} is not valid UTF-8.", "Convert it first, e.g. iconv -f latin1 -t utf-8.") from None
    if "\x00" in argument:  # not from a shell's argv (it ends at a NUL), but from `gbcli shell` or a server client
        raise usage_error(f"{named} holds a NUL byte: it is binary data, not text.", "Remove it.")
    return argument


def iter_lines(stream: BinaryIO, source: str) -> Iterator[str]:
    """The lines of a byte stream, without their `\\n` or `\\r\\n`, one capped read at a time."""
    number, offset = 0, 0
    while True:
        raw = stream.readline(MAX_TEXT_BYTES + 2)  # the cap, plus room for its \r\n
        if not raw:
            return
        number += 1
        body = raw.removesuffix(b"\n").removesuffix(b"\r") if raw.endswith(b"\n") else raw
        if len(body) > MAX_TEXT_BYTES:
            raise _too_long(source, number)
        start = offset
        if number == 1 and body.startswith(UTF8_BOM):
            body, start = body[len(UTF8_BOM) :], start + len(UTF8_BOM)
        yield _no_nul(_decode(body, source, number, start), source, number)
        offset += len(raw)


def check_input_file(path: str, folder_hint: str) -> Path:
    """The input file at `path`, refused at once when it is missing or a folder (`folder_hint` says what to give)."""
    file = Path(path)
    if not file.exists():
        raise usage_error(f"File '{path}' does not exist.", "Check the path.")
    if file.is_dir():
        raise usage_error(f"'{path}' is a folder, not a file.", folder_hint)
    return file


def read_lines(path: str) -> list[str]:
    """The lines of a text file (or stdin for `-`), without their line endings."""
    if path == "-":
        lines = list(iter_lines(_stdin_bytes(), "standard input"))
        if not any(line.strip() for line in lines):
            raise usage_error("Standard input is empty.", "Pipe some text in, one text per line.")
        return lines
    file = check_input_file(path, "Give a text file with one text per line.")
    try:
        with file.open("rb") as stream:
            lines = list(iter_lines(stream, f"'{path}'"))
    except OSError as exc:
        raise GbcliError(f"Cannot read '{path}': {exc.strerror}.", "Check the file's permissions.") from exc
    if not any(line.strip() for line in lines):
        raise usage_error(f"File '{path}' has no text.", "Give a file with one text per line.")
    return lines


class FileLines:
    """The lines of a text file (or stdin for `-`), read again from the file each time they are iterated, so that a
    job over a file of any length holds one chunk of it in memory (standard input, read once, is kept)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.kept: list[str] | None = read_lines(path) if path == "-" else None
        if self.kept is None:
            self._check_path()
            if not any(line.strip() for line in self):
                raise usage_error(f"File '{path}' has no text.", "Give a file with one text per line.")

    def _check_path(self) -> None:
        check_input_file(self.path, "Give a text file with one text per line.")

    def __iter__(self) -> Iterator[str]:
        if self.kept is not None:
            yield from self.kept
            return
        try:
            with open(self.path, "rb") as stream:
                yield from iter_lines(stream, f"'{self.path}'")
        except OSError as exc:
            raise GbcliError(f"Cannot read '{self.path}': {exc.strerror}.", "Check the file's permissions.") from exc

    def numbered(self) -> Iterator[tuple[int, str]]:
        """(line number, text) of every non-empty line."""
        return ((number, line) for number, line in enumerate(self, start=1) if line.strip())


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
