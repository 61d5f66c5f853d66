"""`gbcli --help` stays instant because nothing on the help paths imports torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
import typer

from gbcli.cli import app
from tests.cli_helpers import run_installed

HEAVY = ("torch", "transformers", "numpy", "tokenizers")
# What the help screens must not pay for either: Typer's Rich help formatter (rich.markdown, rich.traceback with
# pygments: ~0.2 s) and pydantic (Typer 0.26+ builds its parameters with it: ~0.4 s).
SLOW_FOR_HELP = ("typer.rich_utils", "pydantic", "markdown_it", "pygments")
# Every command the app has, so that a new one is guarded without anyone remembering to list it.
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def after_running(args: list[str], expression: str):
    """The value of `expression` (Python, printed with sys imported) after `gbcli ARGS` ran in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from gbcli.cli import app\n"
        "try:\n"
        f"    app({args!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print({expression})\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    return ast.literal_eval(completed.stdout.strip().splitlines()[-1])


def modules_imported_by(args: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `packages` that running `gbcli ARGS` in a fresh interpreter imported."""
    wanted = f"m in {packages!r} or m.split('.')[0] in {packages!r}"
    return after_running(args, f"sorted(m for m in sys.modules if {wanted})")


@pytest.mark.parametrize("args", [["--help"], *[[command, "--help"] for command in COMMANDS]])
def test_help_imports_no_heavy_library(args):
    assert modules_imported_by(args, HEAVY) == []


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"]])
def test_help_imports_neither_the_rich_help_formatter_nor_pydantic(args):
    """The parts of --help's time budget that are ours to choose: the help formatter and Typer's version."""
    assert modules_imported_by(args, SLOW_FOR_HELP) == []


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["-V"]])
def test_help_does_not_ask_for_a_server(args):
    """Help is answered here: the warm-server client (sockets, the protocol) is not even imported."""
    assert modules_imported_by(args, ("gbcli.warm.client", "gbcli.warm.protocol")) == []


# The parts of --help's time budget, imports only (wall time is the benchmark's: `benchmarks/run.py --rows startup`):
# Python itself, Typer with Click (and the two small packages Typer brings), and gbcli's own command modules.
# Anything else a help path imports is a new cost that someone must have chosen, so this list says what it is.
HELP_BUDGET = {"typer", "click", "shellingham", "annotated_doc", "gbcli"}


def packages_imported_by(args: list[str]) -> set[str]:
    """The top-level packages outside the standard library that `gbcli ARGS` imported in a fresh interpreter."""
    found = set(after_running(args, "sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))"))
    return {name for name in found if not name.startswith("_") and name != "__main__"}


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"]])
def test_help_imports_only_its_budgeted_parts(args):
    """`--help`'s import budget: the standard library, Typer and Click, gbcli's CLI; not even Rich."""
    imported = packages_imported_by(args)
    assert "typer" in imported and "gbcli" in imported  # the probe sees what it should
    assert imported <= HELP_BUDGET, sorted(imported - HELP_BUDGET)


def test_version_has_a_short_flag():
    completed = run_installed("-V")
    assert completed.returncode == 0 and completed.stdout.decode().startswith("gbcli ")


def test_installed_help_lists_every_command():
    completed = run_installed("--help", env={"COLUMNS": "120"})
    assert completed.returncode == 0
    for command in COMMANDS:
        assert command.encode() in completed.stdout
