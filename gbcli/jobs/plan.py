"""A command over many texts (`score --file`, `fill-mask --file`, `pairs --file`): the texts a batch at a time
through one task, each batch's results handed on as soon as it is finished, and what the command reports at the
end added up.

Handing each batch on at once is what lets JSON Lines stream out in input order, keeps memory flat on long files,
and keeps every finished line when Ctrl-C comes. With `--output`, a command's work is a `Plan`: the chunks one
process cuts from the whole input (read again from the file for each pass, never held), each written to the file
whole; the chunks the file holds whole already are skipped (gbcli.jobs.jsonl_output.settle); one process does the
rest (`run_here`), or torchrun's processes share them out by cost (gbcli.jobs.torchrun_job).

Each command's plan imports that command's task inside the function that builds it (`# late: start-up`): the
commands import this module before they check their text, and none needs the others' tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.jsonl_output import Chunk, append_results, checker
from gbcli.loading.models import LoadedModel
from gbcli.render.common import to_jsonable
from gbcli.tasks.finite import check_finite

if TYPE_CHECKING:
    from gbcli.jobs.inputs import FileLines
    from gbcli.jobs.pair_file import FileRun
    from gbcli.tasks.masking import FillMaskResult
    from gbcli.tasks.pairs import LineFailure, PairInput, PairResult
    from gbcli.tasks.scoring import ScoreBatch, ScoreSettings, TextScore

FILL_MASK_CHUNK_LINES = 128  # lines sorted and batched together; their results are handed on before the next chunk


@dataclass
class ScoreTotals:
    """What `score` adds up over its batches: each model's seconds and forward passes, and the texts that had
    tokens the tokenizer does not know."""

    seconds: Counter[str] = field(default_factory=Counter)
    passes: Counter[str] = field(default_factory=Counter)
    unknown: list[TextScore] = field(default_factory=list)

    def add(self, batch: ScoreBatch) -> None:
        self.unknown.extend(r for r in batch.records if any(c.unknown_tokens for c in r.columns))
        self.seconds.update(batch.seconds)
        self.passes.update(batch.forward_passes)


def score_in_batches(
    models: list[LoadedModel],
    items: list[tuple[int, str]],
    settings: ScoreSettings,
    *,
    on_results: Callable[[list[TextScore]], None],
    on_progress: Callable[[int], None],
) -> ScoreTotals:
    """Score (index, text) pairs a batch at a time, each batch checked finite before it is handed on."""
    from gbcli.tasks.scoring import iter_scores  # late: start-up

    totals = ScoreTotals()
    for batch in iter_scores(models, items, settings):
        check_finite(batch.records, models)
        totals.add(batch)
        on_progress(len(batch.records))
        on_results(batch.records)
    return totals


@dataclass
class LineTally:
    """How many lines of a file were done, and the (line, reason) of each that could not be."""

    done: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)

    def add(self, results: Sequence[FillMaskResult]) -> None:
        self.done += len(results)
        self.failures.extend((r.line, r.error) for r in results if r.error is not None)

    def check(self) -> str | None:
        """A usage error when no line could be filled; else a warning when some could not, or None."""
        if len(self.failures) == self.done:  # every line's reason is a usage error: empty, no mask, too many, too long
            line, reason = self.failures[0]
            raise usage_error(
                f"None of the {self.done} lines could be filled; each says why in its place.", f"Line {line}: {reason}"
            )
        if self.failures:
            return f"{len(self.failures)} of {self.done} lines could not be filled; each says why in its place."
        return None


def fill_mask_chunks(lines: list[str], batch_size: int) -> Iterator[tuple[int, list[str]]]:
    """The file's chunks, cut from the whole file as one process cuts them: (first line number, its lines)."""
    size = max(FILL_MASK_CHUNK_LINES, batch_size)
    for begin in range(0, len(lines), size):
        yield begin + 1, lines[begin : begin + size]


def fill_mask_file(
    models: list[LoadedModel],
    lines: list[str],
    top_k: int,
    targets: Sequence[str],
    *,
    batch_size: int,
    on_results: Callable[[list[FillMaskResult]], None],
    on_progress: Callable[[int], None],
    on_warnings: Callable[[list[str]], None],
) -> LineTally:
    """`fill-mask --file`: the lines a chunk at a time (empty ones skipped), each chunk's results handed on in input
    order; the warnings (the same for every line) are handed on once, after the first chunk."""
    tally = LineTally()
    for first, part in fill_mask_chunks(lines, batch_size):
        results = fill_mask_chunk(models, first, part, top_k, targets, batch_size, on_progress=on_progress)
        if first == 1:
            on_warnings(results[0].warnings if results else [])
        on_results(results)
        tally.add(results)
    return tally


