"""Ctrl-C, closed pipes and colour: what a terminal user does to a running command."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_helpers import TRACEBACK, gbcli_executable, read_terminal_until, run_installed


def _wait(pid: int, timeout: float) -> int:
    """The child's wait status, or a failure if it has not ended within `timeout` (never a hung test run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    pytest.fail(f"gbcli did not end within {timeout} s of Ctrl-C")


def test_ctrl_c_during_streamed_generation_keeps_the_text_and_exits_130(long_context_gpt):
    """On a terminal the text streams; Ctrl-C stops it, leaves what was written on screen, and exits 130."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: gbcli on a pseudo-terminal, as a user would run it
        os.environ["COLUMNS"] = "100"
        os.execv(
            gbcli_executable(),
            [
                "gbcli",
                "generate",
                "once upon a time",
                "--models",
                "gpt",
                "--gpt",
                str(long_context_gpt),
                "--max-new-tokens",
                "4000",
                "--seed",
                "1",
            ],
        )
    try:
        shown = read_terminal_until(fd, b"once upon a time", timeout=60)
        assert b"once upon a time" in shown, shown[-500:]
        time.sleep(0.5)  # let a few tokens stream
        os.kill(pid, signal.SIGINT)
        shown += read_terminal_until(fd, b"interrupted", timeout=30)
        shown += read_terminal_until(fd, b"\x00never", timeout=2)
        status = _wait(pid, timeout=30)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130
    text = shown.decode("utf-8", "replace")
    assert "interrupted" in text
    assert TRACEBACK not in text
    assert "GPT ·" in text  # the streamed panel stays on screen


def test_ctrl_c_during_json_generation_prints_no_partial_json(long_context_gpt):
    """--json writes one document at the end: Ctrl-C before it leaves stdout empty, never half a document."""
    process = subprocess.Popen(
        [
            gbcli_executable(),
            "generate",
            "once upon a time",
            "--models",
            "gpt",
            "--gpt",
            str(long_context_gpt),
            "--max-new-tokens",
            "4000",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(6)  # import, load, and be well into generation (4,000 tokens of this model take far longer than this)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert TRACEBACK.encode() not in stderr
    if stdout:
        # A very fast machine may finish first; even then the document must be whole, never cut by the signal.
        json.loads(stdout)
        assert process.returncode in (0, 130), stderr.decode()
    else:
        assert process.returncode == 130, stderr.decode()
        assert b"interrupted" in stderr


def test_no_color_and_pipes_carry_no_ansi_codes(gpt_path):
    completed = run_installed(
        "generate",
        "once upon a time",
        "--greedy",
        "--max-new-tokens",
        "3",
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        "--show-probs",
        env={"FORCE_COLOR": ""},
    )
    assert completed.returncode == 0, completed.stderr.decode()
    assert b"\x1b[" not in completed.stdout and b"\x1b[" not in completed.stderr


def test_ctrl_c_during_a_file_run_keeps_finished_json_lines_valid(tmp_path, bert_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("the [MASK] quacks in the park .\n" * 50000)
    process = subprocess.Popen(
        [gbcli_executable(), "fill-mask", "--file", str(lines), "--json", "--models", "bert", "--bert", str(bert_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: communicate() misses read-ahead
    )
    first = process.stdout.readline()  # wait until results stream out, then interrupt
    assert first, process.stderr.read().decode()
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    records = [json.loads(line) for line in (first + rest).decode().splitlines()]
    assert 1 <= len(records) < 50000
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))  # in input order, none half-written
    assert TRACEBACK.encode() not in stderr


def _wait_for_cpu_seconds(pid: int, seconds: float, timeout: float = 60) -> None:
    """Until a process has used `seconds` of CPU: start-up is CPU-bound, so this is a moment of it however busy
    the machine is (wall-clock delays are not, on a shared 2-core runner)."""
    ticks = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return  # it ended
        if fields[0] in ("Z", "X"):
            return  # it ended, and waits for its parent to read its exit code
        if (int(fields[11]) + int(fields[12])) / ticks >= seconds:
            return
        time.sleep(0.01)


# CPU seconds into start-up: importing typer and gbcli, torch, transformers, loading the model. (Before ~0.1 s the
# signal lands in the interpreter's own start, in its site imports, before any line of gbcli runs.)
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
@pytest.mark.parametrize("moment", [0.15, 0.5, 1.0, 2.0])
def test_ctrl_c_at_any_moment_of_start_up_exits_130_with_one_line(moment, gpt_path):
    """While Python imports typer, torch or transformers, or the model loads: exit 130, one line, nothing else.
    (score, since tokenize now reads the tokenizer alone and imports neither torch nor the model.)"""
    process = subprocess.Popen(
        [gbcli_executable(), "score", "once upon a time", "--models", "gpt", "--gpt", str(gpt_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    _wait_for_cpu_seconds(process.pid, moment)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    if process.returncode == 0:  # a machine fast enough to finish first: then the output is whole
        json.loads(stdout)
        return
    assert process.returncode == 130, stderr.decode()
    assert stdout == b""
    assert stderr.decode().strip() == "interrupted", stderr.decode()


def test_ctrl_c_while_generating_into_a_pipe_writes_the_text_so_far(long_context_gpt):
    process = subprocess.Popen(
        [
            gbcli_executable(),
            "generate",
            "once upon a time",
            "--models",
            "gpt",
            "--gpt",
            str(long_context_gpt),
            "--max-new-tokens",
            "4000",
            "--seed",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    _wait_for_cpu_seconds(process.pid, 12, timeout=180)  # start-up takes ~5 CPU seconds: well into generation
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    text = stdout.decode()
    assert text.startswith("GPT · ") and "(interrupted): once upon a time" in text
    assert len(text.split("once upon a time", 1)[1]) > 0  # some generated text came out
    assert TRACEBACK.encode() not in stderr
