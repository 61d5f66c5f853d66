"""Never a traceback, never a silent wrong number: every command meets bad input, and says so.

Each row expects: the exit code (2 usage, 1 runtime), a one-line `error:` message with a hint on stderr, nothing on
stdout, no traceback, and no ANSI codes off a terminal. The rows run in-process through the real Typer app (models
stay loaded); the rows that load a broken model or read a real pipe also run through the installed `gbcli`, where
a library's warning printed at import or a byte on the real stdin would show.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cli_helpers import (
    TRACEBACK,
    FailureCase,
    assert_no_problems,
    assert_user_error,
    failure_problems,
    run,
    run_installed,
)
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, DUCK_SENTENCE

UNICODE_TEXTS = [
    "the duck 🦆 quacks in the park .",
    "鸭子在公园里嘎嘎叫",
    "البطة تصرخ في الحديقة",
    "the duck\u0007 quacks\u200b in\x1b[31m the park .",
]


Case = FailureCase


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_models) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    (root / "latin1.txt").write_bytes("the [MASK] quacks .\nthe caf\xe9 [MASK] .\n".encode("latin-1"))
    (root / "empty.txt").write_text("\n\n")
    (root / "folder").mkdir()
    (root / "existing.json").write_text("{}")
    return {
        "latin1": str(root / "latin1.txt"),
        "empty": str(root / "empty.txt"),
        "folder": str(root / "folder"),
        "missing": str(root / "missing.txt"),
        "existing": str(root / "existing.json"),
        "no_dir": str(root / "no-such-folder" / "out.json"),
        "bad_suffix": str(root / "out.docx"),
        **{key: str(path) for key, path in tiny_models.items()},
    }


def cases(f: dict[str, str]) -> list[Case]:
    gpt = ("--gpt", f["gpt"], "--bert", f["bert"])
    return [
        # Text
        *[
            Case(f"{cmd}-empty", (cmd, "", *gpt), 2, "empty")
            for cmd in ("generate", "fill-mask", "attention", "tokenize", "score", "compare")
        ],
        *[
            Case(f"{cmd}-blank", (cmd, "  \t ", *gpt), 2, "empty")
            for cmd in ("generate", "fill-mask", "attention", "tokenize", "score", "compare")
        ],
        Case("fill-mask-too-long", ("fill-mask", "the [MASK] " + "duck " * 80, *gpt), 2, "64"),
        Case("attention-too-long", ("attention", "duck " * 80, *gpt), 2, "64"),
        Case("generate-too-long", ("generate", "duck " * 80, *gpt), 2, "64"),
        Case("compare-too-long", ("compare", "duck " * 80, *gpt), 2, "64"),
        # Masks
        Case("fill-mask-no-mask", ("fill-mask", DUCK_SENTENCE, *gpt), 2, "mask"),
        Case("fill-mask-absurd-masks", ("fill-mask", "[MASK] " * 40, *gpt), 2, "mask"),
        # Files
        Case("fill-mask-missing-file", ("fill-mask", "--file", f["missing"], *gpt), 2, "does not exist"),
        Case("fill-mask-folder", ("fill-mask", "--file", f["folder"], *gpt), 2, "folder"),
        Case("fill-mask-not-utf8", ("fill-mask", "--file", f["latin1"], *gpt), 2, "line 2"),
        Case("fill-mask-empty-file", ("fill-mask", "--file", f["empty"], *gpt), 2, "no text"),
        Case("fill-mask-empty-stdin", ("fill-mask", "-", *gpt), 2, "empty", b""),
        Case("score-missing-file", ("score", "--file", f["missing"], *gpt), 2, "does not exist"),
        Case("score-not-utf8", ("score", "--file", f["latin1"], *gpt), 2, "line 2"),
        Case("score-empty-stdin", ("score", "-", *gpt), 2, "empty", b""),
        Case("generate-empty-stdin", ("generate", "-", *gpt), 2, "empty", b""),
        Case("tokenize-not-utf8-stdin", ("tokenize", "-", *gpt), 2, "utf-8", b"caf\xe9\n"),
        # Options
        Case("fill-mask-top-k-zero", ("fill-mask", BERT_MASKED_DUCK, "--top-k", "0", *gpt), 2, "--top-k"),
        Case("fill-mask-top-k-negative", ("fill-mask", BERT_MASKED_DUCK, "--top-k", "-2", *gpt), 2, "--top-k"),
        Case("generate-temperature-nan", ("generate", "x", "--temperature", "nan", *gpt), 2, "--temperature"),
        Case("generate-greedy-and-top-k", ("generate", "x", "--greedy", "--top-k", "5", *gpt), 2, "conflicts"),
        Case("score-stride-zero", ("score", DUCK_SENTENCE, "--stride", "0", *gpt), 2, "--stride"),
        Case("attention-layer-out-of-range", ("attention", DUCK_SENTENCE, "--layer", "99", *gpt), 2, "layer"),
        Case("attention-head-out-of-range", ("attention", DUCK_SENTENCE, "--head", "99", *gpt), 2, "head"),
        Case("unknown-model-column", ("tokenize", "x", "--models", "gpt,xlnet", *gpt), 2, "xlnet"),
        # Models
        Case("missing-path", ("score", "x", "--models", "gpt", "--gpt", f["folder"] + "/nope"), 1, "does not exist"),
        Case("no-weights", ("score", "x", "--models", "gpt", "--gpt", f["no_weights"]), 1, "no weights"),
        Case("corrupt-weights", ("score", "x", "--models", "gpt", "--gpt", f["corrupt_weights"]), 1, "corrupt"),
        Case(
            "wrong-kind",
            ("fill-mask", BERT_MASKED_DUCK, "--models", "bert", "--bert", f["gpt"]),
            2,
            "expects a masked language model",
        ),
        Case("no-lm-head", ("fill-mask", BERT_MASKED_DUCK, "--models", "bert", "--bert", f["bert_no_head"]), 2, "head"),
        Case(
            "uncached-offline",
            ("tokenize", "x", "--models", "gpt", "--gpt", "gbcli-test/absent", "--offline"),
            1,
            "not in the local cache",
        ),
        Case(
            "mismatched-tokenizer",
            ("score", "x", "--models", "gpt", "--gpt", f["mismatched_tokenizer"]),
            1,
            "do not belong together",
        ),
        # Exports
        Case("export-missing-folder", ("attention", DUCK_SENTENCE, "--export", f["no_dir"], *gpt), 2, "not exist"),
        Case("export-exists-no-force", ("attention", DUCK_SENTENCE, "--export", f["existing"], *gpt), 2, "--force"),
        Case("export-unknown-suffix", ("attention", DUCK_SENTENCE, "--export", f["bad_suffix"], *gpt), 2, "suffix"),
        Case(
            "export-unwritable-folder",
            ("attention", DUCK_SENTENCE, "--export", "/proc/gbcli.json", *gpt),
            1,
            "cannot write",
        ),
    ]


# Through the installed command as well: broken models loaded in a fresh process (a warning that transformers or
# torch prints on import would land before the error line), and a real pipe feeding stdin.
INSTALLED = {"corrupt-weights", "wrong-kind", "fill-mask-empty-stdin", "tokenize-not-utf8-stdin"}


def message_problems(case: Case, exit_code: int, stdout: str | bytes, stderr: str) -> list[str]:
    problems = failure_problems(exit_code, stdout, stderr, case.code, case.fragment)
    if not stderr.startswith("error: "):
        problems.append("no error line")
    if "hint: " not in stderr and case.code == 2 and "Usage:" not in stderr:
        problems.append("no hint")
    if "\x1b[" in stderr:
        problems.append("ANSI codes")
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    if len(error_lines) != 1:
        problems.append(f"{len(error_lines)} error lines")
    return problems


def test_every_bad_input_gets_a_message_a_hint_and_its_exit_code(files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "")  # --offline sets it for the process: this test's, here
    found = []
    for case in cases(files):
        result = run(*case.args, input=case.stdin)
        found.append((case.name, message_problems(case, result.exit_code, result.stdout, result.stderr), result.stderr))
    assert_no_problems(found)


def _run_installed(case: Case) -> tuple[str, list[str], str]:
    completed = run_installed(*case.args, input=case.stdin, timeout=180)
    stderr = completed.stderr.decode("utf-8", "replace")
    return case.name, message_problems(case, completed.returncode, completed.stdout, stderr), stderr


def test_bad_models_and_bad_pipes_through_the_installed_command(files):
    table = [case for case in cases(files) if case.name in INSTALLED]
    assert len(table) == len(INSTALLED)
    with ThreadPoolExecutor(max_workers=4) as pool:  # each row a separate process, as a user's would be
        assert_no_problems(list(pool.map(_run_installed, table)))


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_arbitrary_unicode_crashes_nothing(text, tiny_models):
    """Emoji, CJK, right-to-left and control characters go through every command (in-process: models stay loaded)."""
    models = ("--gpt", str(tiny_models["gpt"]), "--bert", str(tiny_models["bert"]))
    commands = [
        ("tokenize", text),
        ("score", text),
        ("attention", text),
        ("fill-mask", text + " [MASK]"),
        ("generate", text, "--max-new-tokens", "3", "--greedy"),
        ("compare", text),
    ]
    for args in commands:
        result = run(*args, *models, "--json")
        assert result.exit_code == 0, f"{args[0]}: {result.stderr}"
        assert TRACEBACK not in result.stderr
        json.loads(result.stdout.splitlines()[0] if args[0] == "score" else result.stdout)


def test_mask_in_a_generate_prompt_is_taken_literally(tiny_models):
    result = run(
        "generate",
        "the [MASK] quacks",
        "--greedy",
        "--max-new-tokens",
        "2",
        "--json",
        "--gpt",
        str(tiny_models["gpt"]),
        "--bert",
        str(tiny_models["bert"]),
    )
    assert result.exit_code == 0, result.stderr
    assert '"prompt": "the [MASK] quacks"' in result.stdout


def test_closed_pipe_ends_quietly(tiny_models, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join([BERT_MASKED_DUCK] * 3000) + "\n")
    exe = shutil.which("gbcli", path=os.path.dirname(run_installed.__globals__["gbcli_executable"]()))
    command = f"'{exe}' fill-mask --file '{lines}' --json --models bert --bert '{tiny_models['bert']}' | head -n 1"
    completed = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, timeout=180, env={**os.environ, "NO_COLOR": "1"}
    )
    assert completed.stdout.count(b"\n") == 1
    assert completed.stderr == b"", completed.stderr.decode()
    assert TRACEBACK.encode() not in completed.stderr


def test_pickle_only_checkpoint_loads_through_the_weights_only_loader(tiny_models, tmp_path):
    """A `pytorch_model.bin` checkpoint works; one whose pickle would run code is refused and runs nothing."""
    import torch
    from safetensors.torch import load_file

    safe = tmp_path / "pickled"
    shutil.copytree(tiny_models["gpt"], safe)
    torch.save(load_file(safe / "model.safetensors"), safe / "pytorch_model.bin")
    (safe / "model.safetensors").unlink()
    ok = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(safe), "--json")
    assert ok.exit_code == 0, ok.stderr

    evil = tmp_path / "evil"
    shutil.copytree(safe, evil)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch '{marker}'",))

    torch.save({"transformer.wte.weight": Exploit()}, evil / "pytorch_model.bin")
    # In this process: had the loader unpickled it, the code would have run here and left the marker.
    assert_user_error(run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(evil)), 1, "could run arbitrary code")
    assert not marker.exists(), "the checkpoint's pickle ran code"


def test_remote_code_is_never_trusted(tiny_models, tmp_path):
    """A checkpoint that asks for its own Python code (auto_map) is not executed: transformers' own GPT-2 class
    loads its weights, and the scores are the plain checkpoint's."""
    folder = tmp_path / "remote-code"
    shutil.copytree(tiny_models["gpt"], folder)
    marker = tmp_path / "ran"
    (folder / "custom_model.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_model.Config", "AutoModelForCausalLM": "custom_model.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(folder), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert not marker.exists(), "remote code ran"
    plain = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(tiny_models["gpt"]), "--json")
    (column,) = json.loads(result.stdout)["columns"]
    (expected,) = json.loads(plain.stdout)["columns"]
    assert column["value"] == expected["value"] and column["log_likelihood"] == expected["log_likelihood"]
