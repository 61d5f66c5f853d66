"""Truth across architectures: every model gbcli accepts gives its own numbers, or is refused in one sentence.

A conformance matrix over small random checkpoints (tests/fixtures/random_models.py) of every architecture the
README names: each command's numbers, read through the real CLI in-process, against an independent computation
with transformers on a fresh copy of the same checkpoint (`model.generate`, a teacher-forced forward pass, the
fill-mask pipeline, eager `output_attentions`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    pipeline,
)

from gbcli.loading.models import clear_cache
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.random_models import ALL, ATTENTION_FREE, CAUSAL, MASKED, REFUSED, SEQ2SEQ, build
from tests.fixtures.tiny_models import DUCK_SENTENCE, GPT_PROMPT
from tests.helpers_reference import prompt_after_bos

MASKED_SENTENCE = "the [MASK] quacks in the park ."
LEFT_CONTEXT_SENTENCE = "the capital of [MASK] is rome ."
NEW_TOKENS = 8
TOP_K = 5
CAUSAL_NAMES = [a.name for a in CAUSAL]
GENERATING_NAMES = CAUSAL_NAMES + [a.name for a in ATTENTION_FREE]
MASKED_NAMES = [a.name for a in MASKED]
LOADERS = {"gpt": AutoModelForCausalLM, "bert": AutoModelForMaskedLM, "bart": AutoModelForSeq2SeqLM}

pytestmark = pytest.mark.compat  # .ci/run runs this module on the minimum versions too


@pytest.fixture(scope="module", autouse=True)
def one_thread(single_torch_thread):
    yield
    clear_cache()  # the matrix's models are of no use to other modules
    reference.cache_clear()


@pytest.fixture(scope="module")
def folder(tiny_models, tmp_path_factory):
    """name → the folder of that architecture's random checkpoint, built on first use."""
    root = tmp_path_factory.mktemp("architectures")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(name, root / name, tiny_models[ALL[name].tokenizer])
        return built[name]

    return get


@functools.cache
def reference(path: Path, family: str, attn: str | None = None):
    """A fresh copy of the checkpoint, loaded by transformers alone (once per module), with its tokenizer."""
    extra = {"attn_implementation": attn} if attn else {}
    return AutoTokenizer.from_pretrained(path), LOADERS[family].from_pretrained(path, **extra).eval()


def gbcli_args(name: str, path: Path) -> list[str]:
    family = ALL[name].family
    return ["--models", family, f"--{family}", str(path), "--device", "cpu"]


def _column(doc: dict) -> dict:
    (column,) = doc["columns"]
    return column


def teacher_forced(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) as a [len(ids), vocab] table of every position's next-token log-probabilities."""
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


# --------------------------------------------------------------------------------------------------------------
# Causal LMs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GENERATING_NAMES)
def test_greedy_generation_is_model_generate_with_teacher_forced_logprobs(name, folder):
    path = folder(name)
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", str(NEW_TOKENS), *gbcli_args(name, path))
    (continuation,) = _column(doc)["continuations"]
    tokenizer, model = reference(path, "gpt")
    prompt_ids = prompt_after_bos(tokenizer, GPT_PROMPT)  # as every gbcli command reads a causal LM's text
    prompt = torch.tensor([prompt_ids])
    with torch.no_grad():
        expected = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            pad_token_id=model.generation_config.pad_token_id,
        )
    new_ids = expected[0, len(prompt_ids) :].tolist()
    produced = [t["id"] for t in continuation["tokens"]]
    assert produced == new_ids
    table = teacher_forced(model, prompt_ids + produced)
    for offset, token in enumerate(continuation["tokens"]):
        assert token["logprob"] == pytest.approx(table[len(prompt_ids) + offset - 1, token["id"]].item(), abs=2e-5)


