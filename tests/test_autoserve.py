"""The warm server that starts by itself (gbcli.warm.autostart), as a user at a terminal meets it.

Every command here runs on a pseudo-terminal of its own, in a temporary runtime folder, settings file and state
folder, with CI unset (the CI sets CI=true, which alone would keep every server off). Every server a test starts is
killed at teardown, found by the pids its log names.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helpers import TRACEBACK, gbcli_executable, run_installed

NOTICE = b"gbcli: started a warm server"
FILL = ("fill-mask", "the [MASK] quacks .", "-k", "3")


class Terminal:
    """A user's terminal session: private runtime, config and state folders; commands run on a pty each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"  # short: a socket's path has ~107 bytes at most
        self.env = {
            **os.environ,
            "GBCLI_NO_SERVER": "",
            "GBCLI_RUNTIME_DIR": str(self.runtime),
            "GBCLI_CONFIG": str(root / "config.toml"),
            "XDG_STATE_HOME": str(root / "state"),
            "NO_COLOR": "1",
            "COLUMNS": "80",
            "TERM": "xterm",
            "OMP_NUM_THREADS": "1",
        }
        for name in (
            "CI",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "TORCHELASTIC_RUN_ID",
            "GBCLI_SERVER",
            "GBCLI_AUTO_SERVE",
            "GBCLI_KEEP_ALIVE",
        ):
            self.env.pop(name, None)

    def start(self, *args: str, **extra: str) -> tuple[subprocess.Popen, int]:
        leader, follower = pty.openpty()
        process = subprocess.Popen(
            [gbcli_executable(), *args],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env={**self.env, **extra},
            start_new_session=True,
        )
        os.close(follower)
        return process, leader

    def run(self, *args: str, timeout: float = 120, **extra: str) -> tuple[int, bytes]:
        """`gbcli ARGS` on a terminal: its exit code and everything the terminal showed (stdout and stderr)."""
        process, leader = self.start(*args, **extra)
        return finish(process, leader, timeout)

    @property
    def log(self) -> str:
        path = self.runtime / "server.log"
        return path.read_text() if path.exists() else ""

    def server_pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"starting on .* \(pid (\d+)\)", self.log)]

    def status(self) -> dict | None:
        from gbcli.warm.client import status

        before = os.environ.get("GBCLI_RUNTIME_DIR")
        os.environ["GBCLI_RUNTIME_DIR"] = str(self.runtime)
        try:
            return status()
        finally:
            os.environ["GBCLI_RUNTIME_DIR"] = before or ""
            if before is None:
                del os.environ["GBCLI_RUNTIME_DIR"]


def finish(process: subprocess.Popen, leader: int, timeout: float) -> tuple[int, bytes]:
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 1 << 16)
                except OSError:  # the program closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
        return process.wait(timeout=10), shown
    finally:
        os.close(leader)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def without_load_lines(shown: bytes) -> bytes:
    """What a command answered, without the plain lines a terminal with NO_COLOR shows while models load."""
    lines = shown.splitlines(keepends=True)
    return b"".join(line for line in lines if not line.startswith((b"Importing torch", b"Loading ")))


@pytest.fixture
def terminal():
    root = Path(tempfile.mkdtemp(prefix="gbcli-auto-"))
    session = Terminal(root)
    yield session
    for pid in session.server_pids():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def test_the_first_command_starts_a_server_and_the_second_is_answered_warm_with_the_same_bytes(terminal, models):
    code, first = terminal.run(*FILL, *models)
    assert code == 0, first
    assert first.count(NOTICE) == 1 and b"gbcli ps" in first and b"gbcli stop" in first
    assert b"auto-serve off" in first  # how to turn it off
    state = terminal.status()
    assert state["auto"] and state["served"] == 1 and len(terminal.server_pids()) == 1
    assert sorted(entry["family"] for entry in state["models"]) == ["bert", "gpt"]

    code, second = terminal.run(*FILL, *models)
    assert code == 0 and terminal.status()["served"] == 2, second
    code, cold = terminal.run("--no-server", *FILL, *models)
    assert code == 0 and terminal.status()["served"] == 2
    # NO_COLOR on a terminal: the loads' steps are plain lines, here and from the server; the warm models load no more.
    assert b"Loading BERT model" in cold and b"Loading BERT model" in first and b"Loading" not in second
    # The notice came once; the warm answer is the in-process one.
    assert second == without_load_lines(cold) and b"duck" in cold
    notice_line = first.split(b"\r\n")[0]
    # The first answer too, after its one line of notice.
    assert without_load_lines(first) == notice_line + b"\r\n" + without_load_lines(cold)

    # `gbcli ps`: each model's memory, idle time and when it will be let go (the keep-alive: 10 minutes).
    code, shown = terminal.run("ps")
    assert code == 0, shown
    text = shown.decode().replace("\r\n", "\n")
    assert "started by itself" in text and "let go in" in text and max(map(len, text.splitlines())) <= 80
    rows = [line.split() for line in text.splitlines() if line.startswith(("GPT ", "BERT "))]
    assert len(rows) == 2 and all(row[-1].startswith(("9m", "10m")) for row in rows), rows
    document = json.loads(terminal.run("ps", "--json")[1].decode())
    for entry in document["models"]:
        assert entry["release_seconds"] == pytest.approx(600 - entry["idle_seconds"], abs=1.0)


