"""GPT-2's column of `gbcli generate`: a causal LM continues the prompt, as it was trained to.

One stream (greedy or sampling) runs in gbcli's own decoding loop (gbcli.lm.decoding), which reads each token's
log-probability on the way; beam search and several sequences run `model.generate` (gbcli.lm.hf_generate) and are
scored afterwards by one teacher-forced pass per sequence.
"""

from __future__ import annotations

import time
from typing import Any

from gbcli.errors import usage_error
from gbcli.lm.decoding import decode_one_stream, decodes_in_own_loop
from gbcli.lm.hf_generate import generate_kwargs, run_generate
from gbcli.loading.models import LoadedModel
from gbcli.tasks.decoding_settings import DecodingSettings
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
        new_ids, logprobs, stopped = decode_one_stream(lm, input_ids, settings, on_text)
        seconds = time.perf_counter() - started
        outputs = [(new_ids, logprobs, stopped)]
    else:
        outputs, seconds = _generate_with_model(lm, input_ids, encoded["attention_mask"].to(lm.device), settings,
                                                on_text)
    continuations = [continuation(lm, prompt_ids, new_ids, logprobs, stopped) for new_ids, logprobs, stopped in outputs]
    produced = max(len(new_ids) for new_ids, _, _ in outputs)
    return model_generation(lm, GPT_METHOD, continuations, produced, seconds)


def _generate_with_model(lm: LoadedModel, input_ids: Any, attention_mask: Any, settings: DecodingSettings,
                         on_text: Any) -> tuple[list[tuple[list[int], list[float], bool]], float]:
    """Beam search and several sequences: `model.generate`, then one teacher-forced pass per sequence for scores."""
    rows, seconds = run_generate(lm, settings, generate_kwargs(settings, lm.pad_id), prompt_length=input_ids.shape[1],
                                 eos_token_id=lm.tokenizer.eos_token_id, on_text=on_text, input_ids=input_ids,
                                 attention_mask=attention_mask)
    prompt_ids = input_ids[0].tolist()
    return [(new_ids, score_continuation(lm, prompt_ids, new_ids), stopped) for new_ids, stopped in rows], seconds


def score_continuation(lm: LoadedModel, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """log p(token | everything before it) for each new token, from one teacher-forced forward pass."""
    from gbcli.lm.reads import causal_logprobs

    if not new_ids:
        return []
    return causal_logprobs(lm, [prompt_ids + new_ids], [len(prompt_ids)])[0][0]
