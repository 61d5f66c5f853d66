"""The `context` screens: a position × layer grid of state shifts, or a layer × sentence-pair grid of a word's
similarities. Grids wider than the terminal are cut into several, a block of layers (or pairs) each, so that
every number stays whole at 80 columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.tasks.context import ContextResult, ModelShift, WordSimilarity

MEASURES: dict[str, str] = {"cosine": "cosine distance", "l2": "relative L2"}
VALUE_WIDTH = 6
REGION_STYLE = {"before": "", "changed": "bold yellow", "after": ""}


def format_shift(value: float | None) -> str:
    """A shift in at most six characters: 0 exactly for bit-identical states, tiny values in powers of ten."""
    if value is None:
        return "·"
    if value == 0:
        return "0"
    if value < 5e-4:
        return f"{value:.0e}"
    if value < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def format_similarity(value: float, identical: bool) -> str:
    """1 only for bit-identical vectors; four decimals otherwise, so that 0.99996 does not pass for the same."""
    return "1" if identical else f"{value:.4f}"


def shift_style(value: float | None) -> str:
    if value is None or value == 0:
        return "dim"
    if value < 0.01:
        return "green"
    if value < 0.1:
        return "yellow"
    return "bold red"


class ChunkedGrid:
    """A grid with a label column and many value columns, cut into as many tables as the width needs."""

    def __init__(self, corner: str, columns: Sequence[str], rows: Sequence[tuple[Text, Sequence[Text]]]) -> None:
        self.corner, self.columns, self.rows = corner, list(columns), list(rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label_width = max([len(self.corner)] + [r[0].cell_len for r in self.rows])
        value_width = max(
            [VALUE_WIDTH - 1]
            + [len(c) for c in self.columns]
            + [cell.cell_len for _, cells in self.rows for cell in cells]
        )
        fit = max(1, (options.max_width - label_width - 1) // (value_width + 1))
        for begin in range(0, len(self.columns), fit):
            table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
            table.add_column(self.corner, no_wrap=True)
            for name in self.columns[begin : begin + fit]:
                table.add_column(name, justify="right", no_wrap=True, min_width=value_width)
            for label, cells in self.rows:
                table.add_row(label, *cells[begin : begin + fit])
            if begin:
                yield Text("")
            yield table


def _title(family: str, model: str, stack: str, causal: bool) -> Text:
    name = f"{family_title(family)}{' ' + stack if stack else ''} · {model}"
    if stack == "decoder":
        direction = "causal, but each state also reads the whole encoded text"
    elif causal:
        direction = "causal: a state sees only the tokens to its left"
    else:
        direction = "bidirectional: every state sees every token"
    return Text.assemble((name, "bold"), (f"  {direction}", "dim"))


def shift_section(shift: ModelShift, measure: str) -> list[RenderableType]:
    pick: Callable[[object], list[float | None]] = (
        (lambda p: p.cosine) if measure == "cosine" else (lambda p: p.relative_l2)
    )  # type: ignore[attr-defined]
    rows = []
    for position in shift.positions:
        label = Text(position.token, style=REGION_STYLE[position.region])
        if position.other is not None:
            label.append(f"→{position.other}", style=REGION_STYLE[position.region])
        cells = [Text(format_shift(v), style=shift_style(v)) for v in pick(position)]
        rows.append((label, cells))
    return [
        _title(shift.family, shift.model, shift.stack, shift.causal),
        ChunkedGrid("token \\ layer", shift.layers, rows),
        _verdict(shift, measure),
    ]


def _verdict(shift: ModelShift, measure: str) -> Text:
    if not any(p.region == "before" for p in shift.positions):
        return Text("the change is at the first token: no state comes before it", style="dim")
    if shift.before_unchanged:
        return Text("before the change: every state bit-identical (exactly 0 in float32)", style="green")
    layer = shift.first_moving_layer
    assert layer is not None
    maxima = shift.before_max_cosine if measure == "cosine" else shift.before_max_l2
    largest = max(v for v in maxima if v is not None)
    return Text(
        f"before the change: the states move from layer {shift.layers[layer]} on (at most {format_shift(largest)})",
        style="yellow",
    )


def similarity_section(similarity: WordSimilarity) -> list[RenderableType]:
    columns = [f"{pair.a}–{pair.b}" for pair in similarity.pairs]
    rows = []
    for layer, name in enumerate(similarity.layers):
        cells = [
            Text(
                format_similarity(pair.cosine[layer], pair.identical[layer]),
                style="dim" if pair.identical[layer] else "",
            )
            for pair in similarity.pairs
        ]
        rows.append((Text(name), cells))
    pieces = "; ".join(f"{o.sentence}: {' '.join(o.pieces)}" for o in similarity.occurrences)
    return [
        _title(similarity.family, similarity.model, similarity.stack, similarity.causal),
        Text(f"pieces: {pieces}", style="dim"),
        ChunkedGrid("layer \\ pair", columns, rows),
    ]


def context_view(result: ContextResult, measure: str = "cosine") -> RenderableType:
    parts: list[RenderableType] = []
    if result.mode == "change":
        parts.append(Text.assemble(("1: ", "dim"), result.texts[0]))
        parts.append(Text.assemble(("2: ", "dim"), result.texts[1]))
        parts.append(Text(f"{MEASURES[measure]} of each state, text 1 → text 2 (· = no counterpart)", style="dim"))
        for shift in result.shifts:
            parts.append(Text(""))
            parts += shift_section(shift, measure)
    else:
        for number, text in enumerate(result.texts, start=1):
            parts.append(Text.assemble((f"{number}: ", "dim"), text))
        parts.append(Text(f"cosine similarity of '{result.word}' between sentences", style="dim"))
        for similarity in result.similarities:
            parts.append(Text(""))
            parts += similarity_section(similarity)
    parts += [Text(""), Text(result.note, style="dim")]
    return Group(*parts)
