"""The fast generation paths give the numbers of the slow, obvious ones (issue 6: speed never changes results).

One stream is decoded by gbcli's own loop (and, for GPT-2, a written-out decoding step) instead of
`model.generate`; these tests hold that loop to `generate`'s tokens and to a direct model computation of the
log-probabilities, on the tiny fixtures and on a tiny random Llama (the path any other causal LM takes).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import replace

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from gbcli.lm.fast import threads
from gbcli.lm.fast.decoding_loop import MODEL_STEPS, ModelDecoder, decoder_for, decodes_in_own_loop
from gbcli.lm.fast.gpt2_step import GPT2_DECODER, RELAYOUT_MIN_TOKENS, _BlockedProduct, _RowBlocks, gpt2_decoder
from gbcli.loading.capability import FastPath
from gbcli.loading.models import LoadOptions, load_model
from gbcli.tasks.decoding_options import DecodingSettings, settings_from_options
from gbcli.tasks.generation.causal import generate_causal
from gbcli.tasks.generation.masked import _mask_logits
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, GPT_PROMPT
from tests.helpers_reference import prompt_after_bos

SAMPLING_CASES = [
    {"seed": 3},
    {"seed": 4, "temperature": 0.7, "top_k": 20, "top_p": 0.9},
    {"seed": 5, "repetition_penalty": 1.3},
]


pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat]


def require(*paths: FastPath) -> None:
    """Skip a test of a fast path itself where this transformers turns it off (the public path then runs, and the
    tests of the numbers hold it to `generate`)."""
    for path in paths:
        if not path.on:
            pytest.skip(f"{path.name} is off on this transformers: {path.reason}")


@pytest.fixture(scope="module")
def gpt(gpt_path):
    return load_model("gpt", str(gpt_path), LoadOptions(device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def llama(gpt_path, tmp_path_factory):
    """A tiny random Llama with the fixture's tokenizer: a causal LM that is not GPT-2."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(gpt_path))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model("gpt", str(folder), LoadOptions(device="cpu", dtype="float32"))


