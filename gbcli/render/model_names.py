"""Model names that stay whole: a table names each model where every name fits, else a line above names them.

A local folder's name (`gpt2-medium-finetuned-wikitext-103`) is often longer than the column or the cell a table
can give it at 80 columns, and Rich would fold it mid-word or cut it with an ellipsis. `WholeNames` draws the table
with the names in it when each one comes out whole (so a screen with short names is unchanged), and otherwise with
the family alone (GPT, BERT, BART) in the table and the names on a line of their own above it (`NamesLine`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text

from gbcli.loading.families import family_title

Label = Callable[[str, str], str]  # (family, model) → how a table names that model


def model_label(family: str, model: str) -> str:
    return f"{family_title(family)} · {model}"


def family_label(family: str, model: str) -> str:
    return family_title(family)


class NamesLine:
    """Which model each family is: `BERT bert-base-uncased · GPT gpt2`, wrapped between the models only.

    On a line of its own a long name stays whole, and each family stays beside its model's name (Rich would break a
    line at any space, the no-break one included)."""

    def __init__(self, models: Sequence[tuple[str, str]]) -> None:
        self.units = [Text.assemble((title, "bold"), " ", name, style="dim") for title, name in models]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = Text(style="dim")
        for unit in self.units:
            if line and cell_len(line.plain) + 3 + unit.cell_len > options.max_width:
                yield line  # a unit wider than the screen is left to Rich, which folds it
                line = Text(style="dim")
            elif line:
                line.append(" · ")
            line.append_text(unit)
        yield line


class WholeNames:
    """A table built by `build(label)`: with `model_label` while every model's name comes out whole in it at this
    width, else with `family_label` under a `NamesLine`."""

    def __init__(self, build: Callable[[Label], RenderableType], models: Sequence[tuple[str, str]]) -> None:
        self.build, self.models = build, list(models)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # The named table is drawn once: to see whether each name came out whole, and then as it is shown.
        lines = console.render_lines(self.build(model_label), options, pad=False)
        texts = ["".join(segment.text for segment in line) for line in lines]
        if all(any(name in text for text in texts) for _, name in self.models):
            for line in lines:
                yield from line
                yield Segment.line()
            return
        yield NamesLine([(family_title(family), name) for family, name in self.models])
        yield self.build(family_label)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(model_label))
