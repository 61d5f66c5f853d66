"""The `tokenize` screen: each model's pieces side by side, one row per stretch of text that no piece of any model
crosses."""

from __future__ import annotations

from functools import partial

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import titled_line
from gbcli.render.model_names import Label, WholeNames, model_label
from gbcli.tasks.tokenization import CONTINUATION_MARK, NEWLINE_MARK, SPACE_MARK, ModelTokens, Piece, TokenizationResult

PIECE_STYLE = {"gpt": "cyan", "bert": "green", "bart": "blue"}


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
    return Text(text.replace(" ", SPACE_MARK).replace("\n", NEWLINE_MARK).replace("\t", "⇥"))


def summary_table(result: TokenizationResult, label: Label = model_label) -> Table:
    table = Table(title="Tokenizers", title_justify="left", title_style="bold")
    table.add_column("model")
    table.add_column("algorithm")
    table.add_column("vocabulary", justify="right")
    table.add_column("tokens from text", justify="right")
    table.add_column("added specials", justify="right")
    table.add_column("unknown", justify="right")
    for column in result.columns:
        table.add_row(
            label(column.family, column.model),
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
    return [titled_line(f"{family_title(c.family)} ids: ", " ".join(str(i) for i in c.ids)) for c in result.columns]


def legend() -> Text:
    return Text(
        f"{SPACE_MARK} a space that belongs to the piece (byte-level BPE);  {CONTINUATION_MARK} the piece continues "
        "the word before it (WordPiece ##);  \\xNN part of a multi-byte character;  one row = characters that no "
        "piece of any model crosses",
        style="dim",
    )


def tokenization_view(result: TokenizationResult) -> RenderableType:
    summary = WholeNames(partial(summary_table, result), [(column.family, column.model) for column in result.columns])
    return Group(summary, alignment_table(result), *ids_lines(result), legend())


class AlignedPieces:
    """A compact aligned view: one column per stretch of text, the pieces of each model underneath, wrapped to
    the terminal's width. `compare` shows this; `tokenize` shows the full table."""

    def __init__(self, result: TokenizationResult) -> None:
        self.result = result

    def _columns(self) -> list[tuple[int, list[Text]]]:
        by_family = {c.family: c for c in self.result.columns}
        columns = []
        for span in self.result.spans:
            cells = [span_text(span.text)]
            for family, column in by_family.items():
                positions = span.pieces.get(family, [])
                cells.append(
                    Text(" ").join(compact_piece(column.pieces[p], family) for p in positions)
                    if positions
                    else Text("—", style="dim")
                )
            columns.append((max(cell.cell_len for cell in cells), cells))
        return columns

    def __rich_console__(self, console, options):
        labels = [Text("text", style="dim")] + [Text(family_title(c.family), style="bold") for c in self.result.columns]
        label_width = max(label.cell_len for label in labels) + 2
        chunk: list[tuple[int, list[Text]]] = []
        used = label_width
        for width, cells in self._columns() + [(-1, [])]:
            if chunk and (width < 0 or used + width + 3 > options.max_width):
                for row, label in enumerate(labels):
                    line = label.copy()
                    line.align("left", label_width)
                    line.append_text(Text(" │ ", style="dim").join(_padded(cells[row], w) for w, cells in chunk))
                    yield line
                chunk, used = [], label_width
            if width >= 0:
                chunk.append((width, cells))
                used += width + 3


def _padded(text: Text, width: int) -> Text:
    padded = text.copy()
    padded.align("left", width)
    return padded


def compact_piece(piece: Piece, family: str) -> Text:
    if piece.unknown:
        return Text(piece.shown, style="bold red reverse")
    if piece.special:
        return Text(piece.shown, style="magenta")
    return Text(piece.shown, style=PIECE_STYLE.get(family, "cyan"))


def counts_line(result: TokenizationResult) -> Text:
    parts = []
    for column in result.columns:
        part = f"{family_title(column.family)} {column.algorithm}: {column.text_tokens} tokens"
        if column.added_tokens:
            added = [p.shown for p in column.pieces if p.added]
            part += f" + {column.added_tokens} added ({', '.join(added)})"
        if column.unknown_tokens:
            part += f", {column.unknown_tokens} unknown"
        parts.append(part)
    return Text(" · ".join(parts), style="dim")
