"""The progress bar of the file commands (`score --file`, `fill-mask --file`, `pairs --file`): on stderr, so that
stdout carries nothing but the results, and gone once the work is done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from gbcli.lm.reads import READ_PROGRESS
from gbcli.render.common import animated, stderr_console

# A file of this many lines or fewer is done before a bar would be worth drawing.
FEW_LINES = 5


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
    """The bar for a file of `total` lines: only when there are more than a few, and only where it can move
    (stderr is a terminal, NO_COLOR unset)."""
    return progress_bar(
        total, total > FEW_LINES and animated(stderr_console()), label, redirect_stderr=True, rate_unit=rate_unit
    )
