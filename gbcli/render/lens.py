"""The `lens` screen: per model, a layer × rank table of what the model would predict if it stopped there.

Each row is one layer (the embeddings first, the model's own output last); the columns hold the top-k tokens
with their probabilities, then the final answer's rank and probability at that layer and the KL divergence of
the layer's distribution from the final one. The final answer is marked wherever it appears, so a reader sees
at which depth it surfaces.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import prob_style
from gbcli.render.masking import format_prob
from gbcli.tasks.lens import LensResult, ModelLens

ANSWER_STYLE = "bold green"


def format_kl(kl: float) -> str:
    return f"{kl:.3f}" if kl >= 1e-3 or kl == 0 else f"{kl:.1e}"


def context_line(lens: ModelLens) -> Text:
    """What the model read, with the position the lens reads out marked."""
    line = Text("reads: ", style="dim")
    for index, token in enumerate(lens.tokens):
        if index:
            line.append(" ")
        line.append(token, style="reverse cyan" if index == lens.position else "")
    return line


def layer_table(lens: ModelLens, top_k: int) -> Table:
    """Rows: layers (emb = the embeddings); cells: a token over its probability, so that five fit 80 columns."""
    answer = lens.answer
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column(lens.layer_kind, no_wrap=True, justify="right")
    k = max((len(layer.top) for layer in lens.layers), default=top_k)
    for rank in range(k):
        table.add_column(f"#{rank + 1}", overflow="fold")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("KL", justify="right", no_wrap=True)
    last = len(lens.layers) - 1
    for layer in lens.layers:
        cells: list[Text | str] = [Text(layer.name, style="bold" if layer.layer == last else "")]
        for token in layer.top:
            cell = Text(token.token, style=ANSWER_STYLE if token.id == answer.id else "")
            cell.append("\n")
            cell.append(format_prob(token.prob), style=prob_style(token.prob))
            cells.append(cell)
        cells += [""] * (k - len(layer.top))
        cells += [str(layer.answer_rank), format_prob(layer.answer_prob), format_kl(layer.kl_from_final)]
        table.add_row(*cells, end_section=layer.layer == last - 1)
    return table


def model_section(lens: ModelLens, top_k: int) -> list[RenderableType]:
    title = Text.assemble(
        (f"{family_title(lens.family)} · {lens.model}", "bold"), (f"  predicts {lens.predicts}", "dim")
    )
    check = "exactly" if lens.final_check == 0 else f"to {lens.final_check:.1e} (max |Δ logit|)"
    answer = Text.assemble(
        "final answer ",
        (lens.answer.token, ANSWER_STYLE),
        "; rank, p: its rank and probability at each layer",
        style="dim",
    )
    return [
        title,
        context_line(lens),
        Text(f"read-out: {lens.readout}", style="dim"),
        answer,
        layer_table(lens, top_k),
        Text(f"last row = the model's own output; the lens reads it back {check}", style="dim"),
    ]


def lens_view(result: LensResult) -> RenderableType:
    parts: list[RenderableType] = [Text(result.text, style="bold")]
    for lens in result.models:
        parts.append(Text(""))
        parts += model_section(lens, result.top_k)
    parts += [Text(""), Text(result.note, style="dim")]
    return Group(*parts)