def _reference(lm, settings: DecodingSettings) -> list[int]:
    """What `model.generate` produces for the same prompt and settings."""
    prompt = torch.tensor([prompt_after_bos(lm.tokenizer, GPT_PROMPT)])
    ids = {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)}
    kwargs = {
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": lm.tokenizer.eos_token_id,
        "repetition_penalty": settings.repetition_penalty,
    }
    if settings.mode == "sample":
        kwargs.update(do_sample=True, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        torch.manual_seed(settings.seed)
    else:
        kwargs.update(do_sample=False)
    with torch.inference_mode():
        return lm.model.generate(**ids, **kwargs)[0, ids["input_ids"].shape[1] :].tolist()


def _produced(result) -> list[int]:
    return [token.id for token in result.continuations[0].tokens]


def _own_gpt2_decoder(lm, new_tokens: int):
    """A GPT-2 decoder of its own (the loaded model keeps one), re-laid-out when `new_tokens` asks for it."""
    return gpt2_decoder(replace(lm, extras={}), new_tokens)


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_own_loop_greedy_equals_model_generate(family, request):
    lm = request.getfixturevalue(family)
    settings = settings_from_options(max_new_tokens=30, greedy=True)
    # Where this transformers turns the step off, `generate` itself runs: the tokens must still be its own.
    assert decodes_in_own_loop(lm, settings) == (GPT2_DECODER if family == "gpt" else MODEL_STEPS).on
    assert _produced(generate_causal(lm, GPT_PROMPT, settings)) == _reference(lm, settings)


@pytest.mark.parametrize("family", ["gpt", "llama"])
@pytest.mark.parametrize("options", SAMPLING_CASES, ids=["plain", "warped", "repetition-penalty"])
def test_own_loop_sample_equals_model_generate_with_the_same_seed(family, options, request):
    lm = request.getfixturevalue(family)
    settings = settings_from_options(max_new_tokens=30, **options)
    produced = _produced(generate_causal(lm, GPT_PROMPT, settings))
    assert produced == _reference(lm, settings)
    assert produced == _produced(generate_causal(lm, GPT_PROMPT, settings))


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_logprobs_read_while_decoding_equal_a_teacher_forced_pass(family, request):
    lm = request.getfixturevalue(family)
    settings = settings_from_options(max_new_tokens=30, seed=11)
    result = generate_causal(lm, GPT_PROMPT, settings)
    prompt_ids = prompt_after_bos(lm.tokenizer, GPT_PROMPT)
    ids = torch.tensor([prompt_ids + _produced(result)])
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
    for offset, token in enumerate(result.continuations[0].tokens):
        assert token.logprob == pytest.approx(logprobs[len(prompt_ids) + offset - 1, token.id].item(), abs=1e-5)


def test_gpt2_step_is_the_models_own_forward_bit_for_bit(gpt):
    """The written-out GPT-2 step, read through the model's own output layer, equals `model(...)` exactly."""
    require(GPT2_DECODER, MODEL_STEPS)
    assert decoder_for(gpt, 12) is gpt2_decoder(gpt, 12) is not None
    ids = gpt.tokenizer(GPT_PROMPT, return_tensors="pt")["input_ids"]
    capacity = ids.shape[1] + 12
    written_out = _own_gpt2_decoder(gpt, 12)  # the model's lm_head layout: no re-ordered sums anywhere
    fast = _own_gpt2_decoder(gpt, RELAYOUT_MIN_TOKENS)
    model = ModelDecoder(gpt.model)
    with torch.inference_mode():
        ours, fast_logits, theirs = (
            written_out.start(ids, capacity),
            fast.start(ids, capacity),
            model.start(ids, capacity),
        )
        assert fast.head_t is not None and written_out.head_t is None
        for position in range(ids.shape[1], capacity):
            assert torch.equal(ours, theirs)
            # The re-laid-out output projection changes the order of the sums only.
            torch.testing.assert_close(fast_logits, theirs, rtol=0, atol=1e-5)
            token = theirs.argmax(-1, keepdim=True)
            ours, fast_logits, theirs = (
                written_out.step(token, position),
                fast.step(token, position),
                model.step(token, position),
            )


def test_streaming_hands_over_the_text_so_far_after_every_token(gpt):
    settings = settings_from_options(max_new_tokens=10, seed=2)
    seen: list[tuple[str, str]] = []
    result = generate_causal(
        gpt, GPT_PROMPT, settings, on_token=lambda family, text, sequence: seen.append((family, text))
    )
    assert len(seen) == len(result.continuations[0].tokens)
    assert {family for family, _ in seen} == {"gpt"}
    assert seen[-1][1] == result.continuations[0].text
    texts = [text for _, text in seen]
    assert all(later.startswith(earlier.rstrip()) for earlier, later in itertools.pairwise(texts))


def test_beams_and_several_sequences_stay_on_model_generate(gpt):
    for options in ({"num_beams": 3}, {"num_return_sequences": 2, "seed": 1}):
        settings = settings_from_options(max_new_tokens=5, **options)
        assert not decodes_in_own_loop(gpt, settings)


def test_a_generation_config_with_extra_rules_stays_on_model_generate(llama):
    settings = settings_from_options(max_new_tokens=5, greedy=True)
    llama.model.generation_config.no_repeat_ngram_size = 2
    try:
        assert not decodes_in_own_loop(llama, settings)
        assert _produced(generate_causal(llama, GPT_PROMPT, settings)) == _reference(llama, settings)
    finally:
        llama.model.generation_config.no_repeat_ngram_size = None


def test_decoding_gives_the_caller_its_thread_setting_back(gpt, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: 63.0)  # a very busy machine
    try:
        assert threads.step_threads(2) == 1
        generate_causal(gpt, GPT_PROMPT, settings_from_options(max_new_tokens=12, greedy=True))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_step_threads_tries_each_count_then_keeps_the_fastest(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: 0.0)
    chooser = threads.StepThreads(2)
    assert chooser.candidates == [2, 1]
    seconds = {2: 0.010, 1: 0.025}  # two threads decode faster
    tried = []
    for _ in range(threads.StepThreads.PROBE_STEPS * 2):
        count = chooser.next()
        tried.append(count)
        chooser.record(count, seconds[count])
    assert sorted(tried) == [1, 1, 1, 2, 2, 2]
    assert [chooser.next() for _ in range(10)] == [2] * 10
    # The machine gets busy: two threads now stall. The next probe round notices and one thread takes over.
    seconds = {2: 0.270, 1: 0.026}
    picked = []
    for _ in range(threads.StepThreads.PROBE_EVERY * 2):
        count = chooser.next()
        chooser.record(count, seconds[count])
        picked.append(count)
    assert picked[-10:] == [1] * 10


def test_step_threads_keeps_an_explicit_or_single_thread_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.StepThreads(2).candidates == [2]
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.StepThreads(1).candidates == [1]


def test_gpt2_steps_give_the_same_numbers_on_one_thread_or_two(gpt):
    """The thread count a step runs on does not change its numbers beyond the last bits: the caller's setting
    (`parts`) stays, a step on one thread runs the model's own products, and torch's attention kernel divides its
    sums by thread count (in `model.generate` as well): summation order only, well under 1e-5, the same argmax."""
    require(GPT2_DECODER)
    ids = gpt.tokenizer(GPT_PROMPT, return_tensors="pt")["input_ids"]
    capacity = ids.shape[1] + 8
    torch.set_num_threads(2)
    try:
        decoder = _own_gpt2_decoder(gpt, RELAYOUT_MIN_TOKENS)
        runs = []
        for counts in ([2] * 8, [1] * 8, [1, 2] * 4):
            with torch.inference_mode():
                torch.set_num_threads(2)
                logits = [decoder.start(ids, capacity)]
                token = logits[0].argmax(-1, keepdim=True)
                for position, count in zip(range(ids.shape[1], capacity), counts, strict=False):
                    torch.set_num_threads(count)
                    logits.append(decoder.step(token, position))
                    token = logits[-1].argmax(-1, keepdim=True)
            assert decoder.parts == 2
            runs.append(torch.cat(logits))
        for other in runs[1:]:
            torch.testing.assert_close(other, runs[0], rtol=0, atol=1e-5)
            assert torch.equal(other.argmax(-1), runs[0].argmax(-1))
    finally:
        torch.set_num_threads(1)


def test_idle_cores_or_an_explicit_thread_count_keep_the_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: 0.0)  # only ourselves
    assert threads.step_threads(8) == 8
    monkeypatch.setattr(threads, "other_busy_cores", lambda: 4.0)  # four other busy processes
    assert threads.step_threads(8) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert threads.step_threads(8) == 8


