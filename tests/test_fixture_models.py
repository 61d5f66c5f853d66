"""Sanity checks: the tiny fixture models learned what the product tests rely on.

These tests use transformers directly (not gbcli).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
)

from tests.fixtures.tiny_models import (
    ANIMAL_SOUNDS,
    ANIMALS,
    BART_MASKED_DUCK,
    BERT_MASKED_DOG,
    BERT_MASKED_DUCK,
    BERT_MASKED_MULTI,
    CAPITALS,
    CORPUS,
    DUCK_SENTENCE,
    GPT_CAPITAL_PROMPT,
    GPT_PROMPT,
    MAX_POSITIONS,
    MULTI_PIECE_SENTENCE,
    MULTI_PIECE_WORD,
    SINGLE_TOKEN_ANIMALS,
)

EOT = "<|endoftext|>"


# --------------------------------------------------------------------------
# one torch thread; the loaded models are conftest.py's gpt, bert and bart
# --------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _bert_mask_probs(tok, model, text: str) -> list[torch.Tensor]:
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0]
    positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[:, 0]
    return [logits[p].softmax(-1) for p in positions]


def _gpt_next_token_probs(tok, model, prefix: str) -> torch.Tensor:
    ids = tok(prefix, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0, -1].softmax(-1)


def _gpt_sentence_logprobs(tok, model, texts: list[str]) -> list[float]:
    """Sum of log P(token | left context) per text, BOS-prefixed so that the
    first word is scored too.  One batched forward pass (right padding)."""
    seqs = [tok(EOT + t)["input_ids"] for t in texts]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [tok.eos_token_id] * (width - len(s)) for s in seqs])
    real = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logprobs = model(input_ids=ids, attention_mask=real).logits[:, :-1].log_softmax(-1)
    token_lp = logprobs.gather(2, ids[:, 1:, None])[..., 0] * real[:, 1:]
    return token_lp.sum(1).tolist()


def _gpt_sentence_logprob(tok, model, text: str) -> float:
    return _gpt_sentence_logprobs(tok, model, [text])[0]


# --------------------------------------------------------------------------
# loading / tokenizers
# --------------------------------------------------------------------------


def test_fixture_keys(tiny_models):
    assert set(tiny_models) == {
        "gpt",
        "bert",
        "bart",
        "bert_no_head",
        "no_weights",
        "corrupt_weights",
        "mismatched_tokenizer",
    }
    for path in tiny_models.values():
        assert (path / "config.json").is_file()
        assert (path / "tokenizer.json").is_file()
        assert (path / "tokenizer_config.json").is_file()


def test_corpus_shape():
    assert 100 <= len(CORPUS) <= 2000
    for s in CORPUS:
        assert s == s.lower() and s.endswith(" .") and "  " not in s
    assert DUCK_SENTENCE in CORPUS
    assert MULTI_PIECE_SENTENCE in CORPUS
    # every animal follows a sentence-initial "the" equally often
    counts = {a: sum(s.startswith(f"the {a} ") for s in CORPUS) for a in ANIMALS}
    assert len(set(counts.values())) == 1


def test_model_classes_and_special_tokens(gpt, bert, bart):
    gtok, gmodel = gpt
    assert type(gmodel).__name__ == "GPT2LMHeadModel"
    assert gtok.bos_token == gtok.eos_token == EOT
    assert gmodel.config.bos_token_id == gmodel.config.eos_token_id == gtok.eos_token_id
    assert gmodel.config.vocab_size == len(gtok)
    assert gmodel.config.n_positions == MAX_POSITIONS

    btok, bmodel = bert
    assert type(bmodel).__name__ == "BertForMaskedLM"
    assert [btok.pad_token, btok.unk_token, btok.cls_token, btok.sep_token, btok.mask_token] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    assert btok.tokenize("The DUCK") == ["the", "duck"]  # lower-cases
    assert bmodel.config.vocab_size == len(btok)
    assert bmodel.config.max_position_embeddings == MAX_POSITIONS

    atok, amodel = bart
    assert type(amodel).__name__ == "BartForConditionalGeneration"
    assert [atok.bos_token, atok.pad_token, atok.eos_token, atok.unk_token, atok.mask_token] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "<mask>",
    ]
    assert amodel.config.vocab_size == len(atok)
    assert amodel.config.max_position_embeddings == MAX_POSITIONS
    # "<mask>" is one token and swallows the space before it (like facebook/bart-*)
    ids = atok(BART_MASKED_DUCK)["input_ids"]
    assert ids.count(atok.mask_token_id) == 1
    assert atok.convert_ids_to_tokens(ids)[1:4] == ["the", "<mask>", "Ġquacks"]


def test_tokenizers_roundtrip_corpus(gpt, bert, bart):
    for tok, _ in (gpt, bert, bart):
        for s in CORPUS[::7]:
            ids = tok(s)["input_ids"]
            assert tok.unk_token_id not in ids or tok.unk_token == EOT
            text = tok.decode(ids, skip_special_tokens=True)
            if tok is bert[0]:
                # BERT's WordPiece decoder (tokenizers' `cleanup=True`, as in
                # bert-base-uncased) glues punctuation: "park ." -> "park."
                assert text == s.replace(" .", ".")
            else:
                assert text == s


def test_animals_are_single_tokens(gpt, bert, bart):
    for animal in SINGLE_TOKEN_ANIMALS:
        for tok in (gpt[0], bart[0]):
            assert tok.tokenize(" " + animal) == ["Ġ" + animal]
            assert "Ġ" + animal in tok.get_vocab()
        assert bert[0].tokenize(animal) == [animal]
        assert animal in bert[0].get_vocab()


def test_multi_piece_word_is_split_everywhere(gpt, bert, bart):
    gpt_pieces = gpt[0].tokenize(" " + MULTI_PIECE_WORD)
    bart_pieces = bart[0].tokenize(" " + MULTI_PIECE_WORD)
    bert_pieces = bert[0].tokenize(MULTI_PIECE_WORD)
    assert len(gpt_pieces) >= 2 and len(bart_pieces) >= 2 and len(bert_pieces) >= 2
    assert gpt_pieces == ["Ġwas", "p"]
    assert bert_pieces == ["was", "##p"]
    assert bert[0].unk_token not in bert_pieces
    assert sum(MULTI_PIECE_WORD in s.split() for s in CORPUS) >= 10


# --------------------------------------------------------------------------
# BERT: bidirectional
# --------------------------------------------------------------------------


def test_bert_uses_right_context(bert):
    tok, model = bert
    for text, expected in ((BERT_MASKED_DUCK, "duck"), (BERT_MASKED_DOG, "dog")):
        (probs,) = _bert_mask_probs(tok, model, text)
        top = torch.topk(probs, 2)
        assert tok.convert_ids_to_tokens(int(top.indices[0])) == expected
        assert top.values[0] > 0.5 and top.values[0] > 3 * top.values[1]
    # every single-token animal is recovered from its verb, at any place
    for animal, verb in ANIMAL_SOUNDS:
        if animal == MULTI_PIECE_WORD:
            continue
        (probs,) = _bert_mask_probs(tok, model, f"the [MASK] {verb} in the garden .")
        assert tok.convert_ids_to_tokens(int(probs.argmax())) == animal


def test_bert_fills_multi_piece_word_with_two_masks(bert):
    tok, model = bert
    probs = _bert_mask_probs(tok, model, BERT_MASKED_MULTI)
    assert [tok.convert_ids_to_tokens(int(p.argmax())) for p in probs] == ["was", "##p"]
    assert min(float(p.max()) for p in probs) > 0.5


# --------------------------------------------------------------------------
# GPT-2: left context only
# --------------------------------------------------------------------------


def test_gpt2_sees_only_left_context(gpt):
    tok, model = gpt
    vocab = tok.get_vocab()
    for prefix in ("the", EOT + "the"):
        probs = _gpt_next_token_probs(tok, model, prefix)
        animal_probs = {a: float(probs[vocab["Ġ" + a]]) for a in SINGLE_TOKEN_ANIMALS}
        # it cannot know the animal: mass is spread, duck is not a confident top-1
        assert animal_probs["duck"] < 0.5
        assert all(0.03 < p < 0.3 for p in animal_probs.values())
        top10 = {tok.convert_ids_to_tokens(int(i)) for i in torch.topk(probs, 10).indices}
        assert len(top10 & {"Ġ" + a for a in ANIMALS}) >= 6

    # ... but the whole sentence is scored better with the right animal
    for animal, verb in ANIMAL_SOUNDS:
        texts = [f"the {other} {verb} in the park ." for other in ANIMALS]
        scores = dict(zip(ANIMALS, _gpt_sentence_logprobs(tok, model, texts), strict=True))
        # batched (padded) scoring agrees with scoring the sentence alone
        alone = _gpt_sentence_logprob(tok, model, f"the {animal} {verb} in the park .")
        assert scores[animal] == pytest.approx(alone, abs=1e-3)
        for other in ANIMALS:
            if other != animal:
                assert scores[animal] > scores[other] + 2.0, (animal, other, scores)


def test_gpt2_scores_multi_piece_word_in_context(gpt):
    tok, model = gpt
    others = ("duck", "dog", "cat")
    texts = [MULTI_PIECE_SENTENCE] + [MULTI_PIECE_SENTENCE.replace(MULTI_PIECE_WORD, o) for o in others]
    good, *bad = _gpt_sentence_logprobs(tok, model, texts)
    assert all(good > b + 2.0 for b in bad)
    # The 2nd piece is predictable after the 1st, but (label smoothing) never
    # certain: it visibly counts in a chain-rule score.
    probs = _gpt_next_token_probs(tok, model, EOT + "the was")
    p_second = float(probs[tok.convert_tokens_to_ids("p")])
    assert p_second == float(probs.max())
    assert 0.8 < p_second < 0.99


def test_gpt2_greedy_generation_is_corpus_like(gpt):
    tok, model = gpt
    enc = tok(GPT_PROMPT, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0], skip_special_tokens=True)
    assert text.startswith(GPT_PROMPT + " there was a ")
    assert " who lived in the " in text and text.endswith(" .")
    words = text.split()
    assert words[7] in ANIMALS
    assert text in CORPUS

    probs = _gpt_next_token_probs(tok, model, GPT_CAPITAL_PROMPT)
    assert tok.convert_ids_to_tokens(int(probs.argmax())) == "Ġparis"
    assert probs.max() > 0.5
    for country, city in CAPITALS:
        probs = _gpt_next_token_probs(tok, model, f"the capital of {country} is")
        assert tok.convert_ids_to_tokens(int(probs.argmax())) == "Ġ" + city


# --------------------------------------------------------------------------
# BART: seq2seq denoiser
# --------------------------------------------------------------------------


def _bart_fill(tok, model, text: str) -> str:
    enc = tok(text, return_tensors="pt")
    out = model.generate(**enc, num_beams=4, max_new_tokens=32)
    return tok.decode(out[0], skip_special_tokens=True).strip()


def test_bart_restores_masked_span(bart):
    tok, model = bart
    assert _bart_fill(tok, model, BART_MASKED_DUCK) == DUCK_SENTENCE
    assert _bart_fill(tok, model, "the <mask> barks in the yard .") == "the dog barks in the yard ."
    assert _bart_fill(tok, model, "the duck <mask> in the park .") == DUCK_SENTENCE
    assert _bart_fill(tok, model, "the <mask> buzzes in the park .") == MULTI_PIECE_SENTENCE
    # unmasked input is reproduced
    assert _bart_fill(tok, model, "the cat meows in the field .") == "the cat meows in the field ."


# --------------------------------------------------------------------------
# broken / unusual folders
# --------------------------------------------------------------------------


def test_bert_no_head_has_no_mlm_head(tiny_models):
    path = tiny_models["bert_no_head"]
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("cls.") for k in keys)
    assert any("encoder.layer.0" in k for k in keys)

    _model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    missing = set(info["missing_keys"])
    assert any(k.startswith("cls.predictions") for k in missing)
    assert "cls.predictions.transform.dense.weight" in missing

    encoder = AutoModel.from_pretrained(path)
    assert type(encoder).__name__ == "BertModel"
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.mask_token == "[MASK]"


def test_bert_no_head_shares_the_trained_encoder(tiny_models):
    with safe_open(str(tiny_models["bert"] / "model.safetensors"), "pt") as f:
        mlm = f.get_tensor("bert.embeddings.word_embeddings.weight")
    with safe_open(str(tiny_models["bert_no_head"] / "model.safetensors"), "pt") as f:
        bare = f.get_tensor("embeddings.word_embeddings.weight")
    assert torch.equal(mlm, bare)


def test_no_weights_folder(tiny_models):
    path = tiny_models["no_weights"]
    assert (path / "config.json").is_file()
    assert not list(path.glob("*.safetensors")) and not list(path.glob("*.bin"))
    AutoConfig.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(path)


def test_corrupt_weights_folder(tiny_models):
    good = tiny_models["gpt"] / "model.safetensors"
    bad = tiny_models["corrupt_weights"] / "model.safetensors"
    assert bad.stat().st_size == good.stat().st_size // 2
    AutoConfig.from_pretrained(tiny_models["corrupt_weights"])
    AutoTokenizer.from_pretrained(tiny_models["corrupt_weights"])
    # transformers 5.x lets safetensors' own error through (not an OSError)
    with pytest.raises((SafetensorError, OSError)):
        AutoModelForCausalLM.from_pretrained(tiny_models["corrupt_weights"])


def test_mismatched_tokenizer_folder(tiny_models):
    path = tiny_models["mismatched_tokenizer"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size < len(tok)
    assert model.get_input_embeddings().weight.shape[0] == model.config.vocab_size
    ids = tok(DUCK_SENTENCE)["input_ids"]
    assert max(ids) >= model.config.vocab_size  # would index out of range
