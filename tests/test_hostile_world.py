"""A hostile world: closed and full outputs, permissions, links, huge inputs, terminal escapes and Click's own errors.

The table runs the installed `gbcli` once per case, as a user would, and each case fails before any model or torch
loads (a fraction of a second each); cases that need a model run in-process. Every one ends in its own
`error:`/`hint:` pair and exit code, with stdout empty, no traceback, and never "Unexpected" (that word is kept
for our own bugs).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gbcli.errors import explain_os_error
from tests.cli_helpers import (
    TRACEBACK,
    FailureCase,
    assert_no_problems,
    assert_user_error,
    failure_problems,
    gbcli_executable,
    run,
)
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, DUCK_SENTENCE

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class Case(FailureCase):
    stdout: str = "pipe"  # pipe, or closed
    unprivileged: bool = False  # run as a user who may not read what root could


@pytest.fixture(scope="module")
def world(tiny_models) -> dict[str, str]:
    # Not under pytest's tmp_path: its folders are private to the user, and the unprivileged cases must reach
    # the very file they are refused.
    root = Path(tempfile.mkdtemp(prefix="gbcli-world-"))
    root.chmod(0o755)
    (root / "no-mask.txt").write_text("the duck quacks .\nno blank here either\n")
    (root / "nul.txt").write_bytes(b"the duck\x00quacks\n")
    (root / "long.txt").write_bytes(b"the duck quacks .\n" + b"duck " * 300_000 + b"\n")
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "secret.txt").write_text(BERT_MASKED_DUCK + "\n")
    (root / "secret.txt").chmod(0)
    unreadable = root / "unreadable-gpt"
    shutil.copytree(tiny_models["gpt"], unreadable)
    (unreadable / "model.safetensors").chmod(0)
    locked = root / "locked"
    shutil.copytree(tiny_models["gpt"], locked / "gpt")
    locked.chmod(0)
    yield {"root": str(root), "gpt": str(tiny_models["gpt"]), "bert": str(tiny_models["bert"])}
    locked.chmod(0o755)
    shutil.rmtree(root, ignore_errors=True)


def cases(w: dict[str, str]) -> list[Case]:
    root = w["root"]
    gpt = ("--models", "gpt", "--gpt", w["gpt"])
    return [
        # 12. Click's own usage errors, and values it lets through
        Case("not-an-integer", ("generate", "x", "--max-new-tokens", "abc"), 2, "invalid value for '--max-new-tokens'"),
        Case("unknown-option", ("score", "x", "--bogus"), 2, "No such option --bogus"),
        Case("unknown-command", ("frobnicate",), 2, "no such command 'frobnicate'"),
        Case("missing-argument", ("generate",), 2, "missing argument"),
        Case("huge-seed", ("generate", "x", "--seed", "1180591620717411303424", *gpt), 2, "--seed must be between"),
        Case("fill-mask-file-without-masks", ("fill-mask", "--file", f"{root}/no-mask.txt", *gpt), 2, "has a mask"),
        Case("model-symlink-loop", ("score", "x", "--models", "gpt", "--gpt", f"{root}/loop"), 1, "loop of links"),
        Case(
            "model-symlink-dangling",
            ("score", "x", "--models", "gpt", "--gpt", f"{root}/dangling"),
            1,
            "which does not exist",
        ),
        # 5. Input far longer than any model reads is refused after one capped read
        Case("dev-zero-score", ("score", "--file", "/dev/zero", *gpt), 2, "line 1 of '/dev/zero' is longer than 1 mib"),
        Case("dev-zero-fill-mask", ("fill-mask", "--file", "/dev/zero", *gpt), 2, "longer than 1 mib"),
        Case("long-line", ("score", "--file", f"{root}/long.txt", *gpt), 2, "line 2 of"),
        Case("huge-stdin", ("tokenize", "-", *gpt), 2, "standard input is longer than 1 mib", b"duck " * 300_000),
        Case("huge-stdin-lines", ("score", "--file", "-", *gpt), 2, "line 1 of standard input", b"duck " * 300_000),
        Case("nul-bytes", ("score", "--file", f"{root}/nul.txt", *gpt), 2, "nul byte"),
        # 9. The output is closed; permissions
        Case("stdout-closed", ("score", "x", *gpt), 1, "standard output is closed", stdout="closed"),
        Case("stdout-closed-json", ("score", "x", "--json", *gpt), 1, "standard output is closed", stdout="closed"),
        Case(
            "input-permission",
            ("fill-mask", "--file", f"{root}/secret.txt", *gpt),
            1,
            "permission denied",
            unprivileged=True,
        ),
        Case(
            "model-file-permission",
            ("score", "x", "--models", "gpt", "--gpt", f"{root}/unreadable-gpt"),
            1,
            "model.safetensors' for --gpt cannot be read",
            unprivileged=True,
        ),
        Case(
            "model-folder-permission",
            ("score", "x", "--models", "gpt", "--gpt", f"{root}/locked/gpt"),
            1,
            "permission denied",
            unprivileged=True,
        ),
    ]


def _run(case: Case) -> tuple[Case, subprocess.CompletedProcess]:
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    command = [gbcli_executable(), *case.args]
    if case.stdout == "closed":  # as `gbcli ... >&-` in a shell
        command = ["bash", "-c", 'exec "$0" "$@" >&-', *command]
    if case.unprivileged and AS_ROOT:  # root reads any file: take away the capabilities that let it
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    completed = subprocess.run(command, input=case.stdin, capture_output=True, timeout=120, env=env, check=False)
    return case, completed


def test_every_hostile_case_ends_in_its_own_message_and_exit_code(world):
    table = [c for c in cases(world) if not (c.unprivileged and AS_ROOT and shutil.which("setpriv") is None)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(_run, table))
    found = []
    for case, completed in outcomes:
        stderr = completed.stderr.decode("utf-8", "replace")
        problems = failure_problems(completed.returncode, completed.stdout, stderr, case.code, case.fragment)
        if "Unexpected" in stderr or "╭" in stderr:
            problems.append("Unexpected or a boxed panel")
        lines = stderr.splitlines()
        if len(lines) != 2 or not lines[0].startswith("error: ") or not lines[1].startswith("hint: "):
            problems.append("not one error: line and one hint: line")
        found.append((case.name, problems, stderr))
    assert_no_problems(found)


def test_a_full_disk_is_reported_not_called_unexpected(tiny_models):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    with open("/dev/full", "w") as full:  # the table and the JSON at once: two processes, one wait
        writers = [
            subprocess.Popen(
                [
                    gbcli_executable(),
                    "tokenize",
                    DUCK_SENTENCE,
                    "--models",
                    "gpt",
                    "--gpt",
                    str(tiny_models["gpt"]),
                    *extra,
                ],
                stdout=full,
                stderr=subprocess.PIPE,
                env=env,
            )
            for extra in ((), ("--json",))
        ]
        try:  # (the same 300 s as a test of several commands allows elsewhere: both start torch at once)
            outcomes = [(writer.communicate(timeout=300)[1].decode(), writer.returncode) for writer in writers]
        finally:
            for writer in writers:
                if writer.poll() is None:
                    writer.kill()
    for stderr, returncode in outcomes:
        assert returncode == 1, stderr
        assert stderr.startswith("error: No space left on the device to write standard output.")
        assert "Unexpected" not in stderr and TRACEBACK not in stderr and "Exception ignored" not in stderr


ERRNOS = [
    "EPIPE",
    "ENOSPC",
    "EDQUOT",
    "EACCES",
    "EPERM",
    "EROFS",
    "EBADF",
    "ENOENT",
    "ENOTDIR",
    "EISDIR",
    "ELOOP",
    "EIO",
    "ENOMEM",
    "EMFILE",
    "ENFILE",
]


def test_every_os_error_has_a_message_of_its_own():
    """No errno reaches the user as "Unexpected": each named one has its own sentence, any other the system's."""
    messages = {}
    for name in [n for n in ERRNOS if hasattr(errno, n)]:
        code = getattr(errno, name)
        error = explain_os_error(OSError(code, os.strerror(code), "some/file"))
        assert error.exit_code == 1 and "Unexpected" not in error.message
        messages[name] = error.message
    # One sentence each, but for two pairs that mean the same to a user: EACCES/EPERM and EMFILE/ENFILE.
    assert len(set(messages.values())) == len(messages) - 2
    rare = explain_os_error(OSError(errno.ETXTBSY, os.strerror(errno.ETXTBSY), "x"))
    assert os.strerror(errno.ETXTBSY) in rare.message and "'x'" in rare.message


