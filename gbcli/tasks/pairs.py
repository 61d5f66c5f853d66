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
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.jsonl_output import ResumedOutput
from gbcli.jobs.jsonl_output import check_resumed as check_output
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
GROUP_FIELDS = ("UID", "phenomenon", "linguistics_term", "field")  # BLiMP's fields, finest first
DEFAULT_BATCH_PAIRS = 32

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
        raise usage_error("The two sentences are identical: there is nothing to prefer.",
                          "A minimal pair differs in at least one word.")


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
            difference = (right.surprisal - left.surprisal  # type: ignore[union-attr,operator]
                          if both and left.surprisal is not None and right.surprisal is not None else None)
            rows.append(AlignedWord(
                op=kind, good=left.text if left else None, bad=right.text if right else None,
                good_surprisal=left.surprisal if left else None, bad_surprisal=right.surprisal if right else None,
                difference=difference, good_index=left.index if left else None,
                bad_index=right.index if right else None,
            ))
    return rows


def pair_column(lm: LoadedModel, good: ModelScore, bad: ModelScore, with_words: bool) -> PairColumn:
    difference = good.log_likelihood - bad.log_likelihood
    prefers: Preference = "good" if difference > 0 else "bad" if difference < 0 else "neither"
    return PairColumn(
        family=lm.family, model=lm.name, measure=PAIR_MEASURES[lm.kind], method=good.method,
        first_token=good.first_token, unit=good.unit, conventions=good.conventions,
        good=good.log_likelihood, bad=bad.log_likelihood, difference=difference, prefers=prefers,
        correct=prefers == "good", good_tokens=good.scored_tokens, bad_tokens=bad.scored_tokens,
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
        columns = [pair_column(lm, scores[2 * k], scores[2 * k + 1], with_words)
                   for lm, scores in zip(models, per_model, strict=True)]
        results.append(PairResult(
            kind="pair", line=pair.line, good=pair.good, bad=pair.bad, uid=pair.uid, phenomenon=pair.phenomenon,
            field=pair.field, pair_id=pair.pair_id, group=pair.group, columns=columns,
        ))
    return results


def iter_pair_chunks(pairs: list[PairInput], done: set[int], batch_pairs: int) -> Iterator[list[PairInput]]:
    """The pairs still to score, in chunks cut from the whole list (done lines skipped), so that a resumed run
    scores each chunk in the same batches as an uninterrupted one and writes the same numbers."""
    for begin in range(0, len(pairs), batch_pairs):
        todo = [p for p in pairs[begin : begin + batch_pairs] if p.line not in done]
        if todo:
            yield todo


# ---------------------------------------------------------------------------------------------------------------
# Reading a file of pairs: TSV or JSON Lines (BLiMP's field names)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairFields:
    """The names of the fields a file's pairs are read from."""

    good: str = "sentence_good"
    bad: str = "sentence_bad"
    group: str | None = None  # None: the first of GROUP_FIELDS the file has


def file_format(path: str, lines: list[str], chosen: str) -> Literal["tsv", "jsonl"]:
    if chosen not in ("auto", "tsv", "jsonl"):
        raise usage_error(f"Unknown --format '{chosen}'.", "Choose from: auto, tsv, jsonl.")
    if chosen != "auto":
        return chosen  # type: ignore[return-value]
    if path.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if path.endswith((".tsv", ".tab")):
        return "tsv"
    first = next((line for line in lines if line.strip()), "")
    return "jsonl" if first.lstrip().startswith("{") else "tsv"


def _text(value: Any, name: str) -> str:
    if value is None:
        raise usage_error(f"the field '{name}' is missing.")
    if not isinstance(value, str):
        raise usage_error(f"the field '{name}' is not a string.")
    return value


def _label(value: Any) -> str | None:
    return None if value is None else str(value)


PairEntries = tuple[list["PairInput | LineFailure"], str | None]  # the lines, and the field accuracy is grouped by


def parse_jsonl(lines: list[str], fields: PairFields) -> PairEntries:
    entries: list[PairInput | LineFailure] = []
    group_field = fields.group
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            entries.append(LineFailure(number, f"not valid JSON ({exc.msg} at column {exc.colno})."))
            continue
        if not isinstance(record, dict):
            entries.append(LineFailure(number, "not a JSON object."))
            continue
        try:
            good, bad = _text(record.get(fields.good), fields.good), _text(record.get(fields.bad), fields.bad)
        except GbcliError as error:
            entries.append(LineFailure(number, error.message))
            continue
        if group_field is None:
            group_field = next((name for name in GROUP_FIELDS if name in record), None)
        entries.append(PairInput(
            line=number, good=good, bad=bad, uid=_label(record.get("UID")),
            phenomenon=_label(record.get("phenomenon", record.get("linguistics_term"))),
            field=_label(record.get("field")), pair_id=record.get("pair_id"),
            group=_label(record.get(group_field)) if group_field else None,
        ))
    return entries, group_field


def parse_tsv(lines: list[str], fields: PairFields) -> PairEntries:
    """Two tab-separated columns, good then bad; or, under a header line, the columns it names."""
    entries: list[PairInput | LineFailure] = []
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    columns: dict[str, int] | None = None
    header: list[str] = []
    if numbered:
        header = [cell.strip() for cell in numbered[0][1].split("\t")]
        if fields.good in header and fields.bad in header:
            columns = {name: k for k, name in enumerate(header)}
            numbered = numbered[1:]
        elif [h.lower() for h in header[:2]] == ["good", "bad"]:
            columns = {fields.good: 0, fields.bad: 1, **{name: k for k, name in enumerate(header)}}
            numbered = numbered[1:]
    group_field = fields.group or next((name for name in GROUP_FIELDS if columns and name in columns), None)
    for number, line in numbered:
        cells = line.split("\t")
        if columns is None:
            if len(cells) != 2:
                entries.append(LineFailure(number, f"{len(cells)} tab-separated columns, not 2 (good, bad)."))
                continue
            entries.append(PairInput(line=number, good=cells[0], bad=cells[1]))
            continue
        # The header's width, not len(columns): a `good bad` header also names the columns --good and --bad ask for.
        if len(cells) < len(header):
            entries.append(LineFailure(number, f"{len(cells)} tab-separated columns, the header has {len(header)}."))
            continue

        def cell(name: str) -> str | None:
            return cells[columns[name]] if name in columns else None  # noqa: B023 - used in this iteration only

        entries.append(PairInput(
            line=number, good=cells[columns[fields.good]], bad=cells[columns[fields.bad]], uid=cell("UID"),
            phenomenon=cell("phenomenon") or cell("linguistics_term"), field=cell("field"),
            pair_id=cell("pair_id"), group=cell(group_field) if group_field else None,
        ))
    return entries, group_field


def read_pair_file(path: str, chosen_format: str, fields: PairFields) -> PairEntries:
    """Every non-empty line of the file as a pair, or as the reason it is not one; and the group field."""
    from gbcli.jobs.inputs import read_lines

    lines = read_lines(path)
    parser = parse_jsonl if file_format(path, lines, chosen_format) == "jsonl" else parse_tsv
    return parser(lines, fields)


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


def summarize(tally: Tally, file: str, resumed: int, failures: list[LineFailure], group_field: str | None,
              models: list[LoadedModel], settings: ScoreSettings) -> PairsSummary:
    return PairsSummary(
        kind="summary", file=file, pairs=tally.pairs, resumed=resumed, failed=len(failures),
        failures=sorted(failures, key=lambda f: f.line), group_field=group_field,
        overall=tally.accuracy(None),
        groups=[GroupAccuracy(group, tally.accuracy(group)) for group in tally.groups()],
        conventions={lm.family: conventions(lm, settings) for lm in models},
    )


# ---------------------------------------------------------------------------------------------------------------
# --output with --resume (gbcli.jobs.jsonl_output)
# ---------------------------------------------------------------------------------------------------------------


def check_resumed(resumed: ResumedOutput, pairs: list[PairInput], models: list[LoadedModel],
                  settings: ScoreSettings, path: str) -> None:
    """A resumed file must come from the same pairs, models and conventions."""
    from gbcli.render.common import to_jsonable

    check_output(resumed, path, {p.line: (p.good, p.bad) for p in pairs}, lambda r: (r.get("good"), r.get("bad")),
                 [(lm.family, lm.name, to_jsonable(conventions(lm, settings))) for lm in models], column_keys,
                 ("conventions", "--bos/--pll/--bits/--words"))


def column_keys(record: dict) -> list[tuple]:
    """The models and conventions a `score` or `pairs` record was made with."""
    return [(c.get("family"), c.get("model"), c.get("conventions")) for c in record.get("columns", [])]


@dataclass
class FileRun:
    """A --file run, ready to go: the pairs still to score and what is already known."""

    pairs: list[PairInput]  # every valid pair of the file, done ones included (chunks are cut from this list)
    done: set[int]  # lines read back from --output
    failures: list[LineFailure]
    group_field: str | None
    tally: Tally

    @property
    def todo(self) -> int:
        return sum(p.line not in self.done for p in self.pairs)


def prepare_file_run(models: list[LoadedModel], entries: list[PairInput | LineFailure], group_field: str | None,
                     resumed: ResumedOutput, settings: ScoreSettings, output: str | None) -> FileRun:
    """Check every line against the models, and count the pairs an earlier run already scored."""
    failures = [e for e in entries if isinstance(e, LineFailure)]
    pairs = []
    for entry in entries:
        if isinstance(entry, LineFailure):
            continue
        try:
            check_pair_text(entry)
            check_pair_fits(entry, models)
        except GbcliError as error:
            failures.append(LineFailure(entry.line, error.message))
            continue
        pairs.append(entry)
    if output is not None:
        check_resumed(resumed, pairs, models, settings, output)
    tally = Tally([(lm.family, lm.name) for lm in models])
    by_line = {p.line: p for p in pairs}
    for line in sorted(resumed.records):
        _, verdicts = outcomes(resumed.records[line])
        tally.add(by_line[line].group, verdicts)  # grouped as this run groups (--group-field may have changed)
    return FileRun(pairs, set(resumed.records), sorted(failures, key=lambda f: f.line), group_field, tally)
