"""The fine-tuning comparison's views: the families' dev curves side by side as small charts (whole at 80 columns),
a table of final accuracies with their intervals and when each reached the threshold, the plain reading under it;
the live progress while training; and the PNG of the curves with their intervals (`--png`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from gbcli.loading.models import display_name
from gbcli.tasks.finetune.head_to_head import TIMED_STEPS
from gbcli.tasks.finetune.results import CurvePoint, FamilyResult, FinetuneResult, MeanPoint, Run

if TYPE_CHECKING:
    from gbcli.tasks.finetune.head_to_head import Estimate

CHART_HEIGHT = 8
CHART_WIDTH = 28  # two charts, their axes and a gap fit 80 columns
MARKS = {"gpt": "●", "bert": "■", "bart": "▲"}


def chart_lines(
    family: FamilyResult, low: float, high: float, majority: float, width: int = CHART_WIDTH, height: int = CHART_HEIGHT
) -> list[Text]:
    """One family's mean dev accuracy against training examples: a mark per column (the last point reaching that
    column), the majority baseline as a dotted row, the threshold as a dashed one."""
    curve = family.curve
    last = max(curve[-1].examples, 1)
    rows = [[" "] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]

    def row_of(value: float) -> int:
        share = (value - low) / (high - low) if high > low else 1.0
        return height - 1 - min(height - 1, max(0, round(share * (height - 1))))

    for column in range(width):
        rows[row_of(majority)][column] = "·"
        styles[row_of(majority)][column] = "dim"
        if family.threshold > low:
            rows[row_of(family.threshold)][column] = "╌"
            styles[row_of(family.threshold)][column] = "yellow"
    by_column: dict[int, MeanPoint] = {}
    for point in curve:
        by_column[min(width - 1, round(point.examples / last * (width - 1)))] = point
    for column, point in by_column.items():
        rows[row_of(point.accuracy)][column] = MARKS.get(family.family, "●")
        styles[row_of(point.accuracy)][column] = "bold cyan" if family.family == "gpt" else "bold magenta"
    if family.zero_shot is not None:
        rows[row_of(family.zero_shot.accuracy)][0] = "○"
        styles[row_of(family.zero_shot.accuracy)][0] = "bold"
    lines = []
    for index, (chars, marks) in enumerate(zip(rows, styles, strict=True)):
        label = f"{high:.2f}" if index == 0 else f"{low:.2f}" if index == height - 1 else ""
        line = Text(f"{label:>4} │")
        for char, style in zip(chars, marks, strict=True):
            line.append(char, style=style or None)
        lines.append(line)
    lines.append(Text("     └" + "─" * width))
    lines.append(Text(f"      0{_short(last):>{width - 1}}"))
    return lines


def _short(examples: int) -> str:
    return f"{examples / 1000:.1f}k" if examples >= 10_000 else f"{examples:,}"


def charts(result: FinetuneResult) -> Table:
    """The families' charts side by side, on one y scale so that their heights compare."""
    values = [p.accuracy for f in result.families for p in f.curve] + [result.majority_baseline]
    values += [f.zero_shot.accuracy for f in result.families if f.zero_shot is not None]
    low, high = max(0.0, min(values) - 0.02), min(1.0, max(values) + 0.02)
    grid = Table.grid(padding=(0, 2))
    for _ in result.families:
        grid.add_column(no_wrap=True)
    titles = [Text(f"{f.title}: dev accuracy by examples", style="bold") for f in result.families]
    grid.add_row(*titles)
    columns = [chart_lines(f, low, high, result.majority_baseline) for f in result.families]
    for row in zip(*columns, strict=True):
        grid.add_row(*row)
    return grid


def legend(result: FinetuneResult) -> Text:
    text = Text("", style="dim")
    marks = ", ".join(f"{MARKS.get(f.family, '●')} {f.title}" for f in result.families)
    text.append(f"{marks} · majority baseline ╌ threshold")
    if any(f.zero_shot is not None for f in result.families):
        text.append(" ○ zero-shot")
    return text


def summary_table(result: FinetuneResult) -> Table:
    """Per family: the final dev accuracy (with its interval over seeds), when the threshold was reached, the
    zero-shot point, and the training speed."""
    several = len(result.seeds) > 1
    zero = any(f.zero_shot is not None for f in result.families)
    table = Table(box=None, padding=(0, 1), header_style="bold")
    table.add_column("model", overflow="fold")
    table.add_column("final dev acc", justify="right", no_wrap=True)
    table.add_column("threshold reached at", justify="right", no_wrap=True)
    if zero:
        table.add_column("zero-shot", justify="right", no_wrap=True)
    table.add_column("ex/s", justify="right", no_wrap=True)
    for family in result.families:
        if family.final_accuracy <= result.majority_baseline + 1e-12:
            reached = "- (no learning)"
        elif family.reached_step == 0:
            reached = "at step 0"
        elif family.reached_examples is not None:
            reached = f"{family.reached_examples:,} ex ({family.reached_epoch:.2f} ep)"
        else:
            reached = "never"
        speed = sum(r.examples_per_second for r in family.runs) / len(family.runs)
        final = f"{family.final_accuracy:.3f}"
        if several:
            final += f" [{family.final_low:.2f}, {family.final_high:.2f}]"
        row = [f"{family.title} {display_name(family.model)}", final, reached]
        if zero:
            row.append(f"{family.zero_shot.accuracy:.3f}" if family.zero_shot is not None else "-")
        row.append(f"{speed:.1f}")
        table.add_row(*row)
    return table