# ---------------------------------------------------------------------------------------------------------------
# 8. Terminal injection
# ---------------------------------------------------------------------------------------------------------------

HOSTILE = "the duck\x1b]0;pwned\x07 quacks\x1b[2J in the\r park ."


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_control_characters_in_the_input_are_shown_never_obeyed(terminal, tiny_models):
    models = ("--gpt", str(tiny_models["gpt"]), "--bert", str(tiny_models["bert"]))
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "100"} if terminal else {"COLUMNS": "100"}
    for args in (
        ("tokenize", HOSTILE),
        ("score", HOSTILE),
        ("score", HOSTILE, "--tokens"),
        ("fill-mask", HOSTILE.replace("duck", "[MASK]")),
        ("attention", HOSTILE),
        ("generate", HOSTILE, "--greedy", "--max-new-tokens", "2"),
        ("compare", HOSTILE),
    ):
        result = run(*args, *models, env=env)
        assert result.exit_code == 0, f"{args[0]}: {result.stderr}"
        # (On a terminal, generate's live view moves the cursor with its own \r: only the text's must not show.)
        for raw in ("\x1b]0;", "\x1b[2J", "\x07", *(() if terminal else ("\r",))):
            assert raw not in result.stdout, f"{args[0]} wrote {raw!r} raw"
        # Views that show the whole text show the whole escape; tokenize and attention show it in pieces.
        shown = ("\\x1b]0;pwned\\x07", "\\x0d park") if args[0] not in ("tokenize", "attention") else ("\\x1b",)
        assert all(s in result.stdout for s in shown), f"{args[0]} did not show the escapes"


