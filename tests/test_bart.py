"""BART as the third column: the denoiser that reads both ways (encoder) and writes left to right (decoder).

Every number is checked against an independent computation on a freshly loaded copy of the tiny fixture BART:
`model.generate` with the same settings, a teacher-forced forward pass, or the model's own `output_attentions`.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from gbcli.loading.models import load_model
from gbcli.tasks.attention import SEQ2SEQ_MAPS, compute_attention
from gbcli.tasks.decoding_options import settings_from_options
from gbcli.tasks.masking import infill_spans, split_masks
from gbcli.tasks.seq2seq import generate_seq2seq, match_spans
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import BART_MASKED_DUCK, DUCK_SENTENCE, GPT_PROMPT, MULTI_PIECE_WORD

MASKED_WASP_AND_PLACE = "the [MASK] buzzes in the [MASK] ."


@pytest.fixture(scope="module")
def reference(bart_path):
    """An independent copy of the fixture: its own tokenizer and model, eager attention, eval mode."""
    tokenizer = AutoTokenizer.from_pretrained(bart_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(bart_path, attn_implementation="eager").eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def bart(bart_path):
    return load_model("bart", str(bart_path))


@pytest.fixture(scope="module")
def duck_infilling(bart):
    return infill_spans(bart, split_masks(BART_MASKED_DUCK), top_k=3)


def teacher_forced(model, source: list[int], decoder_sequence: list[int]) -> list[float]:
    """log p of every decoder token after the start token, from one plain forward pass with labels."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([source]), decoder_input_ids=torch.tensor([decoder_sequence[:-1]])).logits
    logprobs = torch.log_softmax(logits[0].double(), dim=-1)
    return [float(logprobs[i, t]) for i, t in enumerate(decoder_sequence[1:])]


# --- fill-mask: span infilling ---------------------------------------------------------------------------------


def test_bart_restores_the_masked_word_from_the_right_hand_context(duck_infilling):
    best = duck_infilling.fillings[0]
    assert best.rank == 1 and not best.rewrote_context
    assert [span.text for span in best.spans] == ["duck"]
    assert best.filled == DUCK_SENTENCE


@pytest.mark.compat
def test_infilling_equals_model_generate_with_the_same_beam_settings(duck_infilling, reference):
    tokenizer, model = reference
    settings = duck_infilling.generate_settings
    assert settings["num_beams"] == 6 and settings["num_return_sequences"] == 6 and not settings["do_sample"]
    encoded = tokenizer(BART_MASKED_DUCK, return_tensors="pt")
    with torch.no_grad():
        expected = model.generate(**encoded, output_scores=True, return_dict_in_generate=True, **settings)
    eos = tokenizer.eos_token_id
    for beam, row, score in zip(
        duck_infilling.beams, expected.sequences.tolist(), expected.sequences_scores, strict=True
    ):
        row = row[: row.index(eos, 1) + 1]
        assert beam.token_ids == row
        assert beam.output == tokenizer.decode(row, skip_special_tokens=True)
        assert beam.sequence_score == pytest.approx(float(score), abs=1e-5)


def test_fill_probabilities_and_sequence_scores_equal_a_teacher_forced_recomputation(duck_infilling, reference):
    tokenizer, model = reference
    source = tokenizer(BART_MASKED_DUCK)["input_ids"]
    for beam in duck_infilling.beams:
        logprobs = teacher_forced(model, source, beam.token_ids)
        assert beam.logprob == pytest.approx(sum(logprobs), abs=1e-4)
        assert beam.prob == pytest.approx(math.exp(sum(logprobs)), rel=1e-4)
        # Beam search's score: the forced <s> counts 0, the rest of the tokens are the raw model's; divided by the
        # number of generated tokens (length penalty 1).
        assert beam.token_ids[1] == tokenizer.bos_token_id
        assert beam.sequence_score == pytest.approx(sum(logprobs[1:]) / len(logprobs), abs=1e-5)
    best = duck_infilling.fillings[0]
    (span,) = best.spans
    duck_position = best.token_ids.index(span.token_ids[0])
    assert span.pieces == ["Ġduck"]
    assert span.logprob == pytest.approx(teacher_forced(model, source, best.token_ids)[duck_position - 1], abs=1e-5)


def test_beams_that_rewrite_the_context_are_kept_and_marked_without_spans(duck_infilling):
    rewrites = duck_infilling.rewrites
    assert rewrites, "the fixture's beams include 'the duck quacks in the forest .'"
    for beam in rewrites:
        assert beam.spans is None and beam.filled is None
        assert beam.output != DUCK_SENTENCE
    ranks = [b.rank for b in duck_infilling.beams]
    assert ranks == sorted(ranks) and len(ranks) == 6


