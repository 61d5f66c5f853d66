"""`gbcli compare`: one screen whose sections are exactly what the separate commands say about the same input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, CORPUS, GPT_CAPITAL_PROMPT, MAX_POSITIONS


@pytest.fixture(scope="module")
def masked_doc(models):
    return run_json("compare", BERT_MASKED_DUCK, *models)


@pytest.mark.compat
def test_sections_equal_the_separate_commands(masked_doc, models):
    doc = masked_doc
    assert doc["tokenization"] == run_json("tokenize", BERT_MASKED_DUCK, *models)
    assert doc["predictions_text"] == BERT_MASKED_DUCK
    assert doc["predictions"] == run_json("fill-mask", BERT_MASKED_DUCK, *models)
    # Scores need a sentence without blanks: the text with BERT's filling, scored as `gbcli score` scores it.
    assert doc["scored_text"] == doc["predictions"]["fillings"][0]["text"]
    result = run("score", doc["scored_text"], "--json", *models)
    assert result.exit_code == 0, result.stderr
    assert doc["scores"] == json.loads(result.stdout)
    summary = run_json("attention", BERT_MASKED_DUCK, "--summary", *models)
    for line, view in zip(doc["attention"], summary["models"], strict=True):
        assert line["family"] == view["family"]
        assert line["mean_entropy"] == view["summary"]["mean"]["entropy"]
        assert line["to_first"] == view["summary"]["mean"]["to_first"]
        assert line["to_special"] == view["summary"]["mean"]["to_special"]


def test_right_context_example_shows_in_the_predictions(masked_doc, models):
    (slot,) = masked_doc["predictions"]["masks"]
    assert slot["bert"]["predictions"][0]["word"] == "duck"
    assert masked_doc["scored_text"] == "the duck quacks in the park ."
    result = run("compare", BERT_MASKED_DUCK, *models, env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.stderr
    assert "duck" in result.stdout


def test_without_a_mask_both_models_predict_the_next_word(gpt_path, models):
    doc = run_json("compare", GPT_CAPITAL_PROMPT, *models)
    assert doc["predictions_text"] == f"{GPT_CAPITAL_PROMPT} [MASK]"
    assert doc["predictions"] == run_json("fill-mask", f"{GPT_CAPITAL_PROMPT} [MASK]", *models)
    assert doc["scored_text"] == GPT_CAPITAL_PROMPT
    # GPT-2's left-context column is its plain next-token prediction after the text.
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    model = AutoModelForCausalLM.from_pretrained(gpt_path).eval()
    with torch.no_grad():
        logits = model(**tokenizer(GPT_CAPITAL_PROMPT, return_tensors="pt")).logits[0, -1]
    (slot,) = doc["predictions"]["masks"]
    assert slot["gpt_left"]["predictions"][0]["token_ids"] == [int(logits.argmax())]
    assert slot["bert"]["predictions"]


def test_model_facts_come_from_the_loaded_configs(masked_doc, gpt_path, bert_path):
    facts = {f["family"]: f for f in masked_doc["facts"]}
    for family, path, loader in (("gpt", gpt_path, AutoModelForCausalLM), ("bert", bert_path, AutoModelForMaskedLM)):
        config = AutoConfig.from_pretrained(path)
        fact = facts[family]
        assert fact["layers"] == config.num_hidden_layers == 2
        assert fact["heads"] == config.num_attention_heads
        assert fact["hidden_size"] == config.hidden_size
        assert fact["vocab_size"] == config.vocab_size
        assert fact["max_positions"] == MAX_POSITIONS
        assert fact["parameters"] == sum(p.numel() for p in loader.from_pretrained(path).parameters())
        assert fact["architecture"] == config.architectures[0]
    assert facts["gpt"]["attention_direction"].startswith("causal")
    assert facts["bert"]["attention_direction"] == "bidirectional"
    assert "masked" in facts["bert"]["objective"] and "next token" in facts["gpt"]["objective"]


def test_attention_and_time_sections_cover_each_model(masked_doc):
    lines = {line["family"]: line for line in masked_doc["attention"]}
    assert lines["gpt"]["to_special"] is None  # GPT-2 adds no special tokens around the text
    assert 0 < lines["bert"]["to_special"] < 1
    assert all(0 < line["to_first"] <= 1 and line["mean_entropy"] >= 0 for line in lines.values())
    for record in masked_doc["time"]:
        assert record["load_seconds"] >= 0
        assert record["first_pass_seconds"] > 0 and record["first_pass_section"] == "predictions"
        for section in ("predictions", "scores", "attention"):
            assert record["forward_passes"][section] >= 1, (record["family"], section)
            only_the_first = section == record["first_pass_section"] and record["forward_passes"][section] == 1
            assert record["forward_seconds"].get(section, 0.0) > 0 or only_the_first
    # Forward passes happen inside the sections: the per-model parts fit in the sections' wall-clock time, and the
    # sections cover the run (facts and bookkeeping aside).
    forward = sum(r["first_pass_seconds"] + sum(r["forward_seconds"].values()) for r in masked_doc["time"])
    sections = sum(masked_doc["section_seconds"].values())
    assert forward <= sections <= masked_doc["wall_seconds"]
    assert sections >= 0.8 * masked_doc["wall_seconds"]


def test_full_screen_has_every_section(models):
    result = run("compare", "the wasp buzzes in the park .", "--full", *models, env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.stderr
    for heading in (
        "Model facts",
        "Tokenization",
        "Predictions",
        "Scores",
        "Attention",
        "Time",
        "not on the same scale",
        "bidirectional",
        "·p",
    ):
        assert heading in result.stdout, heading


def test_default_screen_is_compact_and_fits_one_screen(models):
    result = run("compare", "the [MASK] quacks in the park .", *models, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    for heading in ("Predictions", "Scores", "not on the same scale", "--full"):
        assert heading in result.stdout, heading
    for full_only in ("Model facts", "Tokenization", "Attention", "Time"):
        assert full_only not in result.stdout, full_only
    assert len(result.stdout.splitlines()) <= 45  # the full report runs to 70-150 lines


def test_user_errors_exit_non_zero_without_traceback(models):
    assert_user_error(run("compare", "  ", *models), 2, "empty")
    too_long = " ".join(CORPUS[::6])
    assert_user_error(run("compare", too_long, *models), 2, str(MAX_POSITIONS))
    assert_user_error(run("compare", "the duck", "--top-k", "0", *models), 2, "--top-k")


def test_the_command_prints_json(models):
    # In-process (Typer's app itself): the console script's own path is held by test_startup and test_signals.
    completed = run("compare", BERT_MASKED_DUCK, "--json", *models)
    assert completed.exit_code == 0, completed.stderr
    doc = json.loads(completed.stdout)
    assert doc["predictions"]["masks"][0]["bert"]["predictions"][0]["word"] == "duck"


def test_each_model_is_let_go_once_its_sections_are_done(gpt_path, bert_path):
    """`compare` holds one model's weights at a time: after the run no weight is left in memory (no gc needed),
    a released model says so loudly if used, and loading the checkpoint again gives a working model."""
    import weakref

    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.comparison import compare

    options = LoadOptions(device="cpu", dtype="float32")
    gpt, bert = load_model("gpt", str(gpt_path), options), load_model("bert", str(bert_path), options)
    weights = [weakref.ref(gpt.model), weakref.ref(bert.model.get_input_embeddings().weight)]
    kept = compare(
        [load_model("gpt", str(gpt_path), options), load_model("bert", str(bert_path), options)], BERT_MASKED_DUCK
    )  # without release: same objects, still usable afterwards
    assert all(ref() is not None for ref in weights)
    released = compare([gpt, bert], BERT_MASKED_DUCK, release=True)
    assert all(ref() is None for ref in weights)
    with pytest.raises(RuntimeError, match="released"):
        gpt.model(input_ids=torch.tensor([[1, 2]]))
    assert gpt.model.config.n_positions == MAX_POSITIONS  # the config stays readable
    again = load_model("gpt", str(gpt_path), options)
    assert again is not gpt and again.model(input_ids=torch.tensor([[1, 2]])).logits.shape[-1] > 0
    # Releasing changes nothing in the result.
    assert released.predictions == kept.predictions and released.scores == kept.scores
    assert released.attention == kept.attention and released.scored_text == kept.scored_text


@pytest.mark.parametrize("families", ["gpt", "gpt,bart", "bart"])
def test_without_bert_the_sections_still_equal_the_separate_commands(families, gpt_path, bart_path):
    models = ["--models", families, "--gpt", str(gpt_path), "--bart", str(bart_path)]
    doc = run_json("compare", BERT_MASKED_DUCK, *models)
    assert doc["predictions"] == run_json("fill-mask", BERT_MASKED_DUCK, *models)
    # Without BERT the scored sentence is GPT-2's whole-sentence filling, or BART's when GPT-2 is absent.
    fillings = {f["column"]: f["text"] for f in doc["predictions"]["fillings"]}
    assert doc["scored_text"] == fillings["gpt_whole" if "gpt" in families else "bart"]
    result = run("score", doc["scored_text"], "--json", *models)
    assert result.exit_code == 0, result.stderr
    assert doc["scores"] == json.loads(result.stdout)
