"""Managing the server from the outside: `gbcli serve --detach`, `gbcli ps` and `gbcli stop` (no torch here)."""

from __future__ import annotations

import os
import signal
import sys
import time

from gbcli.errors import GbcliError
from gbcli.warm.autostart import log_tail, spawn_server
from gbcli.warm.client import status
from gbcli.warm.protocol import LOG_NAME, SERVER_VARIABLE, hello, private_dir, same_build, socket_path, token_path
from gbcli.warm.runner import LoadedEntry, format_duration, model_table

START_SECONDS = 300.0  # loading full-size models on a busy machine takes a while
STOP_SECONDS = 30.0


def start_detached(argv: list[str]) -> int:
    """Start `gbcli serve ARGV` in its own session, logging to the runtime folder; return once it is ready."""
    running = status()
    if running is not None:
        raise GbcliError(
            f"A gbcli server is already running (pid {running.get('pid')}).",
            "See it with `gbcli ps`; stop it with `gbcli stop`.",
        )
    folder = private_dir()
    log_path = folder / LOG_NAME
    child = spawn_server(argv, log_path)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise GbcliError(
                f"The server exited at start (code {child.returncode}): {log_tail(str(log_path), lines=3)}",
                f"The whole log: {log_path}",
            )
        answer = status()
        if answer is not None and answer.get("ready"):
            also = f" and {answer['tcp']} (token in {token_path()})" if answer.get("tcp") else ""
            sys.stderr.write(f"gbcli server ready (pid {child.pid}) on {socket_path()}{also}; log: {log_path}\n")
            return 0
        time.sleep(0.2)
    child.terminate()
    raise GbcliError(f"The server did not get ready in {START_SECONDS:.0f} s.", f"See its log: {log_path}")


def show_status(json_output: bool) -> int:
    from gbcli.render.common import dumps, stdout_console  # late: start-up (`gbcli stop` draws nothing)

    try:
        answer = status(named=True)  # the server GBCLI_SERVER names, else the local one
    except (OSError, ValueError) as exc:
        raise GbcliError(
            f"Cannot reach the gbcli server that {SERVER_VARIABLE} names: {exc}.",
            f"Start it, or unset {SERVER_VARIABLE}.",
        ) from None
    if json_output:
        print(dumps(answer))
        return 0 if answer else 1
    console = stdout_console()
    if answer is None:
        console.print("No gbcli server is running.")
        return 1
    if answer.get("type") != "status" or not same_build(answer):
        console.print(
            f"A gbcli server of another build is running (pid {answer.get('pid')}, "
            f"{answer.get('build', 'unknown')}; this is {hello('x')['build']}): `gbcli stop` ends it.",
            markup=False,
        )
        return 1
    keep_alive = answer.get("keep_alive")
    where = answer["socket"] + (f" and {answer['tcp']}" if answer.get("tcp") else "")
    console.print(
        f"gbcli server pid {answer['pid']} on {where}, up {format_duration(answer['uptime'])}, "
        f"{answer['served']} request{'' if answer['served'] == 1 else 's'} served, keep-alive "
        f"{'never' if keep_alive is None else format_duration(keep_alive)}"
        f"{'' if answer.get('ready') else ', still loading'}{', busy' if answer.get('busy') else ''}"
        f"{', started by itself: it exits once it holds no model' if answer.get('auto') else ''}",
        markup=False,
    )
    entries = [LoadedEntry(**entry) for entry in answer.get("models", [])]
    console.print(model_table(entries, server=True) if entries else "No model loaded.")
    return 0


def stop_server() -> int:
    """SIGTERM to the process behind the socket (asked of the kernel, so a server of any build), then wait."""
    answer = status()
    if answer is None:
        sys.stderr.write("No gbcli server is running.\n")
        return 0
    pid = answer.get("pid")
    if not isinstance(pid, int):
        raise GbcliError("The server did not say its process id.", f"Remove {socket_path()} if nothing runs.")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return 0
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        if not _alive(pid) and not socket_path().exists():
            sys.stderr.write(f"gbcli server {pid} stopped.\n")
            return 0
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    sys.stderr.write(f"gbcli server {pid} did not stop in {STOP_SECONDS:.0f} s: killed.\n")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child of ours that exited stays a zombie until reaped; it is gone all the same.
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