def test_several_masks_get_one_span_each_and_a_multi_piece_word_stays_whole(bart):
    result = infill_spans(bart, split_masks(MASKED_WASP_AND_PLACE), top_k=2)
    best = result.fillings[0]
    assert best.spans[0].text == MULTI_PIECE_WORD
    assert best.spans[0].pieces == ["Ġwas", "p"]
    assert best.filled.startswith("the wasp buzzes in the ")


def test_fill_mask_cli_shows_bart_spans_beside_bert_and_gpt(gpt_path, bert_path, bart_path):
    paths = ["--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path)]
    doc = run_json(
        "fill-mask", "the [MASK] quacks in the park .", "--with-bart", "--top-k", "2", "--targets", "duck,dog", *paths
    )
    assert doc["models"] == {"gpt": "gpt", "bert": "bert", "bart": "bart"}
    (slot,) = doc["masks"]
    assert slot["bert"]["predictions"][0]["word"] == "duck"
    best = slot["bart"]["predictions"][0]
    beam = doc["bart"]["beams"][0]
    assert best["word"] == "duck" and best["prob"] == beam["prob"] and not beam["rewrote_context"]
    assert beam["spans"][0]["text"] == "duck" and beam["filled"] == DUCK_SENTENCE
    assert any(b["rewrote_context"] for b in doc["bart"]["beams"])  # kept in the JSON, marked
    duck, dog = slot["bart"]["targets"]
    assert duck["prob"] == pytest.approx(beam["prob"], rel=1e-5)  # the same output, scored again
    assert dog["prob"] < 1e-3
    assert {f["column"] for f in doc["fillings"]} == {"bert", "gpt_left", "gpt_whole", "bart"}
    screen = run(
        "fill-mask", "the [MASK] quacks in the park .", "--models", "bart", "-k", "2", *paths, env={"COLUMNS": "160"}
    )
    assert screen.exit_code == 0, screen.stderr
    assert "BART · bart" in screen.stdout and "✗ rewrote the text" in screen.stdout and "beam score" in screen.stdout


def test_bart_target_probability_is_the_teacher_forced_probability_of_the_filled_text(bart_path, reference):
    tokenizer, model = reference
    doc = run_json(
        "fill-mask", BART_MASKED_DUCK, "--models", "bart", "--bart", str(bart_path), "--targets", "dog", "-k", "1"
    )
    (dog,) = doc["masks"][0]["bart"]["targets"]
    source = tokenizer(BART_MASKED_DUCK)["input_ids"]
    target = [model.config.decoder_start_token_id, *tokenizer("the dog quacks in the park .")["input_ids"]]
    assert dog["logprob"] == pytest.approx(sum(teacher_forced(model, source, target)), abs=1e-4)


def test_span_matching_tolerates_spacing_but_not_other_changes():
    segments = ["the ", " quacks in the park ."]
    output = "the big duck quacks in the park ."
    ((start, end),) = match_spans(segments, output)
    assert output[start:end] == "big duck"
    assert match_spans(segments, "the duck quacks in the park.") is not None
    assert match_spans(segments, "the duck quacks in the forest .") is None
    ((start, end),) = match_spans(segments, "the quacks in the park .")
    assert start == end  # an empty span: BART may delete the blank


# --- attention: three maps ---------------------------------------------------------------------------------------


def reference_attention(reference, text: str):
    tokenizer, model = reference
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)  # decoder input: the text shifted right, as in training
    stack = lambda attentions: torch.stack([a[0] for a in attentions]).numpy()  # noqa: E731
    return {
        "encoder": stack(out.encoder_attentions),
        "decoder": stack(out.decoder_attentions),
        "cross": stack(out.cross_attentions),
    }


def test_attention_maps_are_the_models_encoder_decoder_and_cross_attentions(bart, reference):
    result = compute_attention(bart, DUCK_SENTENCE)
    expected = reference_attention(reference, DUCK_SENTENCE)
    assert [m.name for m in result.maps] == ["encoder", "decoder", "cross"]
    for amap in result.maps:
        np.testing.assert_allclose(amap.weights, expected[amap.name], atol=1e-6)
    encoder, decoder, cross = result.maps
    assert not encoder.causal and decoder.causal and not cross.causal
    above = np.triu(np.ones(decoder.weights.shape[-2:], dtype=bool), k=1)
    assert np.all(decoder.weights[..., above] == 0.0)  # the decoder never looks right
    assert np.all(encoder.weights[..., above] > 0.0)  # the encoder does
    assert cross.queries == decoder.queries and cross.keys == encoder.queries
    assert [t.piece for t in decoder.queries[:2]] == ["</s>", "<s>"]  # the decoder start token, then the text


