"""One text on its way through the models: its blanks, what each column has found so far, or why it failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gbcli.errors import GbcliError, usage_error
from gbcli.loading.models import LoadedModel
from gbcli.tasks.masking.masks import MASK_PATTERN, MASK_SPELLINGS, split_masks
from gbcli.tasks.masking.results import Filling, FillMaskResult, MaskSlot, SpanInfilling

if TYPE_CHECKING:
    from gbcli.tasks.masking.bert import BertReading
    from gbcli.tasks.masking.column import RunSettings
    from gbcli.tasks.masking.gpt import GptReading


@dataclass
class TextState:
    """A text of the run. A column that cannot do it sets `error`, and the later columns skip it."""

    number: int  # 1-based line number
    text: str
    models: dict[str, str]  # family → model name
    segments: list[str] = field(default_factory=list)  # the text around its masks
    error: GbcliError | None = None
    slots: list[MaskSlot] = field(default_factory=list)
    fillings: list[Filling] = field(default_factory=list)
    bert: BertReading | None = None  # set once BERT has tokenized the text
    gpt: GptReading | None = None  # set once GPT-2's columns start on it
    bart: SpanInfilling | None = None

    @property
    def masks(self) -> int:
        return len(self.segments) - 1

    def space_before(self, mask: int) -> str:
        """ " " when a space separates the mask from the text before it: the next word then carries GPT-2's Ġ."""
        return " " if self.segments[mask].endswith(" ") else ""

    def word_gap(self, mask: int) -> str:
        """ " " when the blank touches a word before it (`cat[MASK]`, `[MASK][MASK]`): a masked LM's whole word
        there is a word of its own (only a `##` piece continues the word before), so it needs that space in the
        text; "" after a space, at the start, or after punctuation (`([MASK])`)."""
        before = self.segments[mask]
        return " " if (not before and mask > 0) or before[-1:].isalnum() else ""

    def finish(self, settings: RunSettings) -> FillMaskResult:
        result = FillMaskResult(
            text=self.text,
            line=self.number,
            models=self.models,
            top_k=settings.top_k,
            targets=list(settings.targets),
            warnings=list(settings.warnings),
        )
        if self.error is not None:
            result.error, result.hint = self.error.message, self.error.hint
        else:
            result.masks, result.fillings, result.bart = self.slots, self.fillings, self.bart
        return result


def parse_text(number: int, text: str, models: dict[str, str]) -> TextState:
    """The text split at its masks, one empty slot per mask; or the reason it has no blank to fill."""
    state = TextState(number, text, models)
    if not text.strip():
        state.error = usage_error("The line is empty.", f"Give a text with {MASK_SPELLINGS} on every line.")
        return state
    try:
        state.segments = split_masks(text)
    except GbcliError as error:
        state.error = error
        return state
    spans = [(m.start(), m.end()) for m in MASK_PATTERN.finditer(text)]
    state.slots = [MaskSlot(i, start, end) for i, (start, end) in enumerate(spans)]
    return state


def too_long(lm: LoadedModel, tokens: int, what: str) -> GbcliError:
    """A text (or one line of a file) too long for the model: the shared refusal, recorded on the line."""
    return lm.too_long_error(tokens, f"the text {what}", "Shorten the text, or split it into several lines.")
