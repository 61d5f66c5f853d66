"""The wire between `gbcli` commands and `gbcli serve`: where the socket lives, and its JSON-lines messages.

Every message is one JSON object on one line. The first one a client sends names the protocol and the exact
gbcli build (its version and a hash of its source), and a server of another build refuses it; the client checks
the server's answer the same way. Output travels as base64 bytes, so that it arrives exactly as written.

Only the standard library is imported here: the client side of every command loads this module and must start
as fast as Python does.
"""

from __future__ import annotations

import _thread
import binascii
import json
import os
import select
import socket
import stat
import zlib
from functools import cache
from time import monotonic

from gbcli import __version__
from gbcli.errors import GbcliError

TYPE_CHECKING = False  # importing typing is start-up a warm command pays (row `warm`); annotations are strings
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, BinaryIO

PROTOCOL = 1
SOCKET_NAME = "server.sock"
LOG_NAME = "server.log"
TOKEN_NAME = "server.token"  # the TCP listener's secret, 0600 in the runtime folder (`gbcli serve --port`)
SERVER_VARIABLE = "GBCLI_SERVER"  # tcp://HOST:PORT: the server a client uses instead of the local socket
TOKEN_VARIABLE = "GBCLI_SERVER_TOKEN"  # that server's token, for a client that cannot read the runtime folder
HEARTBEAT_SECONDS = 2.0  # a server that runs a request says so this often
MAX_LINE = 64 * 1024 * 1024  # a longer line is not a gbcli message
AUTH_LIMIT = 4096  # a TCP client's first line, its token, is this short: nothing longer is read before it is checked


class ProtocolError(Exception):
    """The other side sent something that is not a gbcli message, or went away."""


@cache
def build_id() -> str:
    """The gbcli version and a hash of the package's source: a server running other code refuses the client."""
    # CRC-32 and Adler-32 of the names and bytes: a 64-bit fingerprint that tells two builds apart by mistake-proof
    # odds (it is no defence against a forger: the socket's permissions and the TCP token are that), and zlib costs
    # a warm command no start-up where hashlib loads OpenSSL (benchmarks/run.py, row `warm`).
    crc, adler = 0, 1
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # gbcli/, above warm/
    sources = sorted(
        os.path.relpath(os.path.join(folder, name), package)
        for folder, _, names in os.walk(package)
        for name in names
        if name.endswith(".py")
    )
    for relative in sources:
        with open(os.path.join(package, relative), "rb") as source:
            chunk = relative.encode() + b"\0" + source.read() + b"\0"
        crc, adler = zlib.crc32(chunk, crc), zlib.adler32(chunk, adler)
    return f"{__version__}+{crc:08x}{adler:08x}"


def runtime_folder() -> str:
    """The user's runtime folder for gbcli: GBCLI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/gbcli, else /tmp/gbcli-UID.

    A string: the client's start-up has no use for pathlib's imports (row `warm`); `runtime_dir` is its Path.
    """
    chosen = os.environ.get("GBCLI_RUNTIME_DIR")
    if chosen:
        return chosen
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "gbcli")
    return os.path.join("/tmp", f"gbcli-{os.getuid()}")


def runtime_dir() -> Path:
    from pathlib import Path  # late: start-up

    return Path(runtime_folder())


def socket_file() -> str:
    return os.path.join(runtime_folder(), SOCKET_NAME)


def token_file() -> str:
    return os.path.join(runtime_folder(), TOKEN_NAME)


def socket_path() -> Path:
    from pathlib import Path  # late: start-up

    return Path(socket_file())


def token_path() -> Path:
    from pathlib import Path  # late: start-up

    return Path(token_file())


def chosen_server() -> tuple[str, int] | None:
    """The (host, port) that GBCLI_SERVER names (tcp://HOST:PORT, IPv6 hosts in brackets), None when unset.

    Raises ValueError, with the reason, on anything else.
    """
    value = os.environ.get(SERVER_VARIABLE, "").strip()
    if not value:
        return None
    from urllib.parse import urlsplit  # late: start-up

    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"{SERVER_VARIABLE}={value} is not tcp://HOST:PORT ({exc})") from None
    if parts.scheme != "tcp" or not host or port is None or parts.path not in ("", "/"):
        raise ValueError(f"{SERVER_VARIABLE}={value} is not tcp://HOST:PORT")
    return host, port


