"""The last errors that were ours (issue 29, 13 and 14): arguments that are not UTF-8, a temperature that overflows,
a NUL in a shell line, a tokenizer without a mask token, and checkpoints gbcli cannot load, each a message that
says what is wrong and a hint that helps, never "Unexpected"."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import assert_user_error, gbcli_executable, run

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# -- 13: not UTF-8 ----------------------------------------------------------------------------------------------

BAD = "\udcff"  # what Python makes of the byte 0xff in an argument (surrogateescape)
NOT_UTF8 = {
    "fill-mask text": ("fill-mask", f"the [MASK] quacks {BAD}"),
    "fill-mask --targets": ("fill-mask", "the [MASK] quacks", "--targets", f"du{BAD}ck"),
    "score text": ("score", f"the duck{BAD} quacks"),
    "score second text": ("score", "the duck quacks", f"{BAD}"),
    "pairs bad sentence": ("pairs", "the duck quacks", f"the duck qu{BAD}acks"),
    "generate prompt": ("generate", f"{BAD}the duck", "--max-new-tokens", "2"),
    "tokenize": ("tokenize", f"a{BAD}"),
    "compare": ("compare", f"the duck {BAD}"),
    "lens": ("lens", f"the duck {BAD}"),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
def test_an_argument_that_is_not_utf8_is_refused_naming_the_byte(case, models):
    assert_user_error(run(*NOT_UTF8[case], *models), 2, "not valid UTF-8", "byte 0xff")


def test_the_installed_command_refuses_the_raw_bytes(models):
    """As the shell passes them: `gbcli fill-mask "$(printf 'a [MASK] \\xff')"`."""
    for args in ([b"fill-mask", b"a [MASK] \xff"], [b"fill-mask", b"a [MASK] .", b"--targets", b"du\xe9ck"]):
        done = subprocess.run(
            [gbcli_executable().encode(), *args, *(m.encode() for m in models)],
            capture_output=True,
            timeout=120,
            env={"GBCLI_NO_SERVER": "1", "PATH": "/usr/bin"},
        )
        said = done.stderr.decode()
        assert done.returncode == 2 and "not valid UTF-8" in said and "Unexpected" not in said, said


# -- 13: temperature --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", ["1e-40", "1e-10", "0.0099"])
def test_a_temperature_below_the_floor_is_refused(temperature, gpt_path):
    result = run("generate", "the duck", "--temperature", temperature, "--models", "gpt", "--gpt", str(gpt_path))
    assert_user_error(result, 2, "--temperature must be at least 0.01", "--greedy")


def test_the_floor_itself_samples_the_most_likely_tokens_with_finite_numbers(gpt_path):
    """At 0.01 the sampled tokens are the greedy ones (every other token has probability ~0), and every number
    reported is finite."""
    common = ("the duck", "--max-new-tokens", "3", "--models", "gpt", "--gpt", str(gpt_path), "--json")
    sampled = run("generate", *common[:1], "--temperature", "0.01", "--seed", "1", *common[1:])
    greedy = run("generate", *common[:1], "--greedy", *common[1:])
    assert sampled.exit_code == 0 and greedy.exit_code == 0, sampled.stderr + greedy.stderr
    tokens = _tokens(json.loads(sampled.stdout))
    assert [t["id"] for t in tokens] == [t["id"] for t in _tokens(json.loads(greedy.stdout))]
    assert len(tokens) == 3 and all(math.isfinite(t["logprob"]) and t["logprob"] <= 0 for t in tokens)


def _tokens(document: object) -> list[dict]:
    """Every produced-token record (a dict with an id and a logprob) anywhere in the JSON, in order; the alternatives
    each step weighed are not produced tokens."""
    if isinstance(document, dict):
        found = [document] if "logprob" in document and "id" in document else []
        return found + [t for key, value in document.items() if key != "alternatives" for t in _tokens(value)]
    if isinstance(document, list):
        return [t for value in document for t in _tokens(value)]
    return []


# -- 13: a NUL in a shell line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ['tokenize "a\x00b"', "the duck\x00 quacks", 'fill-mask "the [MASK]\x00 quacks"'])
def test_a_nul_in_a_shell_line_is_refused_and_the_shell_goes_on(line, models):
    result = run("shell", *models, input=f"{line}\ntokenize duck\n")
    assert "NUL byte" in result.stderr and "Unexpected" not in result.stderr
    assert "duck" in result.stdout  # the next line ran


# -- 14: a tokenizer without a mask token: one rule -------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_without_mask(bert_path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("no-mask") / "bert"
    shutil.copytree(bert_path, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["mask_token"] = None
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ("fill-mask", "the [MASK] quacks ."),
        ("score", "the duck quacks ."),
        ("pairs", "the duck quacks .", "the duck moos ."),
    ],
)
def test_a_tokenizer_without_a_mask_token_is_exit_2_in_every_command(args, bert_without_mask):
    result = run(*args, "--models", "bert", "--bert", str(bert_without_mask))
    assert_user_error(result, 2, "has no mask token, so it cannot")
    assert "--help" not in result.stderr


# -- 14: checkpoints gbcli cannot load: a hint that helps -------------------------------------------------------


def _broken(gpt_path: Path, folder: Path, how: str) -> Path:
    target = folder / how
    shutil.copytree(gpt_path, target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    if how == "bad json":
        config_path.write_text(json.dumps(config)[:-20])
    elif how == "unknown type":
        config_path.write_text(json.dumps({**config, "model_type": "nonesuch"}))
    else:
        config_path.write_text(
            json.dumps(
                {
                    **config,
                    "model_type": "x-custom",
                    "auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"},
                }
            )
        )
    return target


@pytest.mark.parametrize(
    ("how", "said", "hint"),
    [
        ("bad json", "is not valid JSON", "save the model again"),
        ("unknown type", "names the model type 'nonesuch'", "model_type"),
        ("remote code", "needs its own Python code", "architecture transformers has built in"),
    ],
)
@pytest.mark.parametrize("command", [("score", "the duck"), ("fill-mask", "the [MASK] duck")])
def test_a_checkpoint_that_cannot_load_says_why_and_what_to_do(how, said, hint, command, gpt_path, tmp_path):
    result = run(*command, "--models", "gpt", "--gpt", str(_broken(gpt_path, tmp_path, how)))
    assert_user_error(result, 1, said, hint)
    assert "--help" not in result.stderr and "Unexpected" not in result.stderr
