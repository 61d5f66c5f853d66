"""The warm server against clients that do not play fair (issue 29, 6-10): an outsider on TCP costs at most a few
KiB before its token is checked and is told nothing about the server, every message has a deadline for the whole of
it, connections are capped (the excess refused at once), running out of file descriptors is waited out, the log is
never written through a planted symlink, and what sits at the socket's place is named.

A real `gbcli.warm.server.Server` listens here on a temporary Unix socket and on 127.0.0.1, in this process, with its
deadlines and cap made short; no model is loaded (none of this reaches a command). Every loop is bounded in count
and time.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gbcli.warm import server as server_module
from gbcli.warm.protocol import build_id, hello
from tests.cli_helpers import assert_user_error, run, run_installed

DEADLINE_S = 1.0  # the server's REQUEST_SECONDS and MESSAGE_SECONDS here
CAP = 4  # its MAX_CONNECTIONS here


class BareServer:
    """A Server bound in a fresh runtime folder, its accept loops running, its log in memory."""

    def __init__(self, runtime: Path) -> None:
        self.log = io.StringIO()
        self.server = server_module.Server(None, self.log, tcp=("127.0.0.1", 0))
        self.server.bind()
        self.port = self.server.tcp_listener.getsockname()[1]
        self.token = self.server.token
        self.runtime = runtime
        for listener, tcp in ((self.server.listener, False), (self.server.tcp_listener, True)):
            threading.Thread(target=self.server.accept_loop, args=(listener, tcp), daemon=True).start()

    def connect(self, tcp: bool) -> socket.socket:
        if tcp:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(self.runtime / "server.sock"))
        return sock

    def status(self, tcp: bool = True) -> dict:
        """What a fair client asks: its token first (TCP), then a status request."""
        with self.connect(tcp) as sock:
            if tcp:
                sock.sendall(json.dumps({"type": "auth", "protocol": 1, "token": self.token}).encode() + b"\n")
            sock.sendall(json.dumps(hello("status")).encode() + b"\n")
            return json.loads(_read_line(sock, 5.0))


def _read_line(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (what it sends before is read and dropped)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            continue
        except OSError:  # reset: closed with our bytes unread
            return True
    return False


@pytest.fixture
def bare(monkeypatch):
    runtime = Path(tempfile.mkdtemp(prefix="gbcli-t-")) / "run"  # short: a socket path has ~100 bytes
    monkeypatch.setenv("GBCLI_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(server_module, "REQUEST_SECONDS", DEADLINE_S)
    monkeypatch.setattr(server_module, "MESSAGE_SECONDS", DEADLINE_S)
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", CAP)
    running = BareServer(runtime)
    yield running
    running.server.stopping = True
    running.server.close()


# ---------------------------------------------------------------------------------------------------------------
# 6 and 9: an outsider on TCP costs a few KiB and learns nothing
# ---------------------------------------------------------------------------------------------------------------

OUTSIDERS = {  # what an unauthenticated client sends first, and whether it is refused in words or cut off
    "a huge line with no newline": (b"x" * (1 << 20), "cut"),
    "a huge JSON request": (json.dumps(hello("run", argv=["x" * (1 << 20)])).encode() + b"\n", "cut"),
    "the right token after 8 KiB of padding": (b'{"pad": "' + b"x" * 8192 + b'", "type": "auth"}\n', "cut"),
    "no token": (json.dumps({"type": "auth", "protocol": 1}).encode() + b"\n", "refused"),
    "a wrong token": (json.dumps({"type": "auth", "protocol": 1, "token": "guess"}).encode() + b"\n", "refused"),
    "a request instead of the token": (json.dumps(hello("status")).encode() + b"\n", "refused"),
}


@pytest.mark.parametrize("case", list(OUTSIDERS))
def test_an_outsider_is_stopped_within_a_few_kib_and_told_nothing_of_the_server(bare, case):
    data, outcome = OUTSIDERS[case]
    if case.startswith("the right token"):
        data = data.replace(b'"type"', f'"token": "{bare.token}", "type"'.encode())
    with bare.connect(tcp=True) as sock:
        sock.settimeout(5)
        sent = 0
        try:
            while sent < len(data):
                sent += sock.send(data[sent : sent + 65536])
        except OSError:  # the server closed on us mid-send: it read no more
            pass
        answer = _read_line(sock, 3.0) if outcome == "refused" else b""
        assert _closed_within(sock, 2.0)
    if outcome == "refused":
        refusal = json.loads(answer)
        assert refusal["type"] == "refused" and refusal["reason"] == "token"
        assert "build" not in refusal and build_id() not in answer.decode()
    else:
        assert "longer than any gbcli sends" in bare.log.getvalue()
    assert bare.status()["type"] == "status"  # and everyone else is served as before


def test_the_refusal_through_the_installed_client_names_no_build(bare, tmp_path):
    env = {
        "GBCLI_NO_SERVER": "",
        "GBCLI_RUNTIME_DIR": str(tmp_path),
        "GBCLI_SERVER": f"tcp://127.0.0.1:{bare.port}",
        "GBCLI_SERVER_TOKEN": "not-the-token",
    }
    result = run_installed("tokenize", "a duck", env=env, timeout=60)
    said = result.stderr.decode()
    assert result.returncode == 1 and "refused this client" in said and "wrong token" in said, said
    assert build_id() not in said and build_id().split("+")[1] not in said


# ---------------------------------------------------------------------------------------------------------------
# 7: a deadline for a whole message, and a cap on connections
# ---------------------------------------------------------------------------------------------------------------

SLOW = {  # what a slow client sends before it trickles: on TCP nothing (its token is slow), or its token first
    "tcp, the token": (True, b""),
    "tcp, the request after the token": (True, None),
    "unix socket, the request": (False, b""),
}


@pytest.mark.parametrize("case", list(SLOW))
def test_a_client_that_trickles_a_message_is_cut_off_at_the_deadline(bare, case):
    tcp, first = SLOW[case]
    with bare.connect(tcp) as sock:
        if first is None:
            sock.sendall(json.dumps({"type": "auth", "protocol": 1, "token": bare.token}).encode() + b"\n")
        started = time.monotonic()
        closed = False
        for _ in range(int(4 * DEADLINE_S / 0.1)):  # a byte every 0.1 s, each wait far below any per-read timeout
            try:
                sock.sendall(b"{")
            except OSError:
                closed = True
                break
            if _closed_within(sock, 0.1):
                closed = True
                break
        assert closed, "a trickling client was never cut off"
        assert time.monotonic() - started < DEADLINE_S + 1.5
    assert bare.status(tcp)["type"] == "status"


@pytest.mark.parametrize("tcp", [True, False], ids=["tcp", "unix"])
def test_connections_past_the_cap_are_refused_at_once_and_served_again_after(bare, monkeypatch, tcp):
    monkeypatch.setattr(server_module, "REQUEST_SECONDS", 30.0)  # the idle ones stay for the whole test
    idle = [bare.connect(tcp) for _ in range(CAP)]
    try:
        deadline = time.monotonic() + 5
        while bare.server.connections < CAP and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bare.server.connections == CAP
        for _ in range(3):
            started = time.monotonic()
            with bare.connect(tcp) as extra:
                refusal = json.loads(_read_line(extra, 2.0))
            assert time.monotonic() - started < 1.0
            assert refusal["type"] == "refused" and refusal["reason"] == "busy" and "build" not in refusal
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while bare.server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bare.server.connections == 0 and bare.status(tcp)["type"] == "status"


# ---------------------------------------------------------------------------------------------------------------
# 8: out of file descriptors, the listener waits and goes on
# ---------------------------------------------------------------------------------------------------------------


def test_running_out_of_descriptors_does_not_end_the_listener(bare):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open descriptors needs /proc")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The clients' descriptors are taken first; then the limit leaves the server two, and six clients connect.
    clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(6)]
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 2, hard))
        for sock in clients:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", bare.port))
        deadline = time.monotonic() + 5
        while "accept failed" not in bare.log.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "accept failed" in bare.log.getvalue(), "the flood never ran the server out of descriptors"
    finally:
        for sock in clients:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert bare.status(tcp=True)["type"] == "status"
    assert bare.status(tcp=False)["type"] == "status"


# ---------------------------------------------------------------------------------------------------------------
# 10: the log never through a symlink; what is at the socket's place is named
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["symlink to a file", "symlink to nowhere", "folder", "named pipe"])
def test_the_server_log_is_never_written_through_what_was_planted_there(planted, tmp_path):
    runtime = Path(tempfile.mkdtemp(prefix="gbcli-t-")) / "run"
    runtime.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    log = runtime / "server.log"
    if planted == "symlink to a file":
        log.symlink_to(victim)
    elif planted == "symlink to nowhere":
        log.symlink_to(tmp_path / "made-by-the-server.txt")
    elif planted == "folder":
        log.mkdir()
    else:
        os.mkfifo(log)
    result = run_installed("serve", "--detach", env={"GBCLI_RUNTIME_DIR": str(runtime)}, timeout=60)
    said = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in said, said
    assert str(log) in said and ("symbolic link" in said or "not a plain file" in said or "Cannot open" in said)
    assert victim.read_text() == "keep me\n" and not (tmp_path / "made-by-the-server.txt").exists()
    assert not (runtime / "server.sock").exists()


@pytest.mark.parametrize(
    ("planted", "named"),
    [("file", "a file"), ("folder", "a folder"), ("symlink", "a symbolic link"), ("named pipe", "a named pipe")],
)
def test_a_non_socket_at_the_sockets_place_is_named(planted, named, monkeypatch):
    runtime = Path(tempfile.mkdtemp(prefix="gbcli-t-")) / "run"
    runtime.mkdir(mode=0o700)
    place = runtime / "server.sock"
    if planted == "file":
        place.write_text("notes\n")
    elif planted == "folder":
        place.mkdir()
    elif planted == "symlink":
        place.symlink_to(runtime / "elsewhere")
    else:
        os.mkfifo(place)
    monkeypatch.setenv("GBCLI_RUNTIME_DIR", str(runtime))
    result = run("serve", "--models", "gpt")
    assert_user_error(result, 1, f"{named} is in the way", str(place))
    assert "shorter folder" not in result.stderr
    assert os.path.lexists(place)  # left as it was: the user decides


# ---------------------------------------------------------------------------------------------------------------
# A cancel's SIGINT that reaches the main thread after its job ended
# ---------------------------------------------------------------------------------------------------------------


def _job() -> server_module.Job:
    return server_module.Job(
        channel=None,
        argv=["score", "x"],
        cwd="/",
        env={},
        umask=0o22,
        tty=[False] * 3,
        encoding=[["utf-8", "strict"]] * 2,
    )


def test_a_cancel_signal_delivered_after_its_job_ended_leaves_the_server_running(bare):
    """A client that leaves sends SIGINT to the main thread for its job; Python runs the handler at its next check,
    which can come after the job has ended (a busy machine). That late signal is the cancel's, not a Ctrl-C typed at
    the server: the server goes on (it used to stop, taking every later client's request with it)."""
    server, job = bare.server, _job()
    previous = signal.signal(signal.SIGINT, server.on_signal)
    try:
        server.current = job
        server.cancel(job)  # delivered here, while the job runs: it interrupts the job
    except KeyboardInterrupt:
        pass
    finally:
        server.current = None
    assert not server.stopping
    try:
        server.current = job  # the command has ended; the server puts its streams and variables back
        server.cancel_signalled_for = job
        try:
            server.on_signal(signal.SIGINT, None)
        except KeyboardInterrupt:
            pytest.fail("a cancel's SIGINT during the server's bookkeeping escaped the request")
        assert not server.stopping
        server.cancel_signalled_for = job  # sent for the job, not yet delivered when the job ends
        server.current = None
        try:
            server.on_signal(signal.SIGINT, None)  # a late delivery is dropped: no KeyboardInterrupt, no stop
        except KeyboardInterrupt:
            pytest.fail("a cancel's SIGINT delivered after its job ended was taken for a Ctrl-C at the server")
        assert not server.stopping
        with pytest.raises(KeyboardInterrupt):
            server.on_signal(signal.SIGINT, None)  # a Ctrl-C at the server's own terminal still stops it
    finally:
        signal.signal(signal.SIGINT, previous)
    assert server.stopping
