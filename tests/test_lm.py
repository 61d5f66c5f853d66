"""The model-primitives layer (gbcli.lm) and the facts LoadedModel states: checked against direct model calls."""

from __future__ import annotations

import pytest
import torch

from gbcli.errors import GbcliError
from gbcli.lm.batching import cut_batches, padded_batches
from gbcli.lm.heads import logits_at, model_inputs
from gbcli.lm.reads import Reads, causal_logprobs, run_reads
from gbcli.lm.teacher_forcing import teacher_forced_logprobs
from gbcli.loading.models import LoadOptions, load_model
from tests.fixtures.tiny_models import MAX_POSITIONS

SENTENCES = ["the duck quacks in the park .", "a cat .", "the dog barks at the duck in the big park ."]


@pytest.fixture(scope="module")
def gpt_lm(gpt_path):
    return load_model("gpt", str(gpt_path), LoadOptions(device="cpu"))


@pytest.fixture(scope="module")
def bert_lm(bert_path):
    return load_model("bert", str(bert_path), LoadOptions(device="cpu"))


@pytest.fixture(scope="module")
def bart_lm(bart_path):
    return load_model("bart", str(bart_path), LoadOptions(device="cpu"))


def test_batches_hold_the_token_budget_longest_first():
    lengths = [3, 9, 5, 9, 1, 4]
    groups = cut_batches(lengths, max_tokens=18)
    assert groups == [[1, 3], [2, 5, 0], [4]]  # 2 × 9, 3 × 5, 1 × 1: each under 18 padded tokens
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert cut_batches(lengths, max_rows=4, order="shortest") == [[4, 0, 5, 2], [1, 3]]
    assert cut_batches(lengths, max_tokens=2) == [[1], [3], [2], [5], [0], [4]]  # a row wider than the budget
    assert cut_batches(lengths, order="given") == [[0, 1, 2, 3, 4, 5]]


def test_padding_id_changes_no_number(gpt_lm, bert_lm):
    """Padded positions are masked (and, for GPT-2, come after every real token): any pad id, same logits."""
    for lm in (gpt_lm, bert_lm):
        sequences = [lm.tokenizer(s)["input_ids"] for s in SENTENCES]
        rows = torch.tensor([r for r, s in enumerate(sequences) for _ in s])
        cols = torch.tensor([p for s in sequences for p in range(len(s))])
        got = []
        for pad in (lm.pad_id, 7, lm.vocab_size - 1):
            batch = next(padded_batches(sequences, pad, order="given"))
            with torch.inference_mode():
                got.append(logits_at(lm, model_inputs(lm, batch.ids, batch.attention_mask), rows, cols))
        assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])


def test_logits_at_equal_the_full_models_logits(gpt_lm, bert_lm):
    for lm in (gpt_lm, bert_lm):
        batch = next(padded_batches([lm.tokenizer(s)["input_ids"] for s in SENTENCES], lm.pad_id))
        rows, cols = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 3, 2, 1])
        inputs = model_inputs(lm, batch.ids, batch.attention_mask)
        with torch.inference_mode():
            expected = lm.model(**inputs).logits[rows, cols]
            got = logits_at(lm, inputs, rows, cols)
        assert got.shape == (4, lm.vocab_size)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_causal_logprobs_batched_equal_one_sequence_at_a_time(gpt_lm):
    sequences = [gpt_lm.tokenizer(s)["input_ids"] for s in SENTENCES]
    values, passes = causal_logprobs(gpt_lm, sequences, [1, 2, 1], max_tokens=20)
    assert passes == 2  # the longest (11 tokens) alone, then 7 + 3 tokens padded to 2 × 7
    for ids, start, got in zip(sequences, [1, 2, 1], values, strict=True):
        with torch.inference_mode():
            logprobs = gpt_lm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        expected = [logprobs[i - 1, ids[i]].item() for i in range(start, len(ids))]
        assert got == pytest.approx(expected, abs=1e-5)


def test_a_causal_read_runs_no_token_after_its_last_read_position(gpt_lm):
    """A scored sequence's last token is a target only: the pass runs without it, and the numbers are the full
    pass's. A masked LM reads every token of its input, so it keeps them all."""
    sequences = [gpt_lm.tokenizer(s)["input_ids"] for s in SENTENCES]
    widths = []
    handle = gpt_lm.model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        values, passes = causal_logprobs(gpt_lm, sequences, [1, 1, 1])
    finally:
        handle.remove()
    assert passes == 1 and widths == [max(len(ids) for ids in sequences) - 1]
    for ids, got in zip(sequences, values, strict=True):
        with torch.inference_mode():
            logprobs = gpt_lm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
        assert got == pytest.approx([logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))], abs=1e-5)


