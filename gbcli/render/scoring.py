"""The `score` screen: perplexity and pseudo-perplexity per text, optional per-token surprisal tables, and CSV."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TextIO

from rich.cells import cell_len
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import (
    ProbText,
    format_nats,
    format_perplexity,
    format_prob,
    format_seconds,
    prob_legend,
    prob_style,
    titled_line,
)
from gbcli.render.model_names import Label, WholeNames, model_label
from gbcli.render.progress import progress_bar as progress_bar  # where cli.py and jobs/torchrun_job.py import it
from gbcli.tasks.scoring import LN2, ModelScore, TextScore, TokenScore, WordScore
from gbcli.terminal import visible_text


def probability(logprob: float, unit: str) -> float:
    """The probability a log-probability stands for, in either unit."""
    return math.exp(logprob * LN2 if unit == "bits" else logprob)


def conventions_line(columns: list[ModelScore]) -> Text:
    """One line naming every convention behind the numbers: the unit, GPT-2's first token, BERT's PLL variant."""
    line = Text("conventions: ", style="bold")
    parts = [f"unit {columns[0].unit} (log base {'2' if columns[0].unit == 'bits' else 'e'})"]
    for column in columns:
        rules = column.conventions
        if rules is None:
            continue
        if rules.bos is not None:
            parts.append(f"{family_title(column.family)} {'--bos' if rules.bos else '--no-bos'}")
        if rules.pll is not None:
            parts.append(f"{family_title(column.family)} --pll {rules.pll}")
    line.append(" · ".join(parts))
    words = next((c.conventions.words for c in columns if c.conventions and c.conventions.words), None)
    if words:
        line.append(f"\n{words}", style="dim")
    return line


def measure_value(column: ModelScore) -> str:
    """A (pseudo-)perplexity to five significant digits; a log-likelihood (BART's measure) in nats."""
    return format_perplexity(column.value) if "perplexity" in column.measure else format_nats(column.value)


def single_table(record: TextScore, label: Label = model_label) -> Table:
    """One column per model, one row per quantity: narrow enough for three models in 80 columns."""
    table = Table()
    table.add_column("", style="dim", min_width=len("log-likelihood"))
    for column in record.columns:
        # As narrow as the longest word or number in it, never narrower: a measure's name is not cut.
        words = [*column.measure.split(), measure_value(column), format_nats(column.log_likelihood)]
        table.add_column(
            label(column.family, column.model),
            justify="right",
            overflow="fold",
            min_width=max(cell_len(word) for word in words),
        )
    table.add_row("measure", *[Text(column.measure, justify="right") for column in record.columns])
    table.add_row("value", *[Text(measure_value(column), style="bold") for column in record.columns])
    unit = record.columns[0].unit
    table.add_row(f"log-likelihood ({unit})", *[format_nats(column.log_likelihood) for column in record.columns])
    table.add_row(f"mean NLL ({unit}/token)", *[format_nats(column.mean_nll) for column in record.columns])
    table.add_row("tokens scored", *[f"{column.scored_tokens}/{column.text_tokens}" for column in record.columns])
    return table


# A text longer than this is shown by its beginning and its length in the table of many texts (a paragraph would
# otherwise be echoed in full, a narrow strip many lines long); --json holds every text whole.
EXCERPT_CHARS = 120


def text_excerpt(text: str) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    cut = text[:EXCERPT_CHARS].rsplit(" ", 1)[0] if " " in text[:EXCERPT_CHARS] else text[:EXCERPT_CHARS]
    return f"{cut} … ({len(text.split())} words)"


def many_table(records: list[TextScore]) -> Table:
    table = Table(title="Scores", title_justify="left", title_style="bold")
    table.add_column("#", justify="right", style="dim", no_wrap=True)
    table.add_column("text", overflow="fold", max_width=60, ratio=1)
    for column in records[0].columns:
        # One word a line, so the column is as narrow as its longest word, and no word is cut.
        header = "\n".join([family_title(column.family), *column.measure.split(), "(tokens)"])
        table.add_column(header, justify="right", no_wrap=True)
    for record in records:
        cells: list[RenderableType] = [str(record.index), text_excerpt(record.text)]
        for column in record.columns:
            cells.append(Text.assemble((measure_value(column), "bold"), (f" ({column.scored_tokens})", "dim")))
        table.add_row(*cells)
    return table


def tokens_scored_notes(record: TextScore) -> list[Text]:
    """Why a column scored another number of tokens than the text has (BART's `9/7`, GPT's `6/7` without a BOS):
    its first-token rule, in the words of `score`'s method line, for a view that shows the count without those
    lines (compare)."""
    return [
        Text(
            f"{family_title(column.family)} tokens scored {column.scored_tokens}/{column.text_tokens}: "
            f"{column.first_token}",
            style="dim",
        )
        for column in record.columns
        if column.scored_tokens != column.text_tokens and column.first_token
    ]


# What the sequences a model ran for a text are called, by family (ModelScore.sequences).
SEQUENCE_NOUNS = {
    "gpt": ("window", "windows"),
    "bert": ("masked copy", "masked copies"),
    "bart": ("teacher-forced pass", "teacher-forced passes"),
}


def methods(records: list[TextScore]) -> list[Text]:
    """Each model's method, first-token rule and work: one text's own detail, or the total over all the texts."""
    lines = []
    for place, column in enumerate(records[0].columns):
        detail = column.detail
        if len(records) > 1:
            detail = sequences_detail([record.columns[place] for record in records])
        lines.append(
            titled_line(
                f"{family_title(column.family)}: ",
                "; ".join([column.method, *filter(None, [column.first_token, detail])]),
            )
        )
    return lines


def sequences_detail(columns: list[ModelScore]) -> str:
    """`28 masked copies for 2 texts (7 + 21), batched`: one model's work over every text it scored."""
    counts = [column.sequences for column in columns]
    total = sum(counts)
    one, many = SEQUENCE_NOUNS.get(columns[0].family, ("sequence", "sequences"))
    text = f"{total} {one if total == 1 else many} for {len(counts)} texts"
    if len(counts) <= 8:
        text += f" ({' + '.join(map(str, counts))})"
    return text + (", batched" if columns[0].family == "bert" else "")


def surprisal_table(column: ModelScore, unit: str, label: str, detail: str, rows: Iterable[SurprisalRow]) -> Table:
    """Surprisal per `unit` (token or word): one row per item coloured by its probability, and the total."""
    table = Table(title=f"{family_title(column.family)} · {column.model}: surprisal per {unit}", title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column(label, overflow="fold")
    table.add_column(f"surprisal ({column.unit})", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column(detail, justify="right", style="dim")
    for row in rows:
        if row.logprob is None:
            table.add_row(str(row.index), row.label(None), "—", "—", row.detail)
            continue
        prob = probability(row.logprob, column.unit)
        style = prob_style(prob)
        table.add_row(
            str(row.index),
            row.label(style),
            Text(format_nats(row.surprisal), style=style),
            format_prob(prob),
            row.detail,
        )
    table.add_section()
    table.add_row("", Text("total", style="bold"), Text(format_nats(0.0 - column.log_likelihood), style="bold"), "", "")
    return table


@dataclass
class SurprisalRow:
    index: int
    label: Callable[[str | None], RenderableType]  # the cell, given its probability's style (None: no probability)
    logprob: float | None
    surprisal: float | None
    detail: str  # the last column


def _piece_cell(token: TokenScore, style: str | None) -> RenderableType:
    if style is None:
        return token.shown
    text = Text(token.shown, style=style)
    if token.unknown:
        text.append(" unknown", style="red")
    return text


def _word_cell(word: WordScore, style: str | None) -> RenderableType:
    text = Text(word.text, style="dim" if word.special else "")
    if style is not None:
        text.stylize(style)
    return text


def token_table(column: ModelScore) -> Table:
    gpt = column.family == "gpt"  # GPT-2 counts a token's left context, BERT its masked pieces
    rows = (
        SurprisalRow(
            t.position,
            partial(_piece_cell, t),
            t.logprob,
            t.surprisal,
            "no context" if t.logprob is None else str(t.context_tokens if gpt else t.masked_tokens),
        )
        for t in column.tokens or []
    )
    return surprisal_table(column, "token", "piece", "context" if gpt else "masked", rows)


def word_table(column: ModelScore) -> Table:
    """Each word's surprisal: its pieces' log-probabilities summed (the tokenizer's own word boundaries)."""
    rows = (
        SurprisalRow(w.index, partial(_word_cell, w), w.logprob, w.surprisal, str(len(w.tokens)))
        for w in column.words or []
    )
    return surprisal_table(column, "word", "word", "pieces", rows)


def heat_line(text: str, column: ModelScore) -> ProbText:
    """The text itself, each token's characters coloured by how likely the model found it (or marked `[p]`)."""
    pieces: list[tuple[str, float | None]] = []
    cursor = 0
    for token in column.tokens or []:
        if token.start > cursor:
            pieces.append((text[cursor : token.start], None))
        if token.end > cursor:
            prob = probability(token.logprob, column.unit) if token.logprob is not None else None
            pieces.append((text[max(cursor, token.start) : token.end], prob))
            cursor = token.end
    pieces.append((text[cursor:], None))
    return ProbText(pieces, prefix=Text(f"{family_title(column.family)}: ", style="bold"), extra_style="underline")


def tokens_view(record: TextScore) -> RenderableType:
    parts: list[RenderableType] = []
    if any(column.tokens is not None for column in record.columns):
        parts += [heat_line(record.text, column) for column in record.columns]
        parts.append(Columns([token_table(column) for column in record.columns], padding=(0, 4)))
    if any(column.words is not None for column in record.columns):
        parts.append(Columns([word_table(column) for column in record.columns], padding=(0, 4)))
    return Group(*parts)


def timing_line(seconds: dict[str, float], passes: dict[str, int]) -> Text:
    parts = [
        f"{family_title(f)} {format_seconds(seconds[f])} in {passes.get(f, 0)} forward "
        f"pass{'es' * (passes.get(f, 0) != 1)}"
        for f in seconds
    ]
    return Text("time: " + " · ".join(parts), style="dim")


def scale_note(record: TextScore) -> RenderableType:
    return Panel(
        Text(record.note), title="not on the same scale", title_align="left", border_style="yellow", expand=False
    )


def whole_names_table(record: TextScore) -> RenderableType:
    """The one-text table, its models named in the headers, or on a line above where a name would not fit whole."""
    return WholeNames(partial(single_table, record), [(column.family, column.model) for column in record.columns])


def score_view(
    records: list[TextScore], *, seconds: dict[str, float] | None = None, passes: dict[str, int] | None = None
) -> RenderableType:
    """A table of scores (one text: a row per model; several: a row per text), methods and the scale note."""
    if len(records) == 1:
        # The text on a line of its own, as wide as the screen (the table is narrow), a paragraph by its beginning.
        parts: list[RenderableType] = [
            Text(f"Scores of: {text_excerpt(records[0].text)}", style="bold"),
            whole_names_table(records[0]),
        ]
    else:
        parts = [many_table(records)]
    parts += methods(records)
    parts.append(conventions_line(records[0].columns))
    for record in records:
        if any(column.tokens is not None or column.words is not None for column in record.columns):
            if len(records) > 1:
                parts.append(Text(f"\n#{record.index}: {record.text}", style="bold"))
            parts.append(tokens_view(record))
    # The legend explains the [p] marks of the heat line, which only the per-token view draws.
    if any(column.tokens is not None for record in records for column in record.columns):
        parts.append(prob_legend("probability of the actual token: "))
    if seconds:
        parts.append(timing_line(seconds, passes or {}))
    if len({column.family for column in records[0].columns}) > 1:
        parts.append(scale_note(records[0]))
    return Group(*parts)


# Every row names its conventions: the unit of its log-probabilities, GPT-2's --bos, BERT's --pll ("" elsewhere).
CONVENTION_FIELDS = ["unit", "bos", "pll"]
SUMMARY_FIELDS = [
    "index",
    "text",
    "family",
    "model",
    "measure",
    "value",
    "log_likelihood",
    "mean_nll",
    "scored_tokens",
    "text_tokens",
    *CONVENTION_FIELDS,
]
TOKEN_FIELDS = [
    "index",
    "family",
    "model",
    "position",
    "id",
    "piece",
    "start",
    "end",
    "logprob",
    "surprisal",
    "context_tokens",
    "masked_tokens",
    "word",
    *CONVENTION_FIELDS,
]
WORD_FIELDS = [
    "index",
    "family",
    "model",
    "word",
    "text",
    "start",
    "end",
    "pieces",
    "logprob",
    "surprisal",
    *CONVENTION_FIELDS,
]


def csv_header(with_tokens: bool, out: TextIO | None = None, with_words: bool = False) -> None:
    fields = WORD_FIELDS if with_words else TOKEN_FIELDS if with_tokens else SUMMARY_FIELDS
    _csv_writer(out or sys.stdout).writerow(fields)


class _CsvRows:
    """CSV rows, each ending in `\\n`, every field that holds a line break (`\\r` too) quoted as CSV quotes it (the
    csv module quotes only the characters of its line terminator, hence the `\\r\\n` cut off). On a terminal every
    cell is shown as the tables show it (control, bidirectional and invisible characters as escapes); to a file or
    a pipe the cells stay exact."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.row = io.StringIO()
        self.writer = csv.writer(self.row, lineterminator="\r\n")
        try:
            self.terminal = stream.isatty()
        except (AttributeError, ValueError, OSError):
            self.terminal = False

    def writerow(self, row: list[Any]) -> None:
        if self.terminal:
            row = [visible_text(cell, kept="") if isinstance(cell, str) else cell for cell in row]
        self.row.seek(0)
        self.row.truncate()
        self.writer.writerow(row)
        self.stream.write(self.row.getvalue()[:-2] + "\n")


def _csv_writer(stream: TextIO) -> _CsvRows:
    return _CsvRows(stream)


def _convention_cells(column: ModelScore) -> list[str]:
    rules = column.conventions
    bos = "" if rules is None or rules.bos is None else ("bos" if rules.bos else "no-bos")
    return [column.unit, bos, "" if rules is None or rules.pll is None else rules.pll]


def write_csv(records: list[TextScore], with_tokens: bool, out: TextIO | None = None, with_words: bool = False) -> None:
    """One row per text and model, or with --tokens one row per token and model (--words: per word)."""
    stream = out or sys.stdout
    writer = _csv_writer(stream)
    for record in records:
        for column in record.columns:
            rules = _convention_cells(column)
            if with_words:
                for word in column.words or []:
                    writer.writerow(
                        [
                            record.index,
                            column.family,
                            column.model,
                            word.index,
                            word.text,
                            word.start,
                            word.end,
                            len(word.tokens),
                            _cell(word.logprob),
                            _cell(word.surprisal),
                            *rules,
                        ]
                    )
            elif not with_tokens:
                writer.writerow(
                    [
                        record.index,
                        record.text,
                        column.family,
                        column.model,
                        column.measure,
                        _cell(column.value),
                        repr(column.log_likelihood),
                        _cell(column.mean_nll),
                        column.scored_tokens,
                        column.text_tokens,
                        *rules,
                    ]
                )
            else:
                for token in column.tokens or []:
                    writer.writerow(
                        [
                            record.index,
                            column.family,
                            column.model,
                            token.position,
                            token.id,
                            token.piece,
                            token.start,
                            token.end,
                            _cell(token.logprob),
                            _cell(token.surprisal),
                            token.context_tokens,
                            token.masked_tokens,
                            "" if token.word is None else token.word,
                            *rules,
                        ]
                    )
    stream.flush()


def _cell(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(value)
