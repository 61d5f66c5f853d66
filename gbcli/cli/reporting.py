"""How a command ends and what it says on stderr: errors mapped to exit codes, warnings, Ctrl-C, progress.

Every command is wrapped in `handle_errors`, so that whatever goes wrong ends in an `error:` and a `hint:` line and
an exit code (2 usage, 1 runtime, 130 Ctrl-C), never a traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from gbcli.errors import INTERRUPTED, GbcliError, explain_os_error
from gbcli.terminal import interrupt_exits_130 as interrupt_exits_130  # re-exported: every command computes in it

F = TypeVar("F", bound=Callable[..., Any])


def stderr_console():
    from gbcli.render.common import stderr_console as make

    return make()


def show(result: Any, json_output: bool, view: Callable[[Any], Any]) -> None:
    """The one result, as the JSON a script reads or as the view a person reads: both come from the same object."""
    from gbcli.render.common import print_json, stdout_console

    if json_output:
        print_json(result)
    else:
        stdout_console().print(view(result))


def say(label: str, style: str, text: str) -> None:
    """`error: …`, `hint: …` or `warning: …` on stderr (gbcli.render.messages.say)."""
    from gbcli.render.messages import say as show  # late: start-up (no Rich in `--help`)

    show(label, style, text)


def report_error(error: GbcliError, command: str = "") -> None:
    from gbcli.render.messages import report_error as report  # late: start-up (no Rich in `--help`)

    report(error, command)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_warnings(warnings: list[str]) -> None:
    from gbcli.render.messages import print_warnings as report  # late: start-up (no Rich in `--help`)

    report(warnings)


def warn_unknown(columns: list[Any], texts: list[str]) -> None:
    """One warning per model that reads its unknown token for characters of the input (every command alike)."""
    from gbcli.tasks.tokenization import unknown_text_warning

    print_warnings([warning for lm in columns if (warning := unknown_text_warning(lm, texts)) is not None])


def handle_errors(function: F) -> F:
    """Every command ends in a message and an exit code, never a traceback, whatever goes wrong."""

    command = function.__name__.removesuffix("_command").replace("_", "-")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if sys.stdout is None:  # Python's stdout when the shell closed it (`gbcli ... >&-`)
                raise explain_os_error(OSError(errno.EBADF, "Bad file descriptor"))
            value = function(*args, **kwargs)
            sys.stdout.flush()  # a full disk (`> /dev/full`) shows here, while we can still say so
            return value
        except GbcliError as error:
            report_error(error, command)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr_console().print("[yellow]interrupted[/]")
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`gbcli ... | head -1`): stop quietly, and keep Python's exit from complaining.
            _discard_stdout()
            raise typer.Exit(0) from None
        except typer.Exit:
            raise
        except OSError as error:  # the world around us: a full disk, a permission, a closed stream
            _discard_stdout()
            report_error(explain_os_error(error), command)
            raise typer.Exit(1) from None
        except MemoryError:
            report_error(GbcliError("Out of memory.", "Use a smaller model or shorter texts, or free some memory."))
            raise typer.Exit(1) from None
        except Exception as error:  # a bug, or a failure below us that we did not foresee
            if os.environ.get("GBCLI_DEBUG"):
                raise
            first_line = (str(error).strip().splitlines() or [""])[0]
            report_error(
                GbcliError(
                    f"Unexpected {type(error).__name__}: {first_line}",
                    "Set GBCLI_DEBUG=1 to see the traceback, and please report it.",
                )
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for a broken or full stream is not written again
    (and Python's exit does not complain about it)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):  # no stdout at all, or not a real file
        pass
