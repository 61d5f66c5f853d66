"""Scoring: how likely each model finds a text.

GPT-2 gives an exact log-likelihood by the chain rule: every token is predicted from the tokens to its left, so
one forward pass scores them all, and perplexity is exp(mean negative log-likelihood). BERT has no such
factorisation. Its pseudo-log-likelihood (Salazar et al. 2020) masks each token in turn and asks the model to
restore it from both sides; the sum of those log-probabilities gives a pseudo-perplexity that is *not* on the
same scale as perplexity (every BERT prediction sees the whole rest of the sentence).

Speed: BERT needs one masked copy of the sentence per token. All copies, of one or many sentences, run as rows of
as few forward passes as possible, and the vocabulary projection (the model's largest matrix) is applied only at
the masked position of each copy instead of at every position.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from gbcli.errors import usage_error

# Re-exported: tasks/masking.py imports it from here until it reads its predictions through gbcli.lm.
from gbcli.lm.heads import logsumexp_in_blocks as logsumexp_in_blocks
from gbcli.lm.reads import Reads, causal_logprobs, run_reads
from gbcli.loading.families import family_title
from gbcli.loading.models import LoadedModel
from gbcli.tasks.tokenization import ModelTokens, check_text, tokenize_text

PllVariant = Literal["original", "within-word"]
PLL_VARIANTS: tuple[str, ...] = ("original", "within-word")
Unit = Literal["nats", "bits"]
LN2 = math.log(2)  # nats per bit: a log-probability in bits is the natural one divided by ln 2
WORD_RULE = (
    "word = the tokenizer's own word (its pre-tokenizer unit, from the encoding's word ids and offsets); a word's "
    "log-probability is the sum of its pieces'; a word with an unscored piece has none"
)

# Rows × padded length of one forward pass. On BERT-base on a 2-core CPU, 2048 tokens ran within noise of the
# fastest size measured (512 to 16384; 16384 was clearly slower) and keeps activations small. Causal windows
# read the vocabulary at every scored position: 2048 of them are 400 MB of logits with GPT-2's 50k vocabulary.
MASKED_BATCH_TOKENS = 2048
CAUSAL_BATCH_TOKENS = 2048

SCALE_NOTE = (
    "Perplexity (GPT) and pseudo-perplexity (BERT) are not on the same scale: each BERT prediction sees the "
    "whole rest of the sentence, GPT only the words before. Compare each across texts, never with the other."
)
GPT_METHOD = "exact log-likelihood: each token predicted from the tokens to its left (chain rule)"
PLL_METHODS = {
    "original": "pseudo-log-likelihood (Salazar et al. 2020): each token masked in turn, predicted from both sides",
    "within-word": "pseudo-log-likelihood, within-word variant (Kauf and Ivanova 2023, PLL-word-l2r): each token "
    "masked together with the later pieces of its own word",
}


@dataclass(frozen=True)
class ScoreSettings:
    """How texts are scored; the same for every text of one command."""

    bos: bool = True  # GPT: predict the first token after the BOS token (<|endoftext|>), so that it is scored too
    stride: int | None = None  # GPT: how far the window moves over a text longer than the context; None = half
    pll: PllVariant = "original"
    with_tokens: bool = False  # keep the per-token table
    with_words: bool = False  # keep the per-word table (pieces' log-probabilities summed per word)
    unit: Unit = "nats"  # of every log-probability, surprisal, log-likelihood and mean NLL in the result

    @classmethod
    def from_options(
        cls, *, bos: bool, stride: int | None, pll: str, with_tokens: bool, with_words: bool = False, bits: bool = False
    ) -> ScoreSettings:
        if pll not in PLL_VARIANTS:
            raise usage_error(f"Unknown --pll variant '{pll}'.", f"Choose from: {', '.join(PLL_VARIANTS)}.")
        if stride is not None and stride < 1:
            raise usage_error(f"--stride must be at least 1 (got {stride}).")
        return cls(
            bos=bos,
            stride=stride,
            pll=pll,
            with_tokens=with_tokens,  # type: ignore[arg-type]
            with_words=with_words,
            unit="bits" if bits else "nats",
        )


@dataclass
class TokenScore:
    """One token's log-probability under the model, with the characters it covers."""

    position: int  # index among the text's tokens (specials not counted)
    id: int
    piece: str
    shown: str
    start: int
    end: int
    logprob: float | None  # natural log; None for a token that cannot be scored (the first one, without BOS)
    surprisal: float | None  # -logprob, in nats
    context_tokens: int  # tokens the model saw when predicting this one (GPT: to its left; BERT: all unmasked)
    masked_tokens: int  # BERT: tokens hidden in this copy (1, or more within a word); GPT: 0
    unknown: bool = False
    word: int | None = None  # index of the word (in ModelScore.words) this token belongs to


