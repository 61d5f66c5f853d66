"""The `tokenize` screen: each model's pieces side by side, one row per stretch of text they both cover."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.render.common import SPACE_MARK
from gbcli.tasks.tokenization import ModelTokens, Piece, TokenizationResult

TITLES = {"gpt": "GPT", "bert": "BERT", "bart": "BART"}
PIECE_STYLE = {"gpt": "cyan", "bert": "green", "bart": "blue"}


def family_title(family: str) -> str:
    return TITLES.get(family, family)


def piece_text(piece: Piece, family: str, *, show_id: bool = True) -> Text:
    """One piece: readable form, coloured by model; specials and unknowns labelled so colour is not needed."""
    if piece.unknown:
        text = Text(piece.shown, style="bold red reverse")
        text.append(" unknown", style="red")
    elif piece.special:
        text = Text(piece.shown, style="magenta")
        text.append(" special" if not piece.added else " added", style="dim magenta")
    else:
        text = Text(piece.shown, style=PIECE_STYLE.get(family, "cyan"))
    if show_id:
        text.append(f" {piece.id}", style="dim")
    return text


def pieces_cell(column: ModelTokens, positions: list[int]) -> Text:
    return Text("  ").join(piece_text(column.pieces[p], column.family) for p in positions)


def span_text(text: str) -> Text:
    if not text:
        return Text("(added)", style="italic dim")
    return Text(text.replace(" ", SPACE_MARK).replace("\n", "↵").replace("\t", "⇥"))


def summary_table(result: TokenizationResult) -> Table:
    table = Table(title="Tokenizers", title_justify="left", title_style="bold")
    table.add_column("model")
    table.add_column("algorithm")
    table.add_column("vocabulary", justify="right")
    table.add_column("tokens from text", justify="right")
    table.add_column("added specials", justify="right")
    table.add_column("unknown", justify="right")
    for column in result.columns:
        table.add_row(
            f"{family_title(column.family)} · {column.model}",
            column.algorithm,
            f"{column.vocab_size:,}",
            str(column.text_tokens),
            str(column.added_tokens),
            Text(str(column.unknown_tokens), style="bold red" if column.unknown_tokens else ""),
        )
    return table


def alignment_table(result: TokenizationResult) -> Table:
    table = Table(title="Aligned by characters", title_justify="left", title_style="bold")
    table.add_column("chars", justify="right", style="dim", no_wrap=True)
    table.add_column("text")
    for column in result.columns:
        table.add_column(f"{family_title(column.family)} pieces (id)")
    by_family = {c.family: c for c in result.columns}
    for span in result.spans:
        cells: list[RenderableType] = [
            f"{span.start}–{span.end}" if span.end > span.start else "",
            span_text(span.text),
        ]
        for family, column in by_family.items():
            positions = span.pieces.get(family, [])
            cells.append(pieces_cell(column, positions) if positions else Text("—", style="dim"))
        table.add_row(*cells)
    return table


def ids_lines(result: TokenizationResult) -> list[Text]:
    lines = []
    for column in result.columns:
        line = Text(f"{family_title(column.family)} ids: ", style="bold")
        line.append(" ".join(str(i) for i in column.ids))
        lines.append(line)
    return lines


def legend() -> Text:
    return Text(
        f"{SPACE_MARK} a space that belongs to the piece (byte-level BPE) · · a piece that continues the word before "
        "it (WordPiece ##) · \\xNN a piece holding part of a multi-byte character · one row = characters that no "
        "piece of either model crosses",
        style="dim",
    )


def tokenization_view(result: TokenizationResult) -> RenderableType:
    return Group(summary_table(result), alignment_table(result), *ids_lines(result), legend())
