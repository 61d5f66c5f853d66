"""`model.generate` as every column that needs it calls it: beam search, several sequences, encoder-decoders.

One builder of `generate`'s arguments from DecodingSettings, one streamer that hands the text so far to a callback,
and one call that times `generate` and cuts each returned row after its first end-of-sequence token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from gbcli.lm.decoding_settings import DecodingSettings
from gbcli.loading.models import LoadedModel

# A row `generate` returned, cut after the prompt: (new ids up to and including the first EOS, stopped at EOS).
GeneratedRow = tuple[list[int], bool]


def generate_kwargs(settings: DecodingSettings, pad_token_id: int | None, **overrides: Any) -> dict[str, Any]:
    """`model.generate` arguments that decode as `settings` say; `overrides` (a family's own fixes) come last."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "num_return_sequences": settings.num_return_sequences,
        "repetition_penalty": settings.repetition_penalty,
        "pad_token_id": pad_token_id,
    }
    if settings.mode == "sample":
        kwargs.update(
            do_sample=True, num_beams=1, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p
        )
    elif settings.mode == "beam":
        kwargs.update(do_sample=False, num_beams=settings.num_beams, early_stopping=True)
    else:
        kwargs.update(do_sample=False, num_beams=1)
    return kwargs | overrides


class TextStreamer:
    """A `generate` streamer that hands the decoded continuation to a callback after every token."""

    def __init__(self, lm: LoadedModel, on_text: Callable[[str], None]) -> None:
        self.lm = lm
        self.on_text = on_text
        self.ids: list[int] = []
        self.seen_prompt = False

    def put(self, value: Any) -> None:
        if not self.seen_prompt:  # generate() first hands over the prompt (or the decoder's prefix) itself
            self.seen_prompt = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self.on_text(self.lm.tokenizer.decode(self.ids, skip_special_tokens=True))

    def end(self) -> None:
        pass


def leading_beam_reporter(lm: LoadedModel, prompt_length: int, on_text: Callable[[str], None]) -> Any:
    """A stopping criterion that never stops: beam search cannot stream (its best sequence is known only at the
    end), so at each step it hands over the text of the candidate that ranks first so far, and a long search shows
    progress, and leaves the best beam so far on the screen when Ctrl-C comes."""

    class LeadingBeamReporter(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            # generate ranks the candidates of a step by their summed log-probability, best first.
            on_text(lm.tokenizer.decode(input_ids[0, prompt_length:].tolist(), skip_special_tokens=True))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return LeadingBeamReporter()


def run_generate(
    lm: LoadedModel,
    settings: DecodingSettings,
    kwargs: dict[str, Any],
    *,
    prompt_length: int,
    eos_token_id: int | None,
    on_text: Callable[[str], None] | None = None,
    **inputs: Any,
) -> tuple[list[GeneratedRow], float]:
    """`lm.model.generate(**inputs, **kwargs)` seeded by `settings.seed`: each row's new ids after the first
    `prompt_length`, and the seconds `generate` took. One stream (no beams, one sequence) is streamed to `on_text`;
    beam search hands it the best beam so far at each step."""
    if on_text is not None and settings.mode == "beam":
        reporter = leading_beam_reporter(lm, prompt_length, on_text)
        kwargs = {**kwargs, "stopping_criteria": StoppingCriteriaList([reporter])}
    elif on_text is not None and settings.num_return_sequences == 1:
        kwargs = {**kwargs, "streamer": TextStreamer(lm, on_text)}
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    started = time.perf_counter()
    with torch.inference_mode():
        output = lm.model.generate(**inputs, **kwargs)
    seconds = time.perf_counter() - started
    rows = []
    for row in output.tolist():
        new_ids = row[prompt_length:]
        # Generation pads finished sequences; keep everything up to and including the first EOS.
        stopped = eos_token_id is not None and eos_token_id in new_ids
        if stopped:
            new_ids = new_ids[: new_ids.index(eos_token_id) + 1]
        rows.append((new_ids, stopped))
    return rows, seconds
