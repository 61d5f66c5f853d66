"""The client side of `gbcli serve`: an ordinary command that finds a running server hands its work to it.

It sends the command line, the working folder, the variables that shape the output (terminal size, colour, gbcli's
own), whether each standard stream is a terminal, and standard input when the command reads it; it writes the
server's stdout and stderr bytes as they come and exits with the server's exit code. Nothing here imports torch,
transformers or numpy: a warm command costs Python's start-up and one round trip.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from gbcli.protocol import (
    Channel,
    ProtocolError,
    decode_bytes,
    encode_bytes,
    hello,
    peer_pid,
    same_build,
    socket_path,
)

LOCAL_COMMANDS = {"serve", "shell", "ps", "stop"}  # never sent to a server
LOCAL_FLAGS = {"-h", "--help", "--version"}  # instant in-process; nothing to gain
# A file job into --output runs where it is typed: it may last hours (a server would be held that long), and under
# torchrun every process must do its own share on its own device.
LOCAL_OPTIONS = ("--output", "-o")
# The variables that change what a command prints or loads; every other variable stays the client's own.
FORWARDED_NAMES = {"COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM", "TTY_COMPATIBLE",
                   "TTY_INTERACTIVE", "CLICOLOR", "CLICOLOR_FORCE", "PY_COLORS", "TERMINAL_WIDTH"}
FORWARDED_PREFIXES = ("GBCLI_", "HF_", "TRANSFORMERS_")
ANSWER_SECONDS = 10.0  # for the server to accept or refuse a request
DEFAULT_SILENCE_SECONDS = 30.0  # a server that says nothing (not even its heartbeat) this long is taken for dead


def forwarded(name: str) -> bool:
    return name in FORWARDED_NAMES or name.startswith(FORWARDED_PREFIXES)


def strip_no_server(argv: list[str]) -> tuple[list[str], bool]:
    """`--no-server` anywhere before `--`: removed, and the command runs in-process."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--no-server" not in argv[:end]:
        return argv, False
    return [arg for i, arg in enumerate(argv) if not (arg == "--no-server" and i < end)], True


def server_disabled() -> bool:
    return os.environ.get("GBCLI_NO_SERVER", "").strip().lower() in {"1", "true", "yes", "on"}


def wants_server(argv: list[str]) -> bool:
    if not argv or argv[0].startswith("-") or argv[0] in LOCAL_COMMANDS or "WORLD_SIZE" in os.environ:
        return False
    end = argv.index("--") if "--" in argv else len(argv)
    return not any(arg in LOCAL_FLAGS or arg.startswith(LOCAL_OPTIONS) for arg in argv[:end])


def connect(timeout: float = 2.0) -> socket.socket | None:
    """A connection to the running server, or None. A socket nobody listens on (a killed server's) is removed."""
    path = socket_path()
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        remove_stale(path)
        return None
    except OSError:
        sock.close()
        return None
    sock.settimeout(None)
    return sock


def remove_stale(path: Any) -> None:
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode) and os.lstat(path).st_uid == os.getuid():
            os.unlink(path)
    except OSError:
        pass


def terminal_size() -> tuple[int, int]:
    """The size Rich would find for this process: COLUMNS/LINES, else the first standard stream that is a terminal.

    Sent with every request, so that the server lays out for the client's terminal, never its own.
    """
    width = height = None
    for fd in (0, 1, 2):
        try:
            width, height = os.get_terminal_size(fd)
            break
        except OSError:
            continue
    if os.environ.get("TERM", "") in {"dumb", "unknown"} and os.isatty(1):
        width, height = 80, 25
    columns, lines = os.environ.get("COLUMNS", ""), os.environ.get("LINES", "")
    return (int(columns) if columns.isdigit() else width or 80, int(lines) if lines.isdigit() else height or 25)


