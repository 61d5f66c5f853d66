"""`gbcli --help` stays instant because nothing on the help paths imports torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli_helpers import run_installed

HEAVY = ("torch", "transformers", "numpy", "tokenizers")
COMMANDS = ["generate", "fill-mask", "attention", "tokenize", "score", "compare", "lens", "context", "saliency"]


@pytest.mark.parametrize("args", [["--help"], *[[command, "--help"] for command in COMMANDS]])
def test_help_imports_no_heavy_library(args):
    probe = (
        "import sys\n"
        "from gbcli.cli import app\n"
        "try:\n"
        f"    app({args!r}, standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_installed_help_lists_every_command():
    completed = run_installed("--help", env={"COLUMNS": "120"})
    assert completed.returncode == 0
    for command in COMMANDS:
        assert command.encode() in completed.stdout
