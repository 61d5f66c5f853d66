"""The progress of a long computation (`score`, the file commands, probe's states): on stderr, so that stdout
carries nothing but the results. On a terminal a bar that is gone once the work is done; on a terminal with
NO_COLOR, where no escape code may move the cursor (gbcli.terminal), the same counts as a plain line every
`PLAIN_EVERY` seconds; off a terminal, nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from gbcli.lm.reads import READ_PROGRESS
from gbcli.render.common import animated, stderr_console

# A file of this many lines or fewer is done before a bar would be worth drawing.
FEW_LINES = 5
# Seconds between two plain progress lines (NO_COLOR on a terminal): a long run says where it is every few
# seconds, one that ends sooner prints none.
PLAIN_EVERY = 5.0


# What a model's sequences in gbcli.lm.reads.run_reads are, for the bar of each (score: GPT's windows, BERT's
# masked copies, one per token of the text).
SEQUENCE_NAMES = {"gpt": "GPT windows", "bert": "BERT masked copies", "bart": "BART sequences"}


@contextmanager
def progress_bar(
    total: int,
    enabled: bool,
    label: str = "scoring",
    *,
    redirect_stderr: bool = False,
    rate_unit: str | None = None,
    sequences: bool = False,
) -> Iterator[Callable[[int], None]]:
    """A bar of `total` steps labelled `label` (none when `total` is 0); yields a function that advances it by a
    count (a no-op when not `enabled`). With `redirect_stderr`, lines written to stderr meanwhile (warnings) print
    above the bar; with `rate_unit`, the bar shows its steps a second. With `sequences`, a bar per model also counts
    the sequences its forward passes have run (gbcli.lm.reads.READ_PROGRESS), with their rate and the time left: a
    long text's masked copies move it."""
    if not enabled:
        yield lambda _count: None
        return
    if not animated(stderr_console()):  # NO_COLOR: the same counts, as plain lines
        with plain_progress(total, label, rate_unit=rate_unit, sequences=sequences) as advance:
            yield advance
        return
    yield from _bars(total, label, redirect_stderr=redirect_stderr, rate_unit=rate_unit, sequences=sequences)


def _bars(
    total: int, label: str, *, redirect_stderr: bool, rate_unit: str | None, sequences: bool
) -> Iterator[Callable[[int], None]]:
    """`progress_bar` on a terminal that may redraw: Rich's bars, gone when the work is done."""
    rate = [RateColumn(rate_unit)] if rate_unit or sequences else []

    # stdout is never redirected: Rich would route the JSON Lines or CSV written meanwhile to stderr.
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *rate,
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=redirect_stderr,
    ) as progress:
        task = progress.add_task(label, total=total) if total else None
        bars: dict[str, Any] = {}  # family → its bar
        counts: dict[str, list[int]] = {}  # family → [sequences done, sequences in all]

        def counted(family: str, added: int, done: int) -> None:
            count = counts.get(family)
            if count is None or (added and count[0] >= count[1]):
                # A model's first work, or a later chunk of a file after the last was done: its bar starts again.
                if family in bars:
                    progress.remove_task(bars[family])
                bars[family] = progress.add_task(SEQUENCE_NAMES.get(family, family), total=0)
                count = counts[family] = [0, 0]
            count[0] += done
            count[1] += added
            progress.update(bars[family], completed=count[0], total=count[1])

        token = READ_PROGRESS.set(counted) if sequences else None
        try:
            yield lambda count: progress.advance(task, count) if task is not None else None
        finally:
            if token is not None:
                READ_PROGRESS.reset(token)