def test_a_wide_vocabulary_is_projected_in_blocks_with_the_same_logits(gpt_lm, monkeypatch):
    """On CPU an output layer of BLOCKED_VOCABULARY columns or more is applied a block of rows at a time: the
    logits are F.linear's, and the full model's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import gbcli.lm.heads as heads
    from gbcli.loading.models import LoadedModel

    weight = torch.randn(20_000, 64)
    bias = torch.randn(20_000)
    hidden = torch.randn(7, 64)
    blocks = heads.BLOCK_BYTES // (64 * 4)
    assert blocks < 20_000  # several blocks, the last one short
    torch.testing.assert_close(
        heads.project_in_blocks(hidden, weight, bias),
        torch.nn.functional.linear(hidden, weight, bias),
        atol=1e-5,
        rtol=1e-5,
    )

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=heads.BLOCKED_VOCABULARY + 100, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    wide = LoadedModel(
        "gpt",
        "wide",
        GPT2LMHeadModel(config).eval(),
        gpt_lm.tokenizer,
        "gpt2",
        True,
        torch.device("cpu"),
        torch.float32,
        0.0,
    )
    calls, original = [], heads.project_in_blocks
    monkeypatch.setattr(heads, "project_in_blocks", lambda h, w, b: calls.append(h.shape) or original(h, w, b))
    ids = torch.tensor([[5, 9, 11, 3], [7, 2, 4, 8]])
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 3, 2])
    inputs = model_inputs(wide, ids, torch.ones_like(ids))
    with torch.inference_mode():
        expected = wide.model(**inputs).logits[rows, cols]
        got = logits_at(wide, inputs, rows, cols)
    assert calls == [torch.Size([3, 32])]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert "forward" not in vars(wide.model.get_output_embeddings())  # the layer is itself again
    # A forward that another library put on the layer (accelerate's hooks do) is used as it is, and kept.
    head = wide.model.get_output_embeddings()
    theirs = []
    head.forward = lambda hidden: theirs.append(hidden.shape) or torch.nn.functional.linear(hidden, head.weight)
    calls.clear()
    with torch.inference_mode():
        torch.testing.assert_close(logits_at(wide, inputs, rows, cols), expected, atol=1e-5, rtol=1e-5)
    assert calls == [] and theirs == [torch.Size([3, 32])] and "forward" in vars(head)


def test_masked_reads_give_top_k_and_chosen_tokens(bert_lm):
    tok = bert_lm.tokenizer
    ids = tok(f"the {tok.mask_token} quacks in the {tok.mask_token} .")["input_ids"]
    masks = [i for i, t in enumerate(ids) if t == tok.mask_token_id]
    duck, park = tok.convert_tokens_to_ids(["duck", "park"])
    query = Reads(ids, masks, [[duck, park], []], top=3)
    short = Reads(tok(f"a {tok.mask_token} .")["input_ids"], [2], [[duck]], top=1)
    assert run_reads(bert_lm, [query, short], max_rows=1, order="shortest") == 2
    with torch.inference_mode():
        logprobs = bert_lm.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)
    expected = logprobs[masks].topk(3)
    assert query.top_ids == expected.indices.tolist()
    assert query.top_logprobs[0] == pytest.approx(expected.values[0].tolist(), abs=1e-5)
    assert query.target_logprobs[0] == pytest.approx(logprobs[masks[0], [duck, park]].tolist(), abs=1e-5)
    assert query.target_logprobs[1] == [] and len(short.top_ids[0]) == 1


def test_teacher_forcing_scores_each_target_as_the_models_loss_does(bart_lm):
    tok = bart_lm.tokenizer
    source = tok(SENTENCES[0])["input_ids"]
    start = bart_lm.model.config.decoder_start_token_id
    targets = [[start, *source], [start, *tok(SENTENCES[1])["input_ids"]]]
    got = teacher_forced_logprobs(bart_lm, source, targets)
    for target, logprobs in zip(targets, got, strict=True):
        with torch.inference_mode():
            loss = bart_lm.model(input_ids=torch.tensor([source]), labels=torch.tensor([target[1:]])).loss
        assert len(logprobs) == len(target) - 1
        assert -sum(logprobs) / len(logprobs) == pytest.approx(loss.item(), abs=1e-4)


def test_model_facts_and_refusals(gpt_lm, bert_lm):
    assert gpt_lm.pad_id == gpt_lm.tokenizer.eos_token_id  # GPT-2 has no pad token: EOS fills the padding
    assert bert_lm.pad_id == bert_lm.tokenizer.pad_token_id
    assert gpt_lm.bos_id == gpt_lm.tokenizer.eos_token_id and bert_lm.bos_id is None
    assert bert_lm.require_mask_token("fill blanks", "hint") == bert_lm.tokenizer.mask_token_id
    with pytest.raises(GbcliError, match="has no mask token, so it cannot fill blanks") as refused:
        gpt_lm.require_mask_token("fill blanks", "Use a masked LM for --bert.")
    assert refused.value.exit_code == 2 and refused.value.hint == "Use a masked LM for --bert."
    gpt_lm.check_fits(MAX_POSITIONS, "the text")
    with pytest.raises(GbcliError, match=f"at most {MAX_POSITIONS} tokens .*the text needs {MAX_POSITIONS + 1}"):
        gpt_lm.check_fits(MAX_POSITIONS + 1, "the text")


def _close(a, b) -> bool:
    """Two JSON values alike, floats within 1e-5: one thread or two may sum a product in another order."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-5
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_bert_and_gpt2_left_column_run_side_by_side_with_the_same_results(gpt_lm, bert_lm):
    """On CPU with two threads or more, GPT-2's left-context column runs beside BERT's column on another thread
    (each on half the threads); the results, errors included, are those of the columns one after the other."""
    import threading

    from gbcli.render.common import to_jsonable
    from gbcli.tasks.masking.pipeline import fill_mask_lines

    lines = ["the [MASK] quacks in the park .", "the dog [MASK] at the [MASK] .", "no mask here", "the " * 200]
    models = {"gpt": gpt_lm, "bert": bert_lm}
    where: list[tuple[str, str]] = []
    handles = [
        lm.model.register_forward_pre_hook(
            lambda module, args, family=family: where.append((family, threading.current_thread().name))
        )
        for family, lm in models.items()
    ]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        in_turn = [to_jsonable(r) for r in fill_mask_lines(models, lines, 3, ["duck"])]
        assert {name for _, name in where} == {threading.current_thread().name}
        where.clear()
        torch.set_num_threads(2)
        beside = [to_jsonable(r) for r in fill_mask_lines(models, lines, 3, ["duck"])]
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(before)
        for handle in handles:
            handle.remove()
    assert {name for family, name in where if family == "bert"} == {"gbcli-beside"}
    assert threading.current_thread().name in {name for family, name in where if family == "gpt"}
    assert in_turn[2]["error"] and in_turn[3]["error"]
    assert _close(beside, in_turn)


