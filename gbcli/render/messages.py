"""What a command says on stderr about itself: `error:` and `hint:` lines, and `warning:` lines.

One place for the words and their layout, so that a command, the shell and a torchrun rank say a failure alike.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gbcli.errors import GbcliError
from gbcli.render.common import stderr_console


def say(label: str, style: str, text: str) -> None:
    """`error: …`, `hint: …` or `warning: …` on stderr. Off a terminal one line whatever its length (scripts grep
    it); on a terminal wrapped between words under its own first word, never cut mid-word by the terminal."""
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
