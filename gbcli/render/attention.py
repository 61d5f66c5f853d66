"""The `attention` screens: heatmaps side by side, the per-head summary, and one query token's focus.

A heatmap has one row per query token (the token attending) and one column per key token (the token attended
to). Each cell is a shade character, so it reads without colour too, and in a colour terminal also a colour on
a continuous scale. A heatmap never wraps: when it is wider than the space it gets, it shows a window of the
key columns and says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich import box
from rich.cells import cell_len
from rich.color import Color
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from gbcli.render.common import ColourWords, Phrases, SideBySide, colourless
from gbcli.render.model_names import model_label
from gbcli.tasks.attention import (
    DECODER_INPUT,
    SEQ2SEQ_MAPS,
    STATS,
    AttentionReport,
    AttentionToken,
    ModelAttentionView,
)

LABEL_MAX = 12  # cells of a row label (the query token)
HEADER_MAX = 8  # lines of a vertical column label (the key token)
SPECIAL_STYLE = Style(color="magenta")

# Weight bands and their shade characters; exactly 0 (a masked key) is blank.
SHADES: list[tuple[float, str, str]] = [
    (0.5, "█", "≥ 0.5"),
    (0.25, "▓", "0.25–0.5"),
    (0.1, "▒", "0.1–0.25"),
    (0.0, "░", "< 0.1"),
]
# A viridis-like ramp, indexed by the square root of the weight so that weak links stay visible.
RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
RAMP_STEPS = 24
SHORT_STAT = {
    "entropy": "entropy",
    "distance": "dist",
    "to_first": "first",
    "to_cls": "[CLS]",
    "to_sep": "[SEP]",
    "to_punct": "punct",
    "to_special": "special",
    "previous": "prev",
}


def shade(weight: float) -> str:
    if weight <= 0.0:
        return " "
    for floor, char, _ in SHADES:
        if weight >= floor:
            return char
    return SHADES[-1][1]


def _ramp(position: float) -> tuple[int, int, int]:
    position = min(max(position, 0.0), 1.0) * (len(RAMP) - 1)
    low = min(int(position), len(RAMP) - 2)
    frac = position - low
    a, b = RAMP[low], RAMP[low + 1]
    return tuple(round(x + (y - x) * frac) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


_WEIGHT_STYLES = [Style(color=Color.from_rgb(*_ramp(i / (RAMP_STEPS - 1)))) for i in range(RAMP_STEPS)]


def weight_style(weight: float) -> Style:
    if weight <= 0.0:
        return Style()
    return _WEIGHT_STYLES[min(round(math.sqrt(weight) * (RAMP_STEPS - 1)), RAMP_STEPS - 1)]


def _fit(label: str, width: int) -> str:
    """The label cut to `width` cells, with … when cut, padded with spaces to exactly `width` cells."""
    if width <= 0:
        return ""
    if cell_len(label) > width:
        text = Text(label)
        text.truncate(width, overflow="ellipsis")
        label = text.plain
    return label + " " * (width - cell_len(label))


def _vertical(label: str, height: int, cell: int) -> list[str]:
    """A column label written top to bottom, one character per line, each exactly `cell` cells wide."""
    chars = []
    for ch in label:
        width = cell_len(ch)
        if width == 0:
            continue  # a combining mark has no cell of its own
        chars.append(ch if width <= cell else "…")
    if len(chars) > height:
        chars = chars[: height - 1] + ["…"]
    chars += [" "] * (height - len(chars))
    return [ch + " " * (cell - cell_len(ch)) for ch in chars]


class Heatmap:
    """One query × key matrix as shaded cells, with token labels on both axes."""

    def __init__(self, view: ModelAttentionView, window_start: int = 0) -> None:
        self.view = view
        self.window_start = window_start
        self.tokens = view.tokens  # rows: the queries
        self.keys = view.key_tokens  # columns: the same tokens, except in cross-attention
        self.digits = len(str(max(len(self.tokens) - 1, 0)))
        self.label_width = min(max((cell_len(t.label) for t in self.tokens), default=1), LABEL_MAX)

    def natural_width(self) -> int:
        return self.digits + 1 + self.label_width + 1 + 2 * len(self.keys)

    def caption(self) -> str:
        return f"{layer_description(self.view)} · {head_description(self.view)}"

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widest = max(self.natural_width(), cell_len(self.caption()))
        return Measurement(min(self.digits + 2, options.max_width), min(widest, options.max_width))

    def layout(self, width: int) -> tuple[int, int, int, int]:
        """(label cells, cell width, first key, key count) that fit in `width` cells."""
        n = len(self.keys)
        label = self.label_width
        index_part = self.digits + 1
        # Give up label cells before giving up key columns, down to 4 cells of label.
        while label > 4 and index_part + label + 1 + min(n, 16) > width:
            label -= 1
        if index_part + label + 1 + 1 > width:
            label = 0
        row_head = index_part + (label + 1 if label else 0)
        available = max(width - row_head, 0)
        if 2 * n <= available:
            return label, 2, 0, n
        if n <= available:
            return label, 1, 0, n
        count = available
        start = min(self.window_start, max(n - count, 0))
        return label, 1, start, count

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        tokens = self.tokens
        n = len(self.keys)
        label, cell, start, count = self.layout(width)
        yield Text(self.caption(), style="cyan")
        if count <= 0:
            yield Text(
                f"(too narrow to draw {len(tokens)} × {n} cells: widen the terminal, or use --json / --export)",
                style="yellow",
            )
            return
        keys = self.keys[start : start + count]
        row_head = self.digits + 1 + (label + 1 if label else 0)
        height = min(max((len(t.label) for t in keys), default=1), HEADER_MAX)
        columns = [_vertical(t.label, height, cell) for t in keys]
        for line in range(height):
            yield Segment(" " * row_head)
            for token, column in zip(keys, columns, strict=True):
                yield Segment(column[line], SPECIAL_STYLE if token.special else None)
            yield Segment.line()
        for query, row in zip(tokens, self.view.matrix, strict=True):
            yield Segment(f"{query.index:>{self.digits}} ", Style(dim=True))
            if label:
                yield Segment(_fit(query.label, label) + " ", SPECIAL_STYLE if query.special else None)
            for weight in row[start : start + count]:
                yield Segment(shade(weight) * cell, weight_style(weight))
            yield Segment.line()
        if count < n:
            end = start + count - 1
            hints = []
            if end < n - 1:
                hints.append(f"--window {end + 1} shows the next ones")
            if start > 0:
                hints.append(f"--window {max(start - count, 0)} the previous ones")
            hints.append("a wider terminal or --export FILE.html shows them all")
            yield Text(
                f"Window: key columns {start}–{end} of 0–{n - 1} (all {len(tokens)} rows); the full heatmap needs "
                f"{self.natural_width()} columns, {width} are available. " + "; ".join(hints) + ".",
                style="yellow",
            )


def head_description(view: ModelAttentionView) -> str:
    return f"mean of {view.heads} heads" if view.head == "mean" else f"head {view.head} of {view.heads}"


def layer_description(view: ModelAttentionView) -> str:
    """Layers count 1..L (0 is the embeddings, as in lens and context): 'layer 12 (last)' for a 12-layer model."""
    return f"layer {view.layer}" + (" (last)" if view.layer == view.layers else f" of {view.layers}")


def map_title(family: str, model: str, map_name: str) -> str:
    """GPT · gpt2, or BART · facebook/bart-base · encoder for one of an encoder-decoder's maps (the terminal
    panels, the PNG grid and the HTML page all name a map this way)."""
    name = model_label(family, model)
    return name if map_name == "self" else f"{name} · {map_name}"


def title(view: ModelAttentionView) -> str:
    return map_title(view.family, view.model, view.map)


def map_direction(map_name: str, causal: bool) -> str:
    """Which tokens each query sees in a map, for the reader."""
    if map_name in SEQ2SEQ_MAPS:
        return SEQ2SEQ_MAPS[map_name]
    if causal:
        return "causal: each token sees only its left, so the matrix is lower-triangular"
    return "bidirectional: each token sees both sides, so the matrix is a full square"


def direction(view: ModelAttentionView) -> str:
    return map_direction(view.map, view.causal)


def heatmap_panel(view: ModelAttentionView, window_start: int = 0) -> Panel:
    return Panel(
        Heatmap(view, window_start),
        title=title(view),
        expand=False,
        padding=(0, 1),
    )


class Legend:
    """The shade characters' bands, and in a colour terminal the colour ramp the cells actually use, 0 to 1."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        phrases: list[tuple[str, Text]] = [("", Text("cell = attention weight:"))]
        for _floor, char, label in reversed(SHADES):
            phrases.append((" " if len(phrases) == 1 else "  ", Text(f"{char * 2} {label}")))
        if not colourless(console):
            # The cells' colour is continuous (by the square root of the weight): show the ramp itself.
            ramp = Text("colour: 0 ")
            for step in range(RAMP_STEPS):
                ramp.append("█", style=_WEIGHT_STYLES[step])
            ramp.append(" 1")
            phrases.append(("  ", ramp))
        phrases.append(("  ", Text("(blank = exactly 0, a masked key)", style="dim")))
        yield Phrases(phrases)