@pytest.mark.parametrize("name", GENERATING_NAMES)
def test_score_is_the_chain_rule_log_likelihood(name, folder):
    path = folder(name)
    (record,) = [run_json("score", DUCK_SENTENCE, "--tokens", *gbcli_args(name, path))]
    column = _column(record)
    tokenizer, model = reference(path, "gpt")
    ids = tokenizer(DUCK_SENTENCE, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sequence = ([bos] if bos is not None else []) + ids
    table = teacher_forced(model, sequence)
    expected = [table[t - 1, sequence[t]].item() for t in range(1, len(sequence))]
    scored = [t["logprob"] for t in column["tokens"] if t["logprob"] is not None]
    assert [t["id"] for t in column["tokens"]] == ids
    assert scored == pytest.approx(expected, abs=2e-5)
    assert column["log_likelihood"] == pytest.approx(sum(expected), abs=1e-4)
    assert column["value"] == pytest.approx(math.exp(-sum(expected) / len(expected)), rel=1e-4)


@pytest.mark.parametrize("name", GENERATING_NAMES)
def test_fill_mask_left_context_is_the_next_token_distribution(name, folder):
    path = folder(name)
    doc = run_json("fill-mask", LEFT_CONTEXT_SENTENCE, "--top-k", str(TOP_K), *gbcli_args(name, path))
    (slot,) = doc["masks"]
    tokenizer, model = reference(path, "gpt")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = ([bos] if bos is not None else []) + tokenizer("the capital of", add_special_tokens=False)["input_ids"]
    top = teacher_forced(model, ids)[-1].topk(TOP_K)
    predictions = slot["gpt_left"]["predictions"]
    assert [p["token_ids"][0] for p in predictions] == top.indices.tolist()
    assert [p["logprob"] for p in predictions] == pytest.approx(top.values.tolist(), abs=2e-5)


@pytest.mark.parametrize("name", CAUSAL_NAMES)
def test_attention_is_the_models_own_eager_weights_and_causal(name, folder, tmp_path):
    path = folder(name)
    target = tmp_path / "attention.npz"
    doc = run_json("attention", DUCK_SENTENCE, "--export", str(target), *gbcli_args(name, path))
    (view,) = doc["models"]
    tokenizer, model = reference(path, "gpt", attn="eager")
    ids = tokenizer(DUCK_SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.stack([a[0] for a in model(input_ids=ids, output_attentions=True).attentions]).numpy()
    exported = np.load(target)["gpt_attention"]
    np.testing.assert_allclose(exported, expected, atol=1e-6)
    np.testing.assert_allclose(view["matrix"], expected[-1].mean(axis=0), atol=1e-6)
    assert view["causal"] is True
    above = np.triu(np.ones(exported.shape[-2:], dtype=bool), k=1)
    assert np.all(exported[..., above] == 0.0)


@pytest.mark.parametrize("name", [a.name for a in ATTENTION_FREE])
def test_attention_free_models_are_refused_by_attention_and_nothing_else(name, folder):
    path = folder(name)
    assert_user_error(
        run("attention", DUCK_SENTENCE, *gbcli_args(name, path)),
        2,
        "this model has no attention",
        ALL[name].model_class,
    )


def test_compare_leaves_an_attention_free_model_out_of_the_attention_section(folder, tiny_models):
    doc = run_json(
        "compare", MASKED_SENTENCE, "--gpt", str(folder("mamba")), "--bert", str(tiny_models["bert"]), "--device", "cpu"
    )
    assert [line["family"] for line in doc["attention"]] == ["bert"]
    assert [column["family"] for column in doc["scores"]["columns"]] == ["gpt", "bert"]


@pytest.mark.parametrize("name", [a.name for a in REFUSED])
@pytest.mark.parametrize("command", ["generate", "score", "attention"])
def test_architectures_that_are_not_left_to_right_are_refused_by_name(name, command, folder):
    path = folder(name)
    assert_user_error(
        run(command, GPT_PROMPT, *gbcli_args(name, path)), 2, ALL[name].model_class, "not a left-to-right causal LM"
    )


# --------------------------------------------------------------------------------------------------------------
# Masked LMs
# --------------------------------------------------------------------------------------------------------------


def _masked_text(tokenizer, text: str) -> str:
    return text.replace("[MASK]", tokenizer.mask_token)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_fill_mask_equals_the_fill_mask_pipeline(name, folder):
    path = folder(name)
    doc = run_json("fill-mask", MASKED_SENTENCE, "--top-k", str(TOP_K), *gbcli_args(name, path))
    (slot,) = doc["masks"]
    tokenizer, model = reference(path, "bert")
    expected = pipeline("fill-mask", model=model, tokenizer=tokenizer, device="cpu", top_k=TOP_K)(
        _masked_text(tokenizer, MASKED_SENTENCE)
    )
    predictions = slot["bert"]["predictions"]
    assert [p["token_ids"][0] for p in predictions] == [e["token"] for e in expected]
    assert [p["prob"] for p in predictions] == pytest.approx([e["score"] for e in expected], abs=1e-6)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_pseudo_log_likelihood_equals_the_one_copy_per_pass_loop(name, folder):
    path = folder(name)
    column = _column(run_json("score", DUCK_SENTENCE, "--tokens", *gbcli_args(name, path)))
    tokenizer, model = reference(path, "bert")
    ids = tokenizer(DUCK_SENTENCE)["input_ids"]
    expected = []
    for i in range(1, len(ids) - 1):  # every token but the [CLS] and [SEP] the tokenizer added
        copy = list(ids)
        copy[i] = tokenizer.mask_token_id
        expected.append(teacher_forced(model, copy)[i, ids[i]].item())
    assert [t["logprob"] for t in column["tokens"]] == pytest.approx(expected, abs=2e-5)
    assert column["log_likelihood"] == pytest.approx(sum(expected), abs=1e-4)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_masked_generation_is_greedy_iterative_mask_filling(name, folder):
    path = folder(name)
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "4", *gbcli_args(name, path))
    (continuation,) = _column(doc)["continuations"]
    tokenizer, model = reference(path, "bert")
    ids = tokenizer(GPT_PROMPT)["input_ids"]
    body, closing = ids[:-1], ids[-1:]
    specials = set(tokenizer.all_special_ids)
    expected_ids, expected_logprobs = [], []
    for _ in range(4):  # append a mask before the closing token, take its best non-special token, repeat
        table = teacher_forced(model, body + [tokenizer.mask_token_id] + closing)[len(body)]
        ranked = [t for t in table.argsort(descending=True).tolist() if t not in specials]
        body.append(ranked[0])
        expected_ids.append(ranked[0])
        expected_logprobs.append(table[ranked[0]].item())
    assert [t["id"] for t in continuation["tokens"]] == expected_ids
    assert [t["logprob"] for t in continuation["tokens"]] == pytest.approx(expected_logprobs, abs=2e-5)


@pytest.mark.parametrize("name", MASKED_NAMES)
def test_masked_attention_is_the_models_own_eager_weights(name, folder, tmp_path):
    path = folder(name)
    target = tmp_path / "attention.npz"
    doc = run_json("attention", DUCK_SENTENCE, "--export", str(target), *gbcli_args(name, path))
    (view,) = doc["models"]
    tokenizer, model = reference(path, "bert", attn="eager")
    ids = tokenizer(DUCK_SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.stack([a[0] for a in model(input_ids=ids, output_attentions=True).attentions]).numpy()
    np.testing.assert_allclose(np.load(target)["bert_attention"], expected, atol=1e-6)
    assert view["causal"] is False


# --------------------------------------------------------------------------------------------------------------
# Encoder-decoders
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [a.name for a in SEQ2SEQ])
def test_seq2seq_score_and_attention_are_the_models_own(name, folder, tmp_path):
    path = folder(name)
    column = _column(run_json("score", DUCK_SENTENCE, "--tokens", *gbcli_args(name, path)))
    tokenizer, model = reference(path, "bart", attn="eager")
    ids = tokenizer(DUCK_SENTENCE)["input_ids"]
    decoder_ids = [model.config.decoder_start_token_id, *ids]
    with torch.no_grad():
        output = model(
            input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([decoder_ids[:-1]]), output_attentions=True
        )
    table = torch.log_softmax(output.logits[0], -1)
    expected = [table[t, ids[t]].item() for t in range(len(ids))]
    assert [t["logprob"] for t in column["tokens"]] == pytest.approx(expected, abs=2e-5)

    target = tmp_path / "attention.npz"
    run_json("attention", DUCK_SENTENCE, "--export", str(target), *gbcli_args(name, path))
    exported = np.load(target)
    for part, key in (
        ("encoder", "bart_attention"),
        ("decoder", "bart_decoder_attention"),
        ("cross", "bart_cross_attention"),
    ):
        expected_map = torch.stack([a[0] for a in getattr(output, f"{part}_attentions")]).numpy()
        np.testing.assert_allclose(exported[key], expected_map, atol=1e-6)


@pytest.mark.parametrize("name", [a.name for a in SEQ2SEQ])
def test_seq2seq_greedy_generation_is_model_generate(name, folder):
    path = folder(name)
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", str(NEW_TOKENS), *gbcli_args(name, path))
    (continuation,) = _column(doc)["continuations"]
    tokenizer, model = reference(path, "bart")
    # The encoder reads "prompt <mask>"; the decoder starts from its start token, <s> and the prompt.
    source = tokenizer(GPT_PROMPT + " " + tokenizer.mask_token, return_tensors="pt")
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
            max_new_tokens=NEW_TOKENS,
            no_repeat_ngram_size=0,
        )[0, len(prefix) :].tolist()
    if tokenizer.eos_token_id in expected:
        expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
    assert [t["id"] for t in continuation["tokens"]] == expected
    with torch.no_grad():
        logits = model(**source, decoder_input_ids=torch.tensor([prefix + expected])).logits[0]
    table = torch.log_softmax(logits, -1)
    for offset, token in enumerate(continuation["tokens"]):
        assert token["logprob"] == pytest.approx(table[len(prefix) + offset - 1, token["id"]].item(), abs=2e-5)


