"""Running gbcli the way a user does: through the real Typer app, and through the installed executable."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from gbcli.cli import app

TRACEBACK = "Traceback (most recent call last)"


def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Any:
    """Invoke `gbcli ARGS` in-process (models stay loaded between calls); returns click's Result.

    The result has .exit_code, .stdout and .stderr kept apart, as a terminal user would see them.
    """
    runner = CliRunner(env={"NO_COLOR": "1", **(env or {})})
    result = runner.invoke(app, list(args), input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"gbcli {' '.join(args)} raised {result.exception!r}") from result.exception
    return result


def run_json(*args: str, **kwargs: Any) -> Any:
    """Invoke with --json, assert success, and parse stdout as one JSON document."""
    result = run(*args, "--json", **kwargs)
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return json.loads(result.stdout)


def assert_user_error(result: Any, code: int, *fragments: str) -> None:
    """A user-facing failure: the given exit code, a message on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, f"expected exit {code}, got {result.exit_code}: {result.stderr}{result.stdout}"
    assert TRACEBACK not in result.stderr and TRACEBACK not in result.stdout
    assert result.stdout == "", f"stdout should be empty on error, got: {result.stdout!r}"
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment.lower() in result.stderr.lower(), f"{fragment!r} not in {result.stderr!r}"


def gbcli_executable() -> str:
    """The installed console script (the one a user types), next to this Python."""
    candidate = os.path.join(os.path.dirname(sys.executable), "gbcli")
    found = candidate if os.path.exists(candidate) else shutil.which("gbcli")
    assert found, "the gbcli console script is not installed"
    return found


def run_installed(*args: str, input: bytes | None = None, timeout: float = 120, env: dict[str, str] | None = None):
    """Run the installed `gbcli` as a subprocess; returns subprocess.CompletedProcess with bytes output."""
    # One thread each: tests run several of these at once on a 2-core machine, and oversubscribed BLAS crawls.
    full_env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [gbcli_executable(), *args], input=input, capture_output=True, timeout=timeout, env=full_env, check=False
    )


@dataclass(frozen=True)
class FailureCase:
    """One row of a table of bad inputs: the command line, its exit code, a fragment of its message, its stdin."""

    name: str
    args: tuple[str, ...]
    code: int
    fragment: str
    stdin: bytes = b""


def failure_problems(exit_code: int, stdout: str | bytes, stderr: str, code: int, fragment: str) -> list[str]:
    """What is wrong with one failure as a user meets it: the wrong exit code, anything on stdout, a traceback, or
    a message that does not say `fragment`. Empty when all is as it should be."""
    problems = []
    if exit_code != code:
        problems.append(f"exit {exit_code} (wanted {code})")
    if stdout:
        problems.append(f"stdout not empty: {stdout[:120]!r}")
    if TRACEBACK in stderr:
        problems.append("traceback")
    if fragment.lower() not in stderr.lower():
        problems.append(f"{fragment!r} not in message")
    return problems


def assert_no_problems(found: list[tuple[str, list[str], str]]) -> None:
    """One assertion for a whole table of cases (name, problems, stderr), naming every case that went wrong."""
    failures = [
        f"{name}: {'; '.join(problems)}\n    stderr: {stderr.strip()[:300]}"
        for name, problems, stderr in found
        if problems
    ]
    assert not failures, "\n".join(failures)


def column_of(doc: dict, family: str) -> dict:
    """The one column (or record) of a --json document that a model family produced."""
    (found,) = [c for c in doc["columns"] if c["family"] == family]
    return found


def visible(shown: bytes) -> bytes:
    """What the terminal shows, without its control sequences (prompt_toolkit redraws in pieces)."""
    return re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", shown)


def read_terminal_until(
    fd: int, needle: bytes, timeout: float, shown: Callable[[bytes], bytes] = lambda raw: raw
) -> bytes:
    """What a pseudo-terminal's program wrote until `needle` appeared in `shown(...)` of it (or the time ran out,
    or the program closed it), passed through `shown`: the raw bytes, or `visible` ones."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in shown(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return shown(seen)
