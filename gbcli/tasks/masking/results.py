"""What `fill-mask` says about a text: the dataclasses that the table view and `--json` are both made from.

A text has one `MaskSlot` per blank; each slot holds one `MaskColumn` per view (BERT, GPT-2's left context,
GPT-2's whole sentence, BART's spans), and the text has one `Filling` per view with every blank filled at once.
BART's beams, rewrites included, are kept whole in `SpanInfilling`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnName = Literal["bert", "gpt_left", "gpt_whole", "bart"]

# How each view fills every blank at once, and what its score is (`Filling.method`).
# The joint filling of several blanks: a beam search over the blanks' candidates in text order, each partial
# filling scored as the text up to the next blank, each complete one as the whole sentence (gbcli.tasks.masking.gpt).
JOINT_BEAMS = 5

FILLING_METHODS: dict[ColumnName, str] = {
    "bert": "most confident mask first, then re-predict the rest; score = sum of the chosen tokens' log-probs",
    "gpt_left": "left to right, each mask its most likely next token; score = sum of their log-probs",
    "gpt_whole": "one blank: its best whole-sentence candidate; several: the best of a beam search "
    f"({JOINT_BEAMS} beams) over the blanks' candidates in text order, each filling scored as a whole sentence; "
    "score = the sentence's log-likelihood",
    "bart": "beam search's best restoration that keeps the text around the blanks; score = log p(that text | the "
    "masked text)",
}


@dataclass
class MaskPrediction:
    """One candidate for one blank: a vocabulary token, or a whole word of several tokens (a target).

    prob/logprob are the column's numbers: BERT's and GPT-2's left-context probability of the word (several
    pieces multiply), or, in the whole-sentence column, the share of this candidate's sentence among the
    candidates' sentences. They are None when the model cannot spell the word (unknown tokens).
    """

    word: str  # the text that goes into the blank
    joins_previous: bool  # a continuation piece (WordPiece ##, byte-level piece without space): no space before it
    text: str  # the pieces as the tokenizer decodes them (GPT-2 keeps the leading space)
    pieces: list[str]  # raw vocabulary entries (Ġ, ##)
    token_ids: list[int]
    prob: float | None
    logprob: float | None
    sentence_logprob: float | None = None  # whole-sentence column: log-likelihood of the complete sentence
    # An id past the tokenizer's entries (a row the embedding matrix was padded with): shown as <id N>, never put in
    # a sentence.
    undecodable: bool = False
    special: bool = False  # a special token (GPT-2's <|endoftext|>: the model would end the text here)


@dataclass
class MaskColumn:
    """What one view says at one mask: its ranked predictions, and the --targets words in the order given."""

    column: ColumnName
    model: str
    predictions: list[MaskPrediction]
    targets: list[MaskPrediction] = field(default_factory=list)
    # The text this column read for this blank, the blank as ___: GPT's left column stops at the blank and holds
    # its own earlier fills; the whole-sentence column holds the joint filling in the other blanks.
    context: str | None = None


@dataclass
class MaskSlot:
    """One blank of the text (0-based, with its character offsets) and each view's predictions for it."""

    index: int
    start: int
    end: int
    bert: MaskColumn | None = None
    gpt_left: MaskColumn | None = None
    gpt_whole: MaskColumn | None = None
    bart: MaskColumn | None = None  # one row per beam that kept the text: the span it put in this blank

    def columns(self) -> list[MaskColumn]:
        return [c for c in (self.bert, self.gpt_left, self.gpt_whole, self.bart) if c is not None]


@dataclass
class Filling:
    """Every blank filled: one word per mask (in text order), the sentence it makes, and its joint score."""

    column: ColumnName
    method: str
    words: list[str]
    text: str
    logprob: float
    order: list[int]  # the masks in the order they were filled


@dataclass
class SpanFill:
    """What one BART beam put in one blank: the text, its tokens, and their log-probability under the raw model."""

    text: str
    pieces: list[str]
    token_ids: list[int]
    logprob: float  # sum of log p(token | masked text, output before it) over the span's tokens; 0 when empty
    prob: float


@dataclass
class SpanBeam:
    """One output of BART's beam search, and the spans it put in the blanks if it kept the text around them."""

    rank: int  # 1 = beam search's best
    output: str  # the text BART wrote (decoded, without <s> and </s>)
    token_ids: list[int]  # the decoder sequence, from the decoder start token to </s>
    sequence_score: float  # `generate`'s sequences_scores; see seq2seq.SEQUENCE_SCORE
    logprob: float  # log p(output | masked text): every token after the decoder start, raw model, teacher-forced
    prob: float  # exp(logprob): the probability that BART writes exactly this output
    rewrote_context: bool  # the output changes the text outside the blanks, so no span can be read off
    spans: list[SpanFill] | None  # one per blank, in text order; None when the context was rewritten
    filled: str | None  # the user's text with the spans in the blanks


@dataclass
class SpanInfilling:
    """BART's answer for the blanks of one text: every beam, best first."""

    model: str
    method: str
    source: str  # what the encoder read, with BART's own mask token in each blank
    generate_settings: dict[str, object]  # the `model.generate` arguments that reproduce the beams
    sequence_score: str  # what a beam's sequence_score is
    beams: list[SpanBeam] = field(default_factory=list)

    @property
    def fillings(self) -> list[SpanBeam]:
        """The beams that kept the text around the blanks, best first."""
        return [b for b in self.beams if not b.rewrote_context]

    @property
    def rewrites(self) -> list[SpanBeam]:
        return [b for b in self.beams if b.rewrote_context]


@dataclass
class FillMaskResult:
    """Everything `fill-mask` says about one text. `error`/`hint` are set instead for a line that failed."""

    text: str
    line: int | None = None  # 1-based line number for --file input
    models: dict[str, str] = field(default_factory=dict)  # family → model name
    # The options the columns were made with (a script, and `--resume`, can tell two runs' records apart).
    top_k: int | None = None
    targets: list[str] = field(default_factory=list)
    masks: list[MaskSlot] = field(default_factory=list)
    fillings: list[Filling] = field(default_factory=list)
    bart: SpanInfilling | None = None  # every beam of BART's infilling, rewrites included
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None

    def filling(self, column: ColumnName) -> Filling | None:
        return next((f for f in self.fillings if f.column == column), None)