def run_request(argv: list[str]) -> dict[str, Any]:
    width, height = terminal_size()
    env = {name: value for name, value in os.environ.items() if forwarded(name)}
    env["COLUMNS"], env["LINES"] = str(width), str(height)
    umask = os.umask(0)
    os.umask(umask)
    return hello(
        "run", argv=argv, cwd=os.getcwd(), env=env, umask=umask,
        tty=[_isatty(0), _isatty(1), _isatty(2)],
        encoding=[_encoding(sys.stdout), _encoding(sys.stderr)],
    )


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _encoding(stream: Any) -> list[str]:
    return [getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict"]


def forward(argv: list[str]) -> int | None:
    """Run `gbcli ARGV` on the server if one is up and of this build: its exit code, or None to run in-process."""
    if server_disabled() or not wants_server(argv) or not hasattr(socket, "AF_UNIX"):
        return None
    sock = connect()
    if sock is None:
        return None
    channel = Channel(sock)
    try:
        if not channel.send(run_request(argv)):
            return None
        answer = channel.receive(ANSWER_SECONDS)
    except (TimeoutError, ProtocolError, OSError) as exc:
        channel.close()
        _warn(f"the gbcli server at {socket_path()} did not answer ({type(exc).__name__}); running in-process.")
        return None
    if answer is None or answer.get("type") != "accepted" or not same_build(answer):
        channel.close()
        theirs = (answer or {}).get("build", "unknown")
        _warn(f"the gbcli server at {socket_path()} is gbcli {theirs}, this is {hello('x')['build']}: they refuse "
              "each other, so this command runs in-process. Restart it: gbcli stop; gbcli serve --detach")
        return None
    return Session(channel).run()


class Session:
    """One forwarded command: copy the server's output out, standard input in, and return its exit code."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.silence = float(os.environ.get("GBCLI_SERVER_TIMEOUT", DEFAULT_SILENCE_SECONDS))
        self.interrupted_at: float | None = None

    def run(self) -> int:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return self._loop()
        finally:
            signal.signal(signal.SIGINT, previous)
            self.channel.close()

    def _loop(self) -> int:
        while True:
            try:
                wait = self.silence if self.interrupted_at is None else 5.0
                message = self.channel.receive(wait)
            except KeyboardInterrupt:
                if self.interrupted_at is not None:  # a second Ctrl-C: leave at once
                    return self._interrupted()
                # The server stops the work the way Ctrl-C stops it in-process, and says so on our stderr.
                self.interrupted_at = time.monotonic()
                self.channel.send({"type": "interrupt"})
                continue
            except TimeoutError:
                if self.interrupted_at is not None:
                    return self._interrupted()
                return _fail(f"the gbcli server sent nothing for {self.silence:.0f} s and seems stuck.",
                             "Stop it (gbcli stop) or pass --no-server; GBCLI_SERVER_TIMEOUT sets the wait.")
            except (ProtocolError, OSError) as exc:
                return _fail(f"the connection to the gbcli server broke: {exc}.", "Run the command again.")
            if message is None:
                return _fail("the gbcli server stopped while running this command.",
                             "Run it again: with no server up it runs in-process (gbcli serve --detach restarts "
                             "one).")
            kind = message["type"]
            if kind == "out":
                if not self._write(message):
                    return 0
            elif kind == "stdin_request":
                threading.Thread(target=self._send_stdin, daemon=True).start()
            elif kind == "exit":
                code = message.get("code")
                return code if isinstance(code, int) else 1

    def _write(self, message: dict[str, Any]) -> bool:
        stream = sys.stdout if message.get("fd") == 1 else sys.stderr
        try:
            stream.buffer.write(decode_bytes(message.get("data")))
            stream.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`gbcli ... | head -1`): stop quietly, as in-process; closing cancels the work.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            return False
        except ProtocolError:
            pass
        return True

    def _send_stdin(self) -> None:
        while True:
            try:
                chunk = os.read(0, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self.channel.send({"type": "stdin", "eof": True})
                return
            if not self.channel.send({"type": "stdin", "data": encode_bytes(chunk)}):
                return

    def _interrupted(self) -> int:
        sys.stderr.write("interrupted\n")
        return 130


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _fail(message: str, hint: str) -> int:
    sys.stderr.write(f"error: {message}\nhint: {hint}\n")
    return 1


def status(timeout: float = 10.0) -> dict[str, Any] | None:
    """The running server's own account of itself (`gbcli ps`), or None when none runs."""
    sock = connect()
    if sock is None:
        return None
    channel = Channel(sock)
    try:
        channel.send(hello("status"))
        answer = channel.receive(timeout)
    except (TimeoutError, ProtocolError, OSError):
        answer = None
    finally:
        pid = _peer(sock)
        channel.close()
    if answer is None:
        return {"type": "silent", "pid": pid}
    answer.setdefault("pid", pid)
    return answer


def _peer(sock: socket.socket) -> int | None:
    try:
        return peer_pid(sock)
    except OSError:
        return None
