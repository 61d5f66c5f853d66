"""The `probe` screen: per layer, one row per model with its accuracy, 95% interval and a bar, the majority
baseline marked on every bar, then a short reading in numbers. Whole at 80 columns (a bar of 24 cells).

The PNG (`probe_png`) draws the same numbers as a line chart: each row's accuracy per layer with its interval
band, the majority baseline as a dashed line; random-init controls dotted.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.tasks.probe import LayerScore, ProbeResult, ProbeRow

BAR_CELLS = 24
FAMILY_STYLES = {"gpt": "cyan", "bert": "magenta", "bart": "yellow"}


def score_bar(accuracy: float, majority: float, cells: int = BAR_CELLS) -> Text:
    """A bar of `cells` cells for an accuracy from 0 to 1, with the majority baseline as `┃` (the bar reaching
    it is at the baseline, not above it)."""
    filled = round(accuracy * cells)
    mark = min(cells - 1, round(majority * cells))
    bar = Text()
    for cell in range(cells):
        if cell == mark:
            bar.append("┃", style="bold")
        else:
            bar.append("█" if cell < filled else "·", style="" if cell < filled else "dim")
    return bar


def _row_style(row: ProbeRow) -> str:
    return "dim" if row.random_init else FAMILY_STYLES.get(row.family, "")


def _score_cells(score: LayerScore) -> tuple[str, str]:
    return f"{score.accuracy:.3f}", f"{score.low:.2f}–{score.high:.2f}"


def header(result: ProbeResult) -> Text:
    counts = " · ".join(f"{label} {count}" for label, count in result.label_counts.items())
    piece = "the mean of the word's pieces" if result.pool == "mean" else f"the {result.pool} piece of the word"
    what = {
        "word": f"word level, {piece}",
        "sentence": f"sentence level, {result.pool} pooling",
        "pair": f"pairs, {result.pool} pooling",
    }[result.level]
    text = Text()
    text.append("probe ", style="bold")
    text.append(f"{result.source}: {result.examples} examples ({counts}); {what}\n")
    text.append(f"train {result.train_size}, test {result.test_size}; {result.protocol}", style="dim")
    return text


def layer_table(result: ProbeResult) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("layer", justify="right", no_wrap=True)
    table.add_column("model", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column("acc", justify="right", no_wrap=True)
    table.add_column("95%", no_wrap=True)
    table.add_column(f"0 {'─' * (BAR_CELLS - 4)} 1", no_wrap=True)
    majority = result.majority.accuracy
    depth = max(len(row.layers) for row in result.rows)
    for index in range(depth):
        first = True
        for row in result.rows:
            if index >= len(row.layers):
                continue
            score = row.layers[index]
            accuracy, band = _score_cells(score)
            best = index == row.best and not row.random_init
            style = _row_style(row)
            table.add_row(
                score.layer if first else "",
                Text(row.title + (" ★" if best else ""), style=style),
                Text(accuracy, style="bold" if best else ""),
                band,
                score_bar(score.accuracy, majority),
                end_section=row is result.rows[-1],
            )
            first = False
    accuracy, band = _score_cells(result.majority)
    table.add_row("", Text("majority class", style="dim"), accuracy, band, Text("┃ = this baseline", style="dim"))
    return table


def probe_view(result: ProbeResult) -> RenderableType:
    parts: list[RenderableType] = [header(result), Text(""), layer_table(result), Text("")]
    for row in result.rows:
        if row.layers and row.layers[0].selectivity is not None:
            best = row.best_layer
            parts.append(
                Text(
                    f"{row.title}: control task {best.control_task:.3f} at layer {best.layer}, "
                    f"selectivity {best.selectivity:+.3f}",
                    style="dim",
                )
            )
    parts.extend(Text(line) for line in result.reading)
    parts.append(Text("★ = each model's best layer", style="dim"))
    return Group(*parts)


def write_probe_png(handle: BinaryIO, result: ProbeResult) -> None:
    """A line chart of every row's accuracy per layer, with 95% bands and the majority baseline."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # late: extra
    from matplotlib.figure import Figure  # late: extra

    colours = {"gpt": "tab:blue", "bert": "tab:red", "bart": "tab:orange"}
    figure = Figure(figsize=(8, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for row in result.rows:
        xs = list(range(len(row.layers)))
        colour = colours.get(row.family, "tab:gray")
        style = ":" if row.random_init else ("--" if row.stack == "decoder" else "-")
        axes.plot(
            xs,
            [score.accuracy for score in row.layers],
            style,
            color=colour,
            marker=None if row.random_init else "o",
            label=row.title,
        )
        axes.fill_between(
            xs,
            [s.low for s in row.layers],
            [s.high for s in row.layers],
            color=colour,
            alpha=0.08 if row.random_init else 0.18,
        )
    axes.axhline(result.majority.accuracy, color="black", linestyle="--", linewidth=1, label="majority class")
    depth = max(len(row.layers) for row in result.rows)
    axes.set_xticks(range(depth), ["emb", *[str(i) for i in range(1, depth)]])
    axes.set_xlabel("layer (emb = the embeddings)")
    axes.set_ylabel("test accuracy (95% band)")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"gbcli probe: {result.source}", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    handle.write(buffer.getvalue())
