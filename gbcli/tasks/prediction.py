"""Where each model predicts a blank: the input it reads and the position whose output is the prediction.

`lens` and `saliency` both look inside one prediction. BERT predicts at its `[MASK]` from both sides; GPT-2
predicts the blank from the words before it only (the last of them is the position read), or, without a blank,
the next word after the text; BART's encoder reads the text with its mask in the blank, and its decoder, having
written the words before the blank, predicts at its last position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gbcli.errors import GbcliError, usage_error
from gbcli.loading.models import LoadedModel
from gbcli.tasks import seq2seq
from gbcli.tasks.masking import MASK_PATTERN, MASK_SPELLINGS, split_masks
from gbcli.tasks.tokenization import readable_piece

if TYPE_CHECKING:
    import torch


@dataclass
class Query:
    """Where a model predicts the blank (or the next word): its input, the position read and what it predicts.

    BART reads the text in its encoder and predicts in its decoder: `decoder_ids` and `position` are then the
    decoder's. `space_before` says whether the predicted word follows a space (GPT-2's Ġduck, not duck).
    """

    ids: list[int]
    position: int
    predicts: str
    space_before: bool
    decoder_ids: list[int] | None = None


def prediction_query(lm: LoadedModel, text: str, segments: list[str] | None) -> Query:
    """The input on which `lm` predicts the one blank of `segments` (or, without a blank, the next word)."""
    build = _QUERIES.get(lm.kind, _seq2seq_query)
    return build(lm, text, segments, segments[0].endswith(" ") if segments is not None else True)


def _causal_query(lm: LoadedModel, text: str, segments: list[str] | None, space: bool) -> Query:
    # After <|endoftext|>, as GPT-2 scores a text, so that even a first word has a prediction. The space
    # before a blank belongs to the word in it (GPT-2's Ġduck), so the context ends before that space.
    bos = lm.bos_id
    context = segments[0].rstrip(" ") if segments is not None else text.rstrip()
    ids = ([bos] if bos is not None else []) + (
        lm.tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
    )
    if not ids:
        raise usage_error(
            f"{lm.name} has no start-of-text token, so it cannot predict a text's first word.",
            "Put some words before the blank.",
        )
    lm.check_fits(len(ids), "the text")
    what = "the blank, from the words before it" if segments is not None else "the next token after the text"
    return Query(ids, len(ids) - 1, what, space)


def _masked_query(lm: LoadedModel, text: str, segments: list[str] | None, space: bool) -> Query:
    if segments is None:
        raise _no_blank(lm.name)
    tok = lm.tokenizer
    mask_id = lm.require_mask_token("predict at a blank", "Use a masked LM for --bert.")
    ids = tok(tok.mask_token.join(segments))["input_ids"]
    if ids.count(mask_id) != 1:
        raise usage_error(
            f"{lm.name} read {ids.count(mask_id)} masks where the text has 1.",
            f"Put spaces or punctuation around {MASK_SPELLINGS}.",
        )
    lm.check_fits(len(ids), "the text with its special tokens")
    return Query(ids, ids.index(mask_id), "the blank, from both sides", space)


def _seq2seq_query(lm: LoadedModel, text: str, segments: list[str] | None, space: bool) -> Query:
    tok = lm.tokenizer
    seq2seq.check_seq2seq(lm)
    if segments is not None:
        # The encoder reads the text with BART's mask in the blank; the decoder has rewritten it up to the blank.
        source = seq2seq.infill_source(lm, segments)
        left = segments[0].rstrip(" ")
        prefix = [seq2seq.decoder_start_id(lm)] + ([tok.bos_token_id] if tok.bos_token_id is not None else [])
        decoder_ids = prefix + (tok(left, add_special_tokens=False)["input_ids"] if left else [])
        what = "the blank (decoder, after the words before it)"
    else:
        # As `generate` continues a prompt: the encoder reads it with a mask after it, the decoder has copied it.
        source, decoder_ids = seq2seq.generation_inputs(lm, text)
        what = "the next token (decoder, after the text)"
    lm.check_fits(max(len(source), len(decoder_ids)), "the text")
    return Query(source, len(decoder_ids) - 1, what, space, decoder_ids)


# Where each kind of model predicts: the one place lens and saliency choose by the model's kind.
_QUERIES: dict[str, Callable[[LoadedModel, str, list[str] | None, bool], Query]] = {
    "causal": _causal_query,
    "masked": _masked_query,
    "seq2seq": _seq2seq_query,
}


def blank_segments(text: str) -> list[str] | None:
    """The text around its one blank, or None without one; more than one blank is refused."""
    if not text.strip():
        raise usage_error("The text is empty.", 'Give a sentence, e.g. "the [MASK] quacks in the park ."')
    if MASK_PATTERN.search(text) is None:
        return None
    segments = split_masks(text)
    if len(segments) > 2:
        raise usage_error(
            f"The text has {len(segments) - 1} blanks; one is read at a time.",
            f"Keep one {MASK_SPELLINGS} and write the other words out.",
        )
    return segments


def check_text(text: str, families: list[str]) -> None:
    """Refuse, before any model loads, a text the chosen models cannot be read on."""
    if blank_segments(text) is None and "bert" in families:
        raise _no_blank("BERT")


def _no_blank(name: str) -> GbcliError:
    return usage_error(
        f"The text has no blank, and {name}, a masked LM, predicts only at one.",
        f'Write {MASK_SPELLINGS} where the word to predict goes, e.g. "the [MASK] quacks in the park .", '
        "or use --models gpt to read the next word.",
    )


def encoder_extras(lm: LoadedModel, input_ids: torch.Tensor) -> dict[str, Any]:
    """The attention mask of an unpadded text, and the segment ids (all 0, one sentence) a BERT also takes."""
    import torch

    extras: dict[str, Any] = {"attention_mask": torch.ones_like(input_ids)}
    if "token_type_ids" in lm.tokenizer.model_input_names:
        extras["token_type_ids"] = torch.zeros_like(input_ids)
    return extras


def token_label(lm: LoadedModel, token_id: int) -> str:
    """A vocabulary token as a reader sees it (␣duck, ·p); special tokens keep their names ([CLS])."""
    tok = lm.tokenizer
    piece = tok.convert_ids_to_tokens(token_id)
    if piece is None:
        return f"<{token_id}>"
    if token_id in tok.all_special_ids:
        return piece
    return readable_piece(piece, tok.decode([token_id]))
