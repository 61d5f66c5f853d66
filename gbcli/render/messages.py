"""What a command says on stderr about itself: `error:` and `hint:` lines, and `warning:` lines.

One place for the words and their colours, so that a command, the shell and a torchrun rank say a failure alike.
"""

from __future__ import annotations

from rich.markup import escape

from gbcli.errors import GbcliError
from gbcli.render.common import stderr_console


def report_error(error: GbcliError, command: str = "") -> None:
    console = stderr_console()
    console.print(f"[bold red]error:[/] {escape(error.message)}")
    hint = error.hint or f"See `gbcli {command + ' ' if command else ''}--help` for what each option accepts."
    console.print(f"[dim]hint:[/] {escape(hint)}")


def print_warnings(warnings: list[str]) -> None:
    console = stderr_console()
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