@dataclass
class WordScore:
    """One word of the text (the tokenizer's own word boundaries) and the summed log-probability of its pieces."""

    index: int  # among the words of the text (BART's added <s> and </s> count as words of their own)
    text: str  # the characters the word covers, without the space GPT-2's pieces carry in front
    start: int
    end: int
    tokens: list[int]  # positions of its pieces in ModelScore.tokens
    logprob: float | None  # sum of the pieces' log-probabilities; None when one of them was not scored
    surprisal: float | None
    special: bool = False  # a token the tokenizer added (BART's <s>, </s>), not a word of the text


@dataclass
class Conventions:
    """Every choice that changes a number, stated beside the numbers."""

    unit: Unit  # of log-probabilities, surprisals, log-likelihoods and mean NLL (perplexity does not depend on it)
    bos: bool | None  # GPT: the first token predicted after BOS (True) or left unscored (False); None: not GPT
    pll: str | None  # BERT: the pseudo-log-likelihood variant; None: not BERT
    words: str | None  # the word rule, when word scores were asked for


@dataclass
class ModelScore:
    """One model's score of one text."""

    family: str
    model: str
    measure: str  # "perplexity" or "pseudo-perplexity"
    method: str
    value: float | None  # the perplexity or pseudo-perplexity; None when no token could be scored
    log_likelihood: float  # sum of the scored tokens' log-probabilities (nats)
    mean_nll: float | None  # -log_likelihood / scored_tokens
    scored_tokens: int
    text_tokens: int
    first_token: str | None  # GPT: whether the first token was predicted from a BOS token, or not scored
    detail: str  # this text's windows (GPT) or masked copies (BERT)
    # The sequences the model ran for this text: GPT's windows, BERT's masked copies, BART's teacher-forced passes.
    sequences: int = 0
    tokens: list[TokenScore] | None = None
    # Scored tokens that are the tokenizer's unknown token ([UNK]): their log-probability is the model's guess at
    # "[UNK]", not at the characters the text holds.
    unknown_tokens: int = 0
    unit: Unit = "nats"
    conventions: Conventions | None = None
    words: list[WordScore] | None = None


@dataclass
class TextScore:
    index: int  # 1-based: the argument's number, or the line number in --file
    text: str
    columns: list[ModelScore]
    note: str = SCALE_NOTE


@dataclass
class ScoreBatch:
    """Scores of a few texts, with the time and forward passes each model needed for them."""

    records: list[TextScore]
    seconds: dict[str, float] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)


def conventions(lm: LoadedModel, settings: ScoreSettings) -> Conventions:
    return Conventions(
        unit=settings.unit,
        bos=settings.bos if lm.kind == "causal" else None,
        pll=settings.pll if lm.kind == "masked" else None,
        words=WORD_RULE if settings.with_words else None,
    )


def word_scores(text: str, tokens: list[TokenScore]) -> list[WordScore]:
    """Group the scored tokens by the tokenizer's word ids and sum each word's log-probabilities.

    A token with no word (a special the tokenizer added, which BART scores) is a word of its own, so that the words'
    log-probabilities always add up to the text's log-likelihood.
    """
    words: list[WordScore] = []
    current: int | None = None
    for position, token in enumerate(tokens):
        if token.word is None or token.word != current or not words:
            words.append(
                WordScore(
                    index=len(words),
                    text="",
                    start=token.start,
                    end=token.end,
                    tokens=[],
                    logprob=0.0,
                    surprisal=None,
                    special=token.word is None,
                )
            )
            current = token.word
        entry = words[-1]
        entry.tokens.append(position)
        entry.end = max(entry.end, token.end)
        entry.logprob = None if entry.logprob is None or token.logprob is None else entry.logprob + token.logprob
        token.word = entry.index
    for entry in words:
        entry.surprisal = None if entry.logprob is None else -entry.logprob
        if entry.special:
            entry.text = "".join(tokens[k].piece for k in entry.tokens)
            continue
        covered = text[entry.start : entry.end]
        entry.start += len(covered) - len(covered.lstrip())  # GPT-2's pieces carry the space before the word
        entry.end -= len(covered) - len(covered.rstrip())
        entry.text = text[entry.start : entry.end] or covered
    return words


