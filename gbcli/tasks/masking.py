"""Fill in the blank: BERT reads both sides of a mask, GPT-2 only the words before it.

A masked LM was trained to predict hidden tokens from the whole sentence, so it can use what follows the blank.
A causal LM was trained to predict the next token from the ones before it, so at the blank it knows only the left
context. It can still judge complete sentences, though: put each candidate in the blank and compare the
likelihoods of the whole sentences. Three columns come out of this, one per view:

- `bert`: the masked LM's top-k at each mask, a softmax over the whole vocabulary (as `pipeline("fill-mask")`);
- `gpt_left`: the causal LM's next-token top-k given only the text before the mask;
- `gpt_whole`: the candidates (BERT's top-k, GPT-2's left top-k and the targets) ranked by the causal LM's
  log-likelihood of the complete sentence, normalised over the candidates;
- `bart`: an encoder-decoder denoiser restores the whole text, and what it wrote in each blank is a span of any
  number of tokens. Beam search gives the top-k restorations; the span is read off by matching each one against
  the text around the blanks, and a beam that rewrote that text is kept, marked, without a span.

The module reads like a pipeline: parse and tokenize, run each model on padded batches of similar length (only
the mask positions go through BERT's vocabulary projection), and turn log-probabilities into the dataclasses
below. `fill_mask` does one text and raises on a bad one; `fill_mask_lines` does many and reports per line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.models import LoadedModel
from gbcli.tasks import seq2seq
from gbcli.tasks.scoring import logsumexp_in_blocks

if TYPE_CHECKING:
    import torch

ColumnName = Literal["bert", "gpt_left", "gpt_whole", "bart"]

MASK_PATTERN = re.compile(r"\[MASK\]|<mask>")
MASK_SPELLINGS = "[MASK] or <mask>"
MAX_MASKS = 32  # each mask costs a forward pass for the joint filling: more is a mistake, not a sentence
DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 32
# The joint filling and the greedy left-to-right filling pick the best token that can stand in a sentence
# (not [CLS], [SEP], <|endoftext|>...) from this many of the most likely ones.
CHOICE_POOL = 16
BLANK = " ___"  # the blank a column predicts, in the context it read

COLUMN_METHODS: dict[ColumnName, str] = {
    "bert": "masked LM, both sides of the blank: softmax over the whole vocabulary",
    "gpt_left": "causal LM, left context only: next-token probabilities given the text before the blank",
    "gpt_whole": "causal LM, whole sentence: each candidate's sentence log-likelihood, normalised over the candidates",
    "bart": "encoder-decoder denoiser: spans of any length from beam search over the restored text; p = the "
    "probability that BART writes that whole text",
}
FILLING_METHODS: dict[ColumnName, str] = {
    "bert": "most confident mask first, then re-predict the rest; score = sum of the chosen tokens' log-probs",
    "gpt_left": "left to right, each mask its most likely next token; score = sum of their log-probs",
    "gpt_whole": "each mask its best whole-sentence candidate; score = the sentence's log-likelihood",
    "bart": "beam search's best restoration that keeps the text around the blanks; score = log p(that text | the "
    "masked text)",
}


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


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
    masks: list[MaskSlot] = field(default_factory=list)
    fillings: list[Filling] = field(default_factory=list)
    bart: SpanInfilling | None = None  # every beam of BART's infilling, rewrites included
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None

    def filling(self, column: ColumnName) -> Filling | None:
        return next((f for f in self.fillings if f.column == column), None)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def fill_mask(
    models: dict[str, LoadedModel],
    text: str,
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
) -> FillMaskResult:
    """Fill the masks of one text with every model given ("bert": masked LM, "gpt": causal LM, "bart": seq2seq).

    Raises GbcliError (exit 2) for a text without mask, with too many masks, or too long for a model.
    """
    result = fill_mask_lines(models, [text], top_k, targets)[0]
    result.line = None
    if result.error is not None:
        raise usage_error(result.error, result.hint)
    return result


def fill_mask_lines(
    models: dict[str, LoadedModel],
    lines: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
    first_line: int = 1,
    skip_empty: bool = False,
) -> list[FillMaskResult]:
    """Fill the masks of many texts, batched: one result per line, in input order.

    A line that cannot be done (empty, no mask, too many masks, too long) gets `error` and `hint` and does not
    stop the others. Texts are sorted by length and padded into batches of `batch_size`, so that every number
    equals the unbatched one. on_progress(n) is called as n more lines are done. With `skip_empty`, empty lines
    get no result at all.
    """
    import torch

    run, names = _start_run(models, top_k, targets, batch_size)
    bert = run.bert
    states = [_parse(number, line, names) for number, line in enumerate(lines, start=first_line)]
    with torch.inference_mode():
        if bert is not None:
            run.tokenize_for_bert([s for s in states if s.error is None])
        valid = [s for s in states if s.error is None]
        if on_progress and len(valid) < len(states):
            on_progress(len(states) - len(valid))
        valid.sort(key=lambda s: len(s.bert_ids) if bert is not None else len(s.text))
        for start in range(0, len(valid), batch_size):
            chunk = valid[start : start + batch_size]
            for _ in run.columns_in_turn(chunk):
                pass
            if on_progress:
                on_progress(len(chunk))
    # --file skips empty lines, as `score --file` does (the others keep their line numbers).
    return [s.finish(run.warnings) for s in states if not (skip_empty and not s.text.strip())]


def check_fill_options(top_k: int, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Refuse a top-k or batch size below 1 (the CLI calls this before loading any model)."""
    if top_k < 1:
        raise usage_error(f"--top-k must be at least 1, not {top_k}.", "For example --top-k 5.")
    if batch_size < 1:
        raise usage_error(f"--batch-size must be at least 1, not {batch_size}.", "For example --batch-size 32.")


