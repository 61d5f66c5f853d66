"""BART-style encoder-decoders: the forward passes and text matching that every command's BART column shares.

BART pairs a bidirectional encoder (like BERT) with an autoregressive decoder (like GPT) and was pre-trained as a
denoiser: the encoder reads corrupted text (spans of any length replaced by one `<mask>`), and the decoder writes
the original text, token by token, looking at the encoder through cross-attention. So each command asks BART the
question it was trained on:

- fill-mask: the encoder reads the text with `<mask>` in each blank, beam search writes the restored text, and
  the span each beam put in a blank is read off by matching its output against the text around the blank;
- generate: the encoder reads the prompt followed by `<mask>`, the decoder is given the prompt and continues it;
- score: the encoder reads the sentence, the decoder is teacher-forced on the same sentence and scores it.

Everything here is pure computation on a LoadedModel; no printing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from gbcli.errors import GbcliError, usage_error

# Re-exported: generate_seq2seq below and fill-mask (tasks/masking.py) score BART's outputs by teacher forcing.
from gbcli.lm.teacher_forcing import teacher_forced_logprobs as teacher_forced_logprobs
from gbcli.lm.teacher_forcing import teacher_forced_reads
from gbcli.loading.models import LoadedModel

INFILL_METHOD = (
    "denoising: the encoder reads the text with <mask> in each blank, beam search writes the restored text, and "
    "the span in each blank is read off by matching the output against the text around it"
)
SEQUENCE_SCORE = (
    "the sum of the log-probabilities beam search ranked by (a token the model's generation config forces, such "
    "as the opening <s>, counts 0), divided by the number of generated tokens"
)
RECONSTRUCTION_DEFINITION = (
    "log p(x | x): the encoder reads the sentence x uncorrupted, the decoder is teacher-forced on x and each of its "
    "tokens (with the special tokens its tokenizer adds) is scored from the tokens before it and the whole encoded "
    "sentence"
)
RECONSTRUCTION_NOTE = (
    "BART's reconstruction log-likelihood is not comparable with perplexity or pseudo-perplexity: the decoder "
    "copies a sentence its encoder has already read in full."
)
GENERATE_METHOD = (
    "denoising decoder: the encoder reads the prompt followed by <mask>; the decoder is given the prompt and "
    "writes what fills the mask, each token from the tokens to its left and the whole encoded input"
)

MAX_SPAN_TOKENS = 10  # room the decoder gets per blank, beyond the length of the text it copies
MAX_BEAMS = 64


def is_seq2seq(lm: LoadedModel) -> bool:
    return bool(getattr(lm.model.config, "is_encoder_decoder", False))


def check_seq2seq(lm: LoadedModel) -> None:
    if not is_seq2seq(lm) or not lm.has_lm_head:
        raise GbcliError(
            f"{lm.name} is not an encoder-decoder with a language-model head.",
            "Give --bart a seq2seq checkpoint, e.g. facebook/bart-base.",
        )


def decoder_start_id(lm: LoadedModel) -> int:
    """The token the decoder starts from (BART: </s>), as `generate` and the training loss use it."""
    for source in (lm.model.generation_config, lm.model.config):
        value = getattr(source, "decoder_start_token_id", None)
        if isinstance(value, int):
            return value
    raise GbcliError(f"{lm.name} declares no decoder start token.", "Check the checkpoint's config.json.")


def pad_id(lm: LoadedModel) -> int:
    """The pad id `generate` is given (LoadedModel.pad_id: the one rule for every model)."""
    return lm.pad_id


def eos_id(lm: LoadedModel) -> int | None:
    value = lm.tokenizer.eos_token_id
    return value if isinstance(value, int) else lm.model.config.eos_token_id


def check_length(lm: LoadedModel, tokens: int, what: str) -> None:
    """Refuse an input the model cannot hold (LoadedModel.check_fits, whose message names `what`)."""
    lm.check_fits(tokens, what)


def body_ids(lm: LoadedModel, decoded: Sequence[int]) -> list[int]:
    """The text tokens of a decoder sequence: without its start token, the opening <s>, and anything from </s> on."""
    ids = list(decoded[1:])
    eos = eos_id(lm)
    if eos is not None and eos in ids:
        ids = ids[: ids.index(eos)]
    bos = lm.tokenizer.bos_token_id
    if ids and ids[0] == bos:
        ids = ids[1:]
    return ids


def decode(lm: LoadedModel, ids: Sequence[int]) -> str:
    # No clean-up: "park ." must stay "park ." to be matched against the text the user typed.
    return lm.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_ends(lm: LoadedModel, ids: Sequence[int]) -> list[int]:
    """Where each token's text ends in decode(ids): decoding prefix by prefix handles byte-level pieces."""
    return [len(decode(lm, ids[: i + 1])) for i in range(len(ids))]


# --------------------------------------------------------------------------------------------------------------
# fill-mask: reading the spans off a restored text (the beam search itself is in tasks/masking.py)
# --------------------------------------------------------------------------------------------------------------


def context_pattern(segments: Sequence[str]) -> re.Pattern[str]:
    """A pattern for the text around the blanks, each blank a group. Spacing may differ, nothing else may."""

    def literal(segment: str) -> str:
        # Any spacing between characters: a tokenizer may write "park ." for "park." (or the other way round).
        return r"\s*" + "".join(re.escape(ch) + r"\s*" for ch in segment if not ch.isspace())

    body = "(.*?)".join(literal(s) for s in segments)
    return re.compile(r"\A" + body + r"\Z", re.DOTALL)