def test_bert_head_at_the_mask_alone_equals_the_full_forward(bert_path):
    bert = load_model("bert", str(bert_path), LoadOptions(device="cpu", dtype="float32"))
    assert isinstance(bert.model.get_output_embeddings(), torch.nn.Linear)  # the projection narrowed to the mask
    tok = bert.tokenizer
    ids = tok(BERT_MASKED_DUCK.replace("[MASK]", "").replace("  ", " "))["input_ids"]
    body, closing = ids[:-1], ids[-1:]
    bodies = [body, body[:1] + body[2:] + body[1:2]]  # two rows, as beam search sends
    position = len(body)
    with torch.inference_mode():
        full = bert.model(input_ids=torch.tensor([b + [tok.mask_token_id] + closing for b in bodies])).logits
    torch.testing.assert_close(_mask_logits(bert, bodies, closing), full[:, position], rtol=0, atol=1e-5)


@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("columns", [2304, 50257, 10])
@pytest.mark.parametrize("rows", [96, 97])
def test_block_products_compute_the_same_product(parts, columns, rows):
    """The threaded matrix-vector product covers every column once: in contiguous row ranges whose partial sums
    are added when the rows divide evenly (96), else in column blocks, uneven ones too (GPT-2's vocabulary)."""
    torch.manual_seed(parts * columns + rows)
    weight, bias, x = torch.randn(rows, columns), torch.randn(columns), torch.randn(1, rows)
    for with_bias in (bias, None):
        blocks = _BlockedProduct(weight, with_bias, parts)
        assert blocks.parts == parts
        assert (blocks.row_ranges is not None) == (rows % parts == 0)
        expected = torch.addmm(with_bias, x, weight) if with_bias is not None else x @ weight
        torch.testing.assert_close(blocks(x), expected, rtol=1e-6, atol=1e-5)  # summation order only