def _start_run(models: dict[str, LoadedModel], top_k: int, targets: Sequence[str],
               batch_size: int) -> tuple[_Run, dict[str, str]]:
    """Check the models and options of a fill-mask run; the run, and each family's display name."""
    check_fill_options(top_k, batch_size)
    targets = list(dict.fromkeys(t.strip() for t in targets if t.strip()))
    bert, gpt, bart = models.get("bert"), models.get("gpt"), models.get("bart")
    if bert is None and gpt is None and bart is None:
        raise usage_error("fill-mask needs a masked LM (bert), a causal LM (gpt) or a seq2seq model (bart).",
                          "Use --models gpt,bert.")
    if bert is not None and bert.tokenizer.mask_token_id is None:
        raise GbcliError(f"{bert.name} has no mask token, so it cannot fill blanks.", "Use a masked LM for --bert.")
    if bart is not None:
        seq2seq.check_seq2seq(bart)
    names = {family: lm.name for family, lm in models.items() if family in ("bert", "gpt", "bart")}
    return _Run(bert, gpt, top_k, list(targets), batch_size, bart), names


def fill_mask_in_turn(
    models: dict[str, LoadedModel],
    text: str,
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
) -> Iterator[tuple[str, FillMaskResult]]:
    """`fill_mask`, one model at a time: yields (family, the result so far) as each model's column is done.

    The order is fill_mask's own (bert, gpt, bart), which is the order the columns depend on each other in
    (GPT-2's whole-sentence candidates include BERT's top-k), so the final result equals `fill_mask`'s. Between
    two steps the caller may use the model just finished for other work and release it (`compare` does).
    """
    import torch

    run, names = _start_run(models, top_k, targets, DEFAULT_BATCH_SIZE)
    bert = run.bert
    state = _parse(1, text, names)
    with torch.inference_mode():
        if bert is not None and state.error is None:
            run.tokenize_for_bert([state])
    steps = run.columns_in_turn([state]) if state.error is None else iter(())
    while True:
        with torch.inference_mode():
            family = next(steps, None)
        if state.error is not None:
            raise usage_error(state.error.message, state.error.hint)
        if family is None:
            return
        result = state.finish(run.warnings)
        result.line = None
        yield family, result


def parse_targets(raw: str | None) -> list[str]:
    """`--targets duck,dog` → ["duck", "dog"]."""
    if raw is None:
        return []
    words = list(dict.fromkeys(w.strip() for w in raw.split(",") if w.strip()))
    if not words:
        raise usage_error("--targets names no word.", "For example --targets duck,dog.")
    return words


def split_masks(text: str) -> list[str]:
    """The text around its masks: `the [MASK] quacks` → ["the ", " quacks"]. Raises for none or too many."""
    segments = MASK_PATTERN.split(text)
    masks = len(segments) - 1
    if masks == 0:
        lowered = text.lower()
        nearly = "[mask]" in lowered or "<mask>" in lowered
        raise usage_error(
            "The text has no mask to fill.",
            ("Masks are case-sensitive: write " if nearly else "Write ")
            + f"{MASK_SPELLINGS} where a word is missing, e.g. \"the [MASK] quacks in the park .\"",
        )
    if masks > MAX_MASKS:
        raise usage_error(
            f"The text has {masks} masks; fill-mask takes at most {MAX_MASKS}.",
            "Mask only the words you want predicted.",
        )
    return segments


def fill_text(segments: Sequence[str], fills: Sequence[tuple[str, bool]]) -> str:
    """The text with each mask replaced by (word, joins_previous); a joining piece sticks to the word before."""
    out = segments[0]
    for (word, joins), segment in zip(fills, segments[1:], strict=True):
        if joins:
            out = out.rstrip()
        out += word + segment
    return out


# --------------------------------------------------------------------------------------------------------------
# One text on its way through the models
# --------------------------------------------------------------------------------------------------------------

Fill = tuple[str, bool]  # (word, joins_previous)


@dataclass
class _Text:
    number: int
    text: str
    models: dict[str, str]
    segments: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    error: GbcliError | None = None
    slots: list[MaskSlot] = field(default_factory=list)
    fillings: list[Filling] = field(default_factory=list)
    bert_ids: list[int] = field(default_factory=list)
    bert_positions: list[int] = field(default_factory=list)
    bert_candidates: list[list[Fill]] = field(default_factory=list)  # per mask: BERT's top-k as fills
    bert_filling: list[Fill] = field(default_factory=list)
    gpt_candidates: list[list[Fill]] = field(default_factory=list)
    gpt_filling: list[Fill] = field(default_factory=list)
    gpt_filling_logprob: float = 0.0
    bart: SpanInfilling | None = None

    @property
    def masks(self) -> int:
        return len(self.segments) - 1

    def space_before(self, mask: int) -> str:
        """" " when a space separates the mask from the text before it: the next word then carries GPT-2's Ġ."""
        return " " if self.segments[mask].endswith(" ") else ""

    def finish(self, warnings: list[str]) -> FillMaskResult:
        result = FillMaskResult(text=self.text, line=self.number, models=self.models, warnings=list(warnings))
        if self.error is not None:
            result.error, result.hint = self.error.message, self.error.hint
        else:
            result.masks, result.fillings, result.bart = self.slots, self.fillings, self.bart
        return result


@dataclass
class _JointFilling:
    """BERT's joint filling of one text so far: its ids with the chosen tokens in, and the masks still open."""

    text: _Text
    ids: list[int]
    open: list[int]
    chosen: dict[int, int] = field(default_factory=dict)  # mask → token id
    order: list[int] = field(default_factory=list)
    logprob: float = 0.0

    def fill(self, mask: int, token_id: int, logprob: float) -> None:
        self.ids[self.text.bert_positions[mask]] = token_id
        self.chosen[mask] = token_id
        self.order.append(mask)
        self.open.remove(mask)
        self.logprob += logprob