def test_json_keeps_the_control_characters_exactly(tiny_models):
    (record,) = [
        json.loads(line)
        for line in run(
            "score", HOSTILE, "--models", "gpt", "--gpt", str(tiny_models["gpt"]), "--json"
        ).stdout.splitlines()
    ]
    assert record["text"] == HOSTILE


def test_an_error_quoting_the_input_shows_its_control_characters():
    result = run("tokenize", "x", "--models", "gpt,\x1b[2Jbad")
    assert_user_error(result, 2, "\\x1b[2jbad")
    assert "\x1b[2J" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# 12. A raw pickle is refused without torch's warning in front of the refusal
# ---------------------------------------------------------------------------------------------------------------


def test_a_raw_pickle_is_refused_without_a_warning(tiny_models, tmp_path):
    import pickle

    folder = tmp_path / "raw-pickle"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_models["gpt"]) / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(folder))
    assert_user_error(result, 1, "could run arbitrary code")
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]
    assert "Warning" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# 6. A config.json that does not fit its weights is refused before anything large is built, naming what differs
# ---------------------------------------------------------------------------------------------------------------


def _with_config(source: Path, target: Path, **changes) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_config_with_absurdly_many_layers_is_refused_before_building(tiny_models, tmp_path):
    import time

    folder = _with_config(Path(tiny_models["gpt"]), tmp_path / "deep", n_layer=10000)
    started = time.perf_counter()
    result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(folder))
    assert_user_error(result, 1, "asks for 10000 layers", "weights hold 2")
    assert time.perf_counter() - started < 30  # building 10,000 layers first took minutes


