"""Where a command over many texts puts each batch of results as it is finished: out on stdout at once, kept for
the table, or (`--output`) into a file, by this process or shared among torchrun's."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gbcli.cli.reporting import _escape, interrupt_exits_130, stderr_console
from gbcli.errors import usage_error

if TYPE_CHECKING:
    from gbcli.jobs.jsonl_output import RecordShape
    from gbcli.jobs.plan import Plan
    from gbcli.loading.models import LoadOptions


class Records:
    """Each batch written at once by `write` (JSON Lines, CSV: memory stays flat on long files, a pipe sees every
    record as it comes), or, with no `write`, kept for the table drawn at the end."""

    def __init__(self, write: Callable[[list[Any]], None] | None = None) -> None:
        self.write = write
        self.kept: list[Any] = []

    def __call__(self, batch: list[Any]) -> None:
        if self.write is None:
            self.kept.extend(batch)
        else:
            self.write(batch)


def json_lines(batch: list[Any]) -> None:
    """One JSON Lines record per result on stdout."""
    from gbcli.render.common import print_json

    for record in batch:
        print_json(record, lines=True)


def output_job(
    output: str,
    shape: RecordShape,
    *,
    resume: bool,
    force: bool,
    options: LoadOptions,
    plan: Callable[[LoadOptions], Plan],
    announce: Callable[[], None] = lambda: None,
    label: str = "scoring",
) -> int | None:
    """A file job into --output: here, or this rank's share under torchrun (then the models load on this rank's
    device), under --output's lock. How many of the file's records an earlier run had written (and are kept); None
    on a rank other than 0, which prints nothing."""
    from gbcli.jobs.distributed import detect, job_threads
    from gbcli.jobs.jsonl_output import OutputLock

    world = detect()  # a torchrun job of several processes, or None (then torch.distributed is never imported)
    if world is not None:
        from gbcli.jobs.distributed import start
        from gbcli.jobs.torchrun_job import run_distributed

        options = replace(options, device=start(world, options.device))
        with OutputLock(output, shape.command) if world.is_main else nullcontext():
            return run_distributed(
                world,
                output,
                shape,
                resume=resume,
                force=force,
                plan=lambda: plan(options),
                announce=announce,
                label=label,
            )
    from gbcli.jobs.jsonl_output import open_output, settle
    from gbcli.jobs.plan import run_here
    from gbcli.render.progress import progress_bar

    with OutputLock(output, shape.command):
        open_output(output, shape, resume=resume, force=force)
        work = plan(options)
        threads = job_threads()
        if threads is not None:  # as each of torchrun's processes takes it: the same threads write the same file
            import torch

            torch.set_num_threads(threads)
        settled = settle(output, shape, work.chunks(), work.check, drop=True)
        announce()
        try:
            with interrupt_exits_130(), progress_bar(settled.todo, stderr_console().is_terminal, label) as advance:
                run_here(work, settled.done, output, advance)
        except KeyboardInterrupt:
            stderr_console().print(
                f"[yellow]Finished lines are kept in {_escape(output)}; run the same command "
                "with --resume to continue.[/]"
            )
            raise
    return settled.kept


def print_output_summary(
    file: str, output: str, lines: int, resumed: int, *, json_output: bool, failed: int = 0
) -> None:
    """What a file job into --output says on stdout at the end: how many lines the file holds, and how many of
    them an earlier run had done."""
    from gbcli.jobs.plan import OutputSummary
    from gbcli.render.common import print_json, stdout_console

    summary = OutputSummary("summary", file, output, lines, resumed, failed)
    if json_output:
        print_json(summary)
        return
    earlier = f" ({summary.resumed} done by an earlier run)" if summary.resumed else ""
    # soft_wrap: a path is never broken across lines (it is to be copied)
    stdout_console().print(
        f"{summary.lines} lines of {file} are in {output}{earlier}.", markup=False, highlight=False, soft_wrap=True
    )


def under_torchrun_needs_output(command: str, output: str | None, file: str | None) -> None:
    """Several processes cannot share stdout: under torchrun a file job writes one --output. Nor can they share
    stdin: each would read a different part of it and take that for the whole file."""
    from gbcli.jobs.distributed import detect

    if detect() is None:
        return
    if output is None:
        raise usage_error(
            f"Under torchrun, {command} --file needs --output: the processes write one file.",
            f"e.g. torchrun --nproc-per-node 2 -m gbcli {command} --file F.txt -o out.jsonl",
        )
    if file == "-":
        raise usage_error(
            f"Under torchrun, {command} --file cannot be standard input: every process reads the whole file itself.",
            "Save the input to a file and give its path to --file.",
        )


def check_output_options(command: str, output: str | None, resume: bool, force: bool, file: str | None) -> None:
    """--output, --resume and --force go together, with --file; --output is never --file itself."""
    from gbcli.jobs.jsonl_output import check_not_input

    if file is None and (output is not None or resume):
        raise usage_error("--output and --resume go with --file.", f"e.g. gbcli {command} --file F -o out.jsonl")
    if resume and output is None:
        raise usage_error("--resume needs --output: the file to continue.")
    if force and output is None:
        raise usage_error("--force goes with --output: the file to replace.")
    if output is not None:
        check_not_input(output, file)
