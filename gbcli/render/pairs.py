"""The `pairs` screens: one minimal pair (each model's verdict and the aligned word surprisals) and the accuracy
over a file of pairs (per model, per BLiMP phenomenon)."""

from __future__ import annotations

from functools import partial

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import format_nats
from gbcli.render.model_names import Label, WholeNames, model_label
from gbcli.render.scoring import conventions_line
from gbcli.tasks.pairs import DIFFERENCE_RULE, AlignedWord, PairColumn, PairResult, PairsSummary

# Below this a word's surprisal difference is shown dim: it is rounding, not a preference.
QUIET_DIFFERENCE = 0.005
OP_MARKS = {"equal": "", "replace": "≠", "delete": "−", "insert": "+"}


def signed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def verdict(column: PairColumn) -> Text:
    if column.prefers == "neither":
        return Text("tie ✗", style="yellow")
    return Text(f"{column.prefers} {'✓' if column.correct else '✗'}", style="green" if column.correct else "red")


def verdict_table(result: PairResult, label: Label = model_label) -> Table:
    unit = result.columns[0].unit
    table = Table(title="Which sentence each model prefers", title_justify="left", title_style="bold")
    table.add_column("model · score", overflow="fold")
    table.add_column("good", justify="right")
    table.add_column("bad", justify="right")
    table.add_column("good − bad", justify="right", style="bold")
    table.add_column("prefers")
    for column in result.columns:
        name = Text(f"{label(column.family, column.model)}\n", style="bold")
        name.append(column.measure, style="dim")
        table.add_row(
            name, format_nats(column.good), format_nats(column.bad), signed(column.difference), verdict(column)
        )
    table.caption = f"log-likelihoods in {unit}; > 0 in good − bad: the good sentence is preferred"
    table.caption_justify = "left"
    return table


def difference_cell(row: AlignedWord) -> Text:
    if row.difference is None:
        return Text("—", style="dim")
    if abs(row.difference) < QUIET_DIFFERENCE:
        return Text(signed(row.difference), style="dim")
    style = "bold red" if row.difference > 0 else "bold green"
    return Text(signed(row.difference), style=f"{style} reverse" if row.op != "equal" else style)


def word_table(column: PairColumn) -> Table:
    """The two sentences' words side by side, their surprisals and the difference; differing words marked."""
    table = Table(
        title=f"{family_title(column.family)} · {column.model}: surprisal per word ({column.unit})",
        title_justify="left",
    )
    table.add_column("", style="bold", width=1)
    table.add_column("good", overflow="fold")
    table.add_column("surprisal", justify="right")
    table.add_column("bad", overflow="fold")
    table.add_column("surprisal", justify="right")
    table.add_column("Δ", justify="right")
    for row in column.words or []:
        differs = row.op != "equal"
        word_style = "bold" if differs else ""
        table.add_row(
            OP_MARKS[row.op],
            Text(row.good or "", style=word_style),
            format_nats(row.good_surprisal),
            Text(row.bad or "", style=word_style),
            format_nats(row.bad_surprisal),
            difference_cell(row),
        )
    table.add_section()
    table.add_row(
        "", "total", format_nats(-column.good), "", format_nats(-column.bad), signed(column.good - column.bad)
    )
    return table


def pair_view(result: PairResult, note: str) -> RenderableType:
    parts: list[RenderableType] = [
        Text.assemble(("good: ", "bold green"), result.good),
        Text.assemble(("bad:  ", "bold red"), result.bad),
        Text(""),
        WholeNames(partial(verdict_table, result), [(column.family, column.model) for column in result.columns]),
    ]
    if any(column.words is not None for column in result.columns):
        for column in result.columns:
            parts.append(word_table(column))
        parts.append(Text(f"{DIFFERENCE_RULE}. ≠ words that differ, − only in good, + only in bad.", style="dim"))
    parts.append(conventions_line(result.columns))  # type: ignore[arg-type]  # same unit/conventions fields
    for column in result.columns:
        line = Text(f"{family_title(column.family)}: ", style="bold")
        line.append(column.method + (f"; {column.first_token}" if column.first_token else ""), style="dim")
        parts.append(line)
    parts.append(Text(note, style="yellow"))
    return Group(*parts)


def percent(correct: int, total: int) -> str:
    return "—" if not total else f"{100 * correct / total:.1f}% ({correct}/{total})"


def accuracy_table(summary: PairsSummary, label: Label = model_label) -> Table:
    table = Table(
        title=f"Accuracy over {summary.pairs} pair{'s' * (summary.pairs != 1)} of {summary.file}",
        title_justify="left",
        title_style="bold",
    )
    table.add_column(summary.group_field or "pairs", overflow="fold")
    for accuracy in summary.overall:
        table.add_column(label(accuracy.family, accuracy.model), justify="right", overflow="fold")
    table.add_row(
        Text("all", style="bold"), *[Text(percent(a.correct, a.total), style="bold") for a in summary.overall]
    )
    if summary.groups:
        table.add_section()
    for group in summary.groups:
        table.add_row(group.group, *[percent(a.correct, a.total) for a in group.models])
    return table


def summary_view(summary: PairsSummary) -> RenderableType:
    """Accuracy per model over the whole file, then per group, with the conventions behind it."""
    models = [(accuracy.family, accuracy.model) for accuracy in summary.overall]
    parts: list[RenderableType] = [WholeNames(partial(accuracy_table, summary), models)]
    if summary.resumed:
        parts.append(Text(f"{summary.resumed} of them read back from the --output file (--resume)", style="dim"))
    rules = Text("conventions: ", style="bold")
    items = [f"unit {next(iter(summary.conventions.values())).unit}"] if summary.conventions else []
    for family, conventions in summary.conventions.items():
        if conventions.bos is not None:
            items.append(f"{family_title(family)} {'--bos' if conventions.bos else '--no-bos'}")
        if conventions.pll is not None:
            items.append(f"{family_title(family)} --pll {conventions.pll}")
    rules.append(" · ".join(items))
    parts.append(rules)
    parts.append(
        Text(
            "a pair counts as right when the model's score of the good sentence is higher "
            "(GPT-2 log-likelihood, BERT pseudo-log-likelihood, BART reconstruction); a tie is wrong",
            style="dim",
        )
    )
    if summary.failed:
        parts.append(
            Text(
                f"{summary.failed} line{'s' * (summary.failed != 1)} failed and "
                f"{'are' if summary.failed != 1 else 'is'} not counted (see stderr)",
                style="red",
            )
        )
    return Group(*parts)