def test_a_size_mismatch_names_the_tensor_and_both_shapes(tiny_models, tmp_path):
    folder = _with_config(Path(tiny_models["gpt"]), tmp_path / "wide", n_inner=999)
    result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(folder))
    assert_user_error(result, 1, "transformer.h.0.mlp.c_fc.bias is [256] in the checkpoint but [999]", "5 more")


# ---------------------------------------------------------------------------------------------------------------
# 11. SIGTERM during an export leaves no .part file; stale ones of a killed writer are swept
# ---------------------------------------------------------------------------------------------------------------


def test_sigterm_while_an_export_is_written_removes_its_part_file(tmp_path):
    import signal

    from gbcli.render.export import check_export_target, write_atomically

    target = check_export_target(str(tmp_path / "attention.json"), force=False)

    def write_then_get_killed(handle):
        handle.write(b"{" * 1_000_000)
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a timeout would, halfway through
        handle.write(b"}")

    with pytest.raises(SystemExit) as ended:
        write_atomically(target, write_then_get_killed)
    assert ended.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # neither the export nor its .part
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the default handler is back


def test_stale_part_files_of_a_dead_writer_are_swept(tmp_path, tiny_models):
    finished = subprocess.Popen(["true"])  # a process id that no longer runs
    finished.wait()
    stale = tmp_path / f".attention.json.{finished.pid}.x1y2.part"
    live = tmp_path / f".attention.json.{os.getpid()}.a1b2.part"  # a writer that still runs: ours
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    result = run(
        "attention",
        DUCK_SENTENCE,
        "--models",
        "gpt",
        "--gpt",
        str(tiny_models["gpt"]),
        "--export",
        str(tmp_path / "attention.json"),
    )
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and live.exists()
    assert json.loads((tmp_path / "attention.json").read_text())["format"] == "gbcli-attention"


# ---------------------------------------------------------------------------------------------------------------
# 7. The attention JSON export is streamed, and a large one is announced with its size
# ---------------------------------------------------------------------------------------------------------------


def _attention_result(shape_self, shape_cross):
    import numpy as np

    from gbcli.tasks.attention import AttentionMap, AttentionResult, AttentionToken

    rng = np.random.default_rng(0)
    tokens = [AttentionToken(i, i, f"p{i}", f"l{i}", False) for i in range(shape_self[-1])]
    return AttentionResult(
        "gpt",
        "m",
        "causal",
        "eager",
        [
            AttentionMap("self", True, tokens, tokens, rng.random(shape_self, dtype=np.float32)),
            AttentionMap("cross", False, tokens, tokens[: shape_cross[-1]], rng.random(shape_cross, dtype=np.float32)),
        ],
    )


def test_the_streamed_json_export_is_the_same_document_byte_for_byte():
    import io

    from gbcli.render.export import attention_document, write_attention_json

    results = [_attention_result((2, 3, 5, 5), (2, 3, 5, 3)), _attention_result((1, 2, 4, 4), (1, 2, 4, 2))]
    text = 'a text that quotes "@@gbcli-" itself'
    streamed = io.BytesIO()
    write_attention_json(streamed, text, results)
    # The whole document at once: float32 → Python float is exact, and JSON prints the shortest repr that reads back.
    whole = json.dumps(attention_document(text, results, lambda w: w.tolist()), ensure_ascii=False) + "\n"
    assert streamed.getvalue() == whole.encode("utf-8")
    assert json.loads(streamed.getvalue())["models"][1]["other_maps"][0]["attention"][0][1][3][1] == pytest.approx(
        float(results[1].maps[1].weights[0, 1, 3, 1])
    )


def test_a_large_json_export_is_announced_with_its_size():
    from gbcli.render.export import json_export_warning

    assert json_export_warning([_attention_result((2, 2, 8, 8), (2, 2, 8, 8))]) is None
    big = _attention_result((12, 12, 190, 190), (1, 1, 1, 1))  # 5.2 million weights: ~110 MB of JSON
    warning = json_export_warning([big])
    assert warning is not None and "5,198,401 attention weights" in warning and ".npz" in warning