def _summary(
    lm: LoadedModel,
    settings: ScoreSettings,
    measure: str,
    method: str,
    first_token: str | None,
    detail: str,
    tokens: list[TokenScore],
    text_tokens: int,
    text: str,
) -> ModelScore:
    scored = [t.logprob for t in tokens if t.logprob is not None]
    total = math.fsum(scored)
    mean_nll = -total / len(scored) if scored else None
    score = ModelScore(
        family=lm.family,
        model=lm.name,
        measure=measure,
        method=method,
        value=math.exp(mean_nll) if mean_nll is not None else None,  # the same in any unit: e^(nats) = 2^(bits)
        log_likelihood=total,
        mean_nll=mean_nll,
        scored_tokens=len(scored),
        text_tokens=text_tokens,
        first_token=first_token,
        detail=detail,
        tokens=tokens if settings.with_tokens else None,
        unknown_tokens=sum(1 for t in tokens if t.unknown and t.logprob is not None),
        unit=settings.unit,
        conventions=conventions(lm, settings),
    )
    words = word_scores(text, tokens)  # also numbers each token's word
    if settings.with_words:
        score.words = words
    if settings.unit == "bits":
        to_bits(score, tokens)
    return score


def to_bits(score: ModelScore, tokens: list[TokenScore]) -> None:
    """Every log-probability of the score divided by ln 2 (computed in nats, converted once at the end)."""

    def bits(value: float | None) -> float | None:
        return None if value is None else value / LN2

    score.log_likelihood = score.log_likelihood / LN2
    score.mean_nll = bits(score.mean_nll)
    for item in [*tokens, *(score.words or [])]:
        item.logprob, item.surprisal = bits(item.logprob), bits(item.surprisal)


def _token(
    column: ModelTokens, index: int, position: int, logprob: float | None, context: int, masked: int
) -> TokenScore:
    piece = column.pieces[index]
    return TokenScore(
        position=position,
        id=piece.id,
        piece=piece.piece,
        shown=piece.shown,
        start=piece.start,
        end=piece.end,
        logprob=logprob,
        surprisal=-logprob if logprob is not None else None,
        context_tokens=context,
        masked_tokens=masked,
        unknown=piece.unknown,
        word=piece.word,
    )


# ---------------------------------------------------------------------------------------------------------------
# GPT: exact log-likelihood with a sliding window
# ---------------------------------------------------------------------------------------------------------------