def legend() -> Legend:
    return Legend()


def heatmap_view(report: AttentionReport, window_start: int = 0) -> RenderableType:
    panels = [heatmap_panel(v, window_start) for v in report.models]
    parts: list[RenderableType] = [SideBySide(panels, natural=True, gap=2)]
    parts.append(legend())
    axes = "rows: query tokens (attending) · columns: key tokens (attended to)"
    parts.append(
        ColourWords(
            f"{axes} · special tokens in magenta",
            f"{axes} · special tokens ([CLS], [SEP], <|endoftext|>, <s>) are the tokenizer's own",
        )
    )
    for view in report.models:
        parts.append(Text(f"{title(view)}: {direction(view)}", style="dim"))
    if any(view.map == "decoder" for view in report.models):
        parts.append(Text(f"BART: {DECODER_INPUT}", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------------------------
# --summary
# ---------------------------------------------------------------------------------------------------------------


def _format(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _stat_range(values: Iterable[float | None], stat: str) -> tuple[float, float]:
    if stat not in {"entropy", "distance"}:
        return 0.0, 1.0  # shares are compared on their absolute scale
    finite = [v for v in values if v is not None]
    high = max(finite, default=1.0)
    return 0.0, high if high > 0 else 1.0


def summary_table(view: ModelAttentionView, stat: str) -> Table:
    summary = view.summary
    assert summary is not None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("layer", justify="right", no_wrap=True)
    table.add_column("head", justify="right", no_wrap=True)
    for name in STATS:
        header_style = "bold reverse" if name == stat else "bold"
        table.add_column(SHORT_STAT[name], justify="right", header_style=header_style, no_wrap=True)
    for item in summary.per_head:
        table.add_row(
            str(item.layer),
            str(item.head),
            *(_format(item.get(name)) for name in STATS),
            end_section=item.head == summary.heads - 1 and item.layer < summary.layers,
        )
    table.add_row("all", "mean", *(_format(summary.mean[name]) for name in STATS), style="bold")
    return table


def summary_grid(view: ModelAttentionView, stat: str) -> Table:
    summary = view.summary
    assert summary is not None
    grid = summary.grid(stat)
    low, high = _stat_range((v for row in grid for v in row), stat)
    table = Table(box=None, pad_edge=False, padding=(0, 0), show_edge=False)
    table.add_column("layer", justify="right", style="dim", no_wrap=True)
    for head in range(summary.heads):
        table.add_column(f"h{head}", justify="center", no_wrap=True)
    for layer, row in enumerate(grid, start=1):
        cells = []
        for value in row:
            if value is None:
                cells.append(Text(" — ", style="dim"))
                continue
            position = (value - low) / (high - low) if high > low else 0.0
            rgb = _ramp(position)
            ink = "black" if position > 0.55 else "white"
            cells.append(Text(f" {value:.2f} ", style=Style(bgcolor=Color.from_rgb(*rgb), color=ink)))
        table.add_row(f"{layer} ", *cells)
    return table


def summary_view(report: AttentionReport) -> RenderableType:
    stat = report.stat or "entropy"
    parts: list[RenderableType] = []
    for view in report.models:
        summary = view.summary
        assert summary is not None
        name = title(view)
        parts.append(Text(f"{name}: every head ({summary.layers} layers × {summary.heads} heads)", style="bold cyan"))
        parts.append(summary_table(view, stat))
        low, high = _stat_range((v for row in summary.grid(stat) for v in row), stat)
        parts.append(
            Text(
                f"{name}: {SHORT_STAT[stat]} by layer (rows) × head (columns), colour from {low:.2f} "
                f"(dark) to {high:.2f} (bright)",
                style="bold cyan",
            )
        )
        parts.append(summary_grid(view, stat))
        parts.append(Text())
    parts.append(
        Text(
            "Each value is averaged over all query tokens; shares are of a query's attention (its row sums "
            "to 1). — : no such token in this input.",
            style="dim",
        )
    )
    for name in STATS:
        parts.append(Text(f"  {SHORT_STAT[name]:>7}: {STATS[name]}", style="dim"))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------------------------
# --token
# ---------------------------------------------------------------------------------------------------------------


def _token_text(token: AttentionToken) -> Text:
    return Text(token.label, style=SPECIAL_STYLE if token.special else "bold")


class Flow:
    """Items laid out left to right and wrapped between items, never inside one: a cell whose entries
    (`▓ ␣italy 0.263`) must stay whole however narrow the column."""

    def __init__(self, items: list[Text], gap: int = 2) -> None:
        self.items = items
        self.gap = gap

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        widths = [item.cell_len for item in self.items] or [0]
        return Measurement(max(widths), sum(widths) + self.gap * (len(widths) - 1))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line, used = Text(), 0
        for item in self.items:
            if used and used + self.gap + item.cell_len > options.max_width:
                yield line
                line, used = Text(), 0
            if used:
                line.append(" " * self.gap)
                used += self.gap
            line.append_text(item)
            used += item.cell_len
        yield line


def focus_panel(view: ModelAttentionView) -> Panel:
    focus = view.focus
    assert focus is not None
    parts: list[RenderableType] = []
    heading = Text("query token ")
    heading.append(f"#{focus.query.index} ")
    heading.append_text(_token_text(focus.query))
    heading.append(f" · mean of {view.heads} heads" if focus.head == "mean" else f" · head {focus.head}")
    parts.append(heading)
    if focus.note:
        parts.append(Text(focus.note, style="yellow"))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("layer", justify="right", no_wrap=True)
    table.add_column("attends most to (weight), strongest first")
    for item in focus.layers:
        cells = []
        for attended in item.top:
            cell = Text(shade(attended.weight), style=weight_style(attended.weight))
            token = view.key_tokens[attended.index]
            cell.append(" ")
            cell.append_text(_token_text(token))
            cell.append(f" {attended.weight:.3f}", style="dim")
            cells.append(cell)
        table.add_row(str(item.layer), Flow(cells))
    parts.append(table)
    if view.causal:
        parts.append(Text("causal: only this token and the ones before it can get weight", style="dim"))
    return Panel(Group(*parts), title=title(view), expand=False)


def focus_view(report: AttentionReport) -> RenderableType:
    return SideBySide([focus_panel(view) for view in report.models], natural=True, gap=2)


def attention_view(report: AttentionReport, window_start: int = 0) -> RenderableType:
    """What the command prints: the summary or the token focus when asked for, else the heatmaps."""
    parts: list[RenderableType] = []
    if report.stat is not None:
        parts.append(summary_view(report))
    if any(view.focus is not None for view in report.models):
        parts.append(focus_view(report))
    if not parts:
        parts.append(heatmap_view(report, window_start))
    return Group(*parts)
