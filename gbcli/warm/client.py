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
import time

from gbcli.errors import explain_os_error
from gbcli.warm.protocol import (
    PROTOCOL,
    SERVER_VARIABLE,
    TOKEN_VARIABLE,
    Channel,
    ProtocolError,
    chosen_server,
    client_token,
    connect,
    decode_bytes,
    encode_bytes,
    hello,
    peer_pid,
    same_build,
    socket_file,
    tcp_url,
)

TYPE_CHECKING = False  # importing typing is start-up a warm command pays (row `warm`); annotations are strings
if TYPE_CHECKING:
    from typing import Any

# Never sent to a server: the server's own commands, `config`, and `finetune`, which trains new weights for minutes
# to hours (a warm server would be held that long, and its models are for reading only).
LOCAL_COMMANDS = {"serve", "shell", "ps", "stop", "config", "finetune"}
# Instant in-process; nothing to gain. gbcli.entry answers them before this module is imported (its HELP_FLAGS, the
# same set: written twice, since entry imports this module and tests/test_rules.py holds the two equal).
LOCAL_FLAGS = {"-h", "--help", "--version", "-V"}
# A file job into --output runs where it is typed: it may last hours (a server would be held that long), and under
# torchrun every process must do its own share on its own device.
LOCAL_OPTIONS = ("--output", "-o")
# The variables that change what a command prints or loads; every other variable stays the client's own.
FORWARDED_NAMES = {
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "FORCE_COLOR",
    "TERM",
    "COLORTERM",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "PY_COLORS",
    "TERMINAL_WIDTH",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
}  # where the Hugging Face cache and the settings file are
FORWARDED_PREFIXES = ("GBCLI_", "HF_", "TRANSFORMERS_")
# Where models come from, read by huggingface_hub and transformers once, when they are imported: a server cannot
# take a request's values for them, so a request that differs there runs in-process.
READ_AT_IMPORT = {
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_MODULES_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN_PATH",
    "XDG_CACHE_HOME",
}
PRIVATE_NAMES = {SERVER_VARIABLE, TOKEN_VARIABLE}  # the client's own: the token never travels twice
ANSWER_SECONDS = 10.0  # for the server to accept or refuse a request
DEFAULT_SILENCE_SECONDS = 30.0  # a server that says nothing (not even its heartbeat) this long is taken for dead


def forwarded(name: str) -> bool:
    return (name in FORWARDED_NAMES or name.startswith(FORWARDED_PREFIXES)) and name not in PRIVATE_NAMES


def read_at_import(name: str) -> bool:
    return name in READ_AT_IMPORT


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