def test_attention_json_and_npz_exports_hold_all_three_maps(tmp_path, bart_path, reference):
    expected = reference_attention(reference, DUCK_SENTENCE)
    target = tmp_path / "bart.json"
    run_json("attention", DUCK_SENTENCE, "--models", "bart", "--bart", str(bart_path), "--export", str(target))
    (entry,) = json.loads(target.read_text())["models"]
    assert entry["family"] == "bart" and entry["map"] == "encoder"
    np.testing.assert_array_equal(np.array(entry["attention"], dtype=np.float32), expected["encoder"])
    others = {m["name"]: m for m in entry["other_maps"]}
    for name in ("decoder", "cross"):
        np.testing.assert_allclose(np.array(others[name]["attention"], dtype=np.float32), expected[name], atol=1e-6)
    npz = tmp_path / "bart.npz"
    run_json(
        "attention",
        DUCK_SENTENCE,
        "--with-bart",
        "--models",
        "gpt",
        "--bart",
        str(bart_path),
        "--gpt",
        str(bart_path.parent / "gpt"),
        "--export",
        str(npz),
    )
    with np.load(npz) as arrays:
        assert list(arrays["models"]) == ["gpt", "bart"]
        np.testing.assert_allclose(arrays["bart_attention"], expected["encoder"], atol=1e-6)
        np.testing.assert_allclose(arrays["bart_decoder_attention"], expected["decoder"], atol=1e-6)
        np.testing.assert_allclose(arrays["bart_cross_attention"], expected["cross"], atol=1e-6)
        assert list(arrays["bart_cross_key_tokens"]) == list(arrays["bart_tokens"])


