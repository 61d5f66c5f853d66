"""What a command says on stderr about itself: `error:` and `hint:` lines, and `warning:` lines.

One place for the words and their layout, so that a command, the shell and a torchrun rank say a failure alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gbcli.errors import GbcliError
from gbcli.render.common import stderr_console

# Inside `gbcli shell` a command is typed without `gbcli`: a hint that shows a command line shows it as typed there.
_TYPED_BARE: list[re.Pattern[str]] = []


@contextmanager
def commands_typed_bare(commands: Iterable[str]) -> Iterator[None]:
    """While the shell runs: `gbcli score "…"` in a message reads `score "…"`, `gbcli --help` reads `help`."""
    names = "|".join(re.escape(name) for name in sorted(commands, key=len, reverse=True))
    _TYPED_BARE.append(re.compile(rf"\bgbcli (?=(?:{names})\b)"))
    try:
        yield
    finally:
        _TYPED_BARE.pop()


def as_typed_here(text: str) -> str:
    """`text` with its command lines as the user types them where the message is read (the shell, or a shell's)."""
    if not _TYPED_BARE:
        return text
    return _TYPED_BARE[-1].sub("", text.replace("gbcli --help", "help"))


def say(label: str, style: str, text: str) -> None:
    """`error: …`, `hint: …` or `warning: …` on stderr. Off a terminal one line whatever its length (scripts grep
    it); on a terminal wrapped between words under its own first word, never cut mid-word by the terminal."""
    text = as_typed_here(text)
    console = stderr_console()
    if not console.is_terminal:
        console.print(f"[{style}]{label}[/] {escape(text)}")
        return
    line = Table.grid(padding=(0, 1))
    line.add_column(no_wrap=True)
    line.add_column(overflow="fold")
    line.add_row(Text(label, style=style), Text(text))
    console.print(line, soft_wrap=False)


def report_error(error: GbcliError, command: str = "") -> None:
    say("error:", "bold red", error.message)
    say(
        "hint:",
        "dim",
        error.hint or f"See `gbcli {command + ' ' if command else ''}--help` for what each option accepts.",
    )


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        say("warning:", "yellow", warning)