def connect_tcp(address: tuple[str, int], timeout: float = 5.0) -> socket.socket:
    """A TCP connection to `gbcli serve --port`; OSError when nothing answers there."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(None)
    return sock


class Target:
    """The server a command is sent to: GBCLI_SERVER's TCP address (a token with every request), else the local
    socket. A local server that is not there means "run in-process"; a named one that is not there is an error."""

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address
        self.named = address is not None
        self.where = tcp_url(*address) if address is not None else socket_file()

    def open(self) -> socket.socket | None:
        """A connection; to a TCP server, its token sent first, on a short line of its own: the server reads no
        more than that before it knows the client (an empty token, when none is known, is refused)."""
        if self.address is None:
            return connect() if hasattr(socket, "AF_UNIX") else None
        sock = connect_tcp(self.address)
        Channel(sock).send({"type": "auth", "protocol": PROTOCOL, "token": client_token() or ""})
        return sock

    def hello(self, kind: str, **fields: Any) -> dict[str, Any]:
        return hello(kind, **fields)


def unreachable(target: Target, exc: OSError) -> int:
    return _fail(
        f"cannot reach the gbcli server at {target.where} ({SERVER_VARIABLE}): {exc.strerror or exc}.",
        f"Start it there (gbcli serve --port ...), or unset {SERVER_VARIABLE}, or pass --no-server.",
    )


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


def run_request(argv: list[str], target: Target) -> dict[str, Any]:
    width, height = terminal_size()
    env = {name: value for name, value in os.environ.items() if forwarded(name)}
    env["COLUMNS"], env["LINES"] = str(width), str(height)
    umask = os.umask(0)
    os.umask(umask)
    return target.hello(
        "run",
        argv=argv,
        cwd=os.getcwd(),
        env=env,
        umask=umask,
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


def forward_or_in_process(argv: list[str]) -> list[str]:
    """Send `gbcli ARGV` to a server and exit with its code if one answers; else the arguments to run here."""
    argv, in_process = strip_no_server(argv)
    if not in_process:
        code = forward(argv)
        if code is not None:
            sys.exit(code)
    return argv


def forward(argv: list[str], replacing: bool = False) -> int | None:
    """Run `gbcli ARGV` on the server if one is up and of this build: its exit code, or None to run in-process.

    A server named by GBCLI_SERVER that cannot be reached, or refuses, is an error (exit 1): the user asked for it.
    A server that started by itself and is of another build (gbcli was upgraded) is stopped and started afresh.
    """
    if server_disabled() or not wants_server(argv) or sys.stdout is None or sys.stderr is None:
        return None  # a closed standard stream: the command says so in-process, as it would without a server
    try:
        target = Target(chosen_server())
        sock = target.open()
    except ValueError as exc:
        return _fail(f"{exc}.", f"Set {SERVER_VARIABLE} to the address `gbcli serve --port` printed, or unset it.")
    except OSError as exc:
        return unreachable(target, exc)
    started = 0  # the pid of the server this command started, if it did
    if sock is None:
        from gbcli.warm import autostart  # late: start-up (only when no server answers)

        if target.named or not autostart.allowed():
            return None
        found = autostart.start_and_connect()
        if found is None:
            return None
        sock, started = found
    try:
        silence = silence_seconds()  # read only once a server answers: without one the variable means nothing
    except ValueError as exc:
        sock.close()
        return _fail(
            f"{exc}.", "Set it to the seconds a command waits for a silent server (e.g. 30), or unset it.", code=2
        )
    channel = Channel(sock)
    try:
        if not channel.send(run_request(argv, target)):
            return None
        answer = channel.receive(ANSWER_SECONDS)
    except (TimeoutError, ProtocolError, OSError) as exc:
        channel.close()
        if target.named:
            return _fail(
                f"the gbcli server at {target.where} did not answer ({type(exc).__name__}).",
                f"Check that it runs, or unset {SERVER_VARIABLE}, or pass --no-server.",
            )
        _warn(f"the gbcli server at {target.where} did not answer ({type(exc).__name__}); running in-process.")
        return None
    if answer is None or answer.get("type") != "accepted" or not same_build(answer):
        pid = _peer(sock)
        channel.close()
        if (answer or {}).get("auto") and not same_build(answer) and not target.named and not replacing:
            from gbcli.warm import autostart  # late: start-up (only when no server answers)

            if autostart.allowed() and autostart.stop_server(pid):
                return forward(argv, replacing=True)
        return refused(target, answer)
    code = Session(channel, silence, started_here=bool(started)).run()
    if code == Session.GONE:  # the server this command started died before answering: run it here instead
        from gbcli.warm import autostart  # late: start-up (only when no server answers)

        autostart.record_failure(os.path.dirname(target.where), f"it stopped: {autostart.log_tail()}")
        return None
    return code


def silence_seconds() -> float:
    """GBCLI_SERVER_TIMEOUT: how long a server may say nothing before the client gives up on it (ValueError)."""
    text = os.environ.get("GBCLI_SERVER_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_SILENCE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"GBCLI_SERVER_TIMEOUT={text} is not a number of seconds above 0")
    return seconds


def refused(target: Target, answer: dict[str, Any] | None) -> int | None:
    """A server that refused the request: a wrong token or a named server is an error, a local server of another
    build leaves the command to run in-process."""
    answer = answer or {}
    if answer.get("reason") == "environment" and not target.named:
        _warn(
            f"the gbcli server at {target.where} {answer.get('message')}, so this command runs in-process. Start "
            "the server from this environment to use it: gbcli stop; gbcli serve --detach"
        )
        return None
    if answer.get("reason") == "token":
        return _fail(
            f"the gbcli server at {target.where} refused this client: {answer.get('message')}.",
            f"Set {TOKEN_VARIABLE} to the token in that server's runtime folder (server.token).",
        )
    if answer.get("reason") == "busy":
        if target.named:
            return _fail(
                f"the gbcli server at {target.where} refused this client: {answer.get('message')}.",
                "Try again in a moment, or pass --no-server.",
            )
        _warn(f"the gbcli server at {target.where} {answer.get('message')}, so this command runs in-process.")
        return None
    theirs = answer.get("build", "unknown")
    mismatch = (
        f"the gbcli server at {target.where} is gbcli {theirs}, this is {hello('x')['build']}: they refuse each other"
    )
    if target.named:
        return _fail(f"{mismatch}.", "Run the same gbcli on both sides, or pass --no-server.")
    _warn(f"{mismatch}, so this command runs in-process. Restart it: gbcli stop; gbcli serve --detach")
    return None


class Session:
    """One forwarded command: copy the server's output out, standard input in, and return its exit code."""

    GONE = -1  # a server started for this command died before writing any output: the command may run here

    def __init__(self, channel: Channel, silence: float = DEFAULT_SILENCE_SECONDS, started_here: bool = False) -> None:
        self.channel = channel
        self.silence = silence
        self.started_here = started_here
        self.wrote_output = False
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
                return _fail(
                    f"the gbcli server sent nothing for {self.silence:.0f} s and seems stuck.",
                    "Stop it (gbcli stop) or pass --no-server; GBCLI_SERVER_TIMEOUT sets the wait.",
                )
            except (ProtocolError, OSError) as exc:
                return _fail(f"the connection to the gbcli server broke: {exc}.", "Run the command again.")
            if message is None:
                if self.started_here and not self.wrote_output and self.interrupted_at is None:
                    return self.GONE
                return _fail(
                    "the gbcli server stopped while running this command.",
                    "Run it again: with no server up it runs in-process (gbcli serve --detach restarts one).",
                )
            kind = message["type"]
            if kind == "out":
                self.wrote_output = self.wrote_output or message.get("fd") == 1
                code = self._write(message)
                if code is not None:
                    return code
            elif kind == "stdin_request":
                import threading  # late: start-up (only a command reading stdin needs a thread)

                threading.Thread(target=self._send_stdin, daemon=True).start()
            elif kind == "exit":
                code = message.get("code")
                return code if isinstance(code, int) else 1

    def _write(self, message: dict[str, Any]) -> int | None:
        """The server's output on ours; an exit code when ours cannot take it (the command is then stopped by the
        closing of the connection, and said as in-process), else None."""
        stream = sys.stdout if message.get("fd") == 1 else sys.stderr
        try:
            stream.buffer.write(decode_bytes(message.get("data")))
            stream.buffer.flush()
        except BrokenPipeError:
            # The reader went away (`gbcli ... | head -1`): stop quietly, as in-process; closing cancels the work.
            _discard(stream)
            return 0
        except ProtocolError:
            pass
        except OSError as exc:  # a full disk, a closed or unwritable stream: the in-process message, exit 1
            _discard(stream)
            if stream is sys.stdout:
                error = explain_os_error(exc)
                return _fail(error.message, error.hint or "See `gbcli --help`.")
            return 1
        return None

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


def _discard(stream: Any) -> None:
    """Point the stream at /dev/null: what is still buffered for it is not written again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _fail(message: str, hint: str, code: int = 1) -> int:
    sys.stderr.write(f"error: {message}\nhint: {hint}\n")
    return code


def status(timeout: float = 10.0, named: bool = False) -> dict[str, Any] | None:
    """The running server's own account of itself (`gbcli ps`), or None when none runs: the local one, or with
    `named` the one GBCLI_SERVER names (OSError or ValueError when it cannot be reached)."""
    target = Target(chosen_server() if named else None)
    sock = target.open()
    if sock is None:
        return None
    channel = Channel(sock)
    try:
        channel.send(target.hello("status"))
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
    if sock.family != getattr(socket, "AF_UNIX", None):
        return None  # a TCP peer's process is not the kernel's to tell
    try:
        return peer_pid(sock)
    except OSError:
        return None
