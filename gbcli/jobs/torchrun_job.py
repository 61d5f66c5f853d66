"""A file job with --output as one of torchrun's processes: this rank's chunks, then rank 0 merges.

The steps, every rank unless said:
1. rank 0 (which holds --output's lock for the whole job) checks --output, and with --resume repairs a torn last
   line of it and of every part file an earlier job left, then merges them into --output in input order, so that
   all ranks then read the same finished lines;
2. every rank makes the command's Plan (gbcli.jobs.plan): the same chunks a single process cuts; the chunks
   --output holds whole are left out (a chunk held in part is done again whole), and the rest are dealt out in
   contiguous runs of even cost (gbcli.jobs.distributed.split_by_cost);
3. each rank does its chunks into its own part file, whole records flushed to disk after every chunk;
4. a barrier with a timeout; rank 0 merges the part files into --output (a line redone replaces its older record).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.markup import escape

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs import distributed
from gbcli.jobs.distributed import Job, JobProgress, World, describe_range, part_path
from gbcli.jobs.jsonl_output import RecordShape, open_output, settle
from gbcli.jobs.plan import Plan
from gbcli.render.common import stderr_console
from gbcli.render.messages import report_error
from gbcli.render.scoring import progress_bar


def _prepare_output(output: str, shape: RecordShape, *, resume: bool, force: bool) -> None:
    """Rank 0: --output checked; with --resume, torn lines repaired and an earlier job's parts merged in."""
    parts = distributed.existing_parts(output)
    if not resume:
        if parts and not force:
            raise usage_error(
                f"--output '{output}' has part files of an unfinished job ({parts[0].name}, ...).",
                "Add --resume to continue it, or --force to start again.",
            )
        open_output(output, shape, resume=False, force=force)
        for part in parts:
            part.unlink()
        return
    open_output(output, shape, resume=True, force=False)  # drops a torn last line
    for part in parts:
        open_output(str(part), shape, resume=True, force=False)
    if parts:
        sources = ([Path(output)] if Path(output).exists() else []) + parts
        distributed.merge_in_order(output, sources, shape.key)


def run_distributed(
    world: World,
    output: str,
    shape: RecordShape,
    *,
    resume: bool,
    force: bool,
    plan: Callable[[], Plan],
    announce: Callable[[], None] = lambda: None,
    label: str = "scoring",
) -> int | None:
    """This rank's share of a file job; on rank 0, how many records of an earlier run --output kept, else None.

    `plan` makes the job's chunks once every rank sees the same finished lines; `announce` (rank 0, before any
    chunk is done) says what is known already, such as lines that cannot be done."""
    # Installed first: torchrun may stop this rank (another one failed) before the lines are even shared out.
    job = Job(world, output, [None] * world.size, [0] * world.size)
    distributed.on_termination(job, lambda message, hint: report_error(GbcliError(message, hint), shape.command))
    if world.is_main:
        _prepare_output(output, shape, resume=resume, force=force)
    distributed.check_shared_folder(world, output)  # a barrier: rank 0's repairs are done
    work = plan()
    settled = settle(output, shape, work.chunks(), work.check, drop=False)  # every rank reads; none writes
    indices, costs, spans, sizes = [], [], [], []
    for chunk in work.chunks():
        if chunk.index not in settled.done:
            indices.append(chunk.index)
            costs.append(work.cost(chunk))
            spans.append((chunk.lines[0], chunk.lines[-1]))
            sizes.append(len(chunk.lines))
    runs = distributed.split_by_cost(costs, world.size)
    job.ranges = [(spans[r[0]][0], spans[r[-1]][1]) if len(r) else None for r in runs]
    job.expected = [sum(sizes[k] for k in r) for r in runs]
    if world.is_main:
        announce()
    _do_my_chunks(job, work, {indices[k] for k in runs[world.rank]}, label)
    distributed.barrier(world, "the end of the job", job)
    if not world.is_main:
        distributed.finish()
        return None
    # A rank with no chunk (more ranks than chunks) wrote no part file.
    sources = [path for path in (Path(output), *(part_path(output, r) for r in range(world.size))) if path.exists()]
    distributed.merge_in_order(output, sources, shape.key)
    distributed.finish()
    return settled.kept


def _do_my_chunks(job: Job, work: Plan, mine: set[int], label: str) -> None:
    """This rank's chunks into its part file; rank 0 also draws the whole job's progress and waits for the rest."""
    world = job.world
    part = part_path(job.output, world.rank)
    part.unlink(missing_ok=True)
    progress = JobProgress(job)
    with progress_bar(sum(job.expected), world.is_main and stderr_console().is_terminal, label) as advance:
        try:
            for chunk in work.chunks():
                if chunk.index in mine:
                    work.write(chunk, str(part))
                    if world.is_main:
                        advance(progress.poll())
        except KeyboardInterrupt:
            if world.is_main:
                stderr_console().print(
                    f"[yellow]Finished lines are kept in {escape(job.output)} and its part "
                    "files; run the same command with --resume to continue.[/]"
                )
            raise
        except GbcliError as error:
            raise GbcliError(
                f"Rank {world.rank} ({describe_range(job.ranges[world.rank])}): {error.message}",
                error.hint,
                exit_code=error.exit_code,
            ) from error
        if world.is_main:
            progress.wait(advance)
