"""GPT-2's column of `gbcli generate`: a causal LM continues the prompt, as it was trained to.

One stream (greedy or sampling) runs in gbcli's own decoding loop (gbcli.lm.decoding), which reads each token's
log-probability and the most likely tokens (the alternatives) from the logits that chose it; beam search and several
sequences run `model.generate` (gbcli.lm.hf_generate) and are scored afterwards by one teacher-forced pass per
sequence, which gives each token's log-probability and the alternatives of its step from one distribution.
"""

from __future__ import annotations

import time
from typing import Any

from gbcli.errors import usage_error
from gbcli.lm.decoding import TopTokens, decode_one_stream, decodes_in_own_loop
from gbcli.lm.hf_generate import generate_kwargs, run_generate
from gbcli.models import LoadedModel
from gbcli.tasks.decoding import DecodingSettings
from gbcli.tasks.generation.results import ModelGeneration, TokenCallback, check_room, continuation, model_generation

GPT_METHOD = "autoregressive decoding: each token predicted from the tokens to its left, as in pre-training"


def generate_causal(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Continue the prompt; report each produced token with its raw log-probability."""
    tok = lm.tokenizer
    encoded = tok(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"].to(lm.device)
    if input_ids.shape[1] == 0:
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    check_room(lm, input_ids.shape[1], settings)
    prompt_ids = input_ids[0].tolist()
    on_text = None if on_token is None else lambda text: on_token(lm.family, text)
    if decodes_in_own_loop(lm, settings):
        started = time.perf_counter()
        new_ids, logprobs, stopped, alternatives = decode_one_stream(lm, input_ids, settings, on_text)
        seconds = time.perf_counter() - started
        outputs = [(new_ids, logprobs, stopped, alternatives)]
    else:
        outputs, seconds = _generate_with_model(lm, input_ids, encoded["attention_mask"].to(lm.device), settings,
                                                on_text)
    continuations = [continuation(lm, prompt_ids, new_ids, logprobs, stopped, alternatives=alternatives)
                     for new_ids, logprobs, stopped, alternatives in outputs]
    produced = max(len(output[0]) for output in outputs)
    return model_generation(lm, GPT_METHOD, continuations, produced, seconds)


def _generate_with_model(lm: LoadedModel, input_ids: Any, attention_mask: Any, settings: DecodingSettings,
                         on_text: Any) -> tuple[list[tuple[list[int], list[float], bool, list[TopTokens]]], float]:
    """Beam search and several sequences: `model.generate`, then one teacher-forced pass per sequence for scores
    and alternatives."""
    rows, seconds = run_generate(lm, settings, generate_kwargs(settings, lm.pad_id), prompt_length=input_ids.shape[1],
                                 eos_token_id=lm.tokenizer.eos_token_id, on_text=on_text, input_ids=input_ids,
                                 attention_mask=attention_mask)
    prompt_ids = input_ids[0].tolist()
    outputs = []
    for new_ids, stopped in rows:
        logprobs, alternatives = read_continuation(lm, prompt_ids, new_ids, settings.alternatives)
        outputs.append((new_ids, logprobs, stopped, alternatives))
    return outputs, seconds


def score_continuation(lm: LoadedModel, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """log p(token | everything before it) for each new token, from one teacher-forced forward pass."""
    return read_continuation(lm, prompt_ids, new_ids, 0)[0]


def read_continuation(lm: LoadedModel, prompt_ids: list[int], new_ids: list[int],
                      top: int) -> tuple[list[float], list[TopTokens]]:
    """`score_continuation`, and the `top` most likely tokens at each new token's step, from the same pass."""
    from gbcli.lm.reads import run_reads, scored_tokens, token_logprobs

    if not new_ids:
        return [], []
    reads = scored_tokens(prompt_ids + new_ids, len(prompt_ids))
    reads.top = top
    run_reads(lm, [reads])
    alternatives = [list(zip(ids, values, strict=True)) for ids, values in zip(reads.top_ids, reads.top_logprobs,
                                                                                  strict=True)] if top else []
    return token_logprobs(reads), alternatives