# --------------------------------------------------------------------------------------------------------------
# Labels checked against numbers
# --------------------------------------------------------------------------------------------------------------


def test_a_causal_map_with_weight_on_future_keys_is_refused_not_shown(folder, monkeypatch):
    """A causal model whose attention weights reach future keys (Falcon's sdpa path with output_attentions did, before
    transformers 5.25 let Falcon switch to eager at run time) must be refused by the check on the map's labels, never
    drawn as a causal triangle. The leak is made explicit here, so the check is tested on every transformers."""
    import contextlib

    import torch

    from gbcli.tasks.attention import maps

    eager_attention = maps.eager_attention

    @contextlib.contextmanager
    def leaking_attention(model):
        with eager_attention(model) as eager:

            class Leaking:
                def base_model(self, **inputs):
                    output = eager.base_model(**inputs)
                    # Rows still sum to 1, so only the causal check can catch the leak.
                    output.attentions = tuple(torch.full_like(a, 1 / a.shape[-1]) for a in output.attentions)
                    return output

            yield Leaking()

    path = folder("falcon")
    monkeypatch.setattr(maps, "eager_attention", leaking_attention)
    clear_cache()
    try:
        result = run("attention", DUCK_SENTENCE, *gbcli_args("falcon", path))
    finally:
        clear_cache()
    assert_user_error(result, 1, "FalconForCausalLM", "future keys", "will not show")