class PlainTicker:
    """Says a line at most every `PLAIN_EVERY` seconds, none before the work has run that long: the plain progress
    of a terminal with NO_COLOR (gbcli.terminal)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.said = time.monotonic()

    def tick(self, line: Callable[[], str]) -> None:
        """`line()` is built only when it is said."""
        now = time.monotonic()
        if now - self.said >= PLAIN_EVERY:
            self.said = now
            self.say(line())


def plain_ticker() -> PlainTicker | None:
    """A ticker onto stderr where it is a terminal with NO_COLOR, else None (a bar or a live view shows progress
    there, or nothing should)."""
    console = stderr_console()
    if not console.is_terminal or animated(console):
        return None
    return PlainTicker(lambda line: console.print(line, markup=False, highlight=False))


class PlainCounts:
    """The counts a bar would show, said as one plain line at most every `PLAIN_EVERY` seconds: `scoring 3/10
    lines (1.2 lines/s, ~6 s left) · BERT masked copies 40/147 (3.1/s, ~35 s left)`."""

    def __init__(self, total: int, label: str, rate_unit: str | None, say: Callable[[str], None]) -> None:
        self.total, self.label, self.rate_unit = total, label, rate_unit
        self.ticker = PlainTicker(say)
        self.done = 0
        self.started = time.monotonic()
        self.counts: dict[str, list[float]] = {}  # family → [done, in all, when its count (re)started]

    def advance(self, count: int) -> None:
        self.done += count
        self.maybe_say()

    def counted(self, family: str, added: int, done: int) -> None:
        count = self.counts.get(family)
        if count is None or (added and count[0] >= count[1]):  # a model's first work, or a later chunk's
            count = self.counts[family] = [0, 0, time.monotonic()]
        count[0] += done
        count[1] += added
        self.maybe_say()

    def maybe_say(self) -> None:
        self.ticker.tick(lambda: self.line(time.monotonic()))

    def line(self, now: float) -> str:
        unit = f" {self.rate_unit}" if self.rate_unit else ""
        parts = [f"{self.label} {self.done}/{self.total}{unit}{_pace(self.done, self.total, now - self.started, unit)}"]
        parts = parts if self.total else []
        for family, (done, total, since) in self.counts.items():
            name = SEQUENCE_NAMES.get(family, family)
            parts.append(f"{name} {done:.0f}/{total:.0f}{_pace(done, total, now - since, '')}")
        return " · ".join(parts) or f"{self.label} …"


def _pace(done: float, total: float, seconds: float, unit: str) -> str:
    """` (3.1/s, ~35 s left)` once something is done, as the bar's rate and time-left columns say it."""
    if done <= 0 or seconds <= 0:
        return ""
    rate = done / seconds
    left = max(total - done, 0) / rate
    return f" ({rate:.1f}{unit}/s, ~{_seconds(left)} left)"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


@contextmanager
def plain_progress(
    total: int, label: str, *, rate_unit: str | None = None, sequences: bool = False
) -> Iterator[Callable[[int], None]]:
    """`progress_bar`'s counts as plain lines on stderr (no escape code): for a terminal with NO_COLOR."""
    console = stderr_console()
    counts = PlainCounts(total, label, rate_unit, lambda line: console.print(line, markup=False, highlight=False))
    token = READ_PROGRESS.set(counts.counted) if sequences else None
    try:
        yield counts.advance
    finally:
        if token is not None:
            READ_PROGRESS.reset(token)


class RateColumn(ProgressColumn):
    """Steps a second, once Rich has measured a speed: `12.4 lines/s` (with a unit), `12.4/s` (a bar per model)."""

    def __init__(self, unit: str | None = None) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Any:
        unit = f" {self.unit}/s" if self.unit else "/s"
        if task.speed:
            return Text(f"{task.speed:.1f}{unit}", style="dim")
        return Text(f"…{unit}" if self.unit else "", style="dim")


def line_progress(
    total: int, label: str, rate_unit: str | None = None
) -> AbstractContextManager[Callable[[int], None]]:
    """The bar for a file of `total` lines: only when there are more than a few, and only on a terminal (with
    NO_COLOR, as plain lines)."""
    return progress_bar(
        total, total > FEW_LINES and stderr_console().is_terminal, label, redirect_stderr=True, rate_unit=rate_unit
    )
