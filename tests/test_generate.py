"""`gbcli generate`: GPT-2 writes, BERT is made to write by iterative mask filling, side by side."""

from __future__ import annotations

import json

import pytest
import torch

from tests.cli_helpers import assert_user_error, column_of, run, run_installed, run_json
from tests.fixtures.tiny_models import GPT_PROMPT
from tests.helpers_reference import prompt_after_bos


@pytest.mark.compat
def test_gpt2_greedy_equals_model_generate(gpt, models):
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "12", "--models", "gpt", *models)
    tokenizer, model = gpt
    # GPT-2 reads <|endoftext|> before the prompt, as score and fill-mask read a text.
    ids = torch.tensor([prompt_after_bos(tokenizer, GPT_PROMPT)])
    expected = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=12,
        pad_token_id=tokenizer.eos_token_id,
    )
    new_ids = expected[0, ids.shape[1] :].tolist()
    (continuation,) = column_of(doc, "gpt")["continuations"]
    produced = [t["id"] for t in continuation["tokens"]]
    assert produced == new_ids  # every token model.generate wrote, its end-of-text included, and no more
    assert continuation["stopped_at_eos"] == (new_ids[-1] == tokenizer.eos_token_id) == (len(new_ids) < 12)
    assert continuation["text"] == tokenizer.decode(produced, skip_special_tokens=True)
    # The corpus teaches the model real sentences, so the greedy text is corpus-like.
    assert continuation["text"].strip().split()[0] in {"there", ","}
    assert "<|endoftext|> then the prompt" in column_of(doc, "gpt")["reads"]


def test_gpt2_token_logprobs_are_the_models_own(gpt, models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "8", "--seed", "3", "--models", "gpt", *models)
    (continuation,) = column_of(doc, "gpt")["continuations"]
    tokenizer, model = gpt
    prompt_ids = prompt_after_bos(tokenizer, GPT_PROMPT)
    new_ids = [t["id"] for t in continuation["tokens"]]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + new_ids])).logits[0]
    logprobs = torch.log_softmax(logits, -1)
    for offset, token in enumerate(continuation["tokens"]):
        expected = logprobs[len(prompt_ids) + offset - 1, token["id"]].item()
        assert token["logprob"] == pytest.approx(expected, abs=1e-5)
    mean = sum(t["logprob"] for t in continuation["tokens"]) / len(new_ids)
    assert continuation["mean_logprob"] == pytest.approx(mean, abs=1e-9)


def test_same_seed_reproduces_sampled_text_and_another_seed_changes_it(models):
    args = ["generate", GPT_PROMPT, "--max-new-tokens", "20", "--temperature", "1.5", *models]
    first = run_json(*args, "--seed", "7")
    again = run_json(*args, "--seed", "7")
    other = run_json(*args, "--seed", "8")
    for family in ("gpt", "bert"):
        texts = [column_of(doc, family)["continuations"][0]["text"] for doc in (first, again, other)]
        assert texts[0] == texts[1], family
        assert texts[0] != texts[2], family
    assert first["settings"]["seed"] == 7


def test_unseeded_sampling_reports_the_seed_it_drew(models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "10", "--models", "gpt", *models)
    seed = doc["settings"]["seed"]
    assert isinstance(seed, int)
    again = run_json("generate", GPT_PROMPT, "--max-new-tokens", "10", "--models", "gpt", "--seed", str(seed), *models)
    assert column_of(again, "gpt")["continuations"][0]["text"] == column_of(doc, "gpt")["continuations"][0]["text"]


def test_json_holds_both_columns_with_statistics(models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "5", "--greedy", *models)
    assert [c["family"] for c in doc["columns"]] == ["gpt", "bert"]
    for column in doc["columns"]:
        assert column["new_tokens"] >= 1
        assert column["tokens_per_second"] > 0
        assert column["seconds"] > 0
        assert column["continuations"][0]["mean_logprob"] <= 0
    assert "mask" in column_of(doc, "bert")["method"]


def test_bert_iterative_filling_yields_requested_number_of_tokens(models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "7", "--greedy", "--models", "bert", *models)
    (continuation,) = column_of(doc, "bert")["continuations"]
    assert len(continuation["tokens"]) == 7
    assert column_of(doc, "bert")["new_tokens"] == 7


def test_bert_greedy_first_token_is_the_argmax_at_an_appended_mask(bert, models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "3", "--greedy", "--models", "bert", *models)
    tokens = column_of(doc, "bert")["continuations"][0]["tokens"]
    tokenizer, model = bert
    ids = tokenizer(GPT_PROMPT)["input_ids"]
    for token in tokens:
        masked = ids[:-1] + [tokenizer.mask_token_id] + ids[-1:]
        with torch.no_grad():
            logits = model(torch.tensor([masked])).logits[0, len(ids) - 1]
        logprobs = torch.log_softmax(logits, -1)
        logits[tokenizer.all_special_ids] = float("-inf")  # the heuristic never writes special tokens
        assert token["id"] == int(logits.argmax())
        assert token["logprob"] == pytest.approx(logprobs[token["id"]].item(), abs=1e-5)
        ids = ids[:-1] + [token["id"]] + ids[-1:]


@pytest.mark.compat
def test_beam_search_returns_n_sequences_per_model(models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "4", "--num-beams", "3", "-n", "2", *models)
    for column in doc["columns"]:
        assert len(column["continuations"]) == 2


def test_prompt_from_stdin(models):
    doc = run_json(
        "generate", "-", "--max-new-tokens", "3", "--greedy", "--models", "gpt", *models, input=GPT_PROMPT + "\n"
    )
    assert doc["prompt"] == GPT_PROMPT


