"""gbcli.lm.fast.shared_prefix: sequences that begin alike, scored with their shared prefix run once, give the full
passes' numbers, on the tiny GPT-2 and on every causal architecture of the conformance matrix; attention-free
models (no KV cache to copy) score every sequence whole."""

from __future__ import annotations

import pytest
import torch

from gbcli.lm.fast.shared_prefix import (
    caches_prefix,
    common_prefix_length,
    continuation_logprobs,
    grouped_logprobs,
    packs_continuations,
    run_prefix,
    suffix_batches,
)
from gbcli.lm.reads import causal_logprobs
from gbcli.loading.models import LoadOptions, clear_cache, load_model
from tests.fixtures.random_models import ALL, ATTENTION_FREE, CAUSAL, build

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat]

# Candidates of one blank, as the whole-sentence column writes them: the same start, suffixes of several lengths.
STEM = "the capital of france is"
ENDINGS = [" rome .", " paris .", " the duck in the park .", " a .", " rome and paris ."]
TOLERANCE = 1e-4  # nats


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    clear_cache()


def _groups(lm) -> list[list[list[int]]]:
    """Two groups of candidate sentences after the start token (the second one with a shorter shared start)."""
    tok = lm.tokenizer
    start = [lm.bos_id] if lm.bos_id is not None else []
    first = [start + tok(STEM + e, add_special_tokens=False)["input_ids"] for e in ENDINGS]
    second = [start + tok("the" + e, add_special_tokens=False)["input_ids"] for e in ENDINGS[:3]]
    return [first, second]


def _tokens_run(lm, call) -> tuple[object, int]:
    """call()'s result, and how many input tokens the model's forward passes ran (padding included)."""
    seen = []
    handle = lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    try:
        return call(), sum(seen)
    finally:
        handle.remove()


def _check_same_numbers(lm, max_rows: int) -> tuple[int, int]:
    groups = _groups(lm)
    flat = [s for g in groups for s in g]
    full, full_tokens = _tokens_run(lm, lambda: causal_logprobs(lm, flat, [1] * len(flat))[0])
    grouped, grouped_tokens = _tokens_run(lm, lambda: grouped_logprobs(lm, groups, 1, max_rows=max_rows))
    got = [s for g in grouped for s in g]
    assert [len(s) for s in got] == [len(s) - 1 for s in flat]
    for want, have in zip(full, got, strict=True):
        assert max(abs(a - b) for a, b in zip(want, have, strict=True)) < TOLERANCE
    return full_tokens, grouped_tokens


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2, 3, 5]]) == 2
    assert common_prefix_length([[1, 2], [1, 2, 3]]) == 2
    assert common_prefix_length([[7, 2], [1, 2]]) == 0


@pytest.mark.parametrize("max_rows", [None, 2])
def test_tiny_gpt2_shared_prefix_matches_the_model_and_runs_it_once(gpt_path, max_rows):
    lm = load_model("gpt", str(gpt_path), LoadOptions(device="cpu"))
    full_tokens, grouped_tokens = _check_same_numbers(lm, max_rows)
    assert caches_prefix(lm) is True
    assert grouped_tokens < full_tokens  # the shared starts ran once per group, not once per sentence
    # And against a direct teacher-forced pass of the model itself, sentence by sentence.
    groups = _groups(lm)
    for group, scores in zip(groups, grouped_logprobs(lm, groups, 1, max_rows=max_rows), strict=True):
        for ids, have in zip(group, scores, strict=True):
            with torch.no_grad():
                table = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), dim=-1)
            want = [float(table[i - 1, ids[i]]) for i in range(1, len(ids))]
            assert max(abs(a - b) for a, b in zip(want, have, strict=True)) < TOLERANCE


@pytest.mark.parametrize("name", [a.name for a in CAUSAL])
def test_every_cached_architecture_gives_the_full_pass_numbers(name, tiny_models, tmp_path):
    lm = load_model(
        "gpt", str(build(name, tmp_path / name, tiny_models[ALL[name].tokenizer])), LoadOptions(device="cpu")
    )
    full_tokens, grouped_tokens = _check_same_numbers(lm, 2)
    assert caches_prefix(lm) is True
    assert grouped_tokens < full_tokens
    clear_cache()


@pytest.mark.parametrize("name", [a.name for a in ATTENTION_FREE])
def test_attention_free_models_score_every_sequence_whole(name, tiny_models, tmp_path):
    lm = load_model(
        "gpt", str(build(name, tmp_path / name, tiny_models[ALL[name].tokenizer])), LoadOptions(device="cpu")
    )
    _check_same_numbers(lm, 2)
    assert caches_prefix(lm) is False
    clear_cache()