def test_half_precision_blocks_never_add_rounded_partial_sums():
    """Row ranges add partial sums: in bfloat16 each would be rounded first, so half precision takes column blocks."""
    weight = torch.randn(96, 64).to(torch.bfloat16)
    blocks = _BlockedProduct(weight, None, 2)
    assert blocks.parts == 2 and blocks.row_ranges is None
    assert _BlockedProduct(weight.float(), None, 2).row_ranges is not None


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("vocabulary", [50257, 64])
def test_row_blocks_of_the_tied_embedding_give_f_linears_logits_bit_for_bit(parts, vocabulary):
    """Without the [hidden, vocab] copy, the output projection runs over contiguous row ranges of the embedding
    as the model keeps it: every logit is F.linear's dot product, uneven ranges included."""
    torch.manual_seed(parts + vocabulary)
    weight, x = torch.randn(vocabulary, 48), torch.randn(1, 48)
    head = _RowBlocks(weight, parts)
    assert head.parts == parts
    torch.testing.assert_close(head(x), torch.nn.functional.linear(x, weight), rtol=1e-6, atol=1e-5)


def test_gpt2_step_on_two_threads_splits_its_products_and_keeps_the_models_numbers(gpt):
    """With two threads each product runs in column blocks; the logits stay the model's to 1e-5, greedy its text."""
    require(GPT2_DECODER, MODEL_STEPS)
    torch.set_num_threads(2)
    try:
        ids = gpt.tokenizer(GPT_PROMPT, return_tensors="pt")["input_ids"]
        capacity = ids.shape[1] + 12
        fast = _own_gpt2_decoder(gpt, RELAYOUT_MIN_TOKENS)
        model = ModelDecoder(gpt.model)
        with torch.inference_mode():
            fast_logits, theirs = fast.start(ids, capacity), model.start(ids, capacity)
            assert fast.parts == 2
            assert all(
                blocks.parts == 2 and blocks.row_ranges is not None
                for layer in fast._block_products()
                for blocks in layer
            )
            for position in range(ids.shape[1], capacity):
                torch.testing.assert_close(fast_logits, theirs, rtol=0, atol=1e-5)
                token = theirs.argmax(-1, keepdim=True)
                fast_logits, theirs = fast.step(token, position), model.step(token, position)
        settings = settings_from_options(max_new_tokens=30, greedy=True)
        assert _produced(generate_causal(gpt, GPT_PROMPT, settings)) == _reference(gpt, settings)
    finally:
        torch.set_num_threads(1)


