"""Minimal pairs: which of two sentences each model prefers, and at which words.

A minimal pair ("the keys are ..." / "the keys is ...") asks each model which sentence it finds more likely. Each
model compares the two with its own score, never with another model's: GPT-2 its exact log-likelihood, BERT its
pseudo-log-likelihood, BART its reconstruction log-likelihood. The word-level surprisals of both sentences are then
aligned word by word (difflib over the two word sequences), so that one sees where the preference comes from: GPT-2
only at and after the first difference (it reads left to right), BERT also before it (it reads both ways).

Speed: the two sentences of every pair, and the pairs of one chunk, go to the scorer together, so that GPT-2 reads
them as rows of the same padded batches and BERT's masked copies of both sentences fill the same forward passes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gbcli.errors import usage_error
from gbcli.loading.models import LoadedModel
from gbcli.tasks.scoring import (
    Conventions,
    ModelScore,
    ScoreSettings,
    Unit,
    WordScore,
    check_masked_length,
    conventions,
    score_with,
)
from gbcli.tasks.tokenization import tokenize_text

# The sentence score each family compares (the sum behind its perplexity, not the perplexity itself: a longer
# sentence must not be favoured for having more, easier tokens).
PAIR_MEASURES = {
    "causal": "log-likelihood",
    "masked": "pseudo-log-likelihood",
    "seq2seq": "reconstruction log-likelihood",
}
PAIR_NOTE = (
    "Each model compares the two sentences with its own score: GPT-2's exact log-likelihood, BERT's "
    "pseudo-log-likelihood and BART's reconstruction log-likelihood are different quantities; only each model's "
    "difference and preference are comparable across models. A tie counts as a wrong preference."
)
DIFFERENCE_RULE = "Δ = bad − good surprisal of the aligned words: > 0 where the bad sentence surprises the model more"

Preference = Literal["good", "bad", "neither"]


@dataclass
class PairInput:
    """One minimal pair to score, with where it came from."""

    line: int  # 1 for the arguments; the line number in --file
    good: str
    bad: str
    uid: str | None = None
    phenomenon: str | None = None
    field: str | None = None
    pair_id: Any = None
    group: str | None = None  # the value accuracy is grouped by (--group-field)


@dataclass
class LineFailure:
    line: int
    message: str


@dataclass
class AlignedWord:
    """One row of the word alignment: a word of the good sentence, of the bad one, or of both."""

    op: Literal["equal", "replace", "delete", "insert"]  # difflib's: delete = only in good, insert = only in bad
    good: str | None
    bad: str | None
    good_surprisal: float | None
    bad_surprisal: float | None
    difference: float | None  # bad − good surprisal; None unless both sides have a scored word
    good_index: int | None = None  # the word's index in the good sentence's words
    bad_index: int | None = None


@dataclass
class PairColumn:
    """One model's verdict on one pair."""

    family: str
    model: str
    measure: str
    method: str
    first_token: str | None
    unit: Unit
    conventions: Conventions | None
    good: float  # the good sentence's score (log-likelihood, in `unit`)
    bad: float
    difference: float  # good − bad: > 0 when the model prefers the good sentence
    prefers: Preference
    correct: bool  # prefers the good sentence (a tie is wrong)
    good_tokens: int  # tokens scored
    bad_tokens: int
    words: list[AlignedWord] | None = None


@dataclass
class PairResult:
    kind: Literal["pair"]
    line: int
    good: str
    bad: str
    uid: str | None
    phenomenon: str | None
    field: str | None
    pair_id: Any
    group: str | None
    columns: list[PairColumn]


# ---------------------------------------------------------------------------------------------------------------
# Checking and scoring pairs
# ---------------------------------------------------------------------------------------------------------------


def check_pair_text(pair: PairInput) -> None:
    """Refuse a pair that cannot be compared, before any model loads."""
    for name, text in (("good", pair.good), ("bad", pair.bad)):
        if not text.strip():
            raise usage_error(f"The {name} sentence is empty.", "Give two non-empty sentences.")
    if pair.good.strip() == pair.bad.strip():
        raise usage_error(
            "The two sentences are identical: there is nothing to prefer.",
            "A minimal pair differs in at least one word.",
        )


def check_pair_fits(pair: PairInput, models: list[LoadedModel]) -> None:
    """Refuse a pair a model cannot hold (BERT and BART have no sliding window)."""
    for lm in models:
        for text in (pair.good, pair.bad):
            column = tokenize_text(lm, text)
            if lm.kind == "masked":
                check_masked_length(lm, column, pair.line)
            elif lm.kind == "seq2seq":
                lm.check_fits(len(column.ids), "a sentence with its special tokens")


def align_words(good: list[WordScore], bad: list[WordScore]) -> list[AlignedWord]:
    """The two word sequences aligned as difflib aligns them; a replaced stretch is paired word by word."""
    matcher = difflib.SequenceMatcher(None, [w.text for w in good], [w.text for w in bad], autojunk=False)
    rows: list[AlignedWord] = []
    for op, g0, g1, b0, b1 in matcher.get_opcodes():
        for k in range(max(g1 - g0, b1 - b0)):
            left = good[g0 + k] if g0 + k < g1 else None
            right = bad[b0 + k] if b0 + k < b1 else None
            kind = op if op in ("equal", "replace") and left and right else "delete" if left else "insert"
            both = left is not None and right is not None
            difference = (
                right.surprisal - left.surprisal  # type: ignore[union-attr,operator]
                if both and left.surprisal is not None and right.surprisal is not None
                else None
            )
            rows.append(
                AlignedWord(
                    op=kind,
                    good=left.text if left else None,
                    bad=right.text if right else None,
                    good_surprisal=left.surprisal if left else None,
                    bad_surprisal=right.surprisal if right else None,
                    difference=difference,
                    good_index=left.index if left else None,
                    bad_index=right.index if right else None,
                )
            )
    return rows


