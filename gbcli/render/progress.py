"""The progress bar of the file commands (`score --file`, `fill-mask --file`, `pairs --file`): on stderr, so that
stdout carries nothing but the results, and gone once the work is done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

# A file of this many lines or fewer is done before a bar would be worth drawing.
FEW_LINES = 5


@contextmanager
def progress_bar(
    total: int, enabled: bool, label: str = "scoring", *, redirect_stderr: bool = False, rate_unit: str | None = None
) -> Iterator[Callable[[int], None]]:
    """A bar of `total` steps labelled `label`; yields a function that advances it by a count (a no-op when not
    `enabled`). With `redirect_stderr`, lines written to stderr meanwhile (warnings) print above the bar."""
    if not enabled:
        yield lambda _count: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from gbcli.render.common import stderr_console

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed:.1f} {rate_unit}/s" if task.speed else f"… {rate_unit}/s", style="dim")

    rate = [RateColumn()] if rate_unit else []

    # stdout is never redirected: Rich would route the JSON Lines or CSV written meanwhile to stderr.
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), *rate, TimeRemainingColumn(),
                  console=stderr_console(), transient=True, redirect_stdout=False,
                  redirect_stderr=redirect_stderr) as progress:
        task = progress.add_task(label, total=total)
        yield lambda count: progress.advance(task, count)


def line_progress(total: int, label: str, rate_unit: str | None = None
                  ) -> AbstractContextManager[Callable[[int], None]]:
    """The bar for a file of `total` lines: only when there are more than a few, and only where it can move
    (stderr is a terminal, NO_COLOR unset)."""
    from gbcli.render.common import animated, stderr_console

    return progress_bar(total, total > FEW_LINES and animated(stderr_console()), label, redirect_stderr=True,
                        rate_unit=rate_unit)