def test_step_threads_never_runs_a_team_larger_than_the_free_cores(monkeypatch):
    """With one of two cores busy elsewhere, a two-thread step would wait for time slices (~10 steps' worth):
    the chooser neither uses nor probes it, and takes it back once the core is free again."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    busy = {"others": 1.0}
    monkeypatch.setattr(threads, "other_busy_cores", lambda: busy["others"])
    chooser = threads.StepThreads(2)
    assert chooser.candidates == [2, 1]
    picked = []
    for _ in range(100):
        count = chooser.next()
        chooser.record(count, 0.026 if count == 1 else 0.270)
        picked.append(count)
    assert picked == [1] * 100
    busy["others"] = 0.0  # the other work ends: two threads are probed again, and win
    picked = []
    for _ in range(threads.StepThreads.PROBE_EVERY * 2):
        count = chooser.next()
        chooser.record(count, 0.026 if count == 1 else 0.012)
        picked.append(count)
    assert chooser.fastest() == 2
    assert picked[-32:].count(1) <= 1  # one thread is now only probed now and then


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="reads Linux's run queue")
def test_other_busy_cores_sees_a_process_that_keeps_a_core_busy():
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.other_busy_cores() >= 1
    finally:
        hog.kill()
        hog.wait()


def test_the_prompt_pass_runs_on_the_free_cores_only(gpt, monkeypatch):
    """With one of two cores busy elsewhere, the prompt's batched pass (and GPT-2's head re-layout) runs on one
    thread, not on a two-thread team that would wait for time slices at every op; the caller's setting comes back."""
    require(GPT2_DECODER)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    busy = {"others": 1.0}
    monkeypatch.setattr(threads, "other_busy_cores", lambda: busy["others"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        decoder = _own_gpt2_decoder(gpt, RELAYOUT_MIN_TOKENS)
        assert decoder.parts == 2  # the caller's setting splits the products, whatever count runs them
        seen = []
        real_start = decoder.start

        def start(input_ids, capacity):
            seen.append(torch.get_num_threads())
            return real_start(input_ids, capacity)

        decoder.start = start
        ids = gpt.tokenizer(GPT_PROMPT, return_tensors="pt")["input_ids"]
        for others in (1.0, 0.0):
            busy["others"] = others
            with torch.inference_mode(), threads.on_fastest_threads(decoder) as timed:
                timed.start(ids, ids.shape[1] + 4)
        assert seen == [1, 2]
        assert decoder.head_t is not None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_count_that_keeps_losing_is_probed_less_and_less_often(monkeypatch):
    """Two threads stalled by work the looks at the run queue miss: each re-probe costs ~10 ordinary steps, so the
    wait between two re-probes doubles each time the count loses again, and resets once it wins."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "other_busy_cores", lambda: 0.0)
    chooser = threads.StepThreads(2)
    seconds = {2: 0.270, 1: 0.026}
    picked = []
    for _ in range(500):
        count = chooser.next()
        chooser.record(count, seconds[count])
        picked.append(count)
    probes = [step for step, count in enumerate(picked) if count == 2 and step >= threads.StepThreads.PROBE_STEPS * 2]
    # Re-probes at steps 32, 64, 128 and 256 (then every 256): four in 500 steps, where a fixed wait of 32 takes 15.
    assert len(probes) == 4
    assert all(later - earlier >= 32 for earlier, later in itertools.pairwise(probes))
    seconds = {2: 0.012, 1: 0.026}  # the other work ends: the next re-probes find two threads faster again
    picked = [chooser.record(count, seconds[count]) or count for count in (chooser.next() for _ in range(300))]
    assert picked[-32:].count(2) >= 31


@pytest.mark.parametrize("thread_count", [1, 2])
def test_greedy_through_the_relaid_out_head_equals_model_generate(gpt, thread_count, monkeypatch):
    """From RELAYOUT_MIN_TOKENS new tokens on, GPT-2's step reads the re-laid-out output projection (and, on two
    threads, column blocks): greedy still picks `generate`'s tokens, every one of them. (The tiny model holds 64
    tokens, fewer than RELAYOUT_MIN_TOKENS: the threshold is lowered here.)"""
    require(GPT2_DECODER)
    import gbcli.lm.fast.gpt2_step as gpt2_step

    monkeypatch.setattr(gpt2_step, "RELAYOUT_MIN_TOKENS", 24)
    before = torch.get_num_threads()
    torch.set_num_threads(thread_count)
    try:
        settings = settings_from_options(max_new_tokens=24 + 8, greedy=True)
        fresh = replace(gpt, extras={})
        produced = _produced(generate_causal(fresh, GPT_PROMPT, settings))
        assert fresh.extras["gpt2_decoder"].head_t is not None
        assert len(produced) == settings.max_new_tokens or produced[-1] == gpt.tokenizer.eos_token_id
        assert produced == _reference(gpt, settings)
    finally:
        torch.set_num_threads(before)


def test_a_step_on_one_thread_runs_the_models_own_products(gpt):
    """Two threads asked for, one running (a busy machine): the step does not run two column blocks one after the
    other (slower than the model's own `addmm`), so its logits are the model's own, bit for bit."""
    require(GPT2_DECODER, MODEL_STEPS)
    ids = gpt.tokenizer(GPT_PROMPT, return_tensors="pt")["input_ids"]
    capacity = ids.shape[1] + 6
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        decoder = _own_gpt2_decoder(gpt, 6)  # short: the model's own output layer, no re-laid-out head
        assert decoder.parts == 2
        model = ModelDecoder(gpt.model)
        torch.set_num_threads(1)
        with torch.inference_mode():
            ours, theirs = decoder.start(ids, capacity), model.start(ids, capacity)
            for position in range(ids.shape[1], capacity):
                assert torch.equal(ours, theirs)
                token = theirs.argmax(-1, keepdim=True)
                ours, theirs = decoder.step(token, position), model.step(token, position)
        assert set(decoder._blocks) == {1}
    finally:
        torch.set_num_threads(before)