def test_the_eager_twin_runs_on_the_models_own_tensors(folder):
    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.attention import eager_twin

    lm = load_model("gpt", str(folder("falcon")), LoadOptions(device="cpu"), need_head=False)
    twin = eager_twin(lm.model)
    assert twin.config._attn_implementation == "eager" and lm.model.config._attn_implementation == "sdpa"
    originals = lm.model.state_dict()
    shared = twin.state_dict()
    assert shared.keys() == originals.keys()
    assert all(tensor.data_ptr() == originals[name].data_ptr() for name, tensor in shared.items())


# --------------------------------------------------------------------------------------------------------------
# A vocabulary padded past the tokenizer
# --------------------------------------------------------------------------------------------------------------

PADDED_ROWS = 100


@pytest.fixture(scope="module")
def padded(tiny_models, tmp_path_factory) -> Path:
    """A GPT-J whose embedding matrix has 100 rows more than its tokenizer has tokens (as checkpoints padded to a
    multiple of 64 have), with an output bias that makes those rows the most likely next tokens everywhere."""
    path = build("gpt-j", tmp_path_factory.mktemp("padded") / "padded", tiny_models["gpt"], extra_rows=PADDED_ROWS)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.bias[len(tokenizer) :] = 20.0
    model.save_pretrained(path)
    return path


def test_padded_rows_are_shown_as_ids_and_never_put_in_a_sentence(padded):
    doc = run_json("fill-mask", LEFT_CONTEXT_SENTENCE, "--models", "gpt", "--gpt", str(padded))
    (slot,) = doc["masks"]
    tokenizer, model = reference(padded, "gpt")
    ids = [tokenizer.bos_token_id] + tokenizer("the capital of", add_special_tokens=False)["input_ids"]
    top = teacher_forced(model, ids)[-1].topk(TOP_K)
    left = slot["gpt_left"]["predictions"]
    assert [p["token_ids"][0] for p in left] == top.indices.tolist()
    assert [p["logprob"] for p in left] == pytest.approx(top.values.tolist(), abs=2e-5)
    assert all(p["undecodable"] and p["word"] == f"<id {p['token_ids'][0]}>" for p in left)
    whole = slot["gpt_whole"]["predictions"]
    assert whole and all(t < len(tokenizer) for p in whole for t in p["token_ids"])
    assert any("cannot be written as text" in w for w in doc["warnings"])
    assert all("<id" not in f["text"] for f in doc["fillings"])


def test_generated_padded_rows_show_their_ids(padded):
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "3", "--models", "gpt", "--gpt", str(padded))
    (continuation,) = _column(doc)["continuations"]
    tokenizer, model = reference(padded, "gpt")
    prompt = torch.tensor([prompt_after_bos(tokenizer, GPT_PROMPT)])
    expected = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=3)[
        0, prompt.shape[1] :
    ].tolist()
    assert [t["id"] for t in continuation["tokens"]] == expected
    assert all(t >= len(tokenizer) for t in expected)
    assert [t["piece"] for t in continuation["tokens"]] == [f"<id {t}>" for t in expected]
    assert continuation["text"] == "".join(f"<id {t}>" for t in expected)