def _parse(number: int, text: str, models: dict[str, str]) -> _Text:
    state = _Text(number, text, models)
    if not text.strip():
        state.error = usage_error("The line is empty.", f"Give a text with {MASK_SPELLINGS} on every line.")
        return state
    try:
        state.segments = split_masks(text)
    except GbcliError as error:
        state.error = error
        return state
    state.spans = [(m.start(), m.end()) for m in MASK_PATTERN.finditer(text)]
    state.slots = [MaskSlot(i, start, end) for i, (start, end) in enumerate(state.spans)]
    return state


def _too_long(lm: LoadedModel, tokens: int, what: str) -> GbcliError:
    return usage_error(
        f"The text is {tokens} tokens long for {lm.name} ({what}), but {lm.name} holds at most "
        f"{lm.max_positions} tokens.",
        "Shorten the text, or split it into several lines.",
    )


# --------------------------------------------------------------------------------------------------------------
# The run: both models over batches of texts
# --------------------------------------------------------------------------------------------------------------


class _Run:
    def __init__(
        self, bert: LoadedModel | None, gpt: LoadedModel | None, top_k: int, targets: list[str], batch_size: int,
        bart: LoadedModel | None = None,
    ) -> None:
        self.bert, self.gpt, self.bart = bert, gpt, bart
        self.top_k, self.targets, self.batch_size = top_k, targets, batch_size
        self.warnings: list[str] = []
        self._target_cache: dict[tuple[int, str, str], list[int] | None] = {}
        self._gpt_words: dict[str, list[int]] = {}

    def columns_in_turn(self, chunk: list[_Text]) -> Iterator[str]:
        """Each model's column for a chunk of texts, in dependency order; yields the family after each."""
        for family, lm, column in (("bert", self.bert, self.bert_columns), ("gpt", self.gpt, self.gpt_columns),
                                   ("bart", self.bart, self.bart_columns)):
            if lm is not None:
                column([s for s in chunk if s.error is None])
                yield family

    # ---- tokens ------------------------------------------------------------------------------------------------

    def target_ids(self, lm: LoadedModel, word: str, space: str) -> list[int] | None:
        """The word's pieces as they sit in the blank; None (with one warning) if the tokenizer does not know it."""
        key = (id(lm), word, space)
        if key not in self._target_cache:
            tok = lm.tokenizer
            ids = tok(space + word, add_special_tokens=False)["input_ids"]
            unknown = tok.unk_token_id is not None and tok.unk_token_id in ids and word != tok.unk_token
            if unknown or not ids:
                ids = None
                shown = " ".join(tok.convert_ids_to_tokens(tok(word, add_special_tokens=False)["input_ids"]))
                message = (
                    f"target '{word}' is unknown to {lm.name} (it tokenizes to {shown or 'nothing'}); "
                    f"it is not scored in {lm.name}'s columns."
                )
                if message not in self.warnings:
                    self.warnings.append(message)
            self._target_cache[key] = ids
        return self._target_cache[key]

    def tokenize_for_bert(self, texts: list[_Text]) -> None:
        """BERT's ids with its own mask token in every blank; texts too long for it get their error here."""
        lm = self.bert
        assert lm is not None
        tok = lm.tokenizer
        mask_id = tok.mask_token_id
        if not texts:
            return
        encoded = tok([tok.mask_token.join(t.segments) for t in texts])["input_ids"]
        longest_target = max(
            (len(ids) for w in self.targets for ids in [self.target_ids(lm, w, " ")] if ids), default=1
        )
        for state, ids in zip(texts, encoded, strict=True):
            positions = [i for i, token in enumerate(ids) if token == mask_id]
            if len(positions) != state.masks:  # e.g. a mask glued inside a word the tokenizer keeps whole
                state.error = usage_error(
                    f"{lm.name} read {len(positions)} masks where the text has {state.masks}.",
                    f"Put spaces or punctuation around each {MASK_SPELLINGS}.",
                )
                continue
            needed = len(ids) + longest_target - 1
            if needed > lm.max_positions:
                what = "with its special tokens" if needed == len(ids) else "with the longest target in a blank"
                state.error = _too_long(lm, needed, what)
                continue
            state.bert_ids, state.bert_positions = ids, positions

    def as_fill(self, lm: LoadedModel, token_id: int, space: str) -> Fill:
        """What a predicted token puts in the blank: WordPiece `##p` and GPT-2's space-less `p` join the word
        before; GPT-2's `Ġduck` after a space is the word `duck`."""
        piece, text = _piece(lm, token_id), _token_text(lm, token_id)
        if piece.startswith("##") and len(piece) > 2:
            return piece[2:], True
        if space and _marks_spaces(lm):
            return (text[1:], False) if text.startswith(" ") else (text, True)
        return (text, False) if _marks_spaces(lm) else (text.strip(), False)

    def choice_pool(self, lm: LoadedModel) -> int:
        """How many of the most likely tokens to read: the top-k, and enough that the choice of a token that can
        stand in a sentence (`choose`) always has one, past the special tokens and any padded rows."""
        return max(self.top_k, CHOICE_POOL) + len(_special_ids(lm)) + _undecodable_rows(lm)

    def prediction(self, lm: LoadedModel, token_ids: list[int], space: str, logprob: float | None) -> MaskPrediction:
        if len(token_ids) == 1 and _undecodable(lm, token_ids[0]):
            self.warn_undecodable(lm)
            label = _piece(lm, token_ids[0])
            return MaskPrediction(word=label, joins_previous=False, text="", pieces=[label], token_ids=list(token_ids),
                                  prob=math.exp(logprob) if logprob is not None else None, logprob=logprob,
                                  undecodable=True)
        word, joins = self.as_fill(lm, token_ids[0], space)
        if len(token_ids) > 1:
            joins = False
            word = lm.tokenizer.decode(token_ids).strip()
        return MaskPrediction(
            word=word,
            joins_previous=joins,
            text=_token_text(lm, token_ids[0]) if len(token_ids) == 1 else lm.tokenizer.decode(token_ids),
            pieces=[_piece(lm, t) for t in token_ids],
            token_ids=list(token_ids),
            prob=math.exp(logprob) if logprob is not None else None,
            logprob=logprob,
            special=len(token_ids) == 1 and token_ids[0] in _special_ids(lm),
        )

    def warn_undecodable(self, lm: LoadedModel) -> None:
        message = (
            f"{lm.name}'s vocabulary has {lm.vocab_size} rows but its tokenizer only {len(lm.tokenizer)} tokens: "
            f"ids from {len(lm.tokenizer)} on (padding rows) cannot be written as text, so they are shown as "
            "<id N> and never put in a sentence."
        )
        if message not in self.warnings:
            self.warnings.append(message)

    def choose(self, lm: LoadedModel, top_ids: list[int], top_logprobs: list[float], space: str):
        """The most likely token that can stand in a sentence: no special token, no padded row, no empty piece."""
        specials = _special_ids(lm)
        for token_id, logprob in zip(top_ids, top_logprobs, strict=True):
            writable = token_id not in specials and not _undecodable(lm, token_id)
            if writable and self.as_fill(lm, token_id, space)[0].strip():
                return token_id, logprob
        return top_ids[0], top_logprobs[0]

    def candidate_pool(self, lm: LoadedModel, top_ids: list[int], space: str) -> list[Fill]:
        """A column's candidates for the whole-sentence ranking: its CHOICE_POOL most likely tokens (at least the
        top-k it shows), without special tokens or empty pieces, so the obvious answer is rarely left out."""
        specials = _special_ids(lm)
        fills = [self.as_fill(lm, t, space) for t in top_ids[: max(self.top_k, CHOICE_POOL)]
                 if t not in specials and not _undecodable(lm, t)]
        return [fill for fill in fills if fill[0].strip()]

    def target_prediction(self, lm: LoadedModel, word: str, ids: list[int] | None, logprob: float | None):
        if ids is None:
            return MaskPrediction(word, False, word, [], [], None, None)
        prediction = self.prediction(lm, ids, "", logprob)
        prediction.word, prediction.joins_previous = word, False
        return prediction

    # ---- BERT: both sides of the blank -------------------------------------------------------------------------

    def bert_columns(self, texts: list[_Text]) -> None:
        lm = self.bert
        assert lm is not None
        mask_id = lm.tokenizer.mask_token_id
        pool = self.choice_pool(lm)
        # One query per text: every mask at once, as pipeline("fill-mask") does; single-piece targets ride along.
        base: list[_MaskedQuery] = []
        for state in texts:
            wanted = []
            for mask in range(state.masks):
                ids = [self.target_ids(lm, w, state.space_before(mask)) for w in self.targets]
                wanted.append([t[0] for t in ids if t is not None and len(t) == 1])
            base.append(_MaskedQuery(state.bert_ids, state.bert_positions, pool, wanted))
        # A word of k pieces fills k consecutive masks and is scored left to right within the word (the
        # within-word PLL of Kauf and Ivanova 2023): log p(w1 | w1..wk masked) + log p(w2 | w1 shown, w2..wk
        # masked) + ...; later pieces stay masked so that they cannot give the word away. Never the first piece
        # alone, as pipeline("fill-mask") does.
        pieces: list[tuple[_Text, int, str, _MaskedQuery]] = []
        for state in texts:
            for mask, position in enumerate(state.bert_positions):
                for word in self.targets:
                    ids = self.target_ids(lm, word, state.space_before(mask))
                    if ids is None or len(ids) == 1:
                        continue
                    for j in range(len(ids)):
                        seq = state.bert_ids[:position] + ids[:j] + [mask_id] * (len(ids) - j)
                        seq += state.bert_ids[position + 1 :]
                        pieces.append((state, mask, word, _MaskedQuery(seq, [position + j], 0, [[ids[j]]])))
        _run_masked(lm, base + [q for *_, q in pieces], self.batch_size)
        word_logprob: dict[tuple[int, int, str], float] = {}
        for state, mask, word, query in pieces:
            key = (id(state), mask, word)
            word_logprob[key] = word_logprob.get(key, 0.0) + query.wanted_logprobs[0][0]

        for state, query in zip(texts, base, strict=True):
            state.bert_candidates = []
            for mask, slot in enumerate(state.slots):
                space = state.space_before(mask)
                top_ids, top_lps = query.top_ids[mask][: self.top_k], query.top_logprobs[mask][: self.top_k]
                predictions = [self.prediction(lm, [t], space, lp) for t, lp in zip(top_ids, top_lps, strict=True)]
                single = dict(zip(query.wanted[mask], query.wanted_logprobs[mask], strict=True))
                target_predictions = []
                for word in self.targets:
                    ids = self.target_ids(lm, word, space)
                    if ids is None:
                        logprob = None
                    elif len(ids) == 1:
                        logprob = single[ids[0]]
                    else:
                        logprob = word_logprob[(id(state), mask, word)]
                    target_predictions.append(self.target_prediction(lm, word, ids, logprob))
                slot.bert = MaskColumn("bert", lm.name, predictions, target_predictions,
                                       context=lm.tokenizer.mask_token.join(state.segments))
                state.bert_candidates.append(self.candidate_pool(lm, query.top_ids[mask], space))
        self.bert_joint_filling(texts, base)

    def bert_joint_filling(self, texts: list[_Text], base: list[_MaskedQuery]) -> None:
        """Fill the most confident mask, re-predict the others with it in place, repeat (one pass per mask)."""
        lm = self.bert
        assert lm is not None
        pool = self.choice_pool(lm)
        # The base query already predicted every mask of every text: it is the first round.
        joints = [_JointFilling(state, list(state.bert_ids), list(range(state.masks))) for state in texts]
        pending = list(zip(joints, base, strict=True))
        while pending:
            for joint, query in pending:
                # The query's rows follow joint.open, the masks still to fill.
                options = [
                    (mask, *self.choose(lm, query.top_ids[row], query.top_logprobs[row], joint.text.space_before(mask)))
                    for row, mask in enumerate(joint.open)
                ]
                joint.fill(*max(options, key=lambda option: option[2]))
            pending = [
                (joint, _MaskedQuery(list(joint.ids), [joint.text.bert_positions[m] for m in joint.open], pool))
                for joint, _ in pending
                if joint.open
            ]
            _run_masked(lm, [query for _, query in pending], self.batch_size)
        for state, joint in zip(texts, joints, strict=True):
            state.bert_filling = [self.as_fill(lm, joint.chosen[m], state.space_before(m)) for m in range(state.masks)]
            state.fillings.append(
                Filling("bert", FILLING_METHODS["bert"], [w for w, _ in state.bert_filling],
                        fill_text(state.segments, state.bert_filling), joint.logprob, joint.order)
            )

    # ---- GPT-2: left context, then the whole sentence ----------------------------------------------------------

    def gpt_prefix(self) -> list[int]:
        """GPT-2 scores a text after <|endoftext|>, so that its first word has a probability too."""
        tok = self.gpt.tokenizer  # type: ignore[union-attr]
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        return [bos] if bos is not None else []

    def gpt_word_ids(self, text: str) -> list[int]:
        ids = self._gpt_words.get(text)
        if ids is None:
            ids = self._gpt_words[text] = self.gpt.tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[union-attr]
        return ids

    def gpt_columns(self, texts: list[_Text]) -> None:
        lm = self.gpt
        assert lm is not None
        tok = lm.tokenizer
        prefix = self.gpt_prefix()
        pool = self.choice_pool(lm)
        for state in texts:
            state.gpt_candidates, state.gpt_filling, state.gpt_filling_logprob = [], [], 0.0
        # Left context only: mask r sees the text before it, earlier masks filled by GPT-2's own choices.
        for r in range(max((s.masks for s in texts), default=0)):
            work = [s for s in texts if s.error is None and s.masks > r]
            lefts = []
            for state in work:
                left = fill_text(state.segments[: r + 1], state.gpt_filling[:r])
                lefts.append(left[:-1] if state.space_before(r) else left)  # the space belongs to the next token
            encoded = tok(lefts, add_special_tokens=False)["input_ids"] if lefts else []
            jobs: list[tuple[_Text, _CausalQuery, list[tuple[str, list[int] | None, _CausalQuery | None]]]] = []
            for state, left_ids in zip(work, encoded, strict=True):
                context = prefix + left_ids
                if not context:
                    state.error = usage_error(
                        f"{lm.name} has no start-of-text token, so it cannot predict a text's first word.",
                        "Put some words before the first mask.",
                    )
                    continue
                space = state.space_before(r)
                scored = []
                for word in self.targets:
                    ids = self.target_ids(lm, word, space)
                    scored.append((word, ids, _CausalQuery(context + ids, len(context)) if ids else None))
                longest = max([len(context)] + [len(q.ids) for *_, q in scored if q is not None])
                if longest > lm.max_positions:
                    state.error = _too_long(lm, longest, "up to a blank, with a word in it")
                    continue
                jobs.append((state, _CausalQuery(context, len(context), len(context) - 1, pool), scored))
            queries = [q for _, q, _ in jobs] + [q for *_, scored in jobs for *_, q in scored if q is not None]
            _run_causal(lm, queries, self.batch_size)
            for state, query, scored in jobs:
                space = state.space_before(r)
                predictions = [
                    self.prediction(lm, [t], space, lp)
                    for t, lp in zip(query.top_ids[: self.top_k], query.top_logprobs[: self.top_k], strict=True)
                ]
                target_predictions = [
                    self.target_prediction(lm, word, ids, sum(q.token_logprobs) if q is not None else None)
                    for word, ids, q in scored
                ]
                read = fill_text(state.segments[: r + 1], state.gpt_filling[:r])
                read = read.rstrip() + BLANK if state.space_before(r) else read + BLANK.strip()
                state.slots[r].gpt_left = MaskColumn("gpt_left", lm.name, predictions, target_predictions,
                                                     context=read)
                state.gpt_candidates.append(self.candidate_pool(lm, query.top_ids, space))
                token_id, logprob = self.choose(lm, query.top_ids, query.top_logprobs, space)
                state.gpt_filling.append(self.as_fill(lm, token_id, space))
                state.gpt_filling_logprob += logprob
        texts = [s for s in texts if s.error is None]
        for state in texts:
            state.fillings.append(
                Filling("gpt_left", FILLING_METHODS["gpt_left"], [w for w, _ in state.gpt_filling],
                        fill_text(state.segments, state.gpt_filling), state.gpt_filling_logprob,
                        list(range(state.masks)))
            )
        self.gpt_whole_sentence(texts)

    def gpt_whole_sentence(self, texts: list[_Text]) -> None:
        """Rank the candidates by GPT-2's likelihood of the complete sentence with each one in the blank.

        The other masks hold the best joint filling (BERT's, or GPT-2's own left-to-right one without BERT).
        """
        lm = self.gpt
        assert lm is not None
        tok = lm.tokenizer
        prefix = self.gpt_prefix()
        score_from = 1  # after <|endoftext|> every token is scored; without it the first one cannot be
        plans: list[tuple[_Text, int, list[Fill], int]] = []  # (text, mask, candidates, first sentence index)
        sentences: list[str] = []
        for state in texts:
            context = state.bert_filling if self.bert is not None else state.gpt_filling
            for mask in range(state.masks):
                candidates: list[Fill] = []
                if self.bert is not None:
                    candidates += state.bert_candidates[mask]
                candidates += state.gpt_candidates[mask]
                space = state.space_before(mask)
                candidates += [(w, False) for w in self.targets if self.target_ids(lm, w, space) is not None]
                candidates = list(dict.fromkeys(candidates))
                if not candidates:  # every top-k token was special or a padded row: GPT-2's own choice stands
                    candidates = [state.gpt_filling[mask]]
                plans.append((state, mask, candidates, len(sentences)))
                for candidate in candidates:
                    fills = list(context)
                    fills[mask] = candidate
                    sentences.append(fill_text(state.segments, fills))
        encoded = tok(sentences, add_special_tokens=False)["input_ids"] if sentences else []
        queries = [_CausalQuery(prefix + ids, score_from) for ids in encoded]
        for state, _mask, candidates, first in plans:
            longest = max(len(q.ids) for q in queries[first : first + len(candidates)])
            if longest > lm.max_positions and state.error is None:
                state.error = _too_long(lm, longest, "with the blanks filled in")
        plans = [p for p in plans if p[0].error is None]
        _run_causal(lm, [q for _, _, c, first in plans for q in queries[first : first + len(c)]], self.batch_size)

        best: dict[int, list[Fill]] = {}
        best_score: dict[int, float] = {}
        for state, mask, candidates, first in plans:
            space = state.space_before(mask)
            totals = [sum(q.token_logprobs) for q in queries[first : first + len(candidates)]]
            norm = _logsumexp(totals)
            scored = []
            for (word, joins), total in zip(candidates, totals, strict=True):
                ids = self.gpt_word_ids(word if joins else space + word)
                scored.append(MaskPrediction(
                    word=word, joins_previous=joins, text=tok.decode(ids), pieces=[_piece(lm, t) for t in ids],
                    token_ids=ids, prob=math.exp(total - norm), logprob=total - norm, sentence_logprob=total,
                ))
            by_candidate = dict(zip(candidates, scored, strict=True))
            scored.sort(key=lambda p: -(p.logprob or 0.0))
            target_predictions = [
                by_candidate.get((w, False)) or self.target_prediction(lm, w, None, None) for w in self.targets
            ]
            others = list(state.bert_filling if self.bert is not None else state.gpt_filling)
            others[mask] = (BLANK.strip(), False)
            state.slots[mask].gpt_whole = MaskColumn("gpt_whole", lm.name, scored, target_predictions,
                                                     context=fill_text(state.segments, others))
            best.setdefault(id(state), [("", False)] * state.masks)[mask] = (scored[0].word, scored[0].joins_previous)
            if state.masks == 1:
                best_score[id(state)] = scored[0].sentence_logprob or 0.0

        # The whole-sentence filling: every mask's best candidate at once, and that sentence's log-likelihood.
        done = [s for s in texts if s.error is None]
        several = [s for s in done if s.masks > 1]
        filled = {id(s): fill_text(s.segments, best[id(s)]) for s in done}
        extra = tok([filled[id(s)] for s in several], add_special_tokens=False)["input_ids"] if several else []
        queries = [_CausalQuery(prefix + ids, score_from) for ids in extra]
        for state, query in zip(several, queries, strict=True):
            if len(query.ids) > lm.max_positions:
                state.error = _too_long(lm, len(query.ids), "with the blanks filled in")
        _run_causal(lm, [q for s, q in zip(several, queries, strict=True) if s.error is None], self.batch_size)
        for state, query in zip(several, queries, strict=True):
            if state.error is None:
                best_score[id(state)] = sum(query.token_logprobs)
        for state in done:
            if state.error is None:
                state.fillings.append(
                    Filling("gpt_whole", FILLING_METHODS["gpt_whole"], [w for w, _ in best[id(state)]],
                            filled[id(state)], best_score[id(state)], list(range(state.masks)))
                )


    # ---- BART: spans of any length -----------------------------------------------------------------------------

    def bart_columns(self, texts: list[_Text]) -> None:
        """BART restores each text by beam search (one text at a time: its beams already make a batch)."""
        lm = self.bart
        assert lm is not None
        for state in texts:
            try:
                state.bart = infill_spans(lm, state.segments, self.top_k)
            except GbcliError as error:
                state.error = error
                continue
            kept = state.bart.fillings
            targets = self.bart_targets(state, kept[0] if kept else None)
            for mask, slot in enumerate(state.slots):
                predictions = [_span_prediction(beam, mask) for beam in kept[: self.top_k]]
                slot.bart = MaskColumn("bart", lm.name, predictions, targets[mask])
            if kept:
                best = kept[0]
                state.fillings.append(Filling(
                    "bart", FILLING_METHODS["bart"], [span.text for span in best.spans or []], best.filled or "",
                    best.logprob, list(range(state.masks)),
                ))

    def bart_targets(self, state: _Text, best: SpanBeam | None) -> list[list[MaskPrediction]]:
        """Per blank, each --targets word scored as BART's whole output: log p(text with the word in the blank |
        masked text); the other blanks hold BART's best spans. One teacher-forced pass per text."""
        lm = self.bart
        assert lm is not None and state.bart is not None
        if not self.targets:
            return [[] for _ in range(state.masks)]
        tok = lm.tokenizer
        source = seq2seq.infill_source(lm, state.segments)
        start = seq2seq.decoder_start_id(lm)
        plans: list[tuple[int, str, list[int] | None]] = []
        for mask in range(state.masks):
            for word in self.targets:
                if best is None and state.masks > 1:
                    plans.append((mask, word, None))  # no restoration kept the text to hold the other blanks
                    continue
                spans = [s.text for s in best.spans or []] if best is not None else [""]
                spans[mask] = word
                ids = tok(seq2seq.fill_segments(state.segments, spans))["input_ids"]
                plans.append((mask, word, [start, *ids] if len(ids) < lm.max_positions else None))
        scored = iter(seq2seq.teacher_forced_logprobs(lm, source, [ids for _, _, ids in plans if ids is not None]))
        out: list[list[MaskPrediction]] = [[] for _ in range(state.masks)]
        for mask, word, ids in plans:
            pieces_ids = tok(state.space_before(mask) + word, add_special_tokens=False)["input_ids"]
            logprob = math.fsum(next(scored)) if ids is not None else None
            out[mask].append(MaskPrediction(
                word=word, joins_previous=False, text=word, pieces=[_piece(lm, t) for t in pieces_ids],
                token_ids=pieces_ids, prob=math.exp(logprob) if logprob is not None else None, logprob=logprob,
            ))
        return out