def test_models_option_runs_one_column_alone(models):
    doc = run_json("generate", GPT_PROMPT, "--max-new-tokens", "3", "--greedy", "--models", "bert", *models)
    assert [c["family"] for c in doc["columns"]] == ["bert"]


def test_models_from_environment_variables(gpt_path):
    doc = run_json(
        "generate", GPT_PROMPT, "--max-new-tokens", "3", "--greedy", "--models", "gpt", env={"GBCLI_GPT": str(gpt_path)}
    )
    assert column_of(doc, "gpt")["model"] == gpt_path.name


def test_table_view_shows_both_columns_and_probability_legend(models):
    result = run("generate", GPT_PROMPT, "--max-new-tokens", "5", "--greedy", "--show-probs", *models)
    assert result.exit_code == 0, result.stderr
    assert "GPT ·" in result.stdout and "BERT ·" in result.stdout
    assert "tokens/s" in result.stdout and "mean log-prob" in result.stdout
    # Not a terminal: no ANSI codes, so the legend explains the written [p] marks instead of colours.
    assert "[p] after each token is its probability" in " ".join(result.stdout.split())
    assert "\x1b[" not in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["generate", ""], "empty"),
        (["generate", "   "], "empty"),
        (["generate", "x", "--top-p", "0"], "--top-p"),
        (["generate", "x", "--top-p", "1.5"], "--top-p"),
        (["generate", "x", "--top-p", "nan"], "--top-p"),
        (["generate", "x", "--max-new-tokens", "-3"], "--max-new-tokens"),
        (["generate", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
        (["generate", "x", "--temperature", "0"], "--temperature"),
        (["generate", "x", "--greedy", "--temperature", "0.7"], "conflicts"),
        (["generate", "x", "--num-beams", "2", "-n", "3"], "-n"),
        (["generate", "x", "--device", "tpu"], "device"),
        (["generate", "x", "--dtype", "int3"], "dtype"),
        (["generate", "x", "--models", "gpt,t5"], "t5"),
    ],
)
def test_bad_usage_exits_2_with_one_line_message(args, fragment, models):
    result = run(*args, *models)
    assert_user_error(result, 2, fragment)


def test_model_that_cannot_be_found_exits_1(tmp_path):
    result = run("generate", "x", "--models", "gpt", "--gpt", str(tmp_path / "nowhere"))
    assert_user_error(result, 1, "does not exist")


def test_uncached_hub_id_offline_names_the_cache_and_the_flag():
    result = run("generate", "x", "--models", "gpt", "--gpt", "gbcli-test/not-a-model", "--offline")
    assert_user_error(result, 1, "not in the local cache", "--gpt")


def test_masked_lm_given_to_gpt_is_refused(bert_path):
    result = run("generate", "x", "--models", "gpt", "--gpt", str(bert_path))
    assert_user_error(result, 2, "masked language model", "expects a causal language model")


def test_causal_lm_given_to_bert_is_refused(gpt_path):
    result = run("generate", "x", "--models", "bert", "--bert", str(gpt_path))
    assert_user_error(result, 2, "causal language model", "expects a masked language model")


def test_checkpoint_without_lm_head_is_refused_for_prediction(tiny_models):
    result = run("generate", "x", "--models", "bert", "--bert", str(tiny_models["bert_no_head"]))
    assert_user_error(result, 2, "language-model head")


def test_prompt_longer_than_the_context_names_the_limit(models):
    result = run("generate", "the duck " * 40, "--max-new-tokens", "5", "--models", "gpt", *models)
    assert_user_error(result, 2, "64 tokens")


def test_installed_gbcli_generates_json(gpt_path, bert_path):
    completed = run_installed(
        "generate",
        GPT_PROMPT,
        "--greedy",
        "--max-new-tokens",
        "4",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(bert_path),
        "--json",
    )
    assert completed.returncode == 0, completed.stderr.decode()
    doc = json.loads(completed.stdout)
    assert [c["family"] for c in doc["columns"]] == ["gpt", "bert"]
    assert b"\x1b[" not in completed.stdout + completed.stderr


@pytest.mark.compat
def test_with_bart_adds_a_third_column_whose_greedy_text_equals_model_generate(bart, bart_path, models):
    doc = run_json(
        "generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "8", "--with-bart", "--bart", str(bart_path), *models
    )
    assert [c["family"] for c in doc["columns"]] == ["gpt", "bert", "bart"]
    (continuation,) = column_of(doc, "bart")["continuations"]
    tokenizer, model = bart
    # BART writes through its decoder: the encoder reads "prompt <mask>", the decoder starts from the prompt.
    source = tokenizer(GPT_PROMPT + " <mask>", return_tensors="pt")
    prefix = [
        model.config.decoder_start_token_id,
        tokenizer.bos_token_id,
        *tokenizer(GPT_PROMPT, add_special_tokens=False)["input_ids"],
    ]
    expected = model.generate(
        **source,
        decoder_input_ids=torch.tensor([prefix]),
        do_sample=False,
        num_beams=1,
        max_new_tokens=8,
        no_repeat_ngram_size=0,
        forced_eos_token_id=None,
    )[0].tolist()
    new_ids = expected[len(prefix) :]
    if tokenizer.eos_token_id in new_ids:
        new_ids = new_ids[: new_ids.index(tokenizer.eos_token_id) + 1]
    assert [t["id"] for t in continuation["tokens"]] == new_ids
    assert continuation["text"] == tokenizer.decode(new_ids, skip_special_tokens=True)
