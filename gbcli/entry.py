"""The console script's entry point: Ctrl-C at any moment of start-up ends with exit 130 and one line.

A SIGINT that lands while Python imports typer, torch or transformers would raise KeyboardInterrupt inside that
import: a traceback, a half-imported module ("cannot load module more than once") or, inside torch's C++
initialisation, an abort. So before anything is imported, SIGINT is handled by exiting at once: nothing has been
written yet, so nothing is lost. A command swaps in Python's KeyboardInterrupt while it computes, where finished
output must be kept, and gets this handler back afterwards (`gbcli.terminal`, which writes the rest of the policy).
"""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = 130  # as gbcli.errors.INTERRUPTED, which is not imported here: this module must import nothing
HELP_FLAGS = ("-h", "--help", "--version", "-V")  # always answered here; gbcli.warm.client.LOCAL_FLAGS too


def exit_at_once(number: int, frame: object) -> None:
    try:
        os.write(2, b"interrupted\n")
    except OSError:
        pass
    os._exit(INTERRUPTED)


def main() -> None:
    if sys.platform != "win32":
        signal.signal(signal.SIGINT, exit_at_once)
    # A warm command is Python's start-up and one round trip: the server is asked before typer (and its imports)
    # is; only a command that runs here imports the CLI (benchmarks/run.py, row `warm`).
    argv = sys.argv[1:]
    if not asks_for_help(argv):  # help never goes to a server: skip the client's imports (row `startup`)
        from gbcli.warm.client import forward_or_in_process  # late: start-up

        argv = forward_or_in_process(argv)
        refuse_unsupported_transformers()
    from gbcli.cli import main as run  # late: start-up

    run(argv)


def refuse_unsupported_transformers() -> None:
    """Exit 1 with one `error:` and one `hint:` line when the installed transformers is not one gbcli runs on."""
    from gbcli.loading.versions import installed_transformers, unsupported_transformers  # late: start-up

    error = unsupported_transformers(installed_transformers())
    if error is not None:
        sys.stderr.write(f"error: {error.message}\nhint: {error.hint}\n")
        sys.exit(error.exit_code)


def asks_for_help(argv: list[str]) -> bool:
    """`gbcli --help`, `gbcli COMMAND --help`, `--version`: answered here. With --no-server the client's
    stripping of that flag is still needed, so those go the usual way."""
    end = argv.index("--") if "--" in argv else len(argv)
    return "--no-server" not in argv[:end] and any(arg in HELP_FLAGS for arg in argv[:end])
