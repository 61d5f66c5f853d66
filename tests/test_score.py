"""`gbcli score`: GPT-2's exact perplexity and BERT's pseudo-perplexity, checked against direct model calls."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from tests.cli_helpers import assert_user_error, column_of, run, run_installed
from tests.fixtures.tiny_models import CORPUS, DUCK_SENTENCE, MAX_POSITIONS, MULTI_PIECE_SENTENCE
from tests.helpers_reference import naive_pll

SENTENCES = [DUCK_SENTENCE, "the dog quacks in the park .", MULTI_PIECE_SENTENCE, CORPUS[-1]]
LONG_TEXT = " ".join(CORPUS[::6])  # far longer than the 64-token context


def _records(*args: str, **kwargs) -> list[dict]:
    result = run("score", *args, "--json", **kwargs)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _direct_gpt_logprobs(gpt, ids: list[int]) -> list[float]:
    """log P(ids[t] | ids[:t]) for t ≥ 1, from one plain forward pass."""
    _, model = gpt
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]


def test_gpt2_perplexity_is_exp_mean_nll_with_bos_context(gpt, models):
    tokenizer, _ = gpt
    records = _records(*SENTENCES, "--models", "gpt", "--tokens", *models)
    for text, record in zip(SENTENCES, records, strict=True):
        ids = tokenizer(text)["input_ids"]
        expected = _direct_gpt_logprobs(gpt, [tokenizer.bos_token_id, *ids])
        column = column_of(record, "gpt")
        assert [t["logprob"] for t in column["tokens"]] == pytest.approx(expected, abs=1e-5)
        assert column["scored_tokens"] == len(ids)
        assert column["value"] == pytest.approx(math.exp(-sum(expected) / len(ids)), rel=1e-5)
        assert "<|endoftext|>" in column["first_token"]


def test_gpt2_without_bos_leaves_the_first_token_unscored(gpt, models):
    tokenizer, _ = gpt
    (record,) = _records(DUCK_SENTENCE, "--models", "gpt", "--no-bos", "--tokens", *models)
    column = column_of(record, "gpt")
    ids = tokenizer(DUCK_SENTENCE)["input_ids"]
    expected = _direct_gpt_logprobs(gpt, ids)
    assert column["tokens"][0]["logprob"] is None
    assert [t["logprob"] for t in column["tokens"][1:]] == pytest.approx(expected, abs=1e-5)
    assert column["scored_tokens"] == len(ids) - 1
    assert column["value"] == pytest.approx(math.exp(-sum(expected) / (len(ids) - 1)), rel=1e-5)
    assert "not scored" in column["first_token"]


def test_batched_pseudo_log_likelihood_equals_the_naive_loop(bert, models):
    records = _records(*SENTENCES, "--models", "bert", "--tokens", *models)
    for text, record in zip(SENTENCES, records, strict=True):
        expected = naive_pll(bert, text)
        column = column_of(record, "bert")
        assert [t["logprob"] for t in column["tokens"]] == pytest.approx(expected, abs=1e-5)
        assert column["log_likelihood"] == pytest.approx(sum(expected), abs=1e-5)
        assert column["value"] == pytest.approx(math.exp(-sum(expected) / len(expected)), rel=1e-5)
        assert column["measure"] == "pseudo-perplexity"


def test_within_word_variant_also_masks_the_later_pieces_of_the_word(bert, models):
    records = _records(*SENTENCES, "--models", "bert", "--tokens", "--pll", "within-word", *models)
    by_text = dict(zip(SENTENCES, records, strict=True))
    multi = column_of(by_text[MULTI_PIECE_SENTENCE], "bert")
    expected = naive_pll(bert, MULTI_PIECE_SENTENCE, within_word=True)
    assert [t["logprob"] for t in multi["tokens"]] == pytest.approx(expected, abs=1e-5)
    assert [t["masked_tokens"] for t in multi["tokens"]][:3] == [1, 2, 1]  # `was` is scored with `##p` hidden too
    assert expected != pytest.approx(naive_pll(bert, MULTI_PIECE_SENTENCE), abs=1e-4)
    # A sentence of one-piece words scores exactly as in the original method.
    duck = column_of(by_text[DUCK_SENTENCE], "bert")
    assert duck["log_likelihood"] == pytest.approx(sum(naive_pll(bert, DUCK_SENTENCE)), abs=1e-5)
    assert "Kauf and Ivanova" in multi["method"]


def test_per_token_surprisals_sum_to_the_total(models):
    (record,) = _records(MULTI_PIECE_SENTENCE, "--tokens", "--no-bos", *models)
    for column in record["columns"]:
        surprisals = [t["surprisal"] for t in column["tokens"] if t["surprisal"] is not None]
        assert len(surprisals) == column["scored_tokens"]
        assert math.fsum(surprisals) == pytest.approx(-column["log_likelihood"], abs=1e-9)
        assert column["mean_nll"] == pytest.approx(math.fsum(surprisals) / len(surprisals), abs=1e-9)


def test_sliding_window_equals_direct_computation_when_the_text_fits(gpt, models):
    tokenizer, _ = gpt
    text = " ".join(CORPUS[:5])
    ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]
    assert len(ids) <= MAX_POSITIONS
    (record,) = _records(text, "--models", "gpt", "--stride", "5", "--tokens", *models)
    column = column_of(record, "gpt")
    assert [t["logprob"] for t in column["tokens"]] == pytest.approx(_direct_gpt_logprobs(gpt, ids), abs=1e-5)
    assert "1 window" in column["detail"]


def test_sliding_window_scores_every_token_of_a_text_longer_than_the_context(gpt, models):
    tokenizer, _ = gpt
    ids = [tokenizer.bos_token_id, *tokenizer(LONG_TEXT)["input_ids"]]
    assert len(ids) > 3 * MAX_POSITIONS
    stride = 16
    (record,) = _records(LONG_TEXT, "--models", "gpt", "--stride", str(stride), "--tokens", *models)
    column = column_of(record, "gpt")
    assert column["scored_tokens"] == len(ids) - 1
    assert "windows" in column["detail"]
    for k, token in enumerate(column["tokens"]):
        position = k + 1
        seen = token["context_tokens"]
        assert min(position, MAX_POSITIONS - stride) <= seen <= min(position, MAX_POSITIONS - 1)
    # Spot-check: each reported log-probability is the model's with exactly the context it says it saw.
    for k in (0, 63, 64, 65, 100, len(ids) - 2):
        token, position = column["tokens"][k], k + 1
        window = ids[position - token["context_tokens"] : position + 1]
        assert token["logprob"] == pytest.approx(_direct_gpt_logprobs(gpt, window)[-1], abs=1e-5)


def test_file_input_streams_json_lines_numbered_by_line(tmp_path, models):
    file = tmp_path / "texts.txt"
    file.write_text(f"{DUCK_SENTENCE}\n\n{MULTI_PIECE_SENTENCE}\n", encoding="utf-8")
    records = _records("--file", str(file), *models)
    assert [(r["index"], r["text"]) for r in records] == [(1, DUCK_SENTENCE), (3, MULTI_PIECE_SENTENCE)]
    assert all("not on the same scale" in r["note"] for r in records)


def test_csv_has_a_row_per_text_and_model_or_per_token(models):
    result = run("score", DUCK_SENTENCE, MULTI_PIECE_SENTENCE, "--csv", *models)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["index"], r["family"]) for r in rows] == [("1", "gpt"), ("1", "bert"), ("2", "gpt"), ("2", "bert")]
    assert all(float(r["value"]) > 1 for r in rows)
    result = run("score", DUCK_SENTENCE, "--csv", "--tokens", *models)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 * 7 and {r["family"] for r in rows} == {"gpt", "bert"}


def test_human_view_says_how_the_first_token_is_treated_and_warns_about_scales(models):
    result = run("score", DUCK_SENTENCE, "--tokens", *models, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    for fragment in (
        "perplexity",
        "pseudo-perplexity",
        "not on the same scale",
        "after <|endoftext|>",
        "Salazar",
        "surprisal",
        "total",
        "␣duck",
    ):
        assert fragment in out, fragment


def test_too_long_for_bert_names_the_limit(models):
    result = run("score", LONG_TEXT, *models)
    assert_user_error(result, 2, f"limited to the model's {MAX_POSITIONS} positions")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["   "], "empty"),
        ([], "no text"),
        ([DUCK_SENTENCE, "--json", "--csv"], "cannot be combined"),
        ([DUCK_SENTENCE, "--pll", "sideways"], "within-word"),
        ([DUCK_SENTENCE, "--stride", str(MAX_POSITIONS)], "too large"),
        ([DUCK_SENTENCE, "--stride", "0"], "at least 1"),
        (["--file", "/nonexistent/texts.txt"], "does not exist"),
        ([DUCK_SENTENCE, "--file", "x.txt"], "not both"),
    ],
)
def test_user_errors_exit_2_without_traceback(args, fragment, models):
    assert_user_error(run("score", *args, *models), 2, fragment)


def test_installed_command_reads_stdin(models):
    completed = run_installed("score", "-", "--json", *models, input=DUCK_SENTENCE.encode())
    assert completed.returncode == 0, completed.stderr
    (line,) = completed.stdout.decode().splitlines()
    record = json.loads(line)
    assert record["text"] == DUCK_SENTENCE
    assert [c["measure"] for c in record["columns"]] == ["perplexity", "pseudo-perplexity"]


# README (--dtype): bfloat16 scores of the tiny models stay this close to float32's. Measured over 54 texts (corpus
# sentences, word salads, four-sentence texts): at most 0.081 nats in one token's log-prob and 0.023 nats per
# token in mean NLL (BERT; GPT-2: 0.046 and 0.010). A sentence's log-likelihood moved by up to 1.1% of itself.
BF16_TOKEN_NATS = 0.15
BF16_MEAN_NLL_NATS = 0.05
WORD_SALADS = ["park the meows lion in cairo there .", "who lived quacks time a egypt the barks", "owl owl yard is ."]


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_bfloat16_scores_stay_within_the_stated_bound_of_float32(family, tiny_models):
    """`--dtype bfloat16` really runs in bf16, and its numbers stay within the README's stated distance of float32:
    every token's log-prob within BF16_TOKEN_NATS, each text's mean NLL within BF16_MEAN_NLL_NATS."""
    args = ("--models", family, f"--{family}", str(tiny_models[family]), "--tokens")
    texts = [*SENTENCES, *WORD_SALADS]
    exact = _records(*texts, *args, "--dtype", "float32")
    fast = _records(*texts, *args, "--dtype", "bfloat16")
    pairs = [(e["columns"][0], f["columns"][0]) for e, f in zip(exact, fast, strict=True)]
    assert any(e["log_likelihood"] != f["log_likelihood"] for e, f in pairs)  # the model did run in bfloat16
    for e, f in pairs:
        assert abs(f["mean_nll"] - e["mean_nll"]) <= BF16_MEAN_NLL_NATS
        for a, b in zip(e["tokens"], f["tokens"], strict=True):
            if a["logprob"] is not None:
                assert abs(a["logprob"] - b["logprob"]) <= BF16_TOKEN_NATS