def _span_prediction(beam: SpanBeam, mask: int) -> MaskPrediction:
    """One BART beam in one blank's column: the span it wrote there, with the probability of its whole output."""
    assert beam.spans is not None
    span = beam.spans[mask]
    return MaskPrediction(word=span.text, joins_previous=False, text=span.text, pieces=span.pieces,
                          token_ids=span.token_ids, prob=beam.prob, logprob=beam.logprob)


def infill_spans(lm: LoadedModel, segments: Sequence[str], top_k: int) -> SpanInfilling:
    """BART fills the blanks between `segments`: beam search with 2 × top_k beams (at least 4), best first.

    Beams whose output rewrites the text around the blanks are kept and marked, not dropped: they are what the
    model wrote. Every beam is then scored once more by teacher forcing, for the raw model's probabilities.
    """
    import torch

    seq2seq.check_seq2seq(lm)
    source = seq2seq.infill_source(lm, segments)
    if len(source) > lm.max_positions:
        raise _too_long(lm, len(source), "with its special tokens")
    beams = min(max(2 * top_k, 4), seq2seq.MAX_BEAMS)
    settings = seq2seq.infill_settings(lm, len(source), len(segments) - 1, beams)
    input_ids = torch.tensor([source], device=lm.device)
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_scores=True,
            return_dict_in_generate=True, pad_token_id=seq2seq.pad_id(lm), **settings,
        )
    eos = seq2seq.eos_id(lm)
    sequences = []
    for row in output.sequences.tolist():
        ids = list(row)
        if eos is not None and eos in ids[1:]:  # drop the padding after </s> (the start token is </s> too)
            ids = ids[: ids.index(eos, 1) + 1]
        sequences.append(ids)
    logprobs = seq2seq.teacher_forced_logprobs(lm, source, sequences)
    result = SpanInfilling(model=lm.name, method=seq2seq.INFILL_METHOD, source=seq2seq.decode(lm, source),
                           generate_settings=settings, sequence_score=seq2seq.SEQUENCE_SCORE)
    scores = output.sequences_scores.tolist()
    for rank, (ids, token_logprobs, score) in enumerate(zip(sequences, logprobs, scores, strict=True), start=1):
        result.beams.append(_span_beam(lm, segments, rank, ids, token_logprobs, score))
    return result