def causal_windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) of each window over a sequence of `length` tokens.

    The first window scores every position it can (all but position 0, which has no left context); each next
    window moves `stride` tokens on and scores only the tokens no earlier window scored, so each token is scored
    once, with at least `context - stride` tokens of left context.
    """
    end = min(context, length)
    windows = [(0, end, 1)]
    while end < length:
        new_end = min(end + stride, length)
        windows.append((new_end - context, new_end, end))
        end = new_end
    return windows


def resolve_stride(lm: LoadedModel, stride: int | None) -> int:
    context = lm.max_positions
    if stride is None:
        return max(1, context // 2)
    if stride >= context:
        raise usage_error(
            f"--stride {stride} is too large for {lm.name}, whose context holds {context} tokens.",
            f"Use a stride between 1 and {context - 1}: each window keeps context − stride tokens of left context.",
        )
    return stride


def first_token_detail(lm: LoadedModel, settings: ScoreSettings) -> tuple[int | None, str]:
    """The BOS id to prepend (or None), and a sentence saying how the first token was treated."""
    bos = lm.bos_id
    if not settings.bos:
        return None, "first token not scored: it has no left context (--no-bos)"
    if bos is None:
        return None, "first token not scored: the tokenizer has no BOS token to predict it from"
    name = lm.tokenizer.convert_ids_to_tokens(bos)
    return bos, f"first token predicted after {name} as BOS context, so every token is scored"


def _windows_detail(windows: int, context: int, stride: int) -> str:
    if windows == 0:
        return "nothing to score: a single token and no BOS context"
    if windows > 1:
        return (
            f"{windows} windows of {context} tokens, stride {stride}: each token after the first window "
            f"sees at least {context - stride} tokens"
        )
    return f"1 window (the text fits the {context}-token context)"


def score_causal(
    lm: LoadedModel, texts: list[str], settings: ScoreSettings, indices: list[int] | None = None
) -> tuple[list[ModelScore], int]:
    """Exact log-likelihood and perplexity of each text; the number of forward passes."""
    context = lm.max_positions
    stride = resolve_stride(lm, settings.stride)
    bos, first = first_token_detail(lm, settings)
    columns = [tokenize_text(lm, text) for text in texts]
    windows: list[list[int]] = []  # each window's token ids
    starts: list[int] = []  # the first position each window scores, within the window
    places: list[tuple[int, int]] = []  # (text, sequence position of the window's first token)
    sequences = []
    for owner, column in enumerate(columns):
        text_pieces = [i for i, p in enumerate(column.pieces) if not p.added]
        sequence = ([bos] if bos is not None else []) + [column.pieces[i].id for i in text_pieces]
        sequences.append((text_pieces, len(sequence) - len(text_pieces)))  # offset: where text token 0 is
        for begin, end, scored_from in causal_windows(len(sequence), context, stride) if len(sequence) > 1 else []:
            windows.append(sequence[begin:end])
            starts.append(scored_from - begin)
            places.append((owner, begin))
    values, passes = causal_logprobs(lm, windows, starts, max_tokens=CAUSAL_BATCH_TOKENS)
    logprobs: list[dict[int, tuple[float, int]]] = [{} for _ in texts]
    for (owner, begin), start, window_values in zip(places, starts, values, strict=True):
        offset = sequences[owner][1]
        for i, value in enumerate(window_values, start=start):
            # Window token i (sequence position begin + i) was predicted from the window's i tokens before it.
            logprobs[owner][begin + i - offset] = (value, i)
    results = []
    for owner, column in enumerate(columns):
        text_pieces, offset = sequences[owner]
        tokens = []
        for k, index in enumerate(text_pieces):
            value, seen = logprobs[owner].get(k, (None, 0))
            tokens.append(_token(column, index, k, value, seen, 0))
        total_len = len(text_pieces) + offset
        count = len(causal_windows(total_len, context, stride)) if total_len > 1 else 0
        results.append(
            _summary(
                lm,
                settings,
                "perplexity",
                GPT_METHOD,
                first,
                _windows_detail(count, context, stride),
                tokens,
                len(text_pieces),
                texts[owner],
            )
        )
        results[-1].sequences = count
    return results, passes


# ---------------------------------------------------------------------------------------------------------------
# BERT: pseudo-log-likelihood, all masked copies batched
# ---------------------------------------------------------------------------------------------------------------


def masked_positions(word_ids: list[int | None], scored: list[int], variant: PllVariant) -> list[list[int]]:
    """For each scored position, the positions to hide in its copy.

    original: the token alone. within-word (PLL-word-l2r): the token and the later pieces of the same word, so
    that `was ##p` is not scored as `was` given `##p` (which nearly gives the word away).
    """
    copies = []
    for position in scored:
        hidden = [position]
        if variant == "within-word" and word_ids[position] is not None:
            hidden += [q for q in scored if q > position and word_ids[q] == word_ids[position]]
        copies.append(hidden)
    return copies


def check_masked_length(lm: LoadedModel, column: ModelTokens, index: int) -> None:
    lm.check_fits(
        len(column.pieces),
        f"text {index} with [CLS] and [SEP]",
        f"BERT scoring is limited to the model's {lm.max_positions} positions: pseudo-log-likelihood has no "
        "sliding window. Split the text into sentences (one per line with --file).",
    )


def score_masked(
    lm: LoadedModel, texts: list[str], settings: ScoreSettings, indices: list[int] | None = None
) -> tuple[list[ModelScore], int]:
    """Pseudo-log-likelihood and pseudo-perplexity of each text; the number of forward passes."""
    mask_id = lm.require_mask_token(
        "compute a pseudo-log-likelihood", "Use a masked language model such as bert-base-uncased."
    )
    columns = [tokenize_text(lm, text) for text in texts]
    copies_read: list[Reads] = []  # one masked copy per scored token, read at that token
    plans = []
    for owner, column in enumerate(columns):
        check_masked_length(lm, column, (indices or list(range(1, len(texts) + 1)))[owner])
        word_ids = [p.word for p in column.pieces]  # the tokenizer's own word ids (None for [CLS] and [SEP])
        scored = [i for i, p in enumerate(column.pieces) if not p.added]
        copies = masked_positions(word_ids, scored, settings.pll)
        plans.append((scored, copies, len(copies_read)))
        ids = column.ids
        for position, hidden in zip(scored, copies, strict=True):
            copy = list(ids)
            for q in hidden:
                copy[q] = mask_id
            copies_read.append(Reads(copy, [position], [[ids[position]]]))
    passes = run_reads(lm, copies_read, max_tokens=MASKED_BATCH_TOKENS) if copies_read else 0
    results = []
    for owner, column in enumerate(columns):
        scored, copies, first = plans[owner]
        tokens = [
            _token(
                column,
                index,
                k,
                copies_read[first + k].target_logprobs[0][0],
                len(column.pieces) - len(copies[k]),
                len(copies[k]),
            )
            for k, index in enumerate(scored)
        ]
        detail = f"{len(scored)} masked cop{'ies' if len(scored) != 1 else 'y'}, batched"
        results.append(
            _summary(
                lm,
                settings,
                "pseudo-perplexity",
                PLL_METHODS[settings.pll],
                None,
                detail,
                tokens,
                len(scored),
                texts[owner],
            )
        )
        results[-1].sequences = len(scored)
    return results, passes


# ---------------------------------------------------------------------------------------------------------------
# BART: the log-likelihood of reconstructing the text from itself
# ---------------------------------------------------------------------------------------------------------------


def score_seq2seq(
    lm: LoadedModel, texts: list[str], settings: ScoreSettings, indices: list[int] | None = None
) -> tuple[list[ModelScore], int]:
    """log p(x | x) of each text: the encoder reads it uncorrupted, the decoder is teacher-forced on it; one pass
    per text (each has its own encoder input). See seq2seq.RECONSTRUCTION_DEFINITION."""
    from gbcli.tasks import seq2seq  # late: start-up (seq2seq imports generation: score's text check does without)

    seq2seq.check_seq2seq(lm)
    start = seq2seq.decoder_start_id(lm)
    results = []
    for text in texts:
        column = tokenize_text(lm, text)
        ids = column.ids
        lm.check_fits(len(ids), "the text with its special tokens")
        logprobs = seq2seq.teacher_forced_logprobs(lm, ids, [[start, *ids]])[0]
        # Every decoder target is scored, <s> and </s> included: the decoder sees the whole encoded text and the
        # tokens before this one (its start token first).
        tokens = [
            _token(column, index, index, logprob, len(ids) + index + 1, 0) for index, logprob in enumerate(logprobs)
        ]
        score = _summary(
            lm,
            settings,
            "reconstruction log-likelihood",
            seq2seq.RECONSTRUCTION_DEFINITION,
            f"{_scored_ends(lm, ids)}, after the decoder start token {lm.tokenizer.convert_ids_to_tokens(start)}",
            "1 teacher-forced pass: the encoder reads the text, the decoder scores it",
            tokens,
            column.text_tokens,
            text,
        )
        score.value = score.log_likelihood  # not a perplexity: BART's number is the log-likelihood itself
        score.sequences = 1
        results.append(score)
    return results, len(texts)


def _scored_ends(lm: LoadedModel, ids: list[int]) -> str:
    """Which special tokens the decoder's scored sequence holds at its ends: named only when the tokenizer added
    them (a text's own first and last pieces are not "<s> and </s>")."""
    special = set(lm.tokenizer.all_special_ids)
    ends = [lm.tokenizer.convert_ids_to_tokens(i) for i in dict.fromkeys([ids[0], ids[-1]]) if i in special]
    if not ends:
        return "every token scored (the tokenizer adds no special tokens)"
    return f"every token scored, {' and '.join(ends)} included"


# ---------------------------------------------------------------------------------------------------------------
# Many texts, both models
# ---------------------------------------------------------------------------------------------------------------


def score_note(models: list[LoadedModel]) -> str:
    """The note every score record carries: the scales differ, and BART's number is a reconstruction."""
    if any(lm.kind == "seq2seq" for lm in models):
        from gbcli.tasks.seq2seq import RECONSTRUCTION_NOTE  # late: start-up

        return f"{SCALE_NOTE} {RECONSTRUCTION_NOTE}"
    return SCALE_NOTE


# Each kind of model by its own measure: the one place the scoring method is chosen by the model's kind.
SCORERS: dict[str, Callable[..., tuple[list[ModelScore], int]]] = {
    "causal": score_causal,
    "masked": score_masked,
    "seq2seq": score_seq2seq,
}


def score_with(
    lm: LoadedModel, texts: list[str], settings: ScoreSettings, indices: list[int] | None = None
) -> tuple[list[ModelScore], int]:
    """Each text's score by the model's own measure, all texts batched together; the forward passes it took."""
    return SCORERS.get(lm.kind, score_causal)(lm, texts, settings, indices)


def score_batch(models: list[LoadedModel], texts: list[str], indices: list[int], settings: ScoreSettings) -> ScoreBatch:
    """Score a few texts with every model, each model's work batched across the texts."""
    for text in texts:
        check_text(text)
    per_model: list[list[ModelScore]] = []
    batch = ScoreBatch(records=[])
    for lm in models:
        started = time.perf_counter()
        scores, passes = score_with(lm, texts, settings, indices)
        batch.seconds[lm.family] = time.perf_counter() - started
        batch.forward_passes[lm.family] = passes
        per_model.append(scores)
    note = score_note(models)
    for k, (index, text) in enumerate(zip(indices, texts, strict=True)):
        batch.records.append(TextScore(index=index, text=text, columns=[scores[k] for scores in per_model], note=note))
    return batch


SCORE_CHUNK = 32  # texts scored together (and streamed out together)


def check_texts(models: list[LoadedModel], texts: list[tuple[int, str]]) -> None:
    """Refuse no text at all, or a text BERT cannot hold, before any output, not halfway through a file."""
    if not texts:
        raise usage_error("No text to score.", "Give one or more texts, - for stdin, or --file.")
    for lm in models:
        if lm.kind == "masked":
            for index, text in texts:
                check_masked_length(lm, tokenize_text(lm, check_text(text)), index)


def iter_scores(
    models: list[LoadedModel], texts: list[tuple[int, str]], settings: ScoreSettings, chunk: int = SCORE_CHUNK
) -> Iterator[ScoreBatch]:
    """Score (index, text) pairs a chunk at a time, so a long file shows progress and streams JSON Lines."""
    check_texts(models, texts)
    for begin in range(0, len(texts), chunk):
        part = texts[begin : begin + chunk]
        yield score_batch(models, [t for _, t in part], [i for i, _ in part], settings)


def unknown_token_warnings(records: list[TextScore], limit: int = 5) -> list[str]:
    """One warning per model that scored [UNK] tokens: the texts, and why their numbers mislead."""
    texts: dict[tuple[str, str], list[int]] = {}
    for record in records:
        for column in record.columns:
            if column.unknown_tokens:
                texts.setdefault((column.family, column.model), []).append(record.index)
    warnings = []
    for (family, model), indices in texts.items():
        shown = ", ".join(str(i) for i in indices[:limit]) + (
            f" and {len(indices) - limit} more" if len(indices) > limit else ""
        )
        texts_word = "texts" if len(indices) > 1 else "text"
        warnings.append(
            f"{family_title(family)} ({model}) has no token for some characters of {texts_word} {shown} and scored "
            "its unknown token ([UNK]) in their place: that number is about [UNK], not about what the text says."
        )
    return warnings


def score_texts(models: list[LoadedModel], texts: list[str], settings: ScoreSettings) -> list[TextScore]:
    """Every text's scores, in order (texts numbered from 1)."""
    records: list[TextScore] = []
    for batch in iter_scores(models, list(enumerate(texts, start=1)), settings):
        records.extend(batch.records)
    return records
