"""`gbcli serve`: one process keeps the models loaded and runs the commands that clients send it.

A thread per connection talks to its client (validates the request, relays standard input, notices a client
that leaves, sends a heartbeat); the main thread runs the requests one at a time, each by the CLI's own Typer
app with stdout, stderr and stdin bound to that client, so the output is the in-process output byte for byte.
One at a time is the simplest way to never mix two requests on one model. A client that leaves or presses Ctrl-C
gets SIGINT delivered to the main thread: the command stops exactly as Ctrl-C stops it in-process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
import io
import ipaddress
import json
import os
import queue
import secrets
import signal
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from gbcli.errors import GbcliError
from gbcli.loading import models
from gbcli.render.common import to_jsonable
from gbcli.warm.client import LOCAL_COMMANDS, forwarded, read_at_import
from gbcli.warm.protocol import (
    AUTH_LIMIT,
    HEARTBEAT_SECONDS,
    Channel,
    ProtocolError,
    connect,
    decode_bytes,
    encode_bytes,
    hello,
    peer_uid,
    private_dir,
    refusal,
    same_build,
    socket_path,
    tcp_url,
    token_path,
)
from gbcli.warm.runner import (
    format_duration,
    loaded_models,
    models_kept_loaded,
    run_command_line,
    unload_idle,
    used_until_now,
)

REQUEST_SECONDS = 10.0  # for a client to send its whole request (and over TCP its token first) once connected
MESSAGE_SECONDS = 30.0  # for any later message to arrive whole from its first byte
MAX_CONNECTIONS = 64  # connections served at once; more are refused at once (each holds a thread)
ACCEPT_BACKOFF_SECONDS = (0.05, 1.0)  # the first and the longest wait after a failed accept (out of descriptors)


@dataclass
class Job:
    """One request: what to run, where, for which terminal; and how it ended."""

    channel: Channel
    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    tty: list[bool]
    encoding: list[list[str]]
    stdin: queue.Queue = field(default_factory=queue.Queue)
    done: threading.Event = field(default_factory=threading.Event)
    cancel_requested: bool = False
    code: int = 1


def parse_job(channel: Channel, message: dict[str, Any]) -> Job:
    """The request checked field by field: a malformed one is refused, never half-run."""
    argv, cwd, env = message.get("argv"), message.get("cwd"), message.get("env")
    tty, encoding, umask = message.get("tty"), message.get("encoding"), message.get("umask")
    valid = (
        isinstance(argv, list)
        and all(isinstance(a, str) for a in argv)
        and isinstance(cwd, str)
        and isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        and isinstance(tty, list)
        and len(tty) == 3
        and all(isinstance(t, bool) for t in tty)
        and isinstance(encoding, list)
        and len(encoding) == 2
        and all(isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in encoding)
        and isinstance(umask, int)
        and 0 <= umask <= 0o777
    )
    if not valid:
        raise ProtocolError("a run request needs argv, cwd, env, umask, tty and encoding of the right types")
    if argv and argv[0] in LOCAL_COMMANDS:
        raise ProtocolError(f"`gbcli {argv[0]}` runs where it is typed, never on the server")
    env = {name: value for name, value in env.items() if forwarded(name)}  # nothing else of the client's
    return Job(channel, argv, cwd, env, umask, tty, encoding)  # type: ignore[arg-type]


class _ClientWriter(io.RawIOBase):
    """stdout or stderr of a request: bytes to the client as they are written; a terminal if the client's is."""

    def __init__(self, job: Job, fd: int) -> None:
        self.job, self.fd = job, fd

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.job.tty[self.fd]

    def write(self, data: Any) -> int:
        data = bytes(data)
        if data:
            self.job.channel.send({"type": "out", "fd": self.fd, "data": encode_bytes(data)})
        return len(data)  # a client that left loses what follows; the command is being stopped anyway


