"""How many threads token-by-token work runs on: the cores no other process is busy on, chosen by timing steps.

Decoding one token is a few hundred small ops, and an OpenMP team waits at the end of each op for its slowest
thread, so on a shared machine fewer threads are often faster. Everything here is about the machine, not about
any model: the decoding loop (gbcli.lm.fast.decoding_loop) and BERT's mask filling use it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def other_busy_cores() -> float:
    """How many cores other processes keep busy right now.

    Linux counts the runnable tasks at this instant (/proc/loadavg's fourth field); this process's own running
    threads (OpenMP workers spin for a while after each op) are taken off. The least of three looks ignores a task
    that is runnable only for a moment. Elsewhere, the one-minute load average less this process stands in: it
    lags by a minute, which is why StepThreads also times the steps.
    """
    try:
        looks = []
        for _ in range(3):
            with open("/proc/loadavg") as f:
                runnable = int(f.read().split()[3].split("/")[0])
            own = 0
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            looks.append(max(0, runnable - own))
        return float(min(looks))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, os.getloadavg()[0] - 1)
    except (AttributeError, OSError):  # pragma: no cover - not available on Windows
        return 0.0


def step_threads(current: int) -> int:
    """How many threads token-by-token work should use: the cores no other process is busy on, at most `current`.

    When another process holds one of the cores, every op of a team that needs it waits for a time slice, and a
    token takes many times longer than on one thread; a single core streams the weights (the real cost of a decoding
    step) nearly as fast as two (benchmarks/run.py, row `busy`). OMP_NUM_THREADS, when set, is the user's choice and
    is kept.
    """
    if os.environ.get("OMP_NUM_THREADS") or current <= 1:
        return current
    idle = int(usable_cores() - other_busy_cores())
    return max(1, min(current, idle))


@contextmanager
def threads_for_steps() -> Iterator[None]:
    """Run token-by-token loops on `step_threads()` threads, and give the caller its setting back afterwards."""
    import torch

    before = torch.get_num_threads()
    wanted = step_threads(before)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != before:
            torch.set_num_threads(before)


class StepThreads:
    """Chooses, step by step, the thread count that decodes fastest right now, by timing the steps themselves.

    Candidates are torch's setting, one, and what `step_threads` finds free. A count that needs more cores than are free
    right now (`other_busy_cores`, looked at every LOOK_EVERY steps) is neither used nor probed: one step of a team
    whose threads wait for time slices costs many ordinary steps (row `busy`), so probing it would lose more than it
    could win. Among the counts that fit, each runs PROBE_STEPS steps in turn and the fastest median wins; each other
    count is timed again after PROBE_EVERY steps (the machine may have become idle or busy), and after twice as many
    each time it loses again, so that a count that keeps losing (a team stalled by other work that the looks missed)
    costs a few steps per generation, not one every PROBE_EVERY. The count moves only the last bits of a step's numbers
    (~1e-6): the GPT-2 decoder (gbcli.lm.fast.gpt2_step) splits its products into as many blocks as threads run them,
    and torch's attention kernel divides its sums by thread count (in `model.generate` too). OMP_NUM_THREADS, when
    set, is the user's choice and is kept.
    """

    PROBE_STEPS = 3  # steps per candidate at the start
    PROBE_EVERY = 32  # steps before a losing count is timed again; doubled each time it loses again
    LONGEST_WAIT = 256
    LOOK_EVERY = 4  # steps between two looks at how busy the machine is (a look reads /proc: cheap, not free)

    def __init__(self, threads: int) -> None:
        if os.environ.get("OMP_NUM_THREADS") or threads <= 1:
            self.candidates = [threads]
        else:
            self.candidates = sorted({threads, 1, step_threads(threads)}, reverse=True)
        self.times: dict[int, deque[float]] = {count: deque(maxlen=self.PROBE_STEPS) for count in self.candidates}
        self.steps = 0
        self.fitting = self._fitting()
        self.wait = dict.fromkeys(self.candidates, self.PROBE_EVERY)  # steps between two re-probes of each count
        self.probe_at = dict(self.wait)  # the step from which each count may be re-probed

    def prompt_threads(self) -> int:
        """The thread count for the prompt's batched pass: the most that fit in the cores free right now."""
        self.fitting = self._fitting()
        return max(self.fitting)

    def _fitting(self) -> list[int]:
        """The candidates that fit in the cores free right now (one thread always does)."""
        if len(self.candidates) == 1:
            return self.candidates
        free = usable_cores() - other_busy_cores()
        return [count for count in self.candidates if count <= max(1.0, free)]

    def next(self) -> int:
        """The thread count for the next step."""
        step = self.steps
        self.steps += 1
        if len(self.candidates) == 1:
            return self.candidates[0]
        if step and step % self.LOOK_EVERY == 0:
            self.fitting = self._fitting()
        fitting = self.fitting
        unprobed = [count for count in fitting if len(self.times[count]) < self.PROBE_STEPS]
        if unprobed and step < self.PROBE_STEPS * len(self.candidates):
            return min(unprobed, key=lambda count: len(self.times[count]))
        fastest = self.fastest()
        for count in fitting:
            if count != fastest and step >= self.probe_at[count]:
                self.probe_at[count] = step + self.wait[count]
                self.wait[count] = min(2 * self.wait[count], self.LONGEST_WAIT)  # back to PROBE_EVERY if it wins
                return count
        return fastest

    def record(self, threads: int, seconds: float) -> None:
        self.times[threads].append(seconds)
        if len(self.times[threads]) == self.PROBE_STEPS and self.fastest() == threads:
            self.wait[threads] = self.PROBE_EVERY

    def fastest(self) -> int:
        def median(count: int) -> float:
            times = sorted(self.times[count])
            return times[len(times) // 2] if times else float("inf")

        return min(self.fitting, key=median)


class _TimedSteps:
    """A decoder whose every step runs on the thread count StepThreads picks, and is timed for it."""

    def __init__(self, decoder: Any, chooser: StepThreads) -> None:
        self.decoder = decoder
        self.chooser = chooser

    def start(self, input_ids: Any, capacity: int) -> Any:
        import torch

        # One batched pass, on as many threads as there are free cores: a team larger than that waits for time
        # slices at every op (benchmarks/run.py, row `busy`).
        count = self.chooser.prompt_threads()
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        return self.decoder.start(input_ids, capacity)

    def step(self, token: Any, position: int) -> Any:
        import torch

        count = self.chooser.next()
        if count != torch.get_num_threads():
            torch.set_num_threads(count)
        started = time.perf_counter()
        logits = self.decoder.step(token, position)
        self.chooser.record(count, time.perf_counter() - started)
        return logits


@contextmanager
def on_fastest_threads(decoder: Any) -> Iterator[Any]:
    """The decoder (anything with `start` and `step`) with each step on the thread count that is fastest right
    now (StepThreads); the caller's thread setting comes back afterwards, Ctrl-C included."""
    import torch

    threads = torch.get_num_threads()
    chooser = StepThreads(threads)
    try:
        yield _TimedSteps(decoder, chooser)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def side_by_side(*models: Any) -> bool:
    """Whether work on these loaded models may run at once, on halves of the threads: all on CPU, two threads
    or more."""
    import torch

    return torch.get_num_threads() >= 2 and all(lm.device.type == "cpu" for lm in models)


def run_beside(first: Any, second: Any) -> None:
    """`first()` on another thread while `second()` runs on this one, each on half of this process's threads
    (an odd one left over is left idle: MKL's thread count is one setting for the whole process); both finish
    before this returns, and an exception of either is raised here (this thread's first)."""
    import torch

    threads = torch.get_num_threads()
    half = max(1, threads // 2)
    failure: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            torch.set_num_threads(half)
            with torch.inference_mode():  # a thread-local mode: the caller's does not reach this thread
                first()
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work, name="gbcli-beside", daemon=True)
    torch.set_num_threads(half)
    worker.start()
    try:
        second()
    finally:
        _wait_for(done)
        torch.set_num_threads(threads)
    if failure:
        raise failure[0]


def _wait_for(done: Any) -> None:
    """Wait for the other thread even through Ctrl-C (raised once it has ended): it may be running a model that
    the next command of a warm server or shell runs too, and two passes at once on one model would share its
    hooks. (An Event, not Thread.join: an interrupted join in CPython 3.11 marks a running thread as ended.)"""
    interrupted: BaseException | None = None
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
