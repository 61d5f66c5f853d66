"""`gbcli score --words` and `--bits`: word-level surprisals and units, checked against direct model calls, with
every convention named in the table, the JSON and the CSV."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from tests.cli_helpers import assert_user_error, run
from tests.fixtures.tiny_models import DUCK_SENTENCE, MULTI_PIECE_SENTENCE
from tests.helpers_reference import naive_pll

TEXT = MULTI_PIECE_SENTENCE  # "the wasp buzzes in the park .": "wasp" is two pieces in every tokenizer


def _column(*args: str) -> list[dict]:
    """The model columns of scoring one text."""
    result = run("score", *args, "--json")
    assert result.exit_code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    return json.loads(line)["columns"]


def _by_word(word_ids: list[int | None], logprobs: list[float | None]) -> list[float | None]:
    """The word rule written out: the log-probabilities of the pieces sharing a word id, summed (None if any is
    unscored), words in order."""
    sums: dict[int, float | None] = {}
    for word, value in zip(word_ids, logprobs, strict=True):
        if word is None:
            continue
        previous = sums.get(word, 0.0)
        sums[word] = None if previous is None or value is None else previous + value
    return [sums[w] for w in sorted(sums)]


def _gpt_logprobs(gpt, text: str, bos: bool) -> tuple[list[int | None], list[float | None]]:
    tokenizer, model = gpt
    encoded = tokenizer(text)
    ids = ([tokenizer.bos_token_id] if bos else []) + encoded["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    scored = [logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))]
    return encoded.word_ids(), scored if bos else [None, *scored]


def test_gpt2_word_surprisal_is_the_sum_of_its_pieces_under_the_tokenizers_word_ids(gpt, models):
    (column,) = _column(TEXT, "--words", "--models", "gpt", *models)
    expected = _by_word(*_gpt_logprobs(gpt, TEXT, bos=True))
    words = column["words"]
    assert [w["text"] for w in words] == TEXT.split()
    assert [len(w["tokens"]) for w in words] == [1, 2, 1, 1, 1, 1, 1]  # "wasp" = ␣was + p
    assert [w["logprob"] for w in words] == pytest.approx(expected, abs=1e-5)
    assert [w["surprisal"] for w in words] == pytest.approx([-v for v in expected], abs=1e-5)
    assert math.fsum(w["logprob"] for w in words) == pytest.approx(column["log_likelihood"], abs=1e-6)
    assert all(TEXT[w["start"] : w["end"]] == w["text"] for w in words)


def test_without_bos_the_first_word_has_no_score(gpt, models):
    (column,) = _column(DUCK_SENTENCE, "--words", "--no-bos", "--models", "gpt", *models)
    expected = _by_word(*_gpt_logprobs(gpt, DUCK_SENTENCE, bos=False))
    assert expected[0] is None and column["words"][0]["logprob"] is None
    assert [w["logprob"] for w in column["words"][1:]] == pytest.approx(expected[1:], abs=1e-5)
    assert column["conventions"]["bos"] is False


def test_bert_within_word_pll_summed_per_word(bert, models):
    (column,) = _column(TEXT, "--words", "--pll", "within-word", "--models", "bert", *models)
    words = bert[0](TEXT).word_ids()[1:-1]  # PLL-word-l2r: the token and its word's later pieces masked
    logprobs = naive_pll(bert, TEXT, within_word=True)
    assert [w["logprob"] for w in column["words"]] == pytest.approx(_by_word(words, logprobs), abs=1e-5)
    assert column["conventions"] == {
        "unit": "nats",
        "bos": None,
        "pll": "within-word",
        "words": column["conventions"]["words"],
    }
    assert "sum of its pieces" in column["conventions"]["words"]


def test_bart_words_add_up_to_its_reconstruction_score(models, bart_path):
    (column,) = _column(TEXT, "--words", "--models", "bart", "--bart", str(bart_path))
    words = column["words"]
    assert [w["text"] for w in words] == ["<s>", *TEXT.split(), "</s>"]
    assert [w["special"] for w in words] == [True] + [False] * 7 + [True]
    assert math.fsum(w["logprob"] for w in words) == pytest.approx(column["log_likelihood"], abs=1e-6)


def test_bits_are_nats_divided_by_ln2_and_perplexity_does_not_change(models):
    nats = _column(TEXT, "--words", "--tokens", *models)
    bits = _column(TEXT, "--words", "--tokens", "--bits", *models)
    for n, b in zip(nats, bits, strict=True):
        assert (n["unit"], b["unit"], b["conventions"]["unit"]) == ("nats", "bits", "bits")
        assert b["value"] == pytest.approx(n["value"], rel=1e-9)
        assert b["log_likelihood"] == pytest.approx(n["log_likelihood"] / math.log(2), rel=1e-9)
        assert b["mean_nll"] == pytest.approx(n["mean_nll"] / math.log(2), rel=1e-9)
        for key in ("tokens", "words"):
            assert [x["surprisal"] for x in b[key]] == pytest.approx(
                [x["surprisal"] / math.log(2) for x in n[key]], rel=1e-9
            )


def test_table_names_unit_bos_and_pll_variant(models):
    result = run("score", TEXT, "--words", "--bits", "--no-bos", "--pll", "within-word", *models, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    out = " ".join(result.stdout.split())
    for fragment in (
        "conventions: unit bits (log base 2)",
        "--no-bos",
        "--pll within-word",
        "surprisal per word",
        "surprisal (bits)",
        "sum of its pieces",
    ):
        assert fragment in out, fragment
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_csv_names_its_conventions_and_has_a_row_per_word(models):
    result = run("score", TEXT, "--csv", "--words", "--bits", *models)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["text"] for r in rows if r["family"] == "gpt"] == TEXT.split()
    assert {(r["family"], r["unit"], r["bos"], r["pll"]) for r in rows} == {
        ("gpt", "bits", "bos", ""),
        ("bert", "bits", "", "original"),
    }
    words = {r["family"]: r for r in rows if r["text"] == "wasp"}
    json_words = {c["family"]: c["words"][1] for c in _column(TEXT, "--words", "--bits", *models)}
    for family, row in words.items():
        assert float(row["logprob"]) == pytest.approx(json_words[family]["logprob"], abs=1e-9)
        assert row["pieces"] == "2"
    summary = list(csv.DictReader(io.StringIO(run("score", TEXT, "--csv", *models).stdout)))
    assert {r["unit"] for r in summary} == {"nats"}


def test_csv_cannot_have_both_token_and_word_rows(models):
    assert_user_error(run("score", TEXT, "--csv", "--tokens", "--words", *models), 2, "not both")