def _span_beam(lm: LoadedModel, segments: Sequence[str], rank: int, ids: list[int], token_logprobs: list[float],
               score: float) -> SpanBeam:
    text_ids = seq2seq.body_ids(lm, ids)
    output = seq2seq.decode(lm, text_ids)
    total = math.fsum(token_logprobs)
    ranges = seq2seq.match_spans(segments, output)
    spans = None
    if ranges is not None:
        # Token i of text_ids is token offset + i of the decoder sequence, whose log-prob is token_logprobs[offset +
        # i - 1]: the first entry scores the token after the decoder start.
        offset = 1 + (1 if len(ids) > 1 and ids[1] == lm.tokenizer.bos_token_id else 0)
        ends = seq2seq.token_ends(lm, text_ids)
        starts = [0, *ends[:-1]]
        spans = []
        for start, end in ranges:
            # The tokens that overlap the span (a token may reach past it, e.g. a word glued to the blank).
            inside = [i for i in range(len(text_ids)) if start < end and starts[i] < end and ends[i] > start]
            logprob = math.fsum(token_logprobs[offset + i - 1] for i in inside)
            spans.append(SpanFill(text=output[start:end], pieces=[_piece(lm, text_ids[i]) for i in inside],
                                  token_ids=[text_ids[i] for i in inside], logprob=logprob, prob=math.exp(logprob)))
    return SpanBeam(
        rank=rank, output=output, token_ids=ids, sequence_score=score, logprob=total, prob=math.exp(total),
        rewrote_context=ranges is None, spans=spans,
        filled=seq2seq.fill_segments(segments, [s.text for s in spans]) if spans is not None else None,
    )


