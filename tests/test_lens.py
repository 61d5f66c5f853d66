"""`gbcli lens`: each layer read out through the model's own head; the last row is the model's output."""

from __future__ import annotations

import math
import re

import pytest
import torch
from rich.cells import cell_len
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from gbcli.render.lens import format_kl
from gbcli.render.masking import format_prob
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, GPT_CAPITAL_PROMPT


@pytest.fixture(scope="module")
def models(gpt_path, bert_path, bart_path):
    return ["--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path)]


@pytest.fixture(scope="module")
def duck(models):
    """The lens of all three models at the blank of `the [MASK] quacks in the park .`."""
    return {m["family"]: m for m in run_json("lens", BERT_MASKED_DUCK, *models, "--with-bart")["models"]}


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=-1)


def _assert_row(row: dict, probs: torch.Tensor, final: torch.Tensor) -> None:
    """A lens row against probabilities computed independently: top-k, the answer's rank and p, and the KL."""
    top = probs.topk(len(row["top"]))
    assert [t["id"] for t in row["top"]] == top.indices.tolist()
    assert [t["prob"] for t in row["top"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    answer = int(final.argmax())
    assert row["answer_prob"] == pytest.approx(float(probs[answer]), abs=1e-6)
    assert row["answer_rank"] == int((probs > probs[answer]).sum()) + 1
    kl = float((final * (final.log() - probs.log())).sum())
    assert row["kl_from_final"] == pytest.approx(kl, abs=1e-5)


# --- faithfulness ---------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_last_row_is_the_models_own_output(duck, gpt_path, bert_path, bart_path):
    gpt_tok, bert_tok = AutoTokenizer.from_pretrained(gpt_path), AutoTokenizer.from_pretrained(bert_path)
    gpt = AutoModelForCausalLM.from_pretrained(gpt_path).eval()
    bert = AutoModelForMaskedLM.from_pretrained(bert_path).eval()
    with torch.no_grad():
        # GPT-2 at the blank: the next-token distribution after <|endoftext|> the
        ids = torch.tensor([[gpt_tok.eos_token_id] + gpt_tok("the")["input_ids"]])
        gpt_probs = _probs(gpt(ids).logits[0, -1])
        encoded = bert_tok(BERT_MASKED_DUCK, return_tensors="pt")
        position = encoded["input_ids"][0].tolist().index(bert_tok.mask_token_id)
        bert_probs = _probs(bert(**encoded).logits[0, position])
    for family, probs in (("gpt", gpt_probs), ("bert", bert_probs)):
        lens = duck[family]
        _assert_row(lens["layers"][-1], probs, probs)
        assert lens["layers"][-1]["kl_from_final"] == 0.0 and lens["layers"][-1]["answer_rank"] == 1
        assert lens["answer"]["id"] == int(probs.argmax())
        # The lens's own read-out of the last hidden state is the model's computation, bit for bit.
        assert lens["final_check"] == 0.0
    assert len(duck["gpt"]["layers"]) == gpt.config.n_layer + 1
    assert len(duck["bert"]["layers"]) == bert.config.num_hidden_layers + 1


@pytest.mark.compat
def test_gpt2_middle_layer_is_ln_f_then_the_tied_unembedding_written_out(duck, gpt_path):
    tok = AutoTokenizer.from_pretrained(gpt_path)
    model = AutoModelForCausalLM.from_pretrained(gpt_path).eval()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied
    ids = torch.tensor([[tok.eos_token_id] + tok("the")["input_ids"]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        final = _probs(out.logits[0, -1])
        ln = model.transformer.ln_f
        for layer in range(model.config.n_layer):  # the embeddings and every block before the last
            h = out.hidden_states[layer][0, -1].double()
            normed = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + ln.eps) * ln.weight.double() + ln.bias.double()
            logits = normed @ model.transformer.wte.weight.double().T
            _assert_row(duck["gpt"]["layers"][layer], _probs(logits), final)


@pytest.mark.compat
def test_bert_middle_layer_is_the_mlm_head_written_out(duck, bert_path):
    tok = AutoTokenizer.from_pretrained(bert_path)
    model = AutoModelForMaskedLM.from_pretrained(bert_path).eval()
    encoded = tok(BERT_MASKED_DUCK, return_tensors="pt")
    position = encoded["input_ids"][0].tolist().index(tok.mask_token_id)
    head = model.cls.predictions
    with torch.no_grad():
        out = model(**encoded, output_hidden_states=True)
        final = _probs(out.logits[0, position])
        h = out.hidden_states[1][0, position].double()
        x = h @ head.transform.dense.weight.double().T + head.transform.dense.bias.double()
        x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # gelu
        ln = head.transform.LayerNorm
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + ln.eps) * ln.weight.double() + ln.bias.double()
        logits = x @ model.bert.embeddings.word_embeddings.weight.double().T + head.bias.double()
    _assert_row(duck["bert"]["layers"][1], _probs(logits), final)


@pytest.mark.compat
def test_bart_decoder_lens_ends_in_the_models_output(duck, bart_path):
    tok = AutoTokenizer.from_pretrained(bart_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(bart_path).eval()
    source = tok(BERT_MASKED_DUCK.replace("[MASK]", tok.mask_token), return_tensors="pt")
    decoder = torch.tensor([[model.config.decoder_start_token_id, tok.bos_token_id] + tok("the")["input_ids"][1:-1]])
    with torch.no_grad():
        out = model(**source, decoder_input_ids=decoder, output_hidden_states=True)
        final = _probs(out.logits[0, -1])
        middle = out.decoder_hidden_states[1][0, -1] @ model.model.shared.weight.T + model.final_logits_bias[0]
    lens = duck["bart"]
    assert [t for t in lens["tokens"]] == ["</s>", "<s>", "the"]
    _assert_row(lens["layers"][-1], final, final)
    _assert_row(lens["layers"][1], _probs(middle), final)
    assert lens["final_check"] == 0.0


# --- what the layers say on the trained test models ------------------------------------------------------------


def test_bert_finds_duck_from_the_right_context_gpt2_cannot(duck):
    assert duck["bert"]["answer"]["token"] == "duck"
    assert duck["bert"]["layers"][-1]["top"][0]["prob"] > 0.5
    # BERT's earlier layers do not have it yet: the answer surfaces with depth.
    assert duck["bert"]["layers"][0]["answer_rank"] > 1
    # GPT-2 sees only "the": no animal can be singled out, and duck is not its answer.
    assert duck["gpt"]["answer"]["token"] != "␣duck"
    assert duck["bart"]["answer"]["token"] == "␣duck"  # BART's encoder read "quacks"


def test_gpt2_next_word_without_a_blank(models):
    doc = run_json("lens", GPT_CAPITAL_PROMPT, *models, "--models", "gpt", "--top-k", "3")
    (lens,) = doc["models"]
    assert lens["answer"]["token"] == "␣paris"
    assert lens["tokens"][-1] == "␣is" and lens["position"] == len(lens["tokens"]) - 1
    assert all(len(layer["top"]) == 3 for layer in lens["layers"])


# --- the screen ------------------------------------------------------------------------------------------------


def test_view_fits_80_columns_and_shows_every_number_whole(models, duck):
    out = run("lens", BERT_MASKED_DUCK, *models, "--with-bart", env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.stderr
    assert max(cell_len(line) for line in out.stdout.splitlines()) <= 80
    words = set(re.findall(r"\S+", out.stdout))
    for lens in duck.values():
        for layer in lens["layers"]:
            for token in layer["top"]:
                assert format_prob(token["prob"]) in words and token["token"] in words
            assert {
                str(layer["answer_rank"]),
                format_prob(layer["answer_prob"]),
                format_kl(layer["kl_from_final"]),
            } <= words
        assert "exactly" in out.stdout


# --- bad input -------------------------------------------------------------------------------------------------


def test_bert_needs_a_blank(models):
    assert_user_error(run("lens", GPT_CAPITAL_PROMPT, *models), 2, "no blank", "hint:", "[MASK]")


def test_two_blanks_are_refused(models):
    assert_user_error(run("lens", "the [MASK] [MASK] in the park .", *models), 2, "2 blanks")


def test_top_k_must_be_positive(models):
    assert_user_error(run("lens", BERT_MASKED_DUCK, *models, "--top-k", "0"), 2, "--top-k")


def test_bare_encoder_is_refused(tiny_models, gpt_path):
    result = run("lens", BERT_MASKED_DUCK, "--models", "bert", "--bert", str(tiny_models["bert_no_head"]))
    assert_user_error(result, 2, "hint:")


def test_json_bad_input_prints_nothing_on_stdout(models):
    assert_user_error(run("lens", GPT_CAPITAL_PROMPT, *models, "--json"), 2, "no blank", "hint:")


@pytest.mark.parametrize("command", ["lens", "saliency"])
@pytest.mark.parametrize("text,fragment", [("  ", "empty"), ("duck " * 80 + "[MASK]", "at most 64")])
def test_empty_or_too_long_text_exits_2(models, command, text, fragment):
    assert_user_error(run(command, text, *models), 2, fragment, "hint:")
