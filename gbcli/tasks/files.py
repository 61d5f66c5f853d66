"""A command over many texts (`score --file`, `fill-mask --file`, `pairs --file`): the texts a batch at a time
through one task, each batch's results handed on as soon as it is finished, and what the command reports at the
end added up.

Handing each batch on at once is what lets JSON Lines stream out in input order, keeps memory flat on long files,
and keeps every finished line when Ctrl-C comes. Under torchrun, `pairs --file` shares its chunks out among the
processes in gbcli.corpus_jobs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gbcli.errors import GbcliError, usage_error
from gbcli.finite import check_finite
from gbcli.models import LoadedModel

if TYPE_CHECKING:
    from gbcli.tasks.masking import FillMaskResult
    from gbcli.tasks.pairs import FileRun, LineFailure, PairFields, PairInput, PairResult, ResumedOutput
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


def score_in_batches(models: list[LoadedModel], items: list[tuple[int, str]], settings: ScoreSettings, *,
                on_results: Callable[[list[TextScore]], None], on_progress: Callable[[int], None]) -> ScoreTotals:
    """Score (index, text) pairs a batch at a time, each batch checked finite before it is handed on."""
    from gbcli.tasks.scoring import iter_scores

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
            raise usage_error(f"None of the {self.done} lines could be filled; each says why in its place.",
                              f"Line {line}: {reason}")
        if self.failures:
            return f"{len(self.failures)} of {self.done} lines could not be filled; each says why in its place."
        return None


def fill_mask_file(models: list[LoadedModel], lines: list[str], top_k: int, targets: Sequence[str], *,
                   batch_size: int, on_results: Callable[[list[FillMaskResult]], None],
                   on_progress: Callable[[int], None], on_warnings: Callable[[list[str]], None]) -> LineTally:
    """`fill-mask --file`: the lines a chunk at a time (empty ones skipped), each chunk's results handed on in input
    order; the warnings (the same for every line) are handed on once, after the first chunk."""
    from gbcli.tasks.masking import fill_mask_lines

    by_family = {lm.family: lm for lm in models}
    tally = LineTally()
    chunk = max(FILL_MASK_CHUNK_LINES, batch_size)
    for begin in range(0, len(lines), chunk):
        part = fill_mask_lines(by_family, lines[begin : begin + chunk], top_k, targets, batch_size=batch_size,
                               on_progress=on_progress, first_line=begin + 1, skip_empty=True)
        check_finite(part, models)
        if begin == 0:
            on_warnings(part[0].warnings if part else [])
        on_results(part)
        tally.add(part)
    return tally


def open_pair_file(path: str, fields: PairFields, file_format: str, output: str | None, resume: bool, force: bool,
                   settings: ScoreSettings, load: Callable[[], list[LoadedModel]]
                   ) -> tuple[FileRun, ResumedOutput, list[LoadedModel]]:
    """`pairs --file` in one process, before any scoring: the pairs read, --output opened (its finished lines kept
    with --resume), the models loaded and every line checked against them."""
    from gbcli.tasks import pairs as task

    entries, group_field = task.read_pair_file(path, file_format, fields)
    resumed = task.open_output(output, resume=resume, force=force) if output else task.ResumedOutput({}, False)
    models = load()
    return task.prepare_file_run(models, entries, group_field, resumed, settings, output), resumed, models


def score_pair_chunk(models: list[LoadedModel], chunk: list[PairInput], settings: ScoreSettings,
                     output: str | None) -> list[PairResult]:
    """One chunk of pairs scored and checked finite; with `output`, its records appended there, whole and flushed."""
    from gbcli.render.common import dumps
    from gbcli.tasks import pairs as task

    results = task.score_pairs(models, chunk, settings)
    check_finite(results, models)
    if output is not None:
        task.append_records(output, [dumps(r, indent=None) + "\n" for r in results])
    return results


def score_pair_file(models: list[LoadedModel], run: FileRun, settings: ScoreSettings, batch_size: int,
                    output: str | None, *, on_results: Callable[[list[PairResult]], None],
                    on_progress: Callable[[int], None]) -> None:
    """`pairs --file` in one process: the pairs not yet done, a chunk at a time, into --output (else handed on),
    each added to the run's tally."""
    from gbcli.tasks import pairs as task

    for chunk in task.iter_pair_chunks(run.pairs, run.done, batch_size):
        results = score_pair_chunk(models, chunk, settings, output)
        if output is None:
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
    return GbcliError(f"{count} line{plural} of {path} failed (line{plural} {lines}); the other {scored} scored.",
                      "Fix or remove those lines; with --output and --resume only they are scored again.")
