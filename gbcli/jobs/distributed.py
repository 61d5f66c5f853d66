"""File jobs under torchrun: the lines split among the processes, one output as a single process writes it.

torchrun (or `accelerate launch`, which wraps it) starts one process per GPU or per CPU share and tells each its
place through the environment (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE). Nothing here imports
`torch.distributed` unless that environment says a job of more than one process is running.

How the output stays byte for byte that of one process:
- the file's chunks (cut from the whole list, as a single process cuts them) are dealt out whole and in order: each
  rank gets a contiguous run of chunks, so every chunk is scored in exactly the batches a single process uses;
- the runs are balanced by estimated cost (tokens, squared for BERT's pseudo-log-likelihood, which masks each token
  in turn), not by line count;
- each rank appends its whole, flushed records to its own part file (`OUTPUT.partR`); when every rank has finished
  (a barrier with a timeout), rank 0 merges the parts into OUTPUT in input order and removes them.

Why part files rather than gathering records over the process group: records never cross the network, so memory
stays bounded on every rank and nothing is lost when a rank dies (its finished records are already on disk, whole,
for --resume). The price is that OUTPUT's folder must be one shared filesystem for all the machines of the job (as
on clusters); that is checked at the start, with a clear error otherwise.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from gbcli.errors import GbcliError, usage_error

DEFAULT_TIMEOUT_S = 600.0  # every collective wait; GBCLI_DIST_TIMEOUT (seconds) changes it


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    timeout_s: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect() -> World | None:
    """The torchrun job this process belongs to, or None when it runs alone (WORLD_SIZE unset or 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or "RANK" not in os.environ:
        return None
    return World(
        rank=int(os.environ["RANK"]),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))),
        timeout_s=float(os.environ.get("GBCLI_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)),
    )


def start(world: World, device: str) -> str:
    """Join the process group and choose this rank's device; the device option each model then loads on.

    Gloo carries the barriers on CPU (monitored_barrier, which names the ranks that never arrived, exists only for
    Gloo); NCCL is added for CUDA tensors when GPUs exist. No record crosses the process group (see the module
    docstring), so the backends only synchronise.
    """
    import torch
    import torch.distributed as dist

    threads = job_threads()
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    elif device in ("auto", "cpu") and threads is None:
        # torchrun sets OMP_NUM_THREADS=1 for each process; the machine's cores are shared out instead.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // world.local_size))
    if threads is not None:
        torch.set_num_threads(threads)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timedelta(seconds=world.timeout_s)
        )
    return device