def test_the_loading_progress_comes_from_the_server(terminal, models):
    """In colour on a terminal, the spinner that says which model loads is drawn by the server that loads it."""
    code, shown = terminal.run(*FILL, "--models", "bert", *models, NO_COLOR="")
    assert code == 0, shown
    assert b"Loading BERT model" in shown and b"duck" in shown
    assert "-> 0" in terminal.log  # the server ran it


OFF = {  # what keeps a command on a terminal from starting a server, as the environment says it
    "CI": {"CI": "true"},
    "GBCLI_NO_SERVER": {"GBCLI_NO_SERVER": "1"},
    "GBCLI_AUTO_SERVE": {"GBCLI_AUTO_SERVE": "off"},
    "torchrun": {"WORLD_SIZE": "2", "LOCAL_RANK": "0"},
}


@pytest.mark.parametrize("how", ["pipe", "--no-server", "setting", *OFF])
def test_nothing_is_started_where_it_would_surprise(terminal, how):
    # A usage error is the cheapest command that still goes through the client (no model loads either way).
    args = ["tokenize", "hi", "--models", "nope"]
    if how == "pipe":
        result = run_installed(*args, env=terminal.env)
        code, shown = result.returncode, result.stderr
    else:
        if how == "--no-server":
            args.insert(0, "--no-server")
        if how == "setting":
            (terminal.root / "config.toml").write_text("auto-serve = false\n")
        code, shown = terminal.run(*args, **OFF.get(how, {}))
    assert code == 2 and b"Unknown model column 'nope'" in shown
    assert NOTICE not in shown and terminal.server_pids() == [] and not (terminal.runtime / "server.sock").exists()


def test_the_same_command_on_a_terminal_does_start_one(terminal):
    """The control for the test above: nothing but the terminal differs, and a server answers."""
    code, shown = terminal.run("tokenize", "hi", "--models", "nope")
    assert code == 2 and b"Unknown model column 'nope'" in shown and NOTICE in shown
    assert len(terminal.server_pids()) == 1 and "-> 2" in terminal.log


