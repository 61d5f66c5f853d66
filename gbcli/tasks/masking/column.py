"""What every column does with one model's token ids: spell a target, turn a predicted token into a candidate.

`Column` is the base of the three per-model classes (`BertColumn`, `GptColumns`, `BartColumn`): it holds the
model, the run's settings, and the model's own cache of how each --targets word is tokenized.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gbcli.loading.models import LoadedModel
from gbcli.tasks.masking.masks import Fill
from gbcli.tasks.masking.results import MaskPrediction
from gbcli.tasks.masking.text import TextState
from gbcli.tasks.masking.tokens import marks_spaces, piece, special_ids, token_text, undecodable, undecodable_rows

# The joint filling and the greedy left-to-right filling pick the best token that can stand in a sentence
# (not [CLS], [SEP], <|endoftext|>...) from this many of the most likely ones.
CHOICE_POOL = 16


@dataclass
class RunSettings:
    """What the columns of one fill-mask run share: its options, and its warnings (each said once)."""

    top_k: int
    targets: list[str]
    batch_size: int
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


def as_fill(lm: LoadedModel, token_id: int, space: str) -> Fill:
    """What a predicted token puts in the blank: WordPiece `##p` and GPT-2's space-less `p` join the word
    before; GPT-2's `Ġduck` after a space is the word `duck`.

    `space`: for a model that marks spaces in its tokens (GPT-2), the text's space before the blank
    (`TextState.space_before`); for one that does not (BERT), the space its whole word needs there
    (`TextState.word_gap`), which the word then carries, as GPT-2's `Ġ` word does at such a blank."""
    raw, text = piece(lm, token_id), token_text(lm, token_id)
    if raw.startswith("##") and len(raw) > 2:
        return raw[2:], True
    if not marks_spaces(lm):
        return space + text.strip(), False
    if space:
        return (text[1:], False) if text.startswith(" ") else (text, True)
    return text, False


class Column:
    """One model's view of the blanks of a batch of texts; `run` fills in its part of each text."""

    def __init__(self, lm: LoadedModel, settings: RunSettings) -> None:
        self.lm, self.settings = lm, settings
        self.top_k, self.targets, self.batch_size = settings.top_k, settings.targets, settings.batch_size
        self._target_ids: dict[tuple[str, str], list[int] | None] = {}  # (word, space before it) → its pieces

    def run(self, texts: list[TextState]) -> None:
        raise NotImplementedError

    def target_ids(self, word: str, space: str) -> list[int] | None:
        """The word's pieces as they sit in the blank; None (with one warning) if the tokenizer does not know it."""
        key = (word, space)
        if key not in self._target_ids:
            lm, tok = self.lm, self.lm.tokenizer
            ids = tok(space + word, add_special_tokens=False)["input_ids"]
            unknown = tok.unk_token_id is not None and tok.unk_token_id in ids and word != tok.unk_token
            if unknown or not ids:
                ids = None
                shown = " ".join(tok.convert_ids_to_tokens(tok(word, add_special_tokens=False)["input_ids"]))
                self.settings.warn(
                    f"target '{word}' is unknown to {lm.name} (it tokenizes to {shown or 'nothing'}); "
                    f"it is not scored in {lm.name}'s columns."
                )
            self._target_ids[key] = ids
        return self._target_ids[key]

    def fill_space(self, state: TextState, mask: int) -> str:
        """The `space` argument of `as_fill` for this column's model at the blank."""
        return state.space_before(mask) if marks_spaces(self.lm) else state.word_gap(mask)

    def choice_pool(self) -> int:
        """How many of the most likely tokens to read: the top-k, and enough that the choice of a token that can
        stand in a sentence (`choose`) always has one, past the special tokens and any padded rows."""
        return max(self.top_k, CHOICE_POOL) + len(special_ids(self.lm)) + undecodable_rows(self.lm)

    def prediction(self, token_ids: list[int], space: str, logprob: float | None) -> MaskPrediction:
        lm = self.lm
        if len(token_ids) == 1 and undecodable(lm, token_ids[0]):
            self.warn_undecodable()
            label = piece(lm, token_ids[0])
            return MaskPrediction(
                word=label,
                joins_previous=False,
                text="",
                pieces=[label],
                token_ids=list(token_ids),
                prob=math.exp(logprob) if logprob is not None else None,
                logprob=logprob,
                undecodable=True,
            )
        word, joins = as_fill(lm, token_ids[0], space)
        if len(token_ids) > 1:
            joins = False
            word = lm.tokenizer.decode(token_ids).strip()
        return MaskPrediction(
            word=word,
            joins_previous=joins,
            text=token_text(lm, token_ids[0]) if len(token_ids) == 1 else lm.tokenizer.decode(token_ids),
            pieces=[piece(lm, t) for t in token_ids],
            token_ids=list(token_ids),
            prob=math.exp(logprob) if logprob is not None else None,
            logprob=logprob,
            special=len(token_ids) == 1 and token_ids[0] in special_ids(lm),
        )

    def warn_undecodable(self) -> None:
        lm = self.lm
        self.settings.warn(
            f"{lm.name}'s vocabulary has {lm.vocab_size} rows but its tokenizer only {len(lm.tokenizer)} tokens: "
            f"ids from {len(lm.tokenizer)} on (padding rows) cannot be written as text, so they are shown as "
            "<id N> and never put in a sentence."
        )

    def choose(self, top_ids: list[int], top_logprobs: list[float], space: str) -> tuple[int, float]:
        """The most likely token that can stand in a sentence: no special token, no padded row, no empty piece."""
        specials = special_ids(self.lm)
        for token_id, logprob in zip(top_ids, top_logprobs, strict=True):
            writable = token_id not in specials and not undecodable(self.lm, token_id)
            if writable and as_fill(self.lm, token_id, space)[0].strip():
                return token_id, logprob
        return top_ids[0], top_logprobs[0]

    def candidate_pool(self, top_ids: list[int], space: str) -> list[Fill]:
        """A column's candidates for the whole-sentence ranking: its CHOICE_POOL most likely tokens (at least the
        top-k it shows), without special tokens or empty pieces, so the obvious answer is rarely left out."""
        specials = special_ids(self.lm)
        fills = [
            as_fill(self.lm, t, space)
            for t in top_ids[: max(self.top_k, CHOICE_POOL)]
            if t not in specials and not undecodable(self.lm, t)
        ]
        return [fill for fill in fills if fill[0].strip()]

    def target_prediction(self, word: str, ids: list[int] | None, logprob: float | None) -> MaskPrediction:
        if ids is None:
            return MaskPrediction(word, False, word, [], [], None, None)
        prediction = self.prediction(ids, "", logprob)
        prediction.word, prediction.joins_previous = word, False
        return prediction