# --------------------------------------------------------------------------------------------------------------
# Batched forward passes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _MaskedQuery:
    """Token ids for a masked LM, and what to read at some positions: the top tokens, and chosen tokens."""

    ids: list[int]
    positions: list[int]
    top: int = 0
    wanted: list[list[int]] | None = None  # per position: token ids whose log-prob to read
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    wanted_logprobs: list[list[float]] = field(default_factory=list)


@dataclass
class _CausalQuery:
    """Token ids for a causal LM: read log p(ids[i] | ids[:i]) for i >= score_from, and the top next tokens
    after ids[: top_at + 1]."""

    ids: list[int]
    score_from: int
    top_at: int | None = None
    top: int = 0
    token_logprobs: list[float] = field(default_factory=list)
    top_ids: list[int] = field(default_factory=list)
    top_logprobs: list[float] = field(default_factory=list)


def _batches(lm: LoadedModel, sequences: list[list[int]], batch_size: int):
    """Indices of the sequences in batches of similar length, with their right-padded ids and attention mask.

    Right padding keeps every real token at the position it has unbatched, and the attention mask hides the
    padding from it, so a batched number equals the unbatched one.
    """
    import torch

    pad = lm.tokenizer.pad_token_id
    if pad is None:
        pad = lm.tokenizer.eos_token_id or 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chosen)
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, i in enumerate(chosen):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[row, : len(sequences[i])] = 1
        yield chosen, ids.to(lm.device), attention.to(lm.device)


