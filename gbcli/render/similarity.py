"""The `similarity` screen: the texts numbered, then one row per pair of texts with each model's cosine and
anisotropy-adjusted cosine side by side (each model's layer and baseline in its heading); with --by-layer, one
row per layer with each model's cosine, baseline and adjusted value. Whole at 80 columns for two models.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.tasks.similarity import SimilarityResult

FAMILY_STYLES = {"gpt": "cyan", "bert": "magenta", "bart": "yellow"}


def texts_table(texts: list[str]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
    table.add_column(justify="right", style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for number, text in enumerate(texts, start=1):
        table.add_row(str(number), text)
    return table


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def pairs_table(result: SimilarityResult) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("pair", no_wrap=True)
    for model in result.models:
        style = FAMILY_STYLES.get(model.family, "")
        table.add_column(Text(f"{model.title}\ncos", style=style), justify="right", no_wrap=True)
        table.add_column(Text("\nadj", style=style), justify="right", no_wrap=True)
    for row, pair in enumerate(result.models[0].pairs):
        cells = [f"{pair.a}–{pair.b}"]
        for model in result.models:
            cell = model.pairs[row]
            cells += [f"{cell.cosine:.3f}", _signed(cell.adjusted)]
        table.add_row(*cells)
    return table


def curves_table(result: SimilarityResult) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("layer", justify="right", no_wrap=True)
    for curve in result.curves:
        style = FAMILY_STYLES.get(curve.family, "")
        table.add_column(Text(f"{curve.title}\ncos", style=style), justify="right", no_wrap=True)
        table.add_column(Text("\nbase", style=style), justify="right", no_wrap=True)
        table.add_column(Text("\nadj", style=style), justify="right", no_wrap=True)
    depth = max(len(curve.layers) for curve in result.curves)
    for index in range(depth):
        cells = [result.curves[0].layers[index] if index < len(result.curves[0].layers) else str(index)]
        for curve in result.curves:
            if index < len(curve.layers):
                cells += [f"{curve.cosine[index]:.3f}", f"{curve.baseline[index]:.3f}", _signed(curve.adjusted[index])]
            else:
                cells += ["", "", ""]
        table.add_row(*cells)
    return table


def similarity_view(result: SimilarityResult) -> RenderableType:
    parts: list[RenderableType] = [
        Text(f"similarity ({result.pool} pooling)", style="bold"),
        texts_table(result.texts),
        Text(""),
    ]
    parts.append(curves_table(result) if result.by_layer else pairs_table(result))
    if not result.by_layer:
        parts.append(
            Text(
                "layer and baseline: " + " · ".join(f"{m.title} L{m.layer} {m.baseline:.3f}" for m in result.models),
                style="dim",
            )
        )
    parts += [Text(""), Text(result.note, style="dim")]
    return Group(*parts)
