"""`python -m gbcli` works wherever a user stands, including the folder that holds a clone named gbcli/."""

from __future__ import annotations

import os
import subprocess
import sys

from gbcli import __version__
from tests.cli_helpers import TRACEBACK


def test_python_m_gbcli_from_the_folder_holding_a_clone_named_gbcli(tmp_path):
    # A clone's root: a folder called gbcli without __init__.py, which Python would take for a namespace package.
    (tmp_path / "gbcli").mkdir()
    (tmp_path / "gbcli" / "README.md").write_text("a clone of gbcli\n")
    env = {**os.environ, "GBCLI_NO_SERVER": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "gbcli", "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gbcli {__version__}"
    assert TRACEBACK not in done.stderr
