"""`gbcli shell`: commands typed without `gbcli`, answered by models loaded once; a batch runner off a terminal."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from tests.cli_helpers import TRACEBACK, gbcli_executable, read_terminal_until, run, run_installed, run_json, visible
from tests.fixtures.tiny_models import BERT_MASKED_DUCK


def shell(models, *lines: str, options: tuple[str, ...] = ()):
    """Run `gbcli shell` with these lines on stdin (off a terminal: the batch mode)."""
    return run("shell", *models, *options, input="\n".join(lines) + "\n")


def json_lines(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def without_timings(value):
    """A result with its wall-clock figures taken out: two runs time differently, and agree on all the rest."""
    if isinstance(value, dict):
        return {
            key: without_timings(item)
            for key, item in value.items()
            if key not in {"time", "section_seconds"} and not key.endswith(("seconds", "per_second"))
        }
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def test_each_command_prints_what_the_cli_prints(models):
    commands = [
        'fill-mask "the [MASK] quacks ." -k 3',
        "tokenize hello",
        'score "the duck quacks ." "a b" --no-bos',
        'attention "the duck quacks ." --layer 1',
    ]
    result = shell(models, *commands, options=("--json",))
    assert result.exit_code == 0, result.stderr
    documents = json_lines(result.stdout)
    assert len(documents) == len(commands)  # one document per command, one per line
    assert documents[0] == run_json("fill-mask", "the [MASK] quacks .", "-k", "3", *models)
    assert documents[1] == run_json("tokenize", "hello", *models)
    score = run("score", "the duck quacks .", "a b", "--no-bos", "--json", *models)
    assert documents[2] == [json.loads(line) for line in score.stdout.splitlines()]  # JSON Lines, as one list
    assert documents[3] == run_json("attention", "the duck quacks .", "--layer", "1", *models)


@pytest.mark.compat
def test_the_installed_shell_answers_each_line_as_the_cli_does(models):
    """Through the console script (the compatibility job's shell test: Click 8.2's test runner ends a stdin read
    with EOFError where a real stdin ends the loop)."""
    commands = ['fill-mask "the [MASK] quacks ." -k 3', "tokenize hello"]
    done = run_installed("shell", *models, "--json", input=("\n".join(commands) + "\n").encode())
    assert done.returncode == 0, done.stderr.decode()
    documents = json_lines(done.stdout.decode())
    assert documents == [
        run_json("fill-mask", "the [MASK] quacks .", "-k", "3", *models),
        run_json("tokenize", "hello", *models),
    ]


def test_no_server_on_a_line_is_accepted_as_on_the_command_line(models):
    result = shell(models, "tokenize hello --no-server", "--no-server tokenize hello", options=("--json",))
    assert result.exit_code == 0, result.stderr
    assert json_lines(result.stdout) == [run_json("tokenize", "hello", *models)] * 2


def test_the_table_view_is_the_cli_view(models):
    batch = run("shell", *models, input='fill-mask "the [MASK] quacks ." -k 2\n', env={"COLUMNS": "80"})
    direct = run("fill-mask", "the [MASK] quacks .", "-k", "2", *models, env={"COLUMNS": "80"})
    assert batch.exit_code == 0 and direct.exit_code == 0
    assert batch.stdout == direct.stdout
    assert "\x1b[" not in batch.stdout  # off a terminal: no colour


def test_bare_text_with_a_mask_is_filled_by_the_models_themselves(models, bert_path):
    result = shell(models, BERT_MASKED_DUCK, options=("--json",))
    assert result.exit_code == 0, result.stderr
    [document] = json_lines(result.stdout)
    # Independent check: BERT's own softmax at the mask.
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    model = AutoModelForMaskedLM.from_pretrained(bert_path).eval()
    encoded = tokenizer(BERT_MASKED_DUCK, return_tensors="pt")
    position = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    with torch.no_grad():
        probs = model(**encoded).logits[0, position].softmax(-1)
    best = document["masks"][0]["bert"]["predictions"][0]
    assert best["word"] == tokenizer.decode([int(probs.argmax())]).strip()
    assert best["prob"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_bare_text_without_a_mask_runs_compare(models):
    result = shell(models, "the duck quacks .", options=("--json",))
    assert result.exit_code == 0, result.stderr
    [document] = json_lines(result.stdout)
    assert without_timings(document) == without_timings(run_json("compare", "the duck quacks .", *models))
    assert document["predictions"]  # compare's own sections, not fill-mask's


def test_a_bad_command_reports_like_the_cli_and_the_loop_goes_on(models):
    result = shell(
        models,
        "fill-mask --nope x",
        "atention the duck",
        "fil-mask",
        'fill-mask "a [MASK] ." -k 1',
        options=("--json",),
    )
    assert result.exit_code == 2  # the batch's status: the last command that failed
    assert TRACEBACK not in result.stderr
    assert "No such option" in result.stderr and "--nope" in result.stderr
    assert "error: No such command 'fil-mask'." in result.stderr
    assert "hint: Did you mean fill-mask?" in result.stderr
    documents = json_lines(result.stdout)
    assert documents[0] == {"command": ["fill-mask", "--nope", "x"], "exit_code": 2}
    # A line the shell itself refuses is one failed command too: every line has its document. A first word one
    # typo from a command's name is that command mistyped, not the first word of a text for compare.
    assert documents[1] == {"command": ["atention", "the", "duck"], "exit_code": 2}
    assert "error: No such command 'atention'." in result.stderr
    assert "hint: Did you mean attention? To run the line as a text: compare 'atention the duck'" in result.stderr
    assert documents[2] == {"command": ["fil-mask"], "exit_code": 2}
    assert len(documents) == 4
    assert documents[-1]["masks"][0]["bert"]["predictions"][0]["word"]  # the last line still ran


def test_the_command_a_refused_line_suggests_runs_it_as_a_text(models):
    result = shell(models, "comapre the duck", "compare 'comapre the duck'", options=("--json",))
    assert "error: No such command 'comapre'." in result.stderr
    assert "Did you mean compare? To run the line as a text: compare 'comapre the duck'" in result.stderr
    refused, ran = json_lines(result.stdout)
    assert refused == {"command": ["comapre", "the", "duck"], "exit_code": 2}
    assert without_timings(ran) == without_timings(run_json("compare", "comapre the duck", *models))


@pytest.mark.parametrize("line", ["She went home .", "Hello there .", "Stop the war .", "Less is more ."])
def test_a_sentence_that_begins_like_a_command_name_is_still_a_text(models, line):
    result = shell(models, line, options=("--json",))
    assert result.exit_code == 0, result.stderr
    assert "No such command" not in result.stderr
    assert json_lines(result.stdout)[0]["text"] == line  # compare's document


def test_set_gives_defaults_and_an_explicit_option_wins(models):
    result = shell(
        models,
        "set top-k 2",
        'fill-mask "the [MASK] quacks ."',
        'fill-mask "the [MASK] quacks ." -k 3',
        "unset top-k",
        'fill-mask "the [MASK] quacks ."',
        "set models bert",
        'fill-mask "a [MASK] ."',
        "set models gpt,elmo",
        options=("--json",),
    )
    assert result.exit_code == 2 and "Unknown model column 'elmo'" in result.stderr
    counts = [len(d["masks"][0]["bert"]["predictions"]) for d in json_lines(result.stdout)]
    assert counts == [2, 3, 5, 5]
    assert json_lines(result.stdout)[-1]["models"] == {"bert": "bert"}


def test_a_model_that_fails_to_load_leaves_the_others_usable(tmp_path, bert_path):
    result = run(
        "shell",
        "--gpt",
        str(tmp_path / "missing"),
        "--bert",
        str(bert_path),
        input='fill-mask "the [MASK] quacks ." --models bert\nload --bert '
        + str(tmp_path / "nope")
        + '\nfill-mask "the [MASK] quacks ." --models bert\n',
    )
    assert "error: Model folder" in result.stderr and "does not exist" in result.stderr
    documents = json_lines(
        run(
            "shell",
            "--bert",
            str(bert_path),
            "--models",
            "bert",
            "--json",
            input=f'load --bert {tmp_path / "nope"}\nfill-mask "a [MASK] ."\n',
        ).stdout
    )
    assert documents[-1]["models"] == {"bert": "bert"}  # the failed load kept the model that was there
    assert result.stdout.count("#  both sides") == 2  # both fill-masks answered, with BERT's column each time


def test_a_failed_load_leaves_the_device_and_dtype_as_they_were(models, tmp_path, bert_path):
    result = shell(
        models,
        f"load --dtype float64 --bert {bert_path}",
        f"load --device cpu --bert {tmp_path / 'nope'}",
        "set",
        'fill-mask "the [MASK] quacks ." -k 1 --models bert',
        options=("--json",),
    )
    assert "Unknown dtype 'float64'" in result.stderr and "does not exist" in result.stderr
    assert "dtype=" not in result.stderr and "device=" not in result.stderr  # `set` lists no such default
    assert json_lines(result.stdout)[-1]["masks"][0]["bert"]["predictions"][0]["word"]  # and the next one runs


def test_load_swaps_one_model_without_restarting(models, tmp_path, bert_path):
    other = tmp_path / "other-bert"
    shutil.copytree(bert_path, other)
    result = shell(
        models,
        'fill-mask "a [MASK] ."',
        f"load --bert {other}",
        'fill-mask "a [MASK] ."',
        "models",
        options=("--json",),
    )
    assert result.exit_code == 0, result.stderr
    first, second, loaded = json_lines(result.stdout)
    assert first["models"]["bert"] == "bert" and second["models"]["bert"] == "other-bert"
    assert second["masks"][0]["bert"] == first["masks"][0]["bert"] | {"model": "other-bert"}  # same weights
    assert {entry["model"] for entry in loaded} >= {"gpt", "bert", "other-bert"}


def test_models_lists_each_model_with_its_memory(models, gpt_path, bert_path):
    result = shell(models, "models", options=("--json",))
    [entries] = json_lines(result.stdout)
    by_model = {entry["model"]: entry for entry in entries}
    for name, path, model_class in (("bert", bert_path, AutoModelForMaskedLM), ("gpt", gpt_path, AutoModelForCausalLM)):
        model = model_class.from_pretrained(path)
        tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
        assert by_model[name]["bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())
        assert by_model[name]["parameters"] == sum(p.numel() for p in model.parameters())
        assert by_model[name]["device"] == "cpu" and by_model[name]["dtype"] == "float32"


def test_compare_keeps_its_models_loaded_in_the_shell(models):
    result = shell(models, "the duck quacks .", "the duck quacks .", "models", options=("--json",))
    first, second, entries = json_lines(result.stdout)
    assert without_timings(first) == without_timings(second)
    # compare did not let them go (models loaded by earlier tests in this process may be listed too)
    assert {"gpt", "bert"} <= {entry["model"] for entry in entries}


PROMPT = b"gbcli>"


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """What the terminal showed until `needle` appeared, without its escape sequences: the line editor redraws as
    it goes, and a sequence may fall inside a typed word."""
    return read_terminal_until(fd, needle, timeout, shown=visible)


@pytest.fixture
def terminal_shell(tmp_path, models):
    """`gbcli shell` on a pseudo-terminal, its history in a temporary data folder; killed whatever happens."""
    started: list[tuple[subprocess.Popen, int]] = []

    def start(*extra: str) -> tuple[subprocess.Popen, int]:
        leader, follower = pty.openpty()
        env = {
            **os.environ,
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "TERM": "xterm",
            "COLUMNS": "100",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "OMP_NUM_THREADS": "1",
        }
        env.pop("NO_COLOR", None)
        process = subprocess.Popen(
            [gbcli_executable(), "shell", *models, *extra],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
            start_new_session=True,
        )
        os.close(follower)
        started.append((process, leader))
        return process, leader

    yield start
    for process, leader in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        os.close(leader)


def test_on_a_terminal_it_prompts_completes_keeps_history_and_exits_0_on_ctrl_d(terminal_shell, tmp_path):
    process, fd = terminal_shell()
    assert PROMPT in _read_until(fd, PROMPT, 60)
    os.write(fd, b"fill-ma\t")  # completion from the command tree
    assert b"fill-mask" in visible(_read_until(fd, b"sk", 10))
    os.write(fd, b' "the [MASK] quacks ." -k 2\r')
    shown = _read_until(fd, b"whole sentence", 60)
    assert b"duck" in shown + _read_until(fd, PROMPT, 10)
    os.write(fd, b"\x03")  # Ctrl-C at the prompt: a fresh line, the shell stays
    os.write(fd, b"nosuch --x\r")
    shown = _read_until(fd, b"hint:", 20)
    assert b"error:" in shown and b"hint:" in shown and TRACEBACK.encode() not in shown
    _read_until(fd, PROMPT, 10)
    os.write(fd, b"\x04")  # Ctrl-D leaves
    assert process.wait(timeout=30) == 0
    history = (tmp_path / "data" / "gbcli" / "shell_history").read_text()
    assert (tmp_path / "data" / "gbcli" / "shell_history").stat().st_mode & 0o777 == 0o600  # texts are private
    assert 'fill-mask "the [MASK] quacks ." -k 2' in history and "nosuch --x" in history


def test_ctrl_c_stops_the_computation_and_returns_to_the_prompt(terminal_shell, long_context_gpt):
    process, fd = terminal_shell("--models", "gpt")
    assert PROMPT in _read_until(fd, PROMPT, 60)
    os.write(fd, f'generate "once upon a time" --gpt {long_context_gpt} --max-new-tokens 4000 --seed 1\r'.encode())
    shown = _read_until(fd, b"once upon a time", 60)
    time.sleep(1.0)  # let a few tokens stream
    os.killpg(process.pid, signal.SIGINT)
    shown += _read_until(fd, b"interrupted", 60)
    shown += _read_until(fd, PROMPT, 10)
    assert b"interrupted" in shown and TRACEBACK.encode() not in shown
    assert process.poll() is None  # the loop survived
    # Outside the model's computation too: here a command waiting for its standard input (the terminal).
    os.write(fd, b"score - --models gpt\r")
    _read_until(fd, b"score - --models gpt", 10)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    shown = _read_until(fd, b"interrupted", 20) + _read_until(fd, PROMPT, 10)
    assert b"interrupted" in shown and TRACEBACK.encode() not in shown and process.poll() is None
    os.write(fd, b'fill-mask "the [MASK] quacks ." -k 1 --models bert\r')
    assert b"duck" in _read_until(fd, b"filled in", 60) + _read_until(fd, PROMPT, 10)
    os.write(fd, b"exit\r")
    assert process.wait(timeout=30) == 0


def test_ctrl_c_ends_a_batch_as_it_ends_a_shell_script(models, long_context_gpt):
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [gbcli_executable(), "shell", "--models", "gpt", *models],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        process.stdin.write(
            f'tokenize "ready" --models gpt\ngenerate "once upon a time" --gpt {long_context_gpt} '
            "--max-new-tokens 4000 --seed 1\n".encode()
        )
        process.stdin.flush()
        assert b"crosses" in read_terminal_until(process.stdout.fileno(), b"crosses", 60)  # its last line
        time.sleep(3.0)  # into the generation (off a terminal it writes its text at the end, or at Ctrl-C)
        os.killpg(process.pid, signal.SIGINT)
        process.stdin.write(b'tokenize "the next line" --models gpt\n')  # never run: the batch has ended
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert b"interrupted" in stderr and TRACEBACK.encode() not in stderr
    assert b"once upon a time" in stdout  # the text written so far, as Ctrl-C leaves it in-process
    assert b"Tokenizers" not in stdout  # the next line's table: the first one was read above