def pair_column(lm: LoadedModel, good: ModelScore, bad: ModelScore, with_words: bool) -> PairColumn:
    difference = good.log_likelihood - bad.log_likelihood
    prefers: Preference = "good" if difference > 0 else "bad" if difference < 0 else "neither"
    return PairColumn(
        family=lm.family,
        model=lm.name,
        measure=PAIR_MEASURES[lm.kind],
        method=good.method,
        first_token=good.first_token,
        unit=good.unit,
        conventions=good.conventions,
        good=good.log_likelihood,
        bad=bad.log_likelihood,
        difference=difference,
        prefers=prefers,
        correct=prefers == "good",
        good_tokens=good.scored_tokens,
        bad_tokens=bad.scored_tokens,
        words=align_words(good.words or [], bad.words or []) if with_words else None,
    )


def score_pairs(models: list[LoadedModel], pairs: list[PairInput], settings: ScoreSettings) -> list[PairResult]:
    """Every pair's verdict from every model; each model scores all the pairs' sentences in one call (shared
    batches), good and bad side by side."""
    with_words = settings.with_words  # word scores are what the alignment is made of
    inner = replace(settings, with_tokens=False)
    texts = [text for pair in pairs for text in (pair.good, pair.bad)]
    per_model = [score_with(lm, texts, inner)[0] for lm in models]
    results = []
    for k, pair in enumerate(pairs):
        columns = [
            pair_column(lm, scores[2 * k], scores[2 * k + 1], with_words)
            for lm, scores in zip(models, per_model, strict=True)
        ]
        results.append(
            PairResult(
                kind="pair",
                line=pair.line,
                good=pair.good,
                bad=pair.bad,
                uid=pair.uid,
                phenomenon=pair.phenomenon,
                field=pair.field,
                pair_id=pair.pair_id,
                group=pair.group,
                columns=columns,
            )
        )
    return results


def iter_pair_chunks(pairs: list[PairInput], batch_pairs: int) -> Iterator[list[PairInput]]:
    """The pairs in chunks cut from the whole list: a resumed run skips the chunks done whole and scores the others
    whole, in the same batches as an uninterrupted run, so it writes the same numbers."""
    for begin in range(0, len(pairs), batch_pairs):
        yield pairs[begin : begin + batch_pairs]


# ---------------------------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Accuracy:
    family: str
    model: str
    correct: int
    total: int
    accuracy: float | None  # correct / total; None for no pair


@dataclass
class GroupAccuracy:
    group: str
    models: list[Accuracy]


@dataclass
class PairsSummary:
    """Accuracy over a file of pairs: per model, and per group (BLiMP's UID, phenomenon or field) when present."""

    kind: Literal["summary"]
    file: str
    pairs: int  # pairs scored (this run and, with --resume, earlier ones)
    resumed: int  # of which read back from --output
    failed: int
    failures: list[LineFailure]
    group_field: str | None
    overall: list[Accuracy]
    groups: list[GroupAccuracy]
    conventions: dict[str, Conventions]  # family → conventions
    note: str = PAIR_NOTE


@dataclass
class Tally:
    """Right and wrong preferences, per (group, family), as pairs come in."""

    models: list[tuple[str, str]]  # (family, model)
    counts: dict[tuple[str | None, str], list[int]] = field(default_factory=dict)
    pairs: int = 0

    def add(self, group: str | None, outcomes: dict[str, bool]) -> None:
        self.pairs += 1
        for family, correct in outcomes.items():
            for key in ((None, family), (group, family)) if group is not None else ((None, family),):
                count = self.counts.setdefault(key, [0, 0])
                count[0] += int(correct)
                count[1] += 1

    def accuracy(self, group: str | None) -> list[Accuracy]:
        rows = []
        for family, model in self.models:
            correct, total = self.counts.get((group, family), [0, 0])
            rows.append(Accuracy(family, model, correct, total, correct / total if total else None))
        return rows

    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.counts if g is not None})


def outcomes(record: PairResult | dict) -> tuple[str | None, dict[str, bool]]:
    if isinstance(record, dict):
        return record.get("group"), {c["family"]: bool(c["correct"]) for c in record["columns"]}
    return record.group, {c.family: c.correct for c in record.columns}


def summarize(
    tally: Tally,
    file: str,
    resumed: int,
    failures: list[LineFailure],
    group_field: str | None,
    models: list[LoadedModel],
    settings: ScoreSettings,
) -> PairsSummary:
    return PairsSummary(
        kind="summary",
        file=file,
        pairs=tally.pairs,
        resumed=resumed,
        failed=len(failures),
        failures=sorted(failures, key=lambda f: f.line),
        group_field=group_field,
        overall=tally.accuracy(None),
        groups=[GroupAccuracy(group, tally.accuracy(group)) for group in tally.groups()],
        conventions={lm.family: conventions(lm, settings) for lm in models},
    )
