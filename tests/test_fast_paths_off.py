"""Every speed path, turned off as an older transformers turns it off, leaves every printed number as it was: the
public path (`from_pretrained`, `model(...)`, `generate`, whole sequences) runs instead, on the newest transformers
as on the oldest. And a path that steps aside for one input says so under GBCLI_DEBUG=1."""

from __future__ import annotations

import math

import pytest

from gbcli.lm.fast.decoding_loop import MODEL_STEPS
from gbcli.lm.fast.gpt2_step import GPT2_DECODER
from gbcli.lm.fast.shared_prefix import PREFIX_CACHE
from gbcli.loading.capability import FastPath
from gbcli.loading.fast_load import FAST_LOAD
from gbcli.loading.models import clear_cache
from gbcli.tasks.attention.maps import EAGER_SWITCH
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import DUCK_SENTENCE, GPT_PROMPT

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat]


def turned_off(monkeypatch, *paths: FastPath) -> None:
    """The paths decided off for this test, as their probes decide on a transformers without their names."""
    for path in paths:
        monkeypatch.setattr(path, "_decided", True)
        monkeypatch.setattr(path, "_reason", "turned off by the test")


def without_timings(value):
    if isinstance(value, dict):
        return {
            key: without_timings(item)
            for key, item in value.items()
            if key not in {"time", "section_seconds"} and not key.endswith(("seconds", "per_second"))
        }
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def assert_same_numbers(ours, theirs, tolerance: float = 1e-5) -> None:
    """Equal documents, floats to `tolerance` (another path may sum in another order: ~1e-6)."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert_same_numbers(ours[key], theirs[key], tolerance)
    elif isinstance(ours, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same_numbers(a, b, tolerance)
    elif isinstance(ours, float) and isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=0, abs_tol=tolerance) or ours == theirs, (ours, theirs)
    else:
        assert ours == theirs


def fresh_json(*args: str):
    """A command's document from freshly loaded models (a load is what fast load changes)."""
    clear_cache()
    try:
        return without_timings(run_json(*args))
    finally:
        clear_cache()


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param((GPT2_DECODER,), id="GPT-2 step off: the model's own forward steps"),
        pytest.param((GPT2_DECODER, MODEL_STEPS), id="both steps off: generate"),
        pytest.param((FAST_LOAD,), id="fast load off: from_pretrained"),
    ],
)
def test_generate_gives_the_same_tokens_and_logprobs_with_a_path_off(paths, gpt_path, monkeypatch):
    args = ("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "12", "--models", "gpt", "--gpt", str(gpt_path))
    fast = fresh_json(*args)
    turned_off(monkeypatch, *paths)
    assert_same_numbers(fresh_json(*args), fast)


def test_fill_mask_and_score_give_the_same_numbers_without_the_prefix_cache(models, monkeypatch):
    commands = [
        ("fill-mask", "the [MASK] quacks in the park .", "-k", "5", *models),
        ("score", DUCK_SENTENCE, "--tokens", *models),
    ]
    fast = [fresh_json(*args) for args in commands]
    turned_off(monkeypatch, PREFIX_CACHE, FAST_LOAD)
    for args, expected in zip(commands, fast, strict=True):
        assert_same_numbers(fresh_json(*args), expected)


def test_attention_without_the_eager_switch_is_an_error_naming_transformers(gpt_path, monkeypatch):
    turned_off(monkeypatch, EAGER_SWITCH)
    clear_cache()
    result = run("attention", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(gpt_path))
    assert_user_error(result, 1, "cannot switch GPT2LMHeadModel to eager attention", "pip install")


def test_a_load_that_steps_aside_says_why_under_gbcli_debug(gpt_path, monkeypatch):
    """Fast load on, but this checkpoint cannot take it (here: its tensors cannot be placed): from_pretrained
    loads it, and the debug line names the folder and the exception."""
    import gbcli.loading.fast_load as fast_load_module

    if not FAST_LOAD.on:
        pytest.skip(f"fast load is off on this transformers: {FAST_LOAD.reason}")

    def cannot_place(model, path):
        raise RuntimeError("no room for the tensors")

    monkeypatch.setattr(fast_load_module, "_assign_tensors", cannot_place)
    clear_cache()
    try:
        result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(gpt_path), env={"GBCLI_DEBUG": "1"})
    finally:
        clear_cache()
    assert result.exit_code == 0
    assert result.stderr == (
        f"gbcli: fast path 'fast load' skipped for {gpt_path}, using from_pretrained: "
        "RuntimeError: no room for the tensors\n"
    )
