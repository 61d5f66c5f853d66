"""`gbcli generate --alternatives K`: at every step, the K tokens the model weighed most, the one written marked.

Every number is checked against the model's own softmax at that step, computed here by a direct forward pass on
the prompt and the tokens written before the step, for each decoding path: GPT-2's own loop, `model.generate`
(several sequences), BERT's iterative filling (greedy and beam search) and BART's decoder.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from rich.console import Console

from tests.cli_helpers import assert_user_error, column_of, run, run_json
from tests.fixtures.tiny_models import GPT_CAPITAL_PROMPT, GPT_PROMPT
from tests.helpers_reference import prompt_after_bos

K = 4


def assert_alternatives_match(token: dict, logprobs: torch.Tensor, k: int) -> None:
    """The token's alternatives are the top k of the model's own log-softmax at its step, the written one marked."""
    values, indices = logprobs.topk(k)
    assert [a["id"] for a in token["alternatives"]] == indices.tolist()
    for alternative, expected in zip(token["alternatives"], values.tolist(), strict=True):
        assert alternative["logprob"] == pytest.approx(expected, abs=1e-4)
        assert alternative["chosen"] == (alternative["id"] == token["id"])
    assert token["logprob"] == pytest.approx(logprobs[token["id"]].item(), abs=1e-4)


def gpt_step_logprobs(model, prompt_ids: list[int], new_ids: list[int], step: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + new_ids[:step]])).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)


@pytest.mark.parametrize("extra", [("--greedy",), ("--seed", "5", "-n", "2")], ids=["own-loop", "model-generate"])
def test_gpt2_alternatives_are_the_models_top_k_at_each_step(gpt, models, extra):
    doc = run_json(
        "generate", GPT_PROMPT, "--max-new-tokens", "6", "--alternatives", str(K), *extra, "--models", "gpt", *models
    )
    tokenizer, model = gpt
    prompt_ids = prompt_after_bos(tokenizer, GPT_PROMPT)
    for continuation in column_of(doc, "gpt")["continuations"]:
        new_ids = [t["id"] for t in continuation["tokens"]]
        for step, token in enumerate(continuation["tokens"]):
            assert_alternatives_match(token, gpt_step_logprobs(model, prompt_ids, new_ids, step), K)
    if "--greedy" in extra:  # greedy writes the most likely token: the first alternative, marked
        assert all(t["alternatives"][0]["chosen"] for t in continuation["tokens"])


@pytest.mark.parametrize("extra", [("--greedy",), ("--num-beams", "3")], ids=["greedy", "beam"])
def test_bert_alternatives_are_its_top_k_at_the_appended_mask(bert, models, extra):
    doc = run_json(
        "generate",
        GPT_CAPITAL_PROMPT,
        "--max-new-tokens",
        "4",
        "--alternatives",
        str(K),
        *extra,
        "--models",
        "bert",
        *models,
    )
    tokenizer, model = bert
    ids = tokenizer(GPT_CAPITAL_PROMPT)["input_ids"]
    body, closing = ids[:-1], ids[-1:]
    (continuation, *_) = column_of(doc, "bert")["continuations"]
    new_ids = [t["id"] for t in continuation["tokens"]]
    for step, token in enumerate(continuation["tokens"]):
        filled = body + new_ids[:step] + [tokenizer.mask_token_id] + closing
        with torch.no_grad():
            logits = model(torch.tensor([filled])).logits[0, len(body) + step]
        assert_alternatives_match(token, torch.log_softmax(logits.float(), -1), K)


def test_bart_alternatives_are_its_decoders_top_k_at_each_step(bart, bart_path, models):
    doc = run_json(
        "generate",
        GPT_PROMPT,
        "--greedy",
        "--max-new-tokens",
        "5",
        "--alternatives",
        str(K),
        "--models",
        "bart",
        "--bart",
        str(bart_path),
        *models,
    )
    tokenizer, model = bart
    source = tokenizer(GPT_PROMPT + " <mask>", return_tensors="pt")
    prefix = [
        model.config.decoder_start_token_id,
        tokenizer.bos_token_id,
        *tokenizer(GPT_PROMPT, add_special_tokens=False)["input_ids"],
    ]
    (continuation,) = column_of(doc, "bart")["continuations"]
    new_ids = [t["id"] for t in continuation["tokens"]]
    for step, token in enumerate(continuation["tokens"]):
        with torch.no_grad():
            logits = model(**source, decoder_input_ids=torch.tensor([prefix + new_ids[:step]])).logits[0, -1]
        assert_alternatives_match(token, torch.log_softmax(logits.float(), -1), K)


def test_json_always_holds_five_alternatives_without_the_option(models):
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "3", *models)
    for column in doc["columns"]:
        for token in column["continuations"][0]["tokens"]:
            assert len(token["alternatives"]) == 5
    assert doc["settings"]["alternatives"] == 5


@pytest.mark.parametrize("value", ["0", "51", "-2"])
def test_alternatives_out_of_range_is_a_usage_error(value, models):
    assert_user_error(run("generate", GPT_PROMPT, "--alternatives", value, *models), 2, "--alternatives")


def test_view_lists_each_steps_alternatives_with_the_written_one_marked(models):
    result = run("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "4", "--alternatives", "3", *models)
    assert result.exit_code == 0, result.stderr
    doc = run_json("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "4", "--alternatives", "3", *models)
    screen = result.stdout
    assert "the tokens weighed at each step" in screen and "▸ the token written" in screen
    for column in doc["columns"]:
        for token in column["continuations"][0]["tokens"]:
            for alternative in token["alternatives"]:
                prob = (
                    f"{math.exp(alternative['logprob']):.4f}"
                    if math.exp(alternative["logprob"]) >= 1e-4
                    else f"{math.exp(alternative['logprob']):.1e}"
                )
                assert prob in screen
    without = run("generate", GPT_PROMPT, "--greedy", "--max-new-tokens", "4", *models)
    assert "the tokens weighed" not in without.stdout


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("colour", [False, True], ids=["NO_COLOR", "colour"])
@pytest.mark.parametrize("k", [5, 30])
def test_alternatives_view_is_whole_at_80_and_120_columns(gpt_path, bert_path, bart_path, width, colour, k):
    from rich.cells import cell_len

    from gbcli.loading.models import load_model
    from gbcli.render.common import format_prob
    from gbcli.render.generation import generation_view
    from gbcli.tasks.decoding_options import settings_from_options
    from gbcli.tasks.generation import GenerationResult
    from gbcli.tasks.generation.causal import generate_causal
    from gbcli.tasks.generation.masked import generate_masked
    from gbcli.tasks.seq2seq import generate_seq2seq
    from gbcli.tasks.tokenization import readable_piece

    settings = settings_from_options(max_new_tokens=5, seed=3, alternatives=k)
    result = GenerationResult(prompt=GPT_CAPITAL_PROMPT, decoding=settings.describe(), settings=settings)
    for run_column, family, path in (
        (generate_causal, "gpt", gpt_path),
        (generate_masked, "bert", bert_path),
        (generate_seq2seq, "bart", bart_path),
    ):
        result.columns.append(run_column(load_model(family, str(path)), GPT_CAPITAL_PROMPT, settings))
    console = Console(
        width=width,
        record=True,
        file=io.StringIO(),
        color_system="truecolor" if colour else None,
        highlight=False,
        soft_wrap=False,
    )
    console.print(generation_view(result, show_alternatives=True))
    screen = console.export_text()
    assert max(cell_len(line.rstrip()) for line in screen.splitlines()) <= width
    lines = screen.splitlines()
    for column in result.columns:
        for token in column.continuations[0].tokens:
            assert len(token.alternatives) == k
            for alternative in token.alternatives:
                shown = readable_piece(alternative.piece, alternative.text)
                mark = "▸" if alternative.chosen else ""
                # Each cell whole on one line, the piece and its probability together, however many K asks for.
                cell = f"{mark}{shown} {format_prob(math.exp(alternative.logprob))}"
                assert any(cell in line for line in lines), (cell, screen)
