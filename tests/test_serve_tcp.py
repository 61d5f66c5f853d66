"""`gbcli serve --port`: TCP only when asked, every request carrying the server's token, a warning off loopback.

One real server on 127.0.0.1 and a port the system picks; its clients reach it through GBCLI_SERVER from a
runtime folder of their own (no Unix socket, no token file), as a client on another machine would.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from tests.cli_helpers import TRACEBACK, assert_user_error, run, run_installed
from tests.test_serve import RunningServer, runtime_env, start_server, stop_process


class TcpServer:
    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.address = json.loads(server.client("ps", "--json").stdout)["tcp"]
        self.token = (server.runtime / "server.token").read_text().strip()
        self.elsewhere = Path(tempfile.mkdtemp(prefix="gbcli-remote-"))  # a client's own, empty runtime folder

    def client(self, *args: str, token: str | None = None, input: bytes | None = None):
        env = {
            "GBCLI_NO_SERVER": "",
            "GBCLI_RUNTIME_DIR": str(self.elsewhere),
            "GBCLI_SERVER": self.address,
            "GBCLI_SERVER_TOKEN": self.token if token is None else token,
            "COLUMNS": "80",
            "NO_COLOR": "1",
        }
        return run_installed(*args, env=env, input=input)


@pytest.fixture(scope="module")
def tcp(models):
    running = start_server(*models, "--port", "0")
    yield TcpServer(running)
    stop_process(running)


@pytest.mark.parametrize(
    "args",
    [
        ("fill-mask", "the [MASK] quacks in the park .", "-k", "3"),
        ("fill-mask", "the [MASK] quacks in the park .", "--json"),
        ("fill-mask", "a sentence without a blank"),  # an error: the same message and exit code
    ],
)
def test_a_command_over_tcp_is_the_in_process_output_byte_for_byte(tcp, models, args):
    before = tcp.server.served()
    warm = tcp.client(*args, *models)
    assert tcp.server.served() == before + 1, "the request did not go to the server"
    cold = run(*args, *models, env={"COLUMNS": "80", "NO_COLOR": "1"})
    assert (warm.returncode, warm.stdout.decode(), warm.stderr.decode()) == (cold.exit_code, cold.stdout, cold.stderr)


def test_the_server_listens_on_loopback_with_a_private_token(tcp):
    assert tcp.address.startswith("tcp://127.0.0.1:") and int(tcp.address.rsplit(":", 1)[1]) > 0
    token = tcp.server.runtime / "server.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(tcp.token) >= 32
    assert "warning:" not in tcp.server.log.read_text()


@pytest.mark.parametrize("token, said", [("", "no token"), ("not-the-token", "a wrong token")])
def test_a_missing_or_wrong_token_is_refused_with_a_clear_error(tcp, models, token, said):
    before = tcp.server.served()
    result = tcp.client("fill-mask", "the [MASK] quacks .", *models, token=token)
    assert tcp.server.served() == before
    assert result.returncode == 1 and result.stdout == b""
    stderr = result.stderr.decode()
    assert TRACEBACK not in stderr
    assert f"error: the gbcli server at {tcp.address} refused this client: its request carried {said}." in stderr
    assert "hint: Set GBCLI_SERVER_TOKEN" in stderr


def test_a_raw_request_without_the_token_is_refused_before_anything_runs(tcp):
    from gbcli.warm.protocol import Channel, hello

    host, port = tcp.address.removeprefix("tcp://").rsplit(":", 1)
    for message in (hello("status"), hello("run", argv=["tokenize", "x"], token=tcp.token[:-1] + "?")):
        channel = Channel(socket.create_connection((host, int(port)), timeout=10))
        channel.send(message)
        answer = channel.receive(10)
        channel.close()
        assert answer["type"] == "refused" and answer["reason"] == "token" and "models" not in answer


def test_a_client_on_the_same_machine_reads_the_token_from_the_runtime_folder(tcp, models):
    before = tcp.server.served()
    result = run_installed(
        "tokenize",
        "hello world",
        *models,
        env={
            "GBCLI_NO_SERVER": "",
            "GBCLI_RUNTIME_DIR": str(tcp.server.runtime),
            "GBCLI_SERVER": tcp.address,
            "GBCLI_SERVER_TOKEN": "",
        },
    )
    assert result.returncode == 0 and b"GPT ids:" in result.stdout
    assert tcp.server.served() == before + 1


def test_ps_through_gbcli_server_names_the_tcp_address(tcp):
    table = tcp.client("ps").stdout.decode()
    assert f"pid {tcp.server.process.pid}" in table and tcp.address in table.replace("\n", "")


def test_a_named_server_that_is_not_there_is_an_error(tmp_path):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nobody listens there now
    for value, fragment in (
        (f"tcp://127.0.0.1:{port}", "cannot reach the gbcli server"),
        ("localhost:8765", "is not tcp://HOST:PORT"),
    ):
        result = run_installed(
            "tokenize", "x", env={"GBCLI_NO_SERVER": "", "GBCLI_SERVER": value, "GBCLI_RUNTIME_DIR": str(tmp_path)}
        )
        assert result.returncode == 1 and result.stdout == b"", result.stderr
        assert fragment in result.stderr.decode() and "hint:" in result.stderr.decode()


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_listening_off_loopback_is_warned_about(host, warned, capsys):
    from gbcli.warm.server import Server

    runtime = Path(tempfile.mkdtemp(prefix="gbcli-bind-")) / "run"
    with runtime_env(runtime):
        server = Server(None, io.StringIO(), (host, 0))
        server.bind()
        try:
            port = server.tcp_address.rsplit(":", 1)[1]
            assert server.tcp_address == f"tcp://{host}:{port}"
        finally:
            server.close()
        assert not (runtime / "server.token").exists() and not (runtime / "server.sock").exists()
    stderr = capsys.readouterr().err
    if warned:
        assert stderr.startswith(f"warning: gbcli serve listens on tcp://{host}:{port}, which other machines may reach")
        assert "--host 127.0.0.1" in stderr
    else:
        assert stderr == ""
    os.rmdir(runtime)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--host", "0.0.0.0"), "--host needs --port"),
        (("--port", "70000"), "'--port': 70000 is not in the range 0<=x<=65535"),
    ],
)
def test_bad_tcp_options_are_refused_before_anything_loads(args, fragment, tmp_path):
    result = run("serve", *args, env={"GBCLI_RUNTIME_DIR": str(tmp_path / "run")})
    assert_user_error(result, 2, fragment)
    assert not (tmp_path / "run").exists()


def test_a_socket_path_too_long_for_the_system_is_a_clear_error(tmp_path):
    runtime = tmp_path / ("r" * 120)  # a Unix socket's path holds ~107 bytes
    result = run("serve", "--models", "gpt", env={"GBCLI_RUNTIME_DIR": str(runtime)})
    assert_user_error(result, 1, f"Cannot listen on {runtime / 'server.sock'}", "GBCLI_RUNTIME_DIR")


def test_a_forwarded_command_imports_neither_typer_nor_torch(tcp, models):
    """The console script asks the server before it imports the CLI: a warm command is Python's start-up."""
    import subprocess
    import sys

    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & "
        "{'typer', 'click', 'rich', 'torch', 'transformers', 'numpy'}), file=sys.stderr))\n"
        f"sys.argv = ['gbcli', 'tokenize', 'hello', *{list(models)!r}]\n"
        "from gbcli.entry import main\n"
        "main()\n"
    )
    before = tcp.server.served()
    env = {**os.environ, "GBCLI_NO_SERVER": "", "GBCLI_RUNTIME_DIR": str(tcp.server.runtime), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert tcp.server.served() == before + 1 and "GPT ids:" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "LOADED []"


def test_stop_removes_the_token(tcp):
    """Last in this file: it stops the module's server."""
    token = tcp.server.runtime / "server.token"
    result = tcp.server.client("stop")
    assert result.returncode == 0
    assert not token.exists() and not tcp.server.socket.exists()