def test_two_first_commands_at_once_start_one_server_and_both_are_answered(terminal, bert_path):
    args = ("tokenize", "the duck quacks", "--models", "bert", "--bert", str(bert_path))
    started = [terminal.start(*args) for _ in range(2)]
    results: list[tuple[int, bytes]] = [(-1, b"")] * 2

    def finish_one(index: int) -> None:
        results[index] = finish(*started[index], 120)

    threads = [threading.Thread(target=finish_one, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert all(code == 0 and b"duck" in shown for code, shown in results), results
    assert len(terminal.server_pids()) == 1
    assert terminal.status()["served"] == 2
    assert sum(shown.count(NOTICE) for _, shown in results) == 1


def test_the_keep_alive_lets_the_models_go_and_the_server_exits(terminal, bert_path):
    # score loads BERT (tokenize reads its tokenizer alone, and a server that loaded no model has none to let go).
    code, shown = terminal.run(
        "score", "the duck quacks .", "--models", "bert", "--bert", str(bert_path), GBCLI_KEEP_ALIVE="2s"
    )
    assert code == 0, shown
    (pid,) = terminal.server_pids()
    assert terminal.status()["keep_alive"] == 2.0
    wait_for(lambda: not alive(pid), 20, "the server to exit")
    assert "unloaded bert bert after 2s idle" in terminal.log and "holding no model: exiting" in terminal.log
    assert not (terminal.runtime / "server.sock").exists()


def test_a_crashed_server_is_restarted_by_the_next_command(terminal, bert_path):
    args = ("tokenize", "hi", "--models", "bert", "--bert", str(bert_path))
    assert terminal.run(*args)[0] == 0
    (pid,) = terminal.server_pids()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the server to die")
    code, shown = terminal.run(*args)
    assert code == 0 and b"Tokenizers" in shown and TRACEBACK.encode() not in shown
    first, second = terminal.server_pids()
    assert first == pid
    assert second != pid and terminal.status()["pid"] == second
    assert shown.count(NOTICE) == 0  # the notice is for the first time only


def test_a_server_that_starts_by_itself_never_writes_its_log_through_a_link(terminal, tmp_path):
    """The automatic start opens server.log as `serve --detach` does: a symbolic link planted there is refused, the
    file it points to untouched, and the command runs in-process, saying why."""
    terminal.runtime.mkdir(mode=0o700)
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched\n")
    (terminal.runtime / "server.log").symlink_to(target)
    code, shown = terminal.run("tokenize", "hi", "--models", "nope")
    assert code == 2 and b"Unknown model column 'nope'" in shown  # answered in-process
    assert b"warning: gbcli could not start a warm server" in shown and b"is a symbolic link" in shown
    assert target.read_text() == "untouched\n" and terminal.server_pids() == []


def test_a_server_that_cannot_start_leaves_the_command_here_and_says_so_once():
    # A runtime folder whose socket path is longer than a socket's address can hold: the server cannot listen.
    root = Path(tempfile.mkdtemp(prefix="gbcli-auto-"))
    terminal = Terminal(root)
    terminal.runtime = root / ("r" * 90) / "run"
    terminal.env["GBCLI_RUNTIME_DIR"] = str(terminal.runtime)
    args = ("tokenize", "hi", "--models", "nope")  # answered in-process: the usage error, exit 2
    try:
        code, first = terminal.run(*args)
        assert code == 2 and b"Unknown model column 'nope'" in first, first
        assert first.count(b"warning: gbcli could not start a warm server") == 1 and b"Cannot listen" in first
        code, second = terminal.run(*args)
        assert code == 2 and b"warning" not in second  # said once: this build does not try again
        assert terminal.log.count("Cannot listen") == 1
        assert terminal.run("stop")[0] == 0  # forgets the failure: the next command tries again
        code, third = terminal.run(*args)
        assert code == 2 and b"could not start" in third and terminal.log.count("Cannot listen") == 2
    finally:
        for pid in terminal.server_pids():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


FAKE_OLD_SERVER = """
import os, signal, socket, sys
from gbcli.warm.protocol import Channel
path = sys.argv[1]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(4)
def leave(number, frame):
    os.unlink(path)
    os._exit(0)
signal.signal(signal.SIGTERM, leave)
print("listening", flush=True)
while True:
    sock, _ = listener.accept()
    channel = Channel(sock)
    channel.receive(10)
    channel.send({"type": "refused", "protocol": 1, "build": "0.0.1+old", "auto": True, "message": "old"})
    channel.close()
"""


def test_a_server_that_started_by_itself_under_an_older_gbcli_is_replaced(terminal):
    """After an upgrade, the old automatic server would refuse every command until it idled out: it is stopped and
    a server of this build takes its place."""
    terminal.runtime.mkdir(mode=0o700)
    old = subprocess.Popen(
        [sys.executable, "-c", FAKE_OLD_SERVER, str(terminal.runtime / "server.sock")], stdout=subprocess.PIPE
    )
    try:
        assert old.stdout.readline() == b"listening\n"
        code, shown = terminal.run("tokenize", "hi", "--models", "nope")
        assert old.wait(timeout=20) == 0  # it was asked to stop
        assert code == 2 and b"Unknown model column 'nope'" in shown and b"refuse" not in shown
        assert len(terminal.server_pids()) == 1 and "-> 2" in terminal.log  # a new one answered
    finally:
        if old.poll() is None:
            old.kill()
