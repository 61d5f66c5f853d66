"""The documentation cannot drift: every console example of README.md and docs/*.md is what gbcli prints now.

docs/generate.py runs each example's command in-process on the tiny models; a page that differs fails here with
the diff, and `python docs/generate.py` rewrites it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_generator():
    """docs/generate.py, which is a script beside the pages rather than a module of a package."""
    spec = importlib.util.spec_from_file_location(
        "docs_generate", Path(__file__).resolve().parent.parent / "docs" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def test_every_console_example_is_what_gbcli_prints_now():
    printed_with = generate.VERSIONS.read_text(encoding="utf-8")
    if printed_with != generate.library_versions():
        pytest.skip(f"the pages were printed with other libraries ({printed_with.split()}), whose tiny models differ")
    changed = generate.changed_pages()
    diffs = "".join(generate.diff(page, text, fresh) for page, (text, fresh) in changed.items())
    assert not changed, f"run `python docs/generate.py`: these pages differ from what gbcli prints now\n{diffs}"


def test_a_command_that_fails_unannounced_stops_the_generator():
    # A page must not quietly show an error where an example was meant: only `# exits N` lets a command fail.
    with generate.scratch_folder():
        with pytest.raises(SystemExit, match="exited 2, not 0"):
            generate.run(generate.parse_command('$ gbcli fill-mask "no blank here"'))
        failed = generate.run(generate.parse_command('$ gbcli fill-mask "no blank here"   # exits 2'))
    assert failed.startswith("error: The text has no mask to fill.")


def test_timings_are_elided_and_a_box_keeps_its_border():
    boxed = "│ speed  69.9 tokens/s (0.16 s)       │"
    assert generate.normalise(boxed) == "│ speed  … tokens/s (… s)             │"
    assert generate.normalise("time: GPT 0.01 s in 1 forward pass · BERT 12.34 s in 2 forward passes") == (
        "time: GPT … s in 1 forward pass · BERT … s in 2 forward passes"
    )


def test_command_lines_read_as_a_shell_reads_them():
    command = generate.parse_command(
        '$ COLUMNS=120 gbcli context --word duck "the duck ." \\\n    "a duck ."  # a note'
    )
    assert command.env == {"COLUMNS": "120"} and command.exit_code == 0
    assert command.args == ["context", "--word", "duck", "the duck .", "a duck ."]
    assert generate.parse_command("$ gbcli shell < shell-commands.txt").stdin.startswith("set top-k 3")
    with pytest.raises(SystemExit, match="gbcli commands only"):
        generate.parse_command("$ head -n 1 results.jsonl")
