"""`gbcli serve`, `ps`, `stop`: a real server on a temporary socket, and the ordinary commands that use it.

Every server here runs in its own temporary runtime folder and is stopped (killed if need be) at teardown; every
other test of the suite runs with GBCLI_NO_SERVER=1 (tests/conftest.py), so none of them can reach these.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helpers import TRACEBACK, gbcli_executable, run, run_installed
from tests.test_shell import _read_until, without_timings


def client_env(runtime: Path, **extra: str) -> dict[str, str]:
    return {"GBCLI_NO_SERVER": "", "GBCLI_RUNTIME_DIR": str(runtime), "COLUMNS": "80", "NO_COLOR": "1", **extra}


@contextlib.contextmanager
def runtime_env(runtime: Path):
    """This test process looking at one runtime folder (for gbcli.warm.client.status)."""
    before = os.environ.get("GBCLI_RUNTIME_DIR")
    os.environ["GBCLI_RUNTIME_DIR"] = str(runtime)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GBCLI_RUNTIME_DIR", None)
        else:
            os.environ["GBCLI_RUNTIME_DIR"] = before


def server_status(runtime: Path) -> dict | None:
    from gbcli.warm.client import status

    with runtime_env(runtime):
        return status()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class RunningServer:
    def __init__(self, runtime: Path, process: subprocess.Popen, log: Path) -> None:
        self.runtime, self.process, self.log = runtime, process, log

    @property
    def socket(self) -> Path:
        return self.runtime / "server.sock"

    def served(self) -> int:
        return server_status(self.runtime)["served"]

    def client(self, *args: str, **kwargs):
        env = client_env(self.runtime, **kwargs.pop("env", {}))
        return run_installed(*args, env=env, **kwargs)


def start_server(*args: str, keep_alive: str = "1h") -> RunningServer:
    runtime = Path(tempfile.mkdtemp(prefix="gbcli-test-")) / "run"  # short: a socket path has ~100 bytes
    log = runtime.parent / "server.log"
    # torch's default threads, as in this test process: a sum split over other threads rounds otherwise.
    env = {**os.environ, "GBCLI_RUNTIME_DIR": str(runtime)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [gbcli_executable(), "serve", "--keep-alive", keep_alive, *args],
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
        )
    server = RunningServer(runtime, process, log)
    try:
        wait_for(
            lambda: process.poll() is not None or (server_status(runtime) or {}).get("ready"),
            120,
            "the server to be ready",
        )
        assert process.poll() is None, log.read_text()
    except BaseException:
        stop_process(server)
        raise
    return server


def stop_process(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)
    shutil.rmtree(server.runtime.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def server(models):
    running = start_server(*models)
    yield running
    stop_process(running)


def assert_same_as_in_process(
    server: RunningServer,
    *args: str,
    env: dict[str, str] | None = None,
    timings: bool = False,
    stderr: bool = True,
    input: bytes | None = None,
):
    """The command through the server, then in this process (what --no-server runs): the same bytes."""
    env = env or {}
    before = server.served()
    warm = server.client(*args, env=env, input=input)
    assert server.served() == before + 1, "the request did not go to the server"
    cold = run(*args, input=input, env={"COLUMNS": "80", "NO_COLOR": "1", **{k: v or None for k, v in env.items()}})
    assert warm.returncode == cold.exit_code, warm.stderr.decode()
    if timings:  # wall-clock figures differ between any two runs; all the rest must not
        ours, theirs = without_timings(json.loads(warm.stdout)), without_timings(json.loads(cold.stdout))
        assert alike(ours, theirs), (ours, theirs)
    else:
        assert warm.stdout.decode() == cold.stdout
    if stderr:  # (a spinner's frames on a terminal depend on how long loading takes)
        assert warm.stderr.decode() == cold.stderr
    return warm


def alike(a, b) -> bool:
    """Equal JSON values, floats to 1e-6: a timed run's decoding step picks its thread split by timing it
    (gbcli.lm.fast.threads), and another split may sum a dot product in another order (~1e-7 apart)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(alike(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(alike(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def heavy_import_probe(args: list[str]) -> str:
    """A Python program that runs `gbcli ARGS` and prints, last on stderr, the heavy libraries it imported."""
    return (
        "import sys\n"
        "from gbcli.cli import main\n"
        f"sys.argv = ['gbcli', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy', "
        "'tokenizers'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )


def test_the_socket_is_private_to_the_user(server):
    assert stat.S_IMODE(server.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.runtime.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(server.socket.stat().st_mode)


def test_a_runtime_folder_others_can_enter_is_refused(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    result = run("serve", env={"GBCLI_RUNTIME_DIR": str(folder)})
    assert result.exit_code == 1
    assert "not private" in result.stderr and not (folder / "server.sock").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("fill-mask", "the [MASK] quacks in the park .", "-k", "3"),
        ("fill-mask", "the [MASK] quacks in the park .", "--json", "--targets", "duck,dog"),
        ("tokenize", "hello world"),
        ("attention", "the duck quacks .", "--layer", "1", "--head", "1"),
        ("fill-mask", "a sentence without a blank"),  # an error: the same message and exit code
        ("tour", "--steps", "1,4", "--models", "gpt,bert"),  # off a terminal: no pause
    ],
)
@pytest.mark.compat
def test_output_is_the_in_process_output_byte_for_byte(server, models, args):
    assert_same_as_in_process(server, *args, *models)


def test_no_server_runs_in_process_with_the_same_output(server, models, monkeypatch):
    from gbcli.warm.client import forward

    before = server.served()
    cold = server.client("--no-server", "fill-mask", "the [MASK] quacks .", "-k", "2", *models)
    after_flag = server.served()
    # GBCLI_NO_SERVER=1: the client does not even ask (None: run in-process, the path --no-server took above).
    for name, value in client_env(server.runtime, GBCLI_NO_SERVER="1").items():
        monkeypatch.setenv(name, value)
    assert forward(["fill-mask", "the [MASK] quacks .", "-k", "2", *models]) is None
    after_variable = server.served()
    warm = server.client("fill-mask", "the [MASK] quacks .", "-k", "2", *models)
    assert after_flag == after_variable == before and server.served() == before + 1  # only `warm` reached it
    assert cold.returncode == 0 and cold.stdout == warm.stdout and cold.stderr == warm.stderr


def test_colour_and_width_follow_the_client(server, models):
    warm = assert_same_as_in_process(
        server,
        "fill-mask",
        "the [MASK] quacks .",
        *models,
        env={"NO_COLOR": "", "FORCE_COLOR": "1", "COLUMNS": "120"},
        stderr=False,
    )
    assert b"\x1b[" in warm.stdout
    assert max(len(line) for line in warm.stdout.decode().splitlines()) > 80


def test_stdin_and_timed_results_travel_too(server, models):
    assert_same_as_in_process(server, "fill-mask", "-", "--json", *models, input=b"the [MASK] quacks .\n")
    assert_same_as_in_process(server, "compare", "the duck quacks .", "--json", *models, timings=True)
    assert_same_as_in_process(
        server, "generate", "once upon", "--seed", "3", "--max-new-tokens", "6", "--json", *models, timings=True
    )


def test_the_client_imports_no_heavy_library(server, models):
    probe = heavy_import_probe(["tokenize", "hello", *models])
    before = server.served()
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **client_env(server.runtime)},
    )
    assert server.served() == before + 1
    assert "GPT ids:" in completed.stdout
    assert completed.stderr.strip().splitlines()[-1] == "HEAVY []"


def test_two_clients_at_once_each_get_their_own_answer(server, models):
    texts = ["the [MASK] quacks in the park .", "the [MASK] barks at the cat ."]
    env = {**os.environ, **client_env(server.runtime), "OMP_NUM_THREADS": "1"}
    before = server.served()
    clients = [
        subprocess.Popen(
            [gbcli_executable(), "fill-mask", text, "--json", *models],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for text in texts * 2
    ]
    outputs = [client.communicate(timeout=120) for client in clients]
    assert server.served() == before + len(clients)
    for text, (stdout, stderr), client in zip(texts * 2, outputs, clients, strict=True):
        assert client.returncode == 0, stderr.decode()
        assert stdout.decode() == run("fill-mask", text, "--json", *models).stdout


def _client_with_stdout(server: RunningServer, stdout: str, *args: str) -> subprocess.CompletedProcess:
    """The installed client with its standard output closed (`>&-`) or the full disk of /dev/full."""
    env = {**os.environ, **client_env(server.runtime)}
    if stdout == "closed":
        return subprocess.run(
            [gbcli_executable(), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: os.close(1),
            timeout=120,
            check=False,
        )
    with open("/dev/full", "wb") as full:
        return subprocess.run(
            [gbcli_executable(), *args], env=env, stdout=full, stderr=subprocess.PIPE, timeout=120, check=False
        )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("stdout", ["closed", "full"])
def test_a_closed_or_full_stdout_says_what_in_process_says(server, models, stdout):
    """Issue 29, 12: through the server as without it, the in-process message and exit code, no traceback."""
    args = ("score", "the duck quacks .", "--json")
    before = server.served()
    warm = _client_with_stdout(server, stdout, *args, *models)
    # A full stdout is met on the server's output; a closed one before asking (the command says so in-process).
    # The client leaves as its write fails, so the server may count the request a moment after the client exits.
    if stdout == "full":
        wait_for(lambda: server.served() == before + 1, 30, "the server to count the request")
    assert server.served() == before + (stdout == "full")
    cold = _client_with_stdout(server, stdout, "--no-server", *args, *models)
    assert TRACEBACK.encode() not in warm.stderr and warm.stderr.startswith(b"error: "), warm.stderr
    assert (warm.returncode, warm.stderr) == (cold.returncode, cold.stderr) == (1, cold.stderr)


def test_the_exit_follows_the_last_output_at_once(server, models):
    """A warm command ends when its work does: the exit is sent as the job ends, not when a thread that waits on
    the client's socket next wakes (the heartbeat is 2 s apart)."""
    from gbcli.warm.client import Target, run_request
    from gbcli.warm.protocol import Channel

    with runtime_env(server.runtime):
        for _ in range(3):
            target = Target(None)
            channel = Channel(target.open())
            try:
                channel.send(run_request(["tokenize", "hello", *models], target))
                assert channel.receive(10)["type"] == "accepted"
                last_output = None
                while (message := channel.receive(30))["type"] != "exit":
                    if message["type"] == "out":
                        last_output = time.monotonic()
                ended = time.monotonic()
            finally:
                channel.close()
            assert message["code"] == 0 and last_output is not None
            assert ended - last_output < 0.5, f"the exit came {ended - last_output:.2f} s after the last output"


def test_a_client_that_sends_garbage_for_stdin_is_cut_off_and_the_server_goes_on(server, models):
    """A stdin message that is not base64: the command that waits for stdin is stopped as if the client had left,
    and the next request is served."""
    from gbcli.warm.client import Target, run_request
    from gbcli.warm.protocol import Channel

    with runtime_env(server.runtime):
        before = server.served()
        target = Target(None)
        channel = Channel(target.open())
        try:
            channel.send(run_request(["fill-mask", "-", *models], target))
            assert channel.receive(10)["type"] == "accepted"
            while channel.receive(30)["type"] != "stdin_request":
                pass
            channel.send({"type": "stdin", "data": "this is not base64!"})
            wait_for(lambda: server.served() == before + 1, 30, "the stopped command to end")
        finally:
            channel.close()
    assert_same_as_in_process(server, "tokenize", "hello", *models)


def test_a_long_scores_progress_reaches_a_terminal_client(server, models, bert_path):
    """The bar of a long PLL score is drawn on the server for the client's terminal (issue 32)."""
    from transformers import AutoTokenizer

    text = " ".join(["the duck quacks in the park ."] * 6)
    copies = len(AutoTokenizer.from_pretrained(bert_path)(text, add_special_tokens=False)["input_ids"])
    before = server.served()
    warm = server.client("score", text, *models, env={"TTY_COMPATIBLE": "1", "NO_COLOR": ""})
    assert server.served() == before + 1 and warm.returncode == 0, warm.stderr.decode()
    shown = warm.stderr.decode()
    assert "BERT masked copies" in shown and f"{copies}/{copies}" in shown


@pytest.mark.compat
def test_ps_lists_the_models_with_their_memory(server, gpt_path):
    from transformers import AutoModelForCausalLM

    result = server.client("ps", "--json")
    answer = json.loads(result.stdout)
    by_model = {entry["model"]: entry for entry in answer["models"]}
    model = AutoModelForCausalLM.from_pretrained(gpt_path)
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    assert by_model["gpt"]["bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert answer["pid"] == server.process.pid and answer["keep_alive"] == 3600
    table = server.client("ps").stdout.decode()
    assert f"pid {server.process.pid}" in table and "GPT" in table and "BERT" in table and " kB " in table


def test_a_client_of_another_build_is_refused(server):
    from gbcli.warm.protocol import Channel

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.socket))
    channel = Channel(sock)
    channel.send({"type": "run", "protocol": 1, "build": "0.0.1+other", "argv": ["tokenize", "x"]})
    answer = channel.receive(10)
    channel.close()
    assert answer["type"] == "refused" and "this server is gbcli" in answer["message"]


def test_a_request_with_another_hugging_face_cache_runs_in_process(server, models, tmp_path):
    """huggingface_hub reads HF_HOME once, at import: the server would look for hub models in its own cache."""
    served = server.served()
    warm = server.client("tokenize", "hello", *models, env={"HF_HOME": str(tmp_path / "hf")})
    assert (
        warm.returncode == 0 and warm.stdout.decode() == run("tokenize", "hello", *models, env={"COLUMNS": "80"}).stdout
    )
    assert b"runs with another HF_HOME, so this command runs in-process" in warm.stderr
    assert server.served() == served  # the server ran nothing


@pytest.mark.parametrize("timeout", ["abc", "0", "-5"])
def test_a_bad_server_timeout_is_an_error_not_a_traceback(server, models, timeout):
    result = server.client("tokenize", "hello", *models, env={"GBCLI_SERVER_TIMEOUT": timeout})
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.startswith(f"error: GBCLI_SERVER_TIMEOUT={timeout} ".encode()), result.stderr
    assert b"\nhint: " in result.stderr and TRACEBACK.encode() not in result.stderr


def test_a_server_of_another_build_is_refused_and_the_command_runs_here(tmp_path, models):
    from gbcli.warm.protocol import Channel

    runtime = Path(tempfile.mkdtemp(prefix="gbcli-fake-"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime / "server.sock"))
    listener.listen(1)

    def answer_once():
        sock, _ = listener.accept()
        channel = Channel(sock)
        channel.receive(10)
        channel.send({"type": "accepted", "protocol": 1, "build": "9.9.9+future"})
        channel.close()

    threading.Thread(target=answer_once, daemon=True).start()
    try:
        warm = run_installed("tokenize", "hello", *models, env=client_env(runtime))
    finally:
        listener.close()
        shutil.rmtree(runtime, ignore_errors=True)
    cold = run("tokenize", "hello", *models, env={"COLUMNS": "80"})
    assert warm.returncode == 0 and warm.stdout.decode() == cold.stdout
    assert b"9.9.9+future" in warm.stderr and b"refuse each other" in warm.stderr


def test_streaming_generate_streams_and_ctrl_c_cancels_on_the_server(server, long_context_gpt):
    pid, fd = pty.fork()
    if pid == 0:  # the client on a terminal, as a user runs it
        os.environ.update(client_env(server.runtime, COLUMNS="100"))
        os.environ.pop("NO_COLOR")
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
        shown = _read_until(fd, b"once upon a time", timeout=60)
        assert b"once upon a time" in shown, shown[-500:]
        assert server_status(server.runtime)["busy"]  # it streamed while the server still generates
        time.sleep(0.5)
        os.kill(pid, signal.SIGINT)
        shown += _read_until(fd, b"interrupted", timeout=30)
        shown += _read_until(fd, b"\x00never", timeout=2)
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 130
    assert b"interrupted" in shown and TRACEBACK.encode() not in shown and b"GPT" in shown
    wait_for(lambda: not server_status(server.runtime)["busy"], 10, "the server to be free")


def test_a_killed_client_cancels_its_work_and_the_server_goes_on(server, models, long_context_gpt):
    env = {**os.environ, **client_env(server.runtime)}
    client = subprocess.Popen(
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
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: server_status(server.runtime)["busy"], 60, "the server to start the request")
        time.sleep(0.5)
        client.kill()
        client.wait(timeout=10)
        wait_for(lambda: not server_status(server.runtime)["busy"], 10, "the work to stop")
    finally:
        if client.poll() is None:
            client.kill()
    assert_same_as_in_process(server, "tokenize", "still here", *models)


def test_detach_keep_alive_a_killed_server_and_its_stale_socket(models, tmp_path, long_context_gpt):
    runtime = Path(tempfile.mkdtemp(prefix="gbcli-test-")) / "run"
    env = client_env(runtime)
    pid = None
    try:
        started = run_installed("serve", "--detach", "--keep-alive", "3s", *models, env=env, timeout=200)
        assert started.returncode == 0, started.stderr.decode()
        pid = server_status(runtime)["pid"]
        # Idle longer than the keep-alive: unloaded; the next request that names a model loads it again.
        wait_for(
            lambda: all(
                f"unloaded {name} {name} after 3s idle" in (runtime / "server.log").read_text()
                for name in ("gpt", "bert")
            ),
            20,
            "the idle models to unload",
        )
        assert server_status(runtime)["models"] == []
        # (score, not tokenize: tokenize reads the tokenizer alone and loads no model.)
        assert run_installed("score", "hi", "--models", "bert", *models, env=env).returncode == 0
        assert [entry["model"] for entry in server_status(runtime)["models"]] == ["bert"]
        # A model in use longer than the keep-alive is not idle: not while the request runs, nor just after it.
        busy = subprocess.Popen(
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
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: server_status(runtime)["busy"], 60, "the server to start the request")
        time.sleep(4.0)
        idle = {entry["model"]: entry["idle_seconds"] for entry in server_status(runtime)["models"]}
        assert idle[long_context_gpt.name] == 0.0 and idle["bert"] > 3.0
        busy.kill()
        busy.wait(timeout=10)
        wait_for(lambda: not server_status(runtime)["busy"], 10, "the work to stop")
        time.sleep(1.5)  # the server checks for idle models every second: past its check, within the keep-alive
        assert [entry["model"] for entry in server_status(runtime)["models"]] == [long_context_gpt.name]
        # A server killed in the middle of a request: the client says so and exits 1, without hanging.
        client = subprocess.Popen(
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
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: server_status(runtime)["busy"], 60, "the server to start the request")
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = client.communicate(timeout=30)
        assert client.returncode == 1 and b"error: the gbcli server stopped while running this command" in stderr
        assert stdout == b"" and TRACEBACK.encode() not in stderr
        # Its socket is left behind; the next command finds nobody there, removes it and runs in-process.
        assert (runtime / "server.sock").exists()
        after = run_installed("tokenize", "hi", *models, env=env)
        assert after.returncode == 0 and b"GPT ids:" in after.stdout and after.stderr == b""
        assert not (runtime / "server.sock").exists()
        assert b"No gbcli server is running" in run_installed("ps", env=env).stdout
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(runtime.parent, ignore_errors=True)


@pytest.mark.compat
def test_stop_ends_the_server_and_removes_its_socket(server):
    """The module's server, stopped: so this test comes after every other test that uses it."""
    stopped = server.client("stop")
    assert stopped.returncode == 0 and f"gbcli server {server.process.pid} stopped".encode() in stopped.stderr
    assert server.process.wait(timeout=30) == 0
    assert not server.socket.exists()
    assert server.client("stop").returncode == 0  # nothing to stop is no failure


@pytest.mark.parametrize("args", [["serve", "--help"], ["shell", "--help"], ["ps"], ["stop"]])
def test_managing_the_server_imports_no_heavy_library(tmp_path, args):
    probe = heavy_import_probe(args)
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **client_env(tmp_path / "run")},
    )
    assert completed.stderr.strip().splitlines()[-1] == "HEAVY []"


def test_output_bytes_travel_exactly_and_malformed_ones_are_refused():
    from gbcli.warm.protocol import ProtocolError, decode_bytes, encode_bytes

    data = bytes(range(256)) + "é ✓\n".encode()
    assert decode_bytes(encode_bytes(data)) == data
    for bad in ("not base64!", "QUJD\nRA==", 42, "é"):
        with pytest.raises(ProtocolError):
            decode_bytes(bad)


def test_the_build_id_changes_with_any_byte_of_the_source(tmp_path, monkeypatch):
    """A server refuses a client whose build differs: the id is the version and a fingerprint of every source
    file's name and bytes."""
    import gbcli.warm.protocol as protocol

    package = tmp_path / "gbcli"
    (package / "sub").mkdir(parents=True)
    (package / "warm").mkdir()
    (package / "warm" / "protocol.py").write_text("x = 1\n")
    (package / "sub" / "a.py").write_text("y = 2\n")
    monkeypatch.setattr(protocol, "__file__", str(package / "warm" / "protocol.py"))

    def build() -> str:
        protocol.build_id.cache_clear()
        return protocol.build_id()

    try:
        first = build()
        assert first == build() and first.startswith("0.1.0+") and len(first.split("+")[1]) == 16
        (package / "sub" / "a.py").write_text("y = 3\n")
        second = build()
        (package / "sub" / "a.py").rename(package / "sub" / "b.py")
        third = build()
        assert len({first, second, third}) == 3
    finally:
        monkeypatch.undo()
        protocol.build_id.cache_clear()
