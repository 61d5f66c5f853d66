"""`pairs --file --output` as one of torchrun's processes: this rank's chunks, then rank 0 merges and summarises.

The steps, every rank unless said:
1. rank 0 checks --output (and with --resume repairs a torn last line of it and of every part file an earlier job
   left, then merges them into --output in input order), so that all ranks then read the same finished lines;
2. every rank checks the lines against the models and cuts the same chunks a single process cuts (done lines left
   out), and the chunks are dealt out in contiguous runs of even cost (gbcli.distributed.split_by_cost);
3. each rank scores its chunks into its own part file, whole records flushed to disk after every chunk;
4. a barrier with a timeout; rank 0 merges the part files into --output and reads the accuracy back from it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gbcli import distributed
from gbcli.distributed import Job, JobProgress, World, describe_range, part_path
from gbcli.errors import GbcliError, usage_error
from gbcli.models import LoadedModel
from gbcli.tasks import pairs as task


def text_cost(models: list[LoadedModel], text: str) -> float:
    """The work of scoring one text, in token passes: a forward pass over n tokens for GPT-2 (one for BART), one
    per masked copy for BERT's pseudo-log-likelihood, hence n² there."""
    from gbcli.tasks.tokenization import tokenize_text

    cost = 0.0
    for lm in models:
        n = len(tokenize_text(lm, text).ids)
        cost += n * n if lm.kind == "masked" else n
    return cost


def _prepare_output(output: str, *, resume: bool, force: bool) -> None:
    """Rank 0: --output checked; with --resume, torn lines repaired and an earlier job's parts merged in."""
    parts = distributed.existing_parts(output)
    if not resume:
        if parts and not force:
            raise usage_error(f"--output '{output}' has part files of an unfinished job ({parts[0].name}, ...).",
                              "Add --resume to continue it, or --force to start again.")
        task.open_output(output, resume=False, force=force)
        for part in parts:
            part.unlink()
        return
    task.open_output(output, resume=True, force=False)  # drops a torn last line
    for part in parts:
        task.open_output(str(part), resume=True, force=False)
    if parts:
        sources = ([Path(output)] if Path(output).exists() else []) + parts
        distributed.merge_in_order(output, sources)


def pairs_file_distributed(world: World, path: str, fields: task.PairFields, file_format: str, output: str,
                           resume: bool, force: bool, batch_size: int, settings,
                           *, load: Callable[[], list[LoadedModel]]):
    """This rank's share of `pairs --file`; on rank 0, (run, resumed, models) for the summary, else None."""
    from gbcli.cli.reporting import _escape, report_error, stderr_console
    from gbcli.render.scoring import progress_bar
    from gbcli.tasks.files import score_pair_chunk

    # Installed first: torchrun may stop this rank (another one failed) before the lines are even shared out.
    job = Job(world, output, [None] * world.size, [0] * world.size)
    distributed.on_termination(job, lambda message, hint: report_error(GbcliError(message, hint), "pairs"))
    entries, group_field = task.read_pair_file(path, file_format, fields)
    if world.is_main:
        _prepare_output(output, resume=resume, force=force)
    distributed.check_shared_folder(world, output)  # a barrier: rank 0's repairs are done
    resumed = task.open_output(output, resume=True, force=False)
    columns = load()
    run = task.prepare_file_run(columns, entries, group_field, resumed, settings, output)
    chunks = list(task.iter_pair_chunks(run.pairs, run.done, batch_size))
    costs = [sum(text_cost(columns, p.good) + text_cost(columns, p.bad) for p in chunk) for chunk in chunks]
    runs = distributed.split_by_cost(costs, world.size)
    ranges = [(chunks[r[0]][0].line, chunks[r[-1]][-1].line) if len(r) else None for r in runs]
    job.ranges, job.expected = ranges, [sum(len(chunks[k]) for k in r) for r in runs]
    mine = part_path(output, world.rank)
    mine.unlink(missing_ok=True)
    if world.is_main:
        for failure in run.failures:  # all known before any scoring: say them at once
            stderr_console().print(f"[bold red]error:[/] line {failure.line}: {_escape(failure.message)}")
    progress = JobProgress(job)
    show = world.is_main and stderr_console().is_terminal
    with progress_bar(sum(job.expected), show) as advance:
        try:
            for k in runs[world.rank]:
                score_pair_chunk(columns, chunks[k], settings, str(mine))
                if world.is_main:
                    advance(progress.poll())
        except KeyboardInterrupt:
            if world.is_main:
                stderr_console().print(f"[yellow]Finished lines are kept in {_escape(output)} and its part files; "
                                       "run the same command with --resume to continue.[/]")
            raise
        except GbcliError as error:
            raise GbcliError(f"Rank {world.rank} ({describe_range(ranges[world.rank])}): {error.message}",
                             error.hint, exit_code=error.exit_code) from error
        if world.is_main:
            progress.wait(advance)
    distributed.barrier(world, "the end of the job", ranges)
    if not world.is_main:
        distributed.finish()
        return None
    # A rank with no chunk (more ranks than chunks) wrote no part file.
    sources = [path for path in (Path(output), *(part_path(output, r) for r in range(world.size))) if path.exists()]
    distributed.merge_in_order(output, sources)
    merged = task.open_output(output, resume=True, force=False)
    run.tally = task.Tally([(lm.family, lm.name) for lm in columns])
    for line in sorted(merged.records):
        run.tally.add(*task.outcomes(merged.records[line]))
    distributed.finish()
    return run, resumed, columns