def job_threads() -> int | None:
    """GBCLI_THREADS: the threads of each process of a file job into --output (None: unset). The thread count
    decides the order of the sums inside a matrix product, so two files are equal byte for byte only when their
    processes ran the same number of threads."""
    text = os.environ.get("GBCLI_THREADS", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise usage_error(
            f"GBCLI_THREADS={text} is not a number of threads (1 or more).",
            "Set it to the threads each process of the job uses, e.g. GBCLI_THREADS=4, or unset it.",
        )
    return int(text)


def barrier(world: World, what: str, job: Job | None = None) -> None:
    """Wait for every rank, at most the timeout; a rank that never arrives is named, with the lines it held and how
    many of them it had written (as when torchrun stops the job: `Job.unfinished`)."""
    import torch.distributed as dist

    try:
        dist.monitored_barrier(timeout=timedelta(seconds=world.timeout_s), wait_all_ranks=True)
    except RuntimeError as exc:
        held = ""
        if job is not None:
            missing = [int(r) for r in _ranks_named(str(exc)) if int(r) < len(job.ranges)] or list(range(world.size))
            held = job.held_by([r for r in missing if r != world.rank])
        raise GbcliError(
            f"A worker did not reach {what} within {world.timeout_s:g} s{': ' + held if held else ''}.",
            "Its finished lines are kept: run the same command with --resume to continue.",
        ) from exc


def _ranks_named(message: str) -> list[str]:
    match = re.search(r"[Rr]anks? ([\d, ]+)", message)
    return [r for r in re.split(r"[ ,]+", match.group(1)) if r] if match else []


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------
# Sharing out the chunks
# ---------------------------------------------------------------------------------------------------------------


def split_by_cost(costs: Sequence[float], parts: int) -> list[range]:
    """Contiguous runs of items, one per part, whose cost sums are as even as a cut between items allows.

    Each cut falls where the running total crosses k/parts of the whole (the greedy prefix split): for contiguous
    runs this is within one item's cost of the best split, and it keeps the input order, which the merge needs.
    """
    total = sum(costs)
    runs: list[range] = []
    begin, running = 0, 0.0
    for part in range(1, parts):
        goal = total * part / parts
        end = begin
        while end < len(costs) and running + costs[end] / 2 <= goal:  # cut nearest to the goal
            running += costs[end]
            end += 1
        runs.append(range(begin, end))
        begin = end
    runs.append(range(begin, len(costs)))
    return runs


def describe_range(lines: tuple[int, int] | None) -> str:
    if lines is None:
        return "no lines"
    first, last = lines
    return f"line {first}" if first == last else f"lines {first}–{last}"


# ---------------------------------------------------------------------------------------------------------------
# Part files: written by each rank, merged by rank 0
# ---------------------------------------------------------------------------------------------------------------


def part_path(output: str, rank: int) -> Path:
    return Path(f"{output}.part{rank}")


def existing_parts(output: str) -> list[Path]:
    """Part files a job left behind (any number of ranks: a resumed job may have another size)."""
    target = Path(output)
    folder = target.parent if str(target.parent) else Path(".")
    prefix = target.name + ".part"
    return sorted(p for p in folder.glob(target.name + ".part*") if p.name[len(prefix) :].isdigit())


def merge_in_order(output: str, sources: Sequence[Path], key: str = "line") -> None:
    """Write OUTPUT as the records of all the sources in input order (each source is already in order; `key` is the
    field of a record that holds its input line), then remove the part files. A line found twice is written once,
    from the later source: a chunk that --output held in part was done again whole into a part file. The new file
    replaces the old in one rename: a crash leaves one or the other, never half."""
    target = Path(output)
    temporary = target.with_name(target.name + ".merging")
    with ExitStack() as stack:
        streams = [stack.enter_context(open(path, "rb")) for path in sources]
        keyed = [((int(json.loads(raw)[key]), raw) for raw in stream if raw.strip()) for stream in streams]
        merged = stack.enter_context(open(temporary, "wb"))
        held: tuple[int, bytes] | None = None
        # heapq.merge is stable: of equal lines, the one of the later source comes last, and is the one kept.
        for line, raw in heapq.merge(*keyed, key=lambda item: item[0]):
            if held is not None and held[0] != line:
                merged.write(held[1])
            held = (line, raw)
        if held is not None:
            merged.write(held[1])
        merged.flush()
        os.fsync(merged.fileno())
    os.replace(temporary, target)
    for path in sources:
        if path != target:
            path.unlink(missing_ok=True)


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as stream:
            return sum(block.count(b"\n") for block in iter(lambda: stream.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------------------------------------------
# Stopping cleanly when torchrun tears the job down
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """What rank 0 tells the user if the job stops early: who held which lines, and how far each got."""

    world: World
    output: str
    ranges: list[tuple[int, int] | None]  # per rank: first and last input line it scores
    expected: list[int]  # per rank: records it writes in this run

    def progress(self) -> list[int]:
        return [count_lines(part_path(self.output, r)) for r in range(self.world.size)]

    def unfinished(self) -> str:
        if all(lines is None for lines in self.ranges):
            return "the lines had not been shared out yet"
        done = self.progress()
        unfinished = [r for r in range(self.world.size) if done[r] < self.expected[r]]
        return self.held_by(unfinished, done) or "every rank had finished its lines"

    def held_by(self, ranks: Sequence[int], done: list[int] | None = None) -> str:
        """`rank 1 held lines 21–40 (7 of 20 done)` for each of `ranks`."""
        done = self.progress() if done is None else done
        return "; ".join(
            f"rank {r} held {describe_range(self.ranges[r])} ({done[r]} of {self.expected[r]} done)" for r in ranks
        )


def on_termination(job: Job, report: Callable[[str, str], None]) -> None:
    """When torchrun stops the survivors of a failed worker (SIGTERM), say which lines were not finished."""

    def handler(number: int, frame: Any) -> None:
        if job.world.is_main:
            report(
                f"The job stopped before every worker finished: {job.unfinished()}.",
                "Finished lines are kept: run the same command with --resume to continue.",
            )
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGTERM, handler)


class JobProgress:
    """Rank 0's view of the whole job's progress, read from the part files every rank writes."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.seen = [0] * job.world.size
        self.last_move = time.monotonic()

    def poll(self) -> int:
        """Records written since the last call, over all ranks."""
        now = [min(done, expected) for done, expected in zip(self.job.progress(), self.job.expected, strict=True)]
        moved = sum(now) - sum(self.seen)
        if moved:
            self.seen, self.last_move = now, time.monotonic()
        return moved

    def wait(self, advance: Callable[[int], None]) -> None:
        """Rank 0, its own lines done: follow the others until their parts are complete, or until nothing has
        moved for the timeout (a worker on another machine may be gone without torchrun stopping this one)."""
        while sum(self.seen) < sum(self.job.expected):
            advance(self.poll())
            if time.monotonic() - self.last_move > self.job.world.timeout_s:
                raise GbcliError(
                    f"No worker wrote a line for {self.job.world.timeout_s:g} s: {self.job.unfinished()}.",
                    "Finished lines are kept: run the same command with --resume to continue.",
                )
            time.sleep(0.1)


def check_shared_folder(world: World, output: str) -> None:
    """Every rank must see rank 0's folder for OUTPUT (part files are merged there)."""
    marker = Path(f"{output}.job")
    if world.is_main:
        marker.write_text(str(os.getpid()), encoding="utf-8")
    barrier(world, "the start")
    seen = marker.exists()
    barrier(world, "the start")
    if world.is_main:
        marker.unlink(missing_ok=True)
    if not seen:
        raise usage_error(
            f"Rank {world.rank} cannot see the folder of --output '{output}'.",
            "Under torchrun across machines, --output must be on a filesystem all of them share.",
        )