def match_spans(segments: Sequence[str], output: str) -> list[tuple[int, int]] | None:
    """Character ranges of the blanks' spans in `output` (surrounding spaces trimmed), or None if the output
    does not keep the text around the blanks."""
    found = context_pattern(segments).match(output)
    if found is None:
        return None
    ranges = []
    for group in range(1, len(segments)):
        start, end = found.span(group)
        text = output[start:end]
        start += len(text) - len(text.lstrip())
        end -= len(text) - len(text.rstrip())
        ranges.append((start, max(start, end)))
    return ranges


def fill_segments(segments: Sequence[str], spans: Sequence[str]) -> str:
    """The user's text with each blank replaced by its span, spaced as the user spaced the blank."""
    out = segments[0]
    for span, segment in zip(spans, segments[1:], strict=True):
        out += span + segment
    return out


def infill_source(lm: LoadedModel, segments: Sequence[str]) -> list[int]:
    """The encoder's input: the text with the model's own mask token in every blank."""
    tok = lm.tokenizer
    mask_id = lm.require_mask_token("fill blanks", "Use a BART checkpoint.")
    ids = tok(tok.mask_token.join(segments))["input_ids"]
    if ids.count(mask_id) != len(segments) - 1:
        raise usage_error(
            f"{lm.name} read {ids.count(mask_id)} masks where the text has {len(segments) - 1}.",
            "Put spaces or punctuation around each [MASK] or <mask>.",
        )
    return ids


def infill_settings(lm: LoadedModel, source_tokens: int, masks: int, beams: int) -> dict[str, Any]:
    """Beam search as `model.generate` runs it, with the options of the checkpoint's generation config that
    would stop a faithful copy of the text switched off (summarisation checkpoints ship no_repeat_ngram_size=3
    and long minimum lengths); its forced <s> and </s> stay, since they are how the model writes a sentence."""
    room = source_tokens + MAX_SPAN_TOKENS * masks
    return {
        "do_sample": False,
        "num_beams": beams,
        "num_return_sequences": beams,
        "max_new_tokens": max(1, min(room, lm.max_positions - 1)),
        "length_penalty": 1.0,
        "early_stopping": True,
        "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0,
        "repetition_penalty": 1.0,
        "min_length": 0,
    }


# --------------------------------------------------------------------------------------------------------------
# generate: the decoder continues the prompt
# --------------------------------------------------------------------------------------------------------------


def generation_inputs(lm: LoadedModel, prompt: str) -> tuple[list[int], list[int]]:
    """(encoder input: the prompt then <mask>; decoder prefix: the start token, <s> and the prompt)."""
    tok = lm.tokenizer
    lm.require_mask_token("continue a prompt", "Use a BART checkpoint.")
    source = tok(prompt.rstrip() + " " + tok.mask_token)["input_ids"]
    prompt_ids = tok(prompt.rstrip(), add_special_tokens=False)["input_ids"]
    if not prompt_ids:
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    prefix = [decoder_start_id(lm)]
    if tok.bos_token_id is not None:
        prefix.append(tok.bos_token_id)
    return source, prefix + prompt_ids


def generation_kwargs(lm: LoadedModel, settings: Any) -> dict[str, Any]:
    """`model.generate` arguments for DecodingSettings, with the checkpoint's summarisation habits switched off
    (forced </s> at the length limit, no_repeat_ngram_size, minimum lengths) so that BART decodes exactly as the
    other columns are asked to."""
    from gbcli.lm.hf_generate import generate_kwargs  # late: start-up (fill-mask and score check text without it)

    return generate_kwargs(
        settings,
        pad_id(lm),
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        min_length=0,
        length_penalty=1.0,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
    )


def generate_seq2seq(
    lm: LoadedModel, prompt: str, settings: Any, on_token: Callable[[str, str, int], None] | None = None
):  # -> ModelGeneration
    """Continue the prompt with BART's decoder; each new token comes with its raw log-probability."""
    import torch

    from gbcli.lm.hf_generate import run_generate  # late: start-up
    from gbcli.tasks.generation import continuation, model_generation  # late: start-up

    check_seq2seq(lm)
    source, prefix = generation_inputs(lm, prompt)
    check_length(lm, len(source), "the prompt with <mask> and its special tokens")
    check_length(lm, len(prefix) + settings.max_new_tokens, f"the prompt plus {settings.max_new_tokens} new tokens")
    input_ids = torch.tensor([source], device=lm.device)
    rows, seconds = [], 0.0
    for index, stream in enumerate(settings.one_stream_each()):  # several samples: one at a time, each streamed
        stream_rows, stream_seconds = run_generate(
            lm,
            stream,
            generation_kwargs(lm, stream),
            prompt_length=len(prefix),
            eos_token_id=eos_id(lm),
            on_text=None if on_token is None else lambda text, index=index: on_token(lm.family, text, index),
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            decoder_input_ids=torch.tensor([prefix], device=lm.device),
        )
        rows += stream_rows
        seconds += stream_seconds
    # Each token's log-probability and the alternatives of its step come from one teacher-forced pass.
    scored, tops = teacher_forced_reads(lm, source, [prefix + new_ids for new_ids, _ in rows], settings.alternatives)
    continuations = [
        continuation(
            lm,
            prefix,
            new_ids,
            logprobs[len(prefix) - 1 :],
            stopped,
            alternatives=top[len(prefix) - 1 :] if settings.alternatives else None,
        )
        for (new_ids, stopped), logprobs, top in zip(rows, scored, tops, strict=True)
    ]
    produced = max(len(new_ids) for new_ids, _ in rows)
    tok = lm.tokenizer
    starts = [decoder_start_id(lm)] + ([tok.bos_token_id] if tok.bos_token_id is not None else [])
    reads = (
        f"encoder: the prompt then {tok.mask_token}; decoder: {' '.join(tok.convert_ids_to_tokens(starts))} "
        "then the prompt"
    )
    return model_generation(lm, GENERATE_METHOD, continuations, produced, seconds, reads=reads)