def _run_masked(lm: LoadedModel, queries: list[_MaskedQuery], batch_size: int) -> None:
    import torch

    if not queries:
        return
    for chosen, ids, attention in _batches(lm, [q.ids for q in queries], batch_size):
        batch = [queries[i] for i in chosen]
        rows = torch.tensor([r for r, q in enumerate(batch) for _ in q.positions], device=lm.device)
        cols = torch.tensor([p for q in batch for p in q.positions], device=lm.device)
        logprobs = torch.log_softmax(masked_lm_logits(lm, ids, attention, rows, cols).float(), dim=-1)
        top = max(q.top for q in batch)
        if top:
            values, indices = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
            values, indices = values.tolist(), indices.tolist()
        flat = 0
        for query in batch:
            query.top_ids, query.top_logprobs, query.wanted_logprobs = [], [], []
            for position in range(len(query.positions)):
                if query.top:
                    query.top_ids.append(indices[flat][: query.top])
                    query.top_logprobs.append(values[flat][: query.top])
                if query.wanted is not None:
                    wanted = query.wanted[position]
                    picked = logprobs[flat, wanted].tolist() if wanted else []
                    query.wanted_logprobs.append(picked)
                flat += 1


def _run_causal(lm: LoadedModel, queries: list[_CausalQuery], batch_size: int) -> None:

    if not queries:
        return
    for chosen, ids, attention in _batches(lm, [q.ids for q in queries], batch_size):
        logits = lm.model(input_ids=ids, attention_mask=attention).logits.float()
        # log p(token i | tokens before it), from the logits one position earlier. The normaliser is taken a row
        # at a time: 2 MB of temporary a row here against 40 MB for a batch.
        norm = logsumexp_in_blocks(logits, 1)
        following = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] - norm[:, :-1]
        following = following.tolist()
        for row, i in enumerate(chosen):
            query = queries[i]
            query.token_logprobs = following[row][query.score_from - 1 : len(query.ids) - 1]
            if query.top_at is not None and query.top:
                logprobs = logits[row, query.top_at] - norm[row, query.top_at]
                values, indices = logprobs.topk(min(query.top, logprobs.shape[-1]))
                query.top_ids, query.top_logprobs = indices.tolist(), values.tolist()


