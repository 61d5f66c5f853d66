"""One policy for what a terminal is never sent raw (issue 29, 11): control characters, bidirectional controls and
invisible characters, from the input text or a model's vocabulary, are shown as escapes in every view, in CSV and
in JSON on a terminal; written to a file or a pipe, CSV and JSON keep the data exact."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess

import pytest

from tests.cli_helpers import gbcli_executable, read_terminal_until, run

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# ESC sequences, BEL and CR; then right-to-left override, zero-width space, left-to-right isolate, pop directional
# isolate, word joiner, byte-order mark, soft hyphen and a C1 control (CSI).
TRICKY = "the duck\x1b]0;pwned\x07 quacks\x1b[2J in\u202e the\u200b park\u2066 and\u2069 the\u2060 pond\ufeff \xad.\x9b"
RAW = ["\x1b", "\x07", "\u202e", "\u200b", "\u2066", "\u2069", "\u2060", "\ufeff", "\xad", "\x9b"]
ESCAPED = ["\\x1b", "\\x07", "\\u202e", "\\u200b", "\\u2066", "\\u2069", "\\u2060", "\\ufeff", "\\xad", "\\x9b"]

VIEWS = [
    ("score", TRICKY),
    ("score", TRICKY, "--tokens"),
    ("score", TRICKY, "--words"),
    ("fill-mask", TRICKY.replace("duck", "[MASK]")),
    ("generate", TRICKY, "--greedy", "--max-new-tokens", "2"),
    ("compare", TRICKY),
    ("tokenize", TRICKY),
    ("pairs", TRICKY, TRICKY.replace("duck", "cow")),
]


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize(
    "args",
    VIEWS,
    ids=lambda args: " ".join(
        a for a in args if a.startswith("-") or a in ("score", "fill-mask", "generate", "compare", "tokenize", "pairs")
    ),
)
def test_every_view_shows_controls_bidi_and_invisible_characters_as_escapes(args, terminal, models):
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "120"} if terminal else {"COLUMNS": "120"}
    result = run(*args, *models, env=env)
    assert result.exit_code == 0, result.stderr
    text = result.stdout if not terminal else result.stdout.replace("\x1b[", "")  # Rich's own colour codes
    for raw in RAW:
        assert raw not in text and raw not in result.stderr, f"{args[0]} wrote {raw!r} raw"
    if args[0] not in ("tokenize",):  # the views that show the text whole show each escape
        assert all(escaped in result.stdout for escaped in ESCAPED[2:9]), result.stdout


def test_csv_to_a_pipe_keeps_every_character_exactly_quoted_as_csv(models):
    result = run("score", TRICKY, TRICKY + "\r", "--csv", *models)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert [row["text"] for row in rows] == [TRICKY, TRICKY, TRICKY + "\r", TRICKY + "\r"]
    assert result.stdout.count("\n") == 5  # a header and four rows, each ending in a newline
    words = run("score", TRICKY, "--csv", "--words", *models)
    assert "\x1b" in "".join(row["text"] for row in csv.DictReader(io.StringIO(words.stdout, newline="")))


def _on_a_terminal(*args: str) -> str:
    """What the installed gbcli writes to a pseudo-terminal (its newlines as the terminal's \\r\\n)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "120", "GBCLI_NO_SERVER": "1"}
    process = subprocess.Popen(
        [gbcli_executable(), *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE, env=env
    )
    os.close(follower)
    try:
        shown = read_terminal_until(leader, b"\x00never", timeout=120)
        process.wait(timeout=60)
    finally:
        os.close(leader)
    assert process.returncode == 0, process.stderr.read().decode()
    return shown.decode("utf-8").replace("\r\n", "\n")


@pytest.mark.parametrize("output", ["--csv", "--json"])
def test_csv_and_json_on_a_terminal_show_escapes_and_json_stays_the_same_data(output, gpt_path):
    shown = _on_a_terminal("score", TRICKY, output, "--models", "gpt", "--gpt", str(gpt_path))
    for raw in RAW:
        assert raw not in shown, f"{output} wrote {raw!r} to a terminal"
    if output == "--json":  # \u escapes: the same JSON, the text exactly the input
        assert json.loads(shown)["text"] == TRICKY and "\\u202e" in shown
    else:
        assert "\\x1b]0;pwned\\x07" in shown and "\\u202e" in shown