class _ClientReader(io.RawIOBase):
    """stdin of a request: asked of the client on first read, so a command that never reads it never waits."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.asked = False
        self.ended = False
        self.pending = b""

    def readable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.job.tty[0]

    def readinto(self, buffer: Any) -> int:
        if not self.pending and not self.ended:
            if not self.asked:
                self.asked = True
                self.job.channel.send({"type": "stdin_request"})
            chunk = self.job.stdin.get()
            if chunk is None:
                self.ended = True
            else:
                self.pending = chunk
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


class Server:
    def __init__(
        self, keep_alive: float | None, log: Any, tcp: tuple[str, int] | None = None, auto: bool = False
    ) -> None:
        self.keep_alive = keep_alive
        self.auto = auto  # started by a command on a terminal: exits once it holds no model
        self.draining = False  # no longer listening: runs what is queued, then exits
        self.log = log
        self.path = socket_path()
        self.tcp = tcp  # (host, port) to listen on as well, with a token (`gbcli serve --port`)
        self.tcp_listener: socket.socket | None = None
        self.tcp_address = ""  # tcp://HOST:PORT once bound (the port the system chose for --port 0)
        self.token = ""
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.current: Job | None = None
        self.current_since = 0.0  # time.monotonic() when the current job began
        # The job a connection thread sent SIGINT for (not a Ctrl-C typed at the server's terminal). Kept after the job
        # ends: the signal can be delivered to the main thread after the job finished, and must then be dropped, not
        # taken for a Ctrl-C that stops the server.
        self.cancel_signalled_for: Job | None = None
        self.in_command = False  # the main thread is inside a request's command (where a cancel may interrupt)
        self.stopping = False
        self.ready = False
        self.started = time.time()
        self.served = 0
        self.listener: socket.socket | None = None
        self.inode: int | None = None  # the socket file this server made
        self.connections = 0  # connection threads now running
        # As the server started, before transformers is imported: what its libraries go by for the whole process.
        self.import_env = {name: value for name, value in os.environ.items() if read_at_import(name)}

    # -- start and stop ------------------------------------------------------------------------------------------
    def bind(self) -> None:
        try:
            private_dir()
        except PermissionError as exc:
            raise GbcliError(str(exc), "Remove the folder, or set GBCLI_RUNTIME_DIR to a private one.") from None
        existing = connect()  # removes a stale socket left by a killed server
        if existing is not None:
            existing.close()
            raise GbcliError(
                f"A gbcli server is already running on {self.path}.",
                "See it with `gbcli ps`; stop it with `gbcli stop`.",
            )
        in_the_way = what_is_at(self.path)
        if in_the_way is not None:
            raise GbcliError(
                f"Cannot listen on {self.path}: {in_the_way} is in the way of the socket.",
                "Move it away (or remove it), or set GBCLI_RUNTIME_DIR to another folder of your own.",
            )
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # the socket is born 0600: no other user can connect
        try:
            listener.bind(str(self.path))
        except OSError as exc:
            listener.close()
            too_long = len(os.fsencode(str(self.path))) >= 100  # a socket's path has ~107 bytes at most
            raise GbcliError(
                f"Cannot listen on {self.path}: {exc.strerror or exc}.",
                "Set GBCLI_RUNTIME_DIR to a shorter folder of your own."
                if too_long
                else "Check the runtime folder, or set GBCLI_RUNTIME_DIR to another folder of your own.",
            ) from None
        finally:
            os.umask(previous)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        self.listener = listener
        self.inode = os.stat(self.path).st_ino
        if self.tcp is not None:
            self.bind_tcp(*self.tcp)

    def bind_tcp(self, host: str, port: int) -> None:
        """Listen on host:port too. TCP has no file permissions, so every request must carry a random token,
        which only this user can read (0600 in the 0700 runtime folder); a remote client is given it."""
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            listener = socket.create_server(address[:2], family=family, backlog=16)
        except OSError as exc:
            raise GbcliError(
                f"Cannot listen on {tcp_url(host, port)}: {exc.strerror or exc}.",
                "Choose another --port (0: any free one), or --host 127.0.0.1.",
            ) from None
        self.tcp_listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self.tcp_address = tcp_url(bound_host, bound_port)
        self.token = secrets.token_urlsafe(32)
        path = token_path()
        path.unlink(missing_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(self.token + "\n")
        warning = exposure_warning(bound_host, bound_port)
        if warning:
            sys.stderr.write(f"warning: {warning}\n")
            sys.stderr.flush()

    def close_listeners(self) -> None:
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread waiting in accept()
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        try:
            if os.stat(self.path).st_ino == self.inode:  # never remove a socket a newer server made
                os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        self.close_listeners()
        if self.tcp_listener is not None:
            self.tcp_listener.close()
            try:
                if token_path().read_text().strip() == self.token:  # never remove a newer server's token
                    token_path().unlink()
            except OSError:
                pass
        while True:  # whoever still waits in the queue hears why nothing will run
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            job.channel.send(
                {
                    "type": "out",
                    "fd": 2,
                    "data": encode_bytes(
                        b"error: the gbcli server stopped before running this command.\nhint: Run it again.\n"
                    ),
                }
            )
            job.code = 1
            job.done.set()
            job.channel.send({"type": "exit", "code": 1})

    def say(self, text: str) -> None:
        try:
            self.log.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.log.flush()
        except (OSError, ValueError):
            pass

    # -- the main thread: one request at a time ------------------------------------------------------------------
    def serve(self, preload: Any) -> None:
        threading.Thread(target=self.accept_loop, args=(self.listener, False), daemon=True).start()
        if self.tcp_listener is not None:
            threading.Thread(target=self.accept_loop, args=(self.tcp_listener, True), daemon=True).start()
        previous = {number: signal.signal(number, self.on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            with models_kept_loaded():
                try:
                    preload()
                except KeyboardInterrupt:
                    return
                self.ready = True

                for key in models.LAST_USED:  # idle time counts from now: a slow start must not unload the first model
                    models.LAST_USED[key] = time.monotonic()
                also = f" and {self.tcp_address}" if self.tcp_address else ""
                self.say(f"ready on {self.path}{also} (pid {os.getpid()})")
                while not self.stopping:
                    try:
                        job = self.jobs.get(timeout=1.0)
                    except queue.Empty:
                        if self.draining:
                            break
                        self.unload_idle()
                        self.leave_if_empty()
                        continue
                    except KeyboardInterrupt:
                        continue  # the stop flag decides
                    try:
                        self.run(job)
                    except KeyboardInterrupt:
                        continue  # a Ctrl-C at the server between two steps of its bookkeeping: the flag decides
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def on_signal(self, number: int, frame: Any) -> None:
        if number == signal.SIGINT and self.cancel_signalled_for is not None:
            target, self.cancel_signalled_for = self.cancel_signalled_for, None
            # Raised only inside the command itself: in the server's own bookkeeping around it (the streams and
            # variables put back, the exit sent) it would escape the request and end the server.
            if self.current is target and self.in_command:
                raise KeyboardInterrupt
            return
        self.stopping = True  # SIGTERM (gbcli stop) or Ctrl-C at the server: finish the current request, then go
        if number == signal.SIGINT and self.current is None:
            raise KeyboardInterrupt

    def unload_idle(self) -> None:
        if self.keep_alive is None:
            return
        for name in unload_idle(self.keep_alive):
            self.say(f"unloaded {name} after {format_duration(self.keep_alive)} idle")

    def leave_if_empty(self) -> None:
        """An automatic server that holds no model any more (they all idled out) stops listening, answers whoever
        already connected, and exits: the next command starts a fresh one."""
        if not self.auto or self.keep_alive is None or models._CACHE or self.current is not None:
            return
        if self.served == 0 and time.time() - self.started < self.keep_alive:
            return  # started, but its first request has not come yet
        self.say("holding no model: exiting")
        self.draining = True
        self.close_listeners()
        time.sleep(0.5)  # a client that connected just before may still be sending its request

    def run(self, job: Job) -> None:
        started = time.perf_counter()
        saved_streams = sys.stdin, sys.stdout, sys.stderr
        saved_env = dict(os.environ)
        saved_cwd = os.getcwd()
        with self.lock:
            self.current = job
            self.current_since = time.monotonic()
        try:
            if job.cancel_requested:
                raise KeyboardInterrupt
            os.chdir(job.cwd)
            for name in [name for name in os.environ if forwarded(name)]:
                del os.environ[name]
            os.environ.update(job.env)
            saved_umask = os.umask(job.umask)
            try:
                sys.stdout = _text(_ClientWriter(job, 1), job.encoding[0])
                sys.stderr = _text(_ClientWriter(job, 2), job.encoding[1])
                sys.stdin = io.TextIOWrapper(io.BufferedReader(_ClientReader(job)), encoding="utf-8")
                self.in_command = True
                if job.cancel_requested:  # cancelled while the request was being set up: its signal was dropped
                    raise KeyboardInterrupt
                job.code = run_command_line(job.argv)
            finally:
                self.in_command = False
                os.umask(saved_umask)
        except KeyboardInterrupt:
            job.code = 130
        except FileNotFoundError:
            job.code = 1
            job.channel.send(
                {
                    "type": "out",
                    "fd": 2,
                    "data": encode_bytes(
                        f"error: the folder {job.cwd} is gone.\n"
                        "hint: Run the command from a folder that exists.\n".encode()
                    ),
                }
            )
        except BaseException as exc:  # the server outlives any one request
            job.code = 1
            self.say(f"request failed: {type(exc).__name__}: {exc}")
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            os.environ.clear()
            os.environ.update(saved_env)
            try:
                os.chdir(saved_cwd)
            except OSError:
                pass
            used_until_now(self.current_since)
            release_freed_memory()
            with self.lock:
                self.current = None
            if job.code == 130 and not job.cancel_requested:
                self.stopping = True  # a Ctrl-C typed at the server's own terminal
            self.served += 1
            job.done.set()
            # Sent from here, after the last output and once the job is no longer current (a client that leaves
            # now cancels nothing): the relay thread may be waiting on its socket until the next heartbeat.
            job.channel.send({"type": "exit", "code": job.code})
            self.say(f"{' '.join(job.argv)[:120]} -> {job.code} in {time.perf_counter() - started:.3f} s")

    def cancel(self, job: Job) -> None:
        """Stop `job`: one SIGINT for it, however many threads notice that its client left (a second one while the
        command writes its output would end the whole server, as a second Ctrl-C ends a stuck write in-process)."""
        with self.lock:
            already = job.cancel_requested
            job.cancel_requested = True
            job.stdin.put(None)  # a command waiting for stdin sees its end
            if self.current is job and not already:
                self.cancel_signalled_for = job
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    # -- connection threads --------------------------------------------------------------------------------------
    def accept_loop(self, listener: socket.socket | None, tcp: bool) -> None:
        """Accept connections until the server stops: each gets a thread, up to MAX_CONNECTIONS; one more is told
        so at once and closed. A failed accept (no file descriptor left, say) is waited out, never the end."""
        assert listener is not None
        backoff = ACCEPT_BACKOFF_SECONDS[0]
        while not self.stopping:
            try:
                sock, _ = listener.accept()
            except OSError as exc:
                if self.stopping or self.draining or listener.fileno() < 0:
                    return
                self.say(f"accept failed ({exc.strerror or exc}); retrying in {backoff:g} s")
                time.sleep(backoff)
                backoff = min(backoff * 2, ACCEPT_BACKOFF_SECONDS[1])
                continue
            backoff = ACCEPT_BACKOFF_SECONDS[0]
            with self.lock:
                admitted = self.connections < MAX_CONNECTIONS
                self.connections += admitted
            if not admitted:
                self.turn_away(sock)
                continue
            try:
                threading.Thread(target=self.talk, args=(sock, tcp), daemon=True).start()
            except RuntimeError:  # no thread could be started
                with self.lock:
                    self.connections -= 1
                self.turn_away(sock)

    def turn_away(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)  # a fresh socket's buffer takes the line; a client that never reads costs nothing
            sock.send(json.dumps(refusal("busy", f"has {MAX_CONNECTIONS} connections open already")).encode() + b"\n")
        except OSError:
            pass
        finally:
            sock.close()

    def talk(self, sock: socket.socket, tcp: bool = False) -> None:
        try:
            self.converse(sock, tcp)
        finally:
            with self.lock:
                self.connections -= 1

    def converse(self, sock: socket.socket, tcp: bool) -> None:
        channel = Channel(sock, message_seconds=MESSAGE_SECONDS)
        try:
            if not tcp and peer_uid(sock) not in (None, os.getuid()):
                return  # the socket is 0600 already; this is the second lock on the door
            if tcp:  # the token on a short first line, before anything else is read: an outsider costs 4 KiB
                auth = channel.receive(REQUEST_SECONDS, limit=AUTH_LIMIT, within=REQUEST_SECONDS)
                if auth is None:
                    return
                token = auth.get("token") if auth.get("type") == "auth" else None
                if not (isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())):
                    said = "a wrong token" if token else "no token"
                    channel.send(refusal("token", f"its request carried {said}"))
                    self.say(f"refused a TCP client with {said}")
                    return
            message = channel.receive(REQUEST_SECONDS, within=REQUEST_SECONDS)
            if message is None:
                return
            if not same_build(message):
                channel.send(hello("refused", message=f"this server is gbcli {hello('x')['build']}", auto=self.auto))
                self.say(f"refused a client of build {message.get('build')!r}")
                return
            if message["type"] == "status":
                channel.send(self.status())
            elif message["type"] == "run":
                job = parse_job(channel, message)
                differing = [] if tcp else self.differing_settings(job.env)  # a remote client's are its machine's
                if differing:
                    channel.send(
                        hello("refused", reason="environment", message=f"runs with another {', '.join(differing)}")
                    )
                    self.say(f"left a request to its client: its {', '.join(differing)} differs")
                    return
                self.relay(channel, job)
        except (ProtocolError, TimeoutError, OSError) as exc:
            self.say(f"dropped a connection: {exc or type(exc).__name__}")
        finally:
            channel.close()

    def differing_settings(self, env: dict[str, str]) -> list[str]:
        """The Hugging Face variables a request sets otherwise than this server (its HF_HOME, say): libraries that
        read them once, at import, would answer it from this server's cache or endpoint, not the client's."""
        names = {name for name in env if read_at_import(name)} | set(self.import_env)
        return sorted(name for name in names if env.get(name) != self.import_env.get(name))

    def relay(self, channel: Channel, job: Job) -> None:
        """Queue the job, then until it ends: stdin and Ctrl-C from the client, a heartbeat to it."""
        channel.send(hello("accepted", pid=os.getpid()))
        if self.stopping:
            channel.send({"type": "exit", "code": 1})
            return
        self.jobs.put(job)
        client_here = True
        last_beat = time.monotonic()
        while not job.done.is_set():
            # Wait for the client or for the next heartbeat, whichever comes first: the job's end needs no wake-up
            # here, as `run` sends the exit itself, and the client then closes, which ends this wait.
            wait = max(0.0, HEARTBEAT_SECONDS - (time.monotonic() - last_beat))
            if client_here:
                try:
                    message = channel.receive(wait)
                except TimeoutError:
                    message = {"type": "none"}
                except (ProtocolError, OSError):
                    message = None
                if message is None:  # the client left (killed, or its pipe closed): stop its work
                    client_here = False
                    self.cancel(job)
                elif message["type"] == "interrupt":
                    self.cancel(job)
                elif message["type"] == "stdin":
                    if message.get("eof"):
                        job.stdin.put(None)
                    else:
                        try:
                            job.stdin.put(decode_bytes(message.get("data")))
                        except ProtocolError:  # a client that sends garbage is treated as gone: stop its work
                            client_here = False
                            self.cancel(job)
            else:
                job.done.wait(wait)
            if not job.done.is_set() and time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                channel.send({"type": "alive"})
                last_beat = time.monotonic()
        # The exit message was sent by `run` as the job ended.

    def status(self) -> dict[str, Any]:
        current_since = self.current_since if self.current is not None else None
        try:
            loaded = to_jsonable(loaded_models(current_since, self.keep_alive))
        except RuntimeError:  # the cache changed under us; the next `ps` sees it settled
            loaded = []
        extra = {"tcp": self.tcp_address} if self.tcp_address else {}
        return hello(
            "status",
            pid=os.getpid(),
            socket=str(self.path),
            **extra,
            ready=self.ready,
            busy=self.current is not None,
            queued=self.jobs.qsize(),
            served=self.served,
            uptime=time.time() - self.started,
            keep_alive=self.keep_alive,
            auto=self.auto,
            models=loaded,
        )


def release_freed_memory() -> None:
    """Hand the heap a request freed back to the system (glibc keeps it for reuse otherwise): a server holds its
    models for minutes, and the activations and gradients of one large request should not stay resident that long."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def what_is_at(path: Any) -> str | None:
    """What is at the socket's path when it is not a socket (a stale socket is removed before): a file, a folder,
    a symbolic link ... named, so that the user can see what to move; None when nothing is there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a file"),
        (stat.S_ISFIFO, "a named pipe"),
    ]
    return next((kind for test, kind in kinds if test(mode)), "something that is not a socket")


def _text(raw: io.RawIOBase, encoding: list[str]) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding=encoding[0], errors=encoding[1], write_through=True)  # type: ignore[arg-type]


def exposure_warning(host: str, port: int) -> str | None:
    """What a listener on a non-loopback address risks, in one sentence; None for 127.0.0.1 and ::1."""
    try:
        if ipaddress.ip_address(host.split("%")[0]).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"gbcli serve listens on {tcp_url(host, port)}, which other machines may reach: anyone with the token "
        f"in {token_path()} can run commands and read files as this user here, and the traffic is not "
        "encrypted. Use --host 127.0.0.1 (the default) unless this network is yours."
    )


def run_server(keep_alive: float | None, preload: Any, tcp: tuple[str, int] | None = None, auto: bool = False) -> int:
    """Serve until `gbcli stop`, SIGTERM or Ctrl-C (an automatic server: until it holds no model); returns the exit
    code."""
    log = sys.stderr
    server = Server(keep_alive, log, tcp, auto)
    try:
        server.bind()
    except BaseException:
        server.close()  # a TCP address that cannot be had leaves no socket behind
        raise
    also = f" and {server.tcp_address} (token in {token_path()})" if server.tcp_address else ""
    server.say(
        f"gbcli server {hello('x')['build']} starting on {server.path}{also} (pid {os.getpid()}), "
        f"keep-alive {'never' if keep_alive is None else format_duration(keep_alive)}"
    )
    try:
        server.serve(preload)
    finally:
        server.close()
        server.say("stopped")
    return 0
