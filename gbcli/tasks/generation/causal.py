"""GPT-2's column of `gbcli generate`: a causal LM continues the prompt, as it was trained to.

One stream (greedy or sampling) runs in gbcli's own decoding loop (gbcli.lm.fast.decoding_loop), which reads each
token's log-probability and the most likely tokens (the alternatives) from the logits that chose it; beam search (and
every stream where that loop cannot run) runs `model.generate` (gbcli.lm.hf_generate) and is scored afterwards by one
teacher-forced pass per sequence, which gives each token's log-probability and the alternatives of its step from one
distribution.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gbcli.errors import usage_error
from gbcli.lm.fast.decoding_loop import decode_one_stream, decodes_in_own_loop
from gbcli.lm.hf_generate import generate_kwargs, run_generate
from gbcli.lm.reads import TopTokens, run_reads, scored_tokens, token_logprobs
from gbcli.loading.models import LoadedModel
from gbcli.tasks.decoding_options import DecodingSettings
from gbcli.tasks.generation.results import ModelGeneration, TokenCallback, check_room, continuation, model_generation

GPT_METHOD = "autoregressive decoding: each token predicted from the tokens to its left, as in pre-training"


def generate_causal(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Continue the prompt; report each produced token with its raw log-probability.

    The model reads its BOS token (GPT-2: <|endoftext|>) before the prompt, as score, fill-mask and lens read a
    text, so the first new token's probability is the one `score` gives it after the same prompt."""
    tok = lm.tokenizer
    text_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if not text_ids:
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    prompt_ids = ([lm.bos_id] if lm.bos_id is not None else []) + text_ids
    check_room(lm, len(prompt_ids), settings)
    input_ids = torch.tensor([prompt_ids], device=lm.device)
    streams = settings.one_stream_each()  # several samples: one at a time, each streamed and kept as it ends
    if decodes_in_own_loop(lm, streams[0]):
        started = time.perf_counter()
        outputs = [
            decode_one_stream(lm, input_ids, stream, _stream_text(lm, on_token, index))
            for index, stream in enumerate(streams)
        ]
        seconds = time.perf_counter() - started
    else:
        outputs, seconds = [], 0.0
        for index, stream in enumerate(streams):
            on_text = _stream_text(lm, on_token, index)
            stream_outputs, stream_seconds = _generate_with_model(
                lm, input_ids, torch.ones_like(input_ids), stream, on_text
            )
            outputs += stream_outputs
            seconds += stream_seconds
    continuations = [
        continuation(lm, prompt_ids, new_ids, logprobs, stopped, alternatives=alternatives)
        for new_ids, logprobs, stopped, alternatives in outputs
    ]
    produced = max(len(output[0]) for output in outputs)
    return model_generation(lm, GPT_METHOD, continuations, produced, seconds, reads=causal_reads(lm))


def _stream_text(lm: LoadedModel, on_token: TokenCallback | None, sequence: int) -> Any:
    """The per-token text callback of one sequence, as the decoding loops call it (text only)."""
    if on_token is None:
        return None
    return lambda text: on_token(lm.family, text, sequence)


def causal_reads(lm: LoadedModel) -> str:
    """What the model reads before it writes: the one convention of every command that predicts with a causal LM."""
    if lm.bos_id is None:
        return "the prompt alone (the tokenizer has no BOS token)"
    return f"{lm.tokenizer.convert_ids_to_tokens(lm.bos_id)} then the prompt, as score, fill-mask and lens read a text"


def _generate_with_model(
    lm: LoadedModel, input_ids: Any, attention_mask: Any, settings: DecodingSettings, on_text: Any
) -> tuple[list[tuple[list[int], list[float], bool, list[TopTokens]]], float]:
    """Beam search and several sequences: `model.generate`, then one teacher-forced pass per sequence for scores
    and alternatives."""
    rows, seconds = run_generate(
        lm,
        settings,
        generate_kwargs(settings, lm.pad_id),
        prompt_length=input_ids.shape[1],
        eos_token_id=lm.tokenizer.eos_token_id,
        on_text=on_text,
        input_ids=input_ids,
        attention_mask=attention_mask,
    )
    prompt_ids = input_ids[0].tolist()
    outputs = []
    for new_ids, stopped in rows:
        logprobs, alternatives = read_continuation(lm, prompt_ids, new_ids, settings.alternatives)
        outputs.append((new_ids, logprobs, stopped, alternatives))
    return outputs, seconds


def score_continuation(lm: LoadedModel, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """log p(token | everything before it) for each new token, from one teacher-forced forward pass."""
    return read_continuation(lm, prompt_ids, new_ids, 0)[0]


def read_continuation(
    lm: LoadedModel, prompt_ids: list[int], new_ids: list[int], top: int
) -> tuple[list[float], list[TopTokens]]:
    """`score_continuation`, and the `top` most likely tokens at each new token's step, from the same pass."""
    if not new_ids:
        return [], []
    reads = scored_tokens(prompt_ids + new_ids, len(prompt_ids))
    reads.top = top
    run_reads(lm, [reads])
    alternatives = (
        [list(zip(ids, values, strict=True)) for ids, values in zip(reads.top_ids, reads.top_logprobs, strict=True)]
        if top
        else []
    )
    return token_logprobs(reads), alternatives
