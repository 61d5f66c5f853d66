"""The decoding settings from a command's options: each option checked, the mode settled, a conflict a usage error.

The settings themselves are plain values in `gbcli.lm.decoding_settings`, where the decoding loop reads them.
"""

from __future__ import annotations

import math
import random

from gbcli.errors import usage_error
from gbcli.lm.decoding_settings import (
    DEFAULT_ALTERNATIVES,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    DecodingSettings,
    Mode,
)

__all__ = ["DecodingSettings", "settings_from_options"]

# The lowest --temperature: logits (tens, up to some thousands) divided by it stay far inside float32 and float16's
# range after the largest is subtracted, and at it every token but the most likely has probability ~0 already.
MIN_TEMPERATURE = 0.01
MAX_ALTERNATIVES = 50


def settings_from_options(
    *,
    max_new_tokens: int,
    greedy: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    seed: int | None = None,
    alternatives: int | None = None,
) -> DecodingSettings:
    """Validate the command-line options and settle the decoding mode; a conflict is a usage error."""
    if max_new_tokens < 1:
        raise usage_error(f"--max-new-tokens must be at least 1 (got {max_new_tokens}).")
    if max_new_tokens > 4096:
        raise usage_error(f"--max-new-tokens {max_new_tokens} is more than gbcli allows (4096).")
    if temperature is not None and (not math.isfinite(temperature) or temperature <= 0):
        raise usage_error(
            f"--temperature must be a positive number (got {temperature}).", "Use --greedy for temperature 0."
        )
    if temperature is not None and temperature < MIN_TEMPERATURE:
        raise usage_error(
            f"--temperature must be at least {MIN_TEMPERATURE:g} (got {temperature:g}): below it the logits "
            "divided by it overflow, and sampling would pick the most likely token anyway.",
            "Use --greedy for the most likely token at every step.",
        )
    if top_k is not None and top_k < 1:
        raise usage_error(f"--top-k must be at least 1 (got {top_k}).")
    if top_p is not None and (not math.isfinite(top_p) or not 0 < top_p <= 1):
        raise usage_error(f"--top-p must be in (0, 1] (got {top_p}).")
    if repetition_penalty is not None and (not math.isfinite(repetition_penalty) or repetition_penalty <= 0):
        raise usage_error(f"--repetition-penalty must be a positive number (got {repetition_penalty}).")
    if num_beams < 1 or num_beams > 64:
        raise usage_error(f"--num-beams must be between 1 and 64 (got {num_beams}).")
    if num_return_sequences < 1 or num_return_sequences > 64:
        raise usage_error(f"-n/--num-return-sequences must be between 1 and 64 (got {num_return_sequences}).")
    if alternatives is not None and not 1 <= alternatives <= MAX_ALTERNATIVES:
        raise usage_error(
            f"--alternatives must be between 1 and {MAX_ALTERNATIVES} (got {alternatives}).",
            "For example --alternatives 5: the five tokens the model weighed most at each step.",
        )
    if seed is not None and not 0 <= seed < 2**64:
        # torch.manual_seed takes a 64-bit seed; a larger one would fail deep inside torch.
        raise usage_error(f"--seed must be between 0 and 2**64 - 1 (got {seed}).", "For example --seed 42.")
    sampling_options = [
        name
        for name, value in (("--temperature", temperature), ("--top-k", top_k), ("--top-p", top_p))
        if value is not None
    ]
    if greedy and sampling_options:
        raise usage_error(
            f"--greedy conflicts with {', '.join(sampling_options)}: greedy decoding does not sample.",
            "Drop --greedy to sample, or drop the sampling options.",
        )
    if num_beams > 1 and sampling_options:
        raise usage_error(
            f"--num-beams {num_beams} conflicts with {', '.join(sampling_options)}: beam search is deterministic.",
            "Use --num-beams 1 to sample.",
        )
    if greedy and num_beams > 1:
        raise usage_error("--greedy conflicts with --num-beams: choose greedy or beam search.")
    mode: Mode = "beam" if num_beams > 1 else "greedy" if greedy else "sample"
    if mode == "greedy" and num_return_sequences > 1:
        raise usage_error(
            "Greedy decoding gives one sequence; -n/--num-return-sequences needs sampling or beam search.",
            "Drop --greedy, or use --num-beams N.",
        )
    if mode == "beam" and num_return_sequences > num_beams:
        raise usage_error(
            f"-n {num_return_sequences} is more than --num-beams {num_beams}: beam search returns at most one "
            "sequence per beam."
        )
    if mode == "sample" and seed is None:
        # A drawn seed is reported, so any sampled text can be reproduced with --seed.
        seed = random.SystemRandom().randrange(2**31)
    return DecodingSettings(
        mode=mode,
        max_new_tokens=max_new_tokens,
        temperature=DEFAULT_TEMPERATURE if temperature is None else temperature,
        top_k=DEFAULT_TOP_K if top_k is None else top_k,
        top_p=DEFAULT_TOP_P if top_p is None else top_p,
        repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        seed=seed,
        alternatives=DEFAULT_ALTERNATIVES if alternatives is None else alternatives,
    )
