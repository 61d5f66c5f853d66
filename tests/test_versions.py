"""The transformers gbcli runs on: the declared range is the one the start-up check enforces, an unsupported one
is refused before anything else in one `error:` line and a `hint:` with the pip command, and a fast path that is
off on the installed transformers says so in one debug line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gbcli.loading.capability import REGISTRY, FastPath
from gbcli.loading.versions import TRANSFORMERS_RANGE, installed_transformers, unsupported_transformers

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.compat  # .ci/run runs this module on the minimum versions too


def declared(package: str) -> str:
    """pyproject.toml's requirement for one package, without the name (tomllib is not in Python 3.10)."""
    (requirement,) = re.findall(rf'^\s*"{package}([^"]*)",', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    return requirement.replace(" ", "")


def test_the_start_up_check_enforces_the_declared_range():
    assert declared("transformers") == TRANSFORMERS_RANGE


@pytest.mark.parametrize("version", ["5.0.0", "5.12.1", "5.25.0", "5.30.0.dev0", "5.0.0rc1"])
def test_every_5x_is_accepted(version):
    assert unsupported_transformers(version) is None


@pytest.mark.parametrize("version", ["4.57.6", "4.0.0", "6.0.0", "6.1.0.dev0", "10.0"])
def test_4x_and_6x_are_refused_naming_installed_and_supported(version):
    error = unsupported_transformers(version)
    assert error is not None and error.exit_code == 1
    assert version in error.message and TRANSFORMERS_RANGE in error.message
    assert error.hint == f'Install a supported one: pip install "transformers{TRANSFORMERS_RANGE}"'


def test_a_missing_transformers_is_refused():
    error = unsupported_transformers(None)
    assert error is not None and "not installed" in error.message and "pip install" in error.hint


def test_the_installed_transformers_is_supported():
    assert unsupported_transformers(installed_transformers()) is None


def _entry_point_with_transformers(version: str, *args: str) -> subprocess.CompletedProcess:
    """The console script's `main` in a fresh interpreter whose package metadata reports `version` for
    transformers (the library itself is not imported by the check)."""
    program = (
        "import importlib.metadata as metadata, sys\n"
        "real = metadata.version\n"
        f"metadata.version = lambda name: {version!r} if name == 'transformers' else real(name)\n"
        f"sys.argv = ['gbcli', *{list(args)!r}]\n"
        "from gbcli.entry import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={"GBCLI_NO_SERVER": "1", "PATH": "/usr/bin:/bin"},
    )


def test_the_entry_point_refuses_transformers_4_in_two_lines_before_importing_it():
    done = _entry_point_with_transformers("4.57.6", "tokenize", "hello", "--models", "gpt")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: transformers 4.57.6 is installed, but gbcli supports transformers {TRANSFORMERS_RANGE} "
        "(5.0 to the latest 5.x).",
        f'hint: Install a supported one: pip install "transformers{TRANSFORMERS_RANGE}"',
    ]
    assert done.stdout == ""


def test_help_is_answered_whatever_transformers_is_installed():
    done = _entry_point_with_transformers("4.57.6", "--help")
    assert done.returncode == 0 and "generate" in done.stdout


def test_a_fast_path_that_is_off_says_which_and_why_once_under_gbcli_debug(monkeypatch, capsys):
    monkeypatch.setenv("GBCLI_DEBUG", "1")
    path = FastPath("test path", "the public path", lambda: "transformers 5.0.0 has no Thing._x")
    try:
        assert not path.on and not path.on
        assert capsys.readouterr().err == (
            "gbcli: fast path 'test path' off, using the public path: transformers 5.0.0 has no Thing._x\n"
        )
    finally:
        del REGISTRY["test path"]


def test_a_probe_that_raises_turns_its_path_off_instead_of_failing(monkeypatch, capsys):
    monkeypatch.delenv("GBCLI_DEBUG", raising=False)

    def moved() -> str | None:
        raise AttributeError("type object 'X' has no attribute 'y'")

    path = FastPath("raising path", "the public path", moved)
    try:
        assert not path.on and path.reason == "AttributeError: type object 'X' has no attribute 'y'"
        assert capsys.readouterr().err == ""  # silent without GBCLI_DEBUG
    finally:
        del REGISTRY["raising path"]


def test_every_fast_path_runs_on_the_newest_transformers():
    """On the transformers this suite's main run installs (the newest), nothing falls back: a probe that turned
    a path off there would hide a slowdown behind the same numbers."""
    import gbcli.lm.fast.decoding_loop
    import gbcli.lm.fast.gpt2_step
    import gbcli.lm.fast.shared_prefix
    import gbcli.loading.fast_load
    import gbcli.tasks.attention.maps  # noqa: F401 - each declares its FastPath

    if not installed_transformers().startswith("5.25"):
        pytest.skip("the compatibility run: older transformers turn some paths off by design")
    assert {name: path.reason for name, path in REGISTRY.items()} == dict.fromkeys(REGISTRY)