def test_attention_screen_shows_three_bart_heatmaps_beside_gpt(gpt_path, bart_path):
    result = run(
        "attention",
        DUCK_SENTENCE,
        "--models",
        "gpt,bart",
        "--gpt",
        str(gpt_path),
        "--bart",
        str(bart_path),
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.stderr
    for title in ("GPT · gpt", "BART · bart · encoder", "BART · bart · decoder", "BART · bart · cross"):
        assert title in result.stdout
    assert "cross-attention: each output token (row)" in result.stdout
    views = run_json(
        "attention", DUCK_SENTENCE, "--models", "bart", "--bart", str(bart_path), "--layer", "1", "--head", "1"
    )["models"]
    assert [v["map"] for v in views] == ["encoder", "decoder", "cross"]
    assert len(views[2]["matrix"]) == len(views[1]["tokens"]) and len(views[2]["matrix"][0]) == len(views[2]["keys"])


def test_html_export_names_and_describes_each_map_as_the_terminal_view_does(tmp_path, bart_path):
    target = tmp_path / "bart.html"
    result = run(
        "attention",
        DUCK_SENTENCE,
        "--models",
        "bart",
        "--bart",
        str(bart_path),
        "--export",
        str(target),
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.stderr
    page = target.read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="gbcli-attention-data">(.*?)</script>', page, re.S)
    (entry,) = json.loads(data.group(1))["models"]
    maps = [entry, *entry["other_maps"]]
    assert [m["title"] for m in maps] == ["BART · bart · encoder", "BART · bart · decoder", "BART · bart · cross"]
    assert [m["description"] for m in maps] == [SEQ2SEQ_MAPS[name] for name in ("encoder", "decoder", "cross")]
    for amap in maps:  # the page shows what the terminal shows, word for word
        assert amap["title"] in result.stdout and amap["description"] in result.stdout
    script = page[page.index("<script>") :]
    assert not re.search(r'"(GPT|BERT|BART)"', script)  # no family name is hard-coded in the page's JavaScript


def test_bart_joins_only_when_asked(gpt_path, bart_path):
    doc = run_json("attention", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(gpt_path), "--bart", str(bart_path))
    assert [v["family"] for v in doc["models"]] == ["gpt"]
    assert_user_error(run("attention", DUCK_SENTENCE, "--models", "gpt,t5"), 2, "t5", "bart")


# --- generate and score: the computations (their commands take --with-bart once those modules are wired) ---------


def test_generate_greedy_equals_model_generate_greedy(bart, reference):
    tokenizer, model = reference
    settings = settings_from_options(max_new_tokens=8, greedy=True)
    column = generate_seq2seq(bart, GPT_PROMPT, settings)
    (continuation,) = column.continuations
    source = tokenizer(GPT_PROMPT + " <mask>", return_tensors="pt")
    prefix = [
        model.config.decoder_start_token_id,
        tokenizer.bos_token_id,
        *tokenizer(GPT_PROMPT, add_special_tokens=False)["input_ids"],
    ]
    with torch.no_grad():
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
    assert [t.id for t in continuation.tokens] == new_ids and len(new_ids) >= 2
    assert continuation.text == tokenizer.decode(new_ids, skip_special_tokens=True)
    logprobs = teacher_forced(model, source["input_ids"][0].tolist(), prefix + new_ids)[len(prefix) - 1 :]
    assert [t.logprob for t in continuation.tokens] == pytest.approx(logprobs, abs=1e-4)
    assert continuation.mean_logprob == pytest.approx(sum(logprobs) / len(logprobs), abs=1e-4)
    assert column.new_tokens == len(new_ids) and column.tokens_per_second > 0
    assert "<mask>" in column.method


# --- the installed command ---------------------------------------------------------------------------------------


def test_the_cli_fills_a_span_with_bart(bart_path):
    done = run("fill-mask", BART_MASKED_DUCK, "--models", "bart", "--bart", str(bart_path), env={"COLUMNS": "120"})
    assert done.exit_code == 0, done.stderr
    out = done.stdout
    assert "BART · bart" in out and "the duck quacks in the park ." in out
    assert "Traceback" not in done.stderr


@pytest.mark.compat
def test_score_cli_gives_bart_reconstruction_log_likelihood_equal_to_the_models_loss(bart_path, reference):
    tokenizer, model = reference
    lines = run("score", DUCK_SENTENCE, "--models", "bart", "--bart", str(bart_path), "--json")
    assert lines.exit_code == 0, lines.stderr
    (column,) = json.loads(lines.stdout)["columns"]
    assert column["measure"] == "reconstruction log-likelihood"
    assert "not comparable" in json.loads(lines.stdout)["note"]
    encoded = tokenizer(DUCK_SENTENCE, return_tensors="pt")
    with torch.no_grad():
        # labels = the sentence itself: the model shifts them right behind its decoder start token.
        loss = model(**encoded, labels=encoded["input_ids"]).loss.item()
    n = encoded["input_ids"].shape[1]
    assert column["log_likelihood"] == pytest.approx(-loss * n, abs=1e-4)
    assert column["value"] == pytest.approx(column["log_likelihood"], abs=1e-9)


def test_tokenize_cli_shows_barts_byte_level_bpe_column(bart_path, reference):
    tokenizer, _ = reference
    doc = run_json(
        "tokenize",
        DUCK_SENTENCE,
        "--with-bart",
        "--models",
        "gpt",
        "--bart",
        str(bart_path),
        "--gpt",
        str(bart_path.parent / "gpt"),
    )
    assert [c["family"] for c in doc["columns"]] == ["gpt", "bart"]
    bart_column = doc["columns"][1]
    assert bart_column["algorithm"] == "byte-level BPE"
    assert [p["id"] for p in bart_column["pieces"]] == tokenizer(DUCK_SENTENCE)["input_ids"]
    for piece in bart_column["pieces"]:
        assert piece["text"] == DUCK_SENTENCE[piece["start"] : piece["end"]]


def test_compare_with_bart_shows_encoder_decoder_facts_three_attention_maps_and_its_spans(
    gpt_path, bert_path, bart_path, reference
):
    _, model = reference
    models = ("--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path))
    doc = run_json("compare", BART_MASKED_DUCK.replace("<mask>", "[MASK]"), "--with-bart", *models)
    facts = {f["family"]: f for f in doc["facts"]}
    assert set(facts) == {"gpt", "bert", "bart"}
    assert facts["bart"]["layers"] == model.config.encoder_layers
    assert facts["bart"]["decoder_layers"] == model.config.decoder_layers
    assert facts["bart"]["decoder_heads"] == model.config.decoder_attention_heads
    assert facts["bart"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert "denoising" in facts["bart"]["objective"]
    assert facts["gpt"]["decoder_layers"] is None
    maps = [line["map"] for line in doc["attention"] if line["family"] == "bart"]
    assert maps == ["encoder", "decoder", "cross"]
    # The predictions section is the fill-mask command's result on the same input.
    alone = run_json("fill-mask", BART_MASKED_DUCK.replace("<mask>", "[MASK]"), "--with-bart", *models)
    assert doc["predictions"]["masks"][0]["bart"] == alone["masks"][0]["bart"]
    assert doc["predictions"]["masks"][0]["bart"]["predictions"][0]["word"].strip() == "duck"