def header(result: FinetuneResult) -> Text:
    recipes = list(result.recipe.values())
    first = recipes[0]
    same = all(r == first for r in recipes)
    text = Text()
    text.append(f"{result.data}: ", style="bold")
    text.append(
        f"{result.train_examples:,} training, {result.dev_examples:,} dev examples ({result.dev_source}); "
        f"labels {', '.join(result.labels)}\n"
    )
    recipe = (
        f"lr {first['learning_rate']:g}, {first['epochs']:g} epochs, batch {first['batch_size']}, "
        f"warm-up {first['warmup_ratio']:.0%}, weight decay {first['weight_decay']:g}, max length "
        f"{first['max_length']}"
    )
    if first.get("freeze_below") is not None:
        recipe += f", layers below {first['freeze_below']} frozen"
    seeds = f"seed {result.seeds[0]}" if len(result.seeds) == 1 else f"{len(result.seeds)} seeds"
    text.append(
        f"Recipe ({'the same for every family' if same else 'per family, see --json'}): {recipe}; {seeds}.", style="dim"
    )
    return text


def finetune_view(result: FinetuneResult) -> Group:
    parts: list[Any] = [
        header(result),
        Text(""),
        charts(result),
        legend(result),
        Text(""),
        summary_table(result),
        Text(""),
    ]
    parts += [Text(line) for line in result.reading]
    parts.append(
        Text(f"Models, trainer_state.json, all_results.json and curves.json in {result.output_dir}/", style="dim")
    )
    return Group(*parts)


def estimate_text(estimates: list[Estimate]) -> Text:
    """'Estimated time: GPT ~3 min (360 steps, 37 evaluations), BERT ~2 min; all ~5 min (timed on 2 steps each).'"""
    parts = [
        f"{e.family.upper()} {_duration(e.seconds)} ({e.steps * e.runs:,} steps, {e.evaluations * e.runs} evaluations)"
        for e in estimates
    ]
    total = sum(e.seconds for e in estimates)
    return Text(
        f"Estimated time: {', '.join(parts)}; all {_duration(total)} (from the median of {TIMED_STEPS} timed "
        "steps of each).",
        style="dim",
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


class LiveProgress:
    """One bar per run on stderr: step, loss, dev accuracy, time left (a Listener for the training task)."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.task: Any = None
        self.accuracy: float | None = None

    def started(self, family: str, seed: int, total_steps: int, done_steps: int) -> None:
        self.accuracy = None
        self.task = self.progress.add_task(
            f"{family.upper()} seed {seed}", total=total_steps, completed=done_steps, loss="", accuracy=""
        )

    def stepped(self, step: int, loss: float | None) -> None:
        self.progress.update(self.task, completed=step, loss=f"loss {loss:.3f}" if loss is not None else "")

    def evaluated(self, point: CurvePoint) -> None:
        self.progress.update(self.task, accuracy=f"dev {point.accuracy:.3f}")

    def finished(self, run: Run) -> None:
        pass


class PlainProgress:
    """Where the screen cannot redraw (a pipe, NO_COLOR): one line per evaluation."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.name = ""
        self.began = time.perf_counter()

    def started(self, family: str, seed: int, total_steps: int, done_steps: int) -> None:
        self.name, self.total = f"{family.upper()} seed {seed}", total_steps
        self.began = time.perf_counter()
        if done_steps:
            self.console.print(f"{self.name}: resuming at step {done_steps} of {total_steps}")

    def stepped(self, step: int, loss: float | None) -> None:
        pass

    def evaluated(self, point: CurvePoint) -> None:
        loss = f", loss {point.train_loss:.3f}" if point.train_loss is not None else ""
        self.console.print(
            f"{self.name}: step {point.step}/{self.total}, dev accuracy {point.accuracy:.3f}{loss}", highlight=False
        )

    def finished(self, run: Run) -> None:
        if run.reused:
            self.console.print(f"seed {run.seed}: already finished in {run.folder}", highlight=False)


@contextmanager
def training_progress(console: Any, animated: bool) -> Iterator[Any]:
    if not animated:
        yield PlainProgress(console)
        return

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[accuracy]}"),
        TimeRemainingColumn(),
        console=console,
        redirect_stdout=False,
    ) as progress:
        yield LiveProgress(progress)


def write_curves_png(handle: BinaryIO, result: FinetuneResult) -> None:
    """Both families' mean dev accuracy against training examples, with the seeds' 95% interval as a band, the
    majority baseline, each family's threshold and its zero-shot point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # late: extra
    from matplotlib.figure import Figure  # late: extra

    figure = Figure(figsize=(7, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    colours = {"gpt": "tab:blue", "bert": "tab:red", "bart": "tab:green"}
    for family in result.families:
        colour = colours.get(family.family, "tab:gray")
        xs = [p.examples for p in family.curve]
        axes.plot(
            xs,
            [p.accuracy for p in family.curve],
            marker="o",
            markersize=3,
            color=colour,
            label=f"{family.title} ({display_name(family.model)})",
        )
        if len(result.seeds) > 1:
            axes.fill_between(
                xs, [p.low for p in family.curve], [p.high for p in family.curve], color=colour, alpha=0.2
            )
        axes.axhline(family.threshold, color=colour, linestyle="--", linewidth=0.8)
        if family.zero_shot is not None:
            axes.plot(
                [0],
                [family.zero_shot.accuracy],
                marker="*",
                markersize=10,
                color=colour,
                linestyle="none",
                label=f"{family.title} zero-shot",
            )
    axes.axhline(result.majority_baseline, color="black", linestyle=":", linewidth=1, label="majority baseline")
    axes.set_xlabel("training examples")
    axes.set_ylabel("dev accuracy")
    seeds = "" if len(result.seeds) == 1 else f", mean of {len(result.seeds)} seeds with 95% interval"
    axes.set_title(f"{result.data}: fine-tuning curves{seeds}", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(handle, format="png")