# Masked LMs whose vocabulary projection we apply to the mask positions only: (encoder attribute, head modules
# applied in order). Projecting every position onto a 30k vocabulary costs as much as a good part of the
# encoder; the answer needs only the masks. Every other architecture runs whole (`masked_lm_logits` fallback).
MLM_HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BertForMaskedLM": ("bert", ("cls",)),
    "RobertaForMaskedLM": ("roberta", ("lm_head",)),
    "XLMRobertaForMaskedLM": ("roberta", ("lm_head",)),
    "CamembertForMaskedLM": ("roberta", ("lm_head",)),
    "AlbertForMaskedLM": ("albert", ("predictions",)),
    "DistilBertForMaskedLM": ("distilbert", ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    "ElectraForMaskedLM": ("electra", ("generator_predictions", "generator_lm_head")),
}


def masked_lm_logits(
    lm: LoadedModel, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """The masked LM's vocabulary logits at (rows[i], cols[i]) of a padded batch: [len(rows), vocab]."""
    import torch

    model = lm.model
    inputs = {"input_ids": ids, "attention_mask": attention}
    if "token_type_ids" in lm.tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    known = MLM_HEADS.get(type(model).__name__)
    if known is not None:
        encoder_name, head_names = known
        encoder = getattr(model, encoder_name, None)
        heads = [getattr(model, name, None) for name in head_names]
        if encoder is not None and all(h is not None for h in heads):
            hidden = encoder(**inputs)[0][rows, cols]
            for head in heads:
                hidden = head(hidden)
            return hidden
    return model(**inputs).logits[rows, cols]


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _special_ids(lm: LoadedModel) -> set[int]:
    cached = lm.extras.get("fill_mask_special_ids")
    if cached is None:
        cached = lm.extras["fill_mask_special_ids"] = set(lm.tokenizer.all_special_ids)
    return cached


def _piece(lm: LoadedModel, token_id: int) -> str:
    piece = lm.tokenizer.convert_ids_to_tokens(token_id)
    return piece if piece is not None else f"<id {token_id}>"


def _undecodable(lm: LoadedModel, token_id: int) -> bool:
    """An id the model can predict but its tokenizer has no entry for: a row the embeddings were padded with."""
    return token_id >= len(lm.tokenizer)


def _undecodable_rows(lm: LoadedModel) -> int:
    return max(0, lm.vocab_size - len(lm.tokenizer))


def _token_text(lm: LoadedModel, token_id: int) -> str:
    """The token decoded on its own (GPT-2 `Ġduck` → " duck"), cached: top-k lists repeat the same tokens."""
    cache = lm.extras.setdefault("fill_mask_texts", {})
    text = cache.get(token_id)
    if text is None:
        text = cache[token_id] = lm.tokenizer.decode([token_id])
    return text


def _marks_spaces(lm: LoadedModel) -> bool:
    """Whether tokens carry their leading space (byte-level BPE, SentencePiece) rather than drop it (WordPiece)."""
    cached = lm.extras.get("fill_mask_marks_spaces")
    if cached is None:
        tok = lm.tokenizer
        cached = tok.decode(tok(" a", add_special_tokens=False)["input_ids"]).startswith(" ")
        lm.extras["fill_mask_marks_spaces"] = cached
    return cached