def fill_mask_chunk(
    models: list[LoadedModel],
    first: int,
    part: list[str],
    top_k: int,
    targets: Sequence[str],
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> list[FillMaskResult]:
    from gbcli.tasks.masking import fill_mask_lines  # late: start-up

    results = fill_mask_lines(
        {lm.family: lm for lm in models},
        part,
        top_k,
        targets,
        batch_size=batch_size,
        on_progress=on_progress,
        first_line=first,
        skip_empty=True,
    )
    check_finite(results, models)
    return results


# ---------------------------------------------------------------------------------------------------------------
# --output: a file's work as chunks, done here or shared among torchrun's processes
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """A file job's work: the input's chunks as one process cuts them (each done in the batches one process uses,
    so that any sharing-out of whole chunks, and any resumed run, writes the same bytes), and how each is done."""

    chunks: Callable[[], Iterator[Chunk]]  # the input's chunks, in order (read again from the input each time)
    write: Callable[[Chunk, str], None]  # do a chunk, append its records to the file named
    cost: Callable[[Chunk], float]  # estimated work of a chunk (to balance torchrun's processes)
    check: Callable[[int, dict, Any], None]  # a record an earlier run wrote, against its line's input


@dataclass
class OutputSummary:
    """The end of a file job into --output (`score`, `fill-mask`): the records are in the file, this counts them."""

    kind: Literal["summary"]
    file: str
    output: str
    lines: int  # records in --output: this run's and an earlier one's
    resumed: int  # of which an earlier run (before --resume) had written
    failed: int = 0  # fill-mask: records that say why their line could not be filled


def run_here(plan: Plan, done: set[int], output: str, on_progress: Callable[[int], None]) -> None:
    for chunk in plan.chunks():
        if chunk.index not in done:
            plan.write(chunk, output)
            on_progress(len(chunk.lines))


def token_cost(models: list[LoadedModel], text: str, *, pll: bool) -> float:
    """The work of one text, in token passes: a forward pass over n tokens (GPT-2, BART, BERT filling blanks), or,
    for BERT's pseudo-log-likelihood (`pll`), one pass per masked copy: n²."""
    from gbcli.tasks.tokenization import tokenize_text  # late: start-up

    cost = 0.0
    for lm in models:
        n = len(tokenize_text(lm, text).ids)
        cost += n * n if pll and lm.kind == "masked" else n
    return cost


def _cut(items: Iterable[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    part: list[tuple[int, Any]] = []
    for item in items:
        part.append(item)
        if len(part) == size:
            yield part
            part = []
    if part:
        yield part


def score_plan(models: list[LoadedModel], texts: FileLines, settings: ScoreSettings, output: str) -> Plan:
    """`score --file --output`: the texts in the chunks `score --file --json` streams (32 non-empty lines)."""
    from gbcli.jobs.pair_file import column_keys  # late: start-up
    from gbcli.tasks.scoring import SCORE_CHUNK, check_texts, conventions, score_batch  # late: start-up

    def chunks() -> Iterator[Chunk]:
        for k, part in enumerate(_cut(texts.numbered(), SCORE_CHUNK)):
            yield Chunk(k, [index for index, _ in part], [text for _, text in part], part)

    def write(chunk: Chunk, path: str) -> None:
        check_texts(models, chunk.work)  # a text BERT cannot hold stops the job here; the chunks before are kept
        batch = score_batch(models, [text for _, text in chunk.work], [index for index, _ in chunk.work], settings)
        check_finite(batch.records, models)
        append_results(path, batch.records)

    # --tokens adds each token's surprisal to every column: a file made with it and without would be mixed too.
    check = checker(
        output,
        lambda record: record.get("text"),
        [(lm.family, lm.name, to_jsonable(conventions(lm, settings)), settings.with_tokens) for lm in models],
        lambda record: [
            (*key, column.get("tokens") is not None)
            for key, column in zip(column_keys(record), record["columns"], strict=True)
        ],
        ("conventions", "--bos/--pll/--bits/--words/--tokens"),
    )
    return Plan(chunks, write, lambda chunk: sum(token_cost(models, text, pll=True) for text in chunk.inputs), check)


def unknown_in(records: Iterable[dict]) -> list[Any]:
    """The records of --output that scored [UNK] tokens, in input order, as the attributes the warnings read."""
    return [
        SimpleNamespace(index=record["index"], columns=[SimpleNamespace(**c) for c in record["columns"]])
        for record in records
        if any(c.get("unknown_tokens") for c in record["columns"])
    ]


def pairs_plan(models: list[LoadedModel], run: FileRun, settings: ScoreSettings, batch_size: int, output: str) -> Plan:
    """`pairs --file --output`: the chunks of pairs one process scores (--batch-size pairs each)."""
    from gbcli.jobs.pair_file import resumed_check  # late: start-up
    from gbcli.tasks.pairs import iter_pair_chunks  # late: start-up

    def chunks() -> Iterator[Chunk]:
        for k, chunk in enumerate(iter_pair_chunks(run.pairs, batch_size)):
            yield Chunk(k, [p.line for p in chunk], [(p.good, p.bad) for p in chunk], chunk)

    def cost(chunk: Chunk) -> float:
        return sum(token_cost(models, p.good, pll=True) + token_cost(models, p.bad, pll=True) for p in chunk.work)

    return Plan(
        chunks,
        lambda chunk, path: score_pair_chunk(models, chunk.work, settings, path),
        cost,
        resumed_check(models, settings, output),
    )


def fill_mask_plan(
    models: list[LoadedModel], lines: FileLines, top_k: int, targets: Sequence[str], batch_size: int, output: str
) -> Plan:
    """`fill-mask --file --output`: the chunks `fill-mask --file --json` streams (128 lines, empty ones skipped)."""
    from gbcli.tasks.masking.masks import target_words  # late: start-up

    size = max(FILL_MASK_CHUNK_LINES, batch_size)

    def chunks() -> Iterator[Chunk]:
        for k, part in enumerate(_cut(enumerate(lines, start=1), size)):
            todo = [(number, line) for number, line in part if line.strip()]
            if todo:
                yield Chunk(
                    k,
                    [number for number, _ in todo],
                    [line for _, line in todo],
                    (part[0][0], [line for _, line in part]),
                )

    def write(chunk: Chunk, path: str) -> None:
        append_results(path, fill_mask_chunk(models, *chunk.work, top_k, targets, batch_size))

    names = {lm.family: lm.name for lm in models}
    # Records carry the options they were made with: a run with another --top-k or --targets would mix two kinds
    # of line in one file. (A record of a gbcli that did not write them has None there, and is refused too.)
    check = checker(
        output,
        lambda record: record.get("text"),
        (names, top_k, target_words(targets)),
        lambda record: (record.get("models") or names, record.get("top_k"), record.get("targets")),
        ("options", "--top-k/--targets"),
    )
    return Plan(chunks, write, lambda chunk: sum(token_cost(models, line, pll=False) for line in chunk.inputs), check)


def score_pair_chunk(
    models: list[LoadedModel], chunk: list[PairInput], settings: ScoreSettings, output: str | None
) -> list[PairResult]:
    """One chunk of pairs scored and checked finite; with `output`, its records appended there, whole and flushed."""
    from gbcli.tasks import pairs as task  # late: start-up

    results = task.score_pairs(models, chunk, settings)
    check_finite(results, models)
    if output is not None:
        append_results(output, results)
    return results


def score_pair_file(
    models: list[LoadedModel],
    run: FileRun,
    settings: ScoreSettings,
    batch_size: int,
    *,
    on_results: Callable[[list[PairResult]], None],
    on_progress: Callable[[int], None],
) -> None:
    """`pairs --file` in one process without --output: the pairs a chunk at a time, handed on, each added to the
    run's tally."""
    from gbcli.tasks import pairs as task  # late: start-up

    for chunk in task.iter_pair_chunks(run.pairs, batch_size):
        results = score_pair_chunk(models, chunk, settings, None)
        on_results(results)
        for result in results:
            run.tally.add(*task.outcomes(result))
        on_progress(len(results))


def failed_lines_error(path: str, failures: list[LineFailure], scored_pairs: int) -> GbcliError:
    """The end of a `pairs --file` run some of whose lines failed (each was said when it was found)."""
    count = len(failures)
    lines = ", ".join(str(f.line) for f in failures[:10]) + (" ..." if count > 10 else "")
    plural = "s" * (count != 1)
    scored = f"{scored_pairs} pair{'s' * (scored_pairs != 1)} {'were' if scored_pairs != 1 else 'was'}"
    return GbcliError(
        f"{count} line{plural} of {path} failed (line{plural} {lines}); the other {scored} scored.",
        "Fix or remove those lines; with --output and --resume only they are scored again.",
    )