def tcp_url(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def client_token() -> str | None:
    """The token a TCP client sends: GBCLI_SERVER_TOKEN, else the one the server wrote on this machine."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        return token
    try:
        with open(token_file()) as file:
            return file.read().strip() or None
    except OSError:
        return None


def private_dir() -> Path:
    """The runtime folder, created 0700 if missing; refused if another user could reach into it."""
    folder = runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"{folder} is not private to this user (owner {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}); gbcli keeps its socket only in a 0700 folder"
        )
    return folder


def peer_pid(sock: socket.socket) -> int | None:
    """The process at the other end of a Unix socket, as the kernel reports it (Linux)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    import struct  # late: start-up

    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[0]


def peer_uid(sock: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    import struct  # late: start-up

    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", credentials)[1]


def hello(kind: str, **fields: Any) -> dict[str, Any]:
    """The first message of either side: who is speaking."""
    return {"type": kind, "protocol": PROTOCOL, "build": build_id(), **fields}


def refusal(reason: str, message: str) -> dict[str, Any]:
    """The answer to a client that is refused before it has shown the token: nothing about this server (not even
    its build, which would tell an outsider what code it runs)."""
    return {"type": "refused", "protocol": PROTOCOL, "reason": reason, "message": message}


def same_build(message: dict[str, Any]) -> bool:
    return message.get("protocol") == PROTOCOL and message.get("build") == build_id()


def encode_bytes(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def decode_bytes(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ProtocolError("bytes must travel as a base64 string")
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError(f"not base64 ({exc})") from None


def connect(timeout: float = 2.0) -> socket.socket | None:
    """A connection to the running server, or None. A socket nobody listens on (a killed server's) is removed."""
    path = socket_file()
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
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
    """Remove a socket a killed server left behind (this user's socket only)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode) and os.lstat(path).st_uid == os.getuid():
            os.unlink(path)
    except OSError:
        pass


class Channel:
    """One end of a connection: whole messages in and out, sends from several threads kept whole.

    `message_seconds`, when set (the server's side), is how long one message may take to arrive from its first
    byte: a peer that trickles a byte at a time is cut off however short each wait is."""

    def __init__(self, sock: socket.socket, message_seconds: float | None = None) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._scanned = 0  # the buffer's bytes already searched for a newline
        self._first_byte_at: float | None = None
        self.message_seconds = message_seconds
        self._send_lock = _thread.allocate_lock()
        self.broken = False

    def send(self, message: dict[str, Any]) -> bool:
        """Send one message; False (never an exception) once the other side has gone."""
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            if self.broken:
                return False
            try:
                self.sock.sendall(data)
            except OSError:
                self.broken = True
                return False
        return True

    def receive(
        self, timeout: float | None, *, limit: int = MAX_LINE, within: float | None = None
    ) -> dict[str, Any] | None:
        """The next message; None when the other side closed; TimeoutError after `timeout` seconds of silence, or
        when the whole message has not come `within` seconds; ProtocolError past `limit` bytes."""
        deadline = None if within is None else monotonic() + within
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            if len(self._buffer) > limit:
                raise ProtocolError("a message longer than any gbcli sends")
            wait = timeout
            now = monotonic()
            if self._first_byte_at is not None and self.message_seconds is not None:
                left = self._first_byte_at + self.message_seconds - now
                if left <= 0:
                    raise ProtocolError(f"a message took more than {self.message_seconds:g} s to arrive")
                wait = left if wait is None else min(wait, left)
            if deadline is not None:
                if deadline <= now:
                    raise TimeoutError
                wait = deadline - now if wait is None else min(wait, deadline - now)
            if wait is not None:
                ready, _, _ = select.select([self.sock], [], [], wait)
                if not ready:
                    if timeout is not None and wait >= timeout:
                        raise TimeoutError
                    continue  # a deadline passed: said at the top of the loop
            try:
                # never more than `limit` (and a byte) of one message: a short limit reads only a short line
                chunk = self.sock.recv(max(1, min(1 << 16, limit + 1 - len(self._buffer))))
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                if self._buffer:
                    raise ProtocolError("the connection closed in the middle of a message")
                return None
            if not self._buffer:
                self._first_byte_at = monotonic()
            self._buffer += chunk
        if end > limit:
            raise ProtocolError("a message longer than any gbcli sends")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        self._first_byte_at = monotonic() if self._buffer else None
        try:
            message = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"not a JSON line ({exc})") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("a message must be a JSON object with a type")
        return message

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def open_log(path: Any, append: bool = True) -> BinaryIO:
    """The server's log in the runtime folder, never through a symbolic link planted there (O_NOFOLLOW), and only
    a plain file: anything else at its place is named, and nothing is written through it."""
    # O_NONBLOCK: a named pipe planted there fails at once instead of waiting for a reader (a file ignores it).
    flags = (
        (os.O_WRONLY | os.O_APPEND | os.O_CREAT if append else os.O_RDONLY)
        | os.O_NOFOLLOW
        | os.O_CLOEXEC
        | os.O_NONBLOCK
    )
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise GbcliError(
                f"{path} is a symbolic link: the server's log is never written through one.",
                "Remove the link; gbcli makes the log itself.",
            ) from None
        raise GbcliError(
            f"Cannot open the server's log {path}: {exc.strerror or exc}.",
            "Check the runtime folder (GBCLI_RUNTIME_DIR).",
        ) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise GbcliError(
            f"{path} is not a plain file: the server's log cannot be written there.",
            "Move it away; gbcli makes the log itself.",
        )
    return os.fdopen(descriptor, "ab" if append else "rb")
