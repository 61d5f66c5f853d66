"""The warm server that starts by itself: on a terminal, a command that finds no server starts one and uses it.

Gradle, Bazel and sccache start their daemon on first use and let it go after an idle time; ollama keeps a model
for minutes after its last use. So does gbcli, where nobody would be surprised: only when standard input and
output are a terminal (a person typing), never in scripts, pipes, CI, under torchrun, with --no-server,
GBCLI_NO_SERVER=1 or `auto-serve = false` in the settings, and never on TCP. The server starts empty, in its own
session, on the same Unix socket as `gbcli serve --detach`, and loads each model when the first request names it,
streaming that request's loading progress to the command's terminal: no model is loaded twice, and the first answer
costs what an in-process one costs plus a round trip. It lets a model go after the keep-alive and exits when it
holds none.

Two commands that start at once take a lock in the runtime folder: the first starts the server, the second waits
and then connects to it. A server that cannot start leaves its command to run in-process, says why once, and is not
started again by this gbcli build until `gbcli stop` (or `gbcli serve`) clears the record of that failure.

Only the standard library is imported here, as in gbcli.warm.client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from gbcli.errors import GbcliError
from gbcli.settings import value
from gbcli.warm.protocol import LOG_NAME, build_id, connect, open_log, private_dir, runtime_folder, socket_file

LOCK_NAME = "autostart.lock"
FAILED_NAME = "autostart.failed"  # this build's server could not start: commands run in-process, quietly
NOTICE_NAME = "auto-serve-noticed"  # in the user's state folder: the one-line notice was shown once
LISTEN_SECONDS = 60.0  # for a started server to listen: Python, Typer and the CLI's imports on a busy machine
# Set by the process launchers that run one gbcli per device: every process must do its own share.
LAUNCHER_VARIABLES = ("WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
FALSE_WORDS = {"", "0", "false", "no", "off"}


def allowed() -> bool:
    """Whether this command may start a server: a person at a terminal, no CI, no launcher, not turned off."""
    if not hasattr(socket, "AF_UNIX") or not (_isatty(0) and _isatty(1)):
        return False
    if os.environ.get("CI", "").strip().lower() not in FALSE_WORDS:
        return False
    if any(name in os.environ for name in LAUNCHER_VARIABLES):
        return False

    try:
        return bool(value("auto-serve"))
    except GbcliError:  # a broken settings file: the command runs here and reports it
        return False


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def keep_alive_text() -> str:
    return str(value("keep-alive"))


def start_and_connect() -> tuple[socket.socket, int] | None:
    """Start a server (or find the one a simultaneous command started) and connect: (socket, its pid), or None
    when none could be had (the command then runs in-process; why is said on stderr once)."""
    try:
        folder = _private_folder()
    except OSError:
        return None  # the runtime folder is not usable: the command runs here, and `gbcli serve` would say why
    import fcntl  # late: platform (not on Windows)

    with open(os.path.join(folder, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        sock = connect()
        if sock is not None:  # a command that held the lock before us started it
            return sock, 0
        if _failed_before(folder):
            return None
        return _start(folder)


def _private_folder() -> str:
    return str(private_dir())


def _start(folder: str) -> tuple[socket.socket, int] | None:
    keep_alive = keep_alive_text()
    log_path = os.path.join(folder, LOG_NAME)
    try:
        child = spawn_server(["serve", "--auto", "--keep-alive", keep_alive], log_path)
    except GbcliError as error:  # the log's place holds a link or no plain file: nothing is written through it
        record_failure(folder, error.message)
        return None
    deadline = time.monotonic() + LISTEN_SECONDS
    while time.monotonic() < deadline:
        sock = connect()
        if sock is not None:
            notice_once(keep_alive)
            return sock, child.pid
        if child.poll() is not None:
            break
        time.sleep(0.01)
    if child.poll() is None:
        child.kill()
        reason = f"it did not listen within {LISTEN_SECONDS:.0f} s"
    else:
        reason = f"it exited with code {child.returncode}: {log_tail(log_path, lines=2)}"
    record_failure(folder, reason)
    return None


def spawn_server(argv: list[str], log_path: str | os.PathLike[str]) -> subprocess.Popen:
    """`gbcli ARGV` (a `serve`) in a session of its own, its output appended to the server's log (`open_log`:
    never through a link): how both an automatic server and `gbcli serve --detach` start.

    The server inherits this environment (threads, Hugging Face cache, GBCLI_*), so it answers as this process
    would; GBCLI_NO_SERVER keeps it from forwarding anything itself."""
    with open_log(log_path) as log, open(os.devnull, "rb") as devnull:
        return subprocess.Popen(
            [sys.executable, "-m", "gbcli", *argv],
            stdin=devnull,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "GBCLI_NO_SERVER": "1"},
        )


def log_tail(path: str | None = None, lines: int = 1) -> str:
    """The last lines of the server's log, for saying why it stopped."""
    path = path or os.path.join(runtime_folder(), LOG_NAME)
    try:
        with open_log(path, append=False) as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            text = log.read().decode(errors="replace")
    except (OSError, GbcliError):
        return "no log"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " / ".join(kept) or "no log"


def record_failure(folder: str, reason: str) -> None:
    """Say once why the server could not start, and remember it: this build's commands then run in-process without
    trying again (each try would cost its start-up) until `gbcli stop` or `gbcli serve` forgets it."""
    sys.stderr.write(
        f"warning: gbcli could not start a warm server ({reason}), so commands run in-process. "
        f"Log: {os.path.join(folder, LOG_NAME)}; `gbcli stop` lets it try again.\n"
    )
    sys.stderr.flush()
    try:
        with open(os.path.join(folder, FAILED_NAME), "w") as out:
            out.write(build_id() + "\n")
    except OSError:
        pass


def _failed_before(folder: str) -> bool:
    try:
        with open(os.path.join(folder, FAILED_NAME)) as marker:
            return marker.read().strip() == build_id()
    except OSError:
        return False


def forget_failure() -> None:
    """`gbcli stop`, `gbcli serve`: the next command may start a server again."""
    try:
        os.unlink(os.path.join(runtime_folder(), FAILED_NAME))
    except OSError:
        pass


def stop_server(pid: int | None, timeout: float = 15.0) -> bool:
    """Stop a server that started by itself (one of another gbcli build): SIGTERM, then wait for its socket to go.
    True once it is gone."""
    if not pid:
        return False
    try:
        os.kill(pid, signal.SIGTERM)  # it finishes the request it runs, then removes its socket
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(socket_file()):
            return True
        time.sleep(0.05)
    return False


def state_folder() -> str:
    """$XDG_STATE_HOME/gbcli, else ~/.local/state/gbcli: what gbcli remembers between sessions."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "gbcli")


def notice_once(keep_alive: str) -> None:
    """The first time ever: one line on stderr that says what happened, how to see and stop it, how to turn it
    off."""
    marker = os.path.join(state_folder(), NOTICE_NAME)
    if os.path.exists(marker):
        return
    sys.stderr.write(
        f"gbcli: started a warm server that keeps models loaded for the next commands (each for "
        f"{keep_alive} after its last use); see it with `gbcli ps`, stop it with `gbcli stop`, turn "
        f"this off with `gbcli config set auto-serve off`.\n"
    )
    sys.stderr.flush()
    try:
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as out:
            out.write(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    except OSError:
        pass