def test_run_beside_raises_either_sides_exception_after_both_end():
    from gbcli.lm.fast.threads import run_beside

    done = []

    def fails() -> None:
        raise ValueError("beside")

    with pytest.raises(ValueError, match="beside"):
        run_beside(fails, lambda: done.append("here"))
    assert done == ["here"]
    with pytest.raises(KeyError):
        run_beside(lambda: done.append("there"), lambda: {}["missing"])
    assert done == ["here", "there"]


def test_run_beside_waits_for_its_thread_through_ctrl_c():
    """Ctrl-C on the caller's thread while the other side still runs: the other side ends first (it may hold a
    model the next command needs), then the interrupt goes on."""
    import signal
    import threading
    import time

    from gbcli.lm.fast.threads import run_beside

    finished = threading.Event()
    main = threading.main_thread().ident

    def slow() -> None:
        time.sleep(0.5)
        finished.set()

    def interrupted_while_waiting() -> None:  # Ctrl-C lands while this thread waits for the other one
        threading.Timer(0.1, lambda: signal.pthread_kill(main, signal.SIGINT)).start()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_beside(slow, interrupted_while_waiting)
        assert finished.is_set()
        with pytest.raises(KeyboardInterrupt):
            run_beside(slow, lambda: (_ for _ in ()).throw(KeyboardInterrupt))
    finally:
        signal.signal(signal.SIGINT, previous)