def test_suffix_batches_cut_where_padding_costs_more_than_a_pass():
    lengths = [2] * 25 + [3, 5, 2, 4]
    batches = suffix_batches(lengths, None)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert [max(lengths[i] for i in b) for b in batches] == [2, 5]  # 25 rows of 2, then 4 rows of 3 to 5
    assert all(len(b) <= 10 for b in suffix_batches(lengths, 10))
    assert suffix_batches([4, 4, 4], None) == [[0, 1, 2]]


def test_one_texts_fill_mask_runs_its_context_once_for_both_gpt_columns(gpt_path, bert_path):
    """The left column's pass over "<|endoftext|> the capital of france is" is the one the whole-sentence
    ranking starts from: GPT-2 sees that context once, and every number is still the model's own."""
    from gbcli.tasks.masking.pipeline import fill_mask

    gpt = load_model("gpt", str(gpt_path), LoadOptions(device="cpu"))
    bert = load_model("bert", str(bert_path), LoadOptions(device="cpu"))
    text = STEM + " [MASK] ."
    context = [gpt.bos_id] + gpt.tokenizer(STEM, add_special_tokens=False)["input_ids"]
    seen: list[list[int]] = []
    handle = gpt.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(kwargs["input_ids"].tolist()), with_kwargs=True
    )
    try:
        slot = fill_mask({"gpt": gpt, "bert": bert}, text, 3, ["rome"]).masks[0]
    finally:
        handle.remove()
    assert sum(row[: len(context)] == context for row in seen) == 1
    with torch.no_grad():
        table = torch.log_softmax(gpt.model(torch.tensor([context])).logits[0, -1].float(), dim=-1)
    for prediction in slot.gpt_left.predictions + slot.gpt_left.targets:
        assert abs(prediction.logprob - float(table[prediction.token_ids[0]])) < TOLERANCE
    for prediction in slot.gpt_whole.predictions:
        written = STEM + ("" if prediction.joins_previous else " ") + prediction.word + " ."
        sentence = [gpt.bos_id] + gpt.tokenizer(written, add_special_tokens=False)["input_ids"]
        assert abs(prediction.sentence_logprob - sum(causal_logprobs(gpt, [sentence], [1])[0][0])) < TOLERANCE


@pytest.mark.parametrize("packed", [True, False])
def test_a_continuations_last_token_is_read_but_never_run(gpt_path, packed, monkeypatch):
    """Only the tokens whose next-token prediction is read run against the prefix's cache: a suffix's last token
    is a target only, and a one-token suffix runs nothing. GPT-2 runs them all packed in one row, one pass; a
    model that cannot runs them as padded rows, one token narrower than the longest suffix."""
    import gbcli.lm.fast.shared_prefix as prefix_module

    if not packed:
        monkeypatch.setattr(prefix_module, "PACKED_MODEL_TYPES", frozenset())
    lm = load_model("gpt", str(gpt_path), LoadOptions(device="cpu"))
    tok = lm.tokenizer
    context = [lm.bos_id] + tok(STEM, add_special_tokens=False)["input_ids"]
    prefix = run_prefix(lm, context, 1)
    endings = [" rome", " the big park .", " a duck .", " rome ."]
    sequences = [context + tok(e, add_special_tokens=False)["input_ids"] for e in endings]
    shapes: list[tuple[int, int]] = []
    handle = lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        got = continuation_logprobs(lm, prefix, sequences)
    finally:
        handle.remove()
    suffix_lengths = [len(s) - len(context) for s in sequences]
    assert suffix_lengths[0] == 1
    if packed:
        assert shapes == [(1, sum(length - 1 for length in suffix_lengths))]
    else:
        assert max(width for _, width in shapes) == max(suffix_lengths) - 1
        assert sum(rows for rows, _ in shapes) == len(sequences) - 1
    full, _ = causal_logprobs(lm, sequences, [len(context)] * len(sequences))
    for want, have in zip(full, got, strict=True):
        assert max(abs(a - b) for a, b in zip(want, have, strict=True)) < TOLERANCE


@pytest.mark.parametrize("name", [a.name for a in CAUSAL])
def test_continuations_run_packed_where_the_architecture_allows(name, tiny_models, tmp_path):
    """Packed continuations need explicit positions and a mask taken as given: not a sliding window shorter than
    the text (the fixture's Mistral and Gemma 2), ALiBi or GPT-Neo's local attention."""
    lm = load_model(
        "gpt", str(build(name, tmp_path / name, tiny_models[ALL[name].tokenizer])), LoadOptions(device="cpu")
    )
    unpacked = {"gpt-neo", "falcon-alibi", "bloom", "mistral", "gemma2"}
    assert packs_continuations(lm, 16) == (name not in unpacked)
    clear_cache()
