"""The `compare` screen: one section each for model facts, tokenization, predictions, scores, attention, time."""

from __future__ import annotations

from functools import partial

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from gbcli.render.common import format_nats, format_seconds
from gbcli.render.masking import HEADINGS, fill_mask_view
from gbcli.render.model_names import Label, WholeNames, model_label
from gbcli.render.scoring import scale_note, tokens_scored_notes, whole_names_table
from gbcli.render.tokenization import AlignedPieces, counts_line
from gbcli.tasks.comparison import SECTIONS, AttentionLine, ComparisonResult, ModelFacts


def section(title: str) -> Rule:
    return Rule(Text(title, style="bold"), align="left", style="dim")


def parameters(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1e6:.1f} M ({count:,})"
    return f"{count:,}"


def _value(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


FACT_ROWS: list[tuple[str, object]] = [
    ("architecture", lambda f: f.architecture),
    ("parameters", lambda f: parameters(f.parameters)),
    (
        "layers",
        lambda f: (
            _value(f.layers) + (f" encoder + {f.decoder_layers:,} decoder" if f.decoder_layers is not None else "")
        ),
    ),
    (
        "attention heads",
        lambda f: _value(f.heads) + (f" encoder, {f.decoder_heads:,} decoder" if f.decoder_heads is not None else ""),
    ),
    ("hidden size", lambda f: _value(f.hidden_size)),
    ("vocabulary", lambda f: _value(f.vocab_size)),
    ("max positions", lambda f: _value(f.max_positions)),
    ("tokenizer", lambda f: f.tokenizer),
    ("attention", lambda f: f.attention_direction),
    ("pre-training", lambda f: f.objective),
]


def facts_table(facts: list[ModelFacts], label: Label = model_label) -> Table:
    table = Table(show_header=True, box=None, padding=(0, 2))
    table.add_column("", style="dim")
    for fact in facts:
        table.add_column(label(fact.family, fact.model), overflow="fold")
    for label, read in FACT_ROWS:
        table.add_row(label, *[str(read(fact)) for fact in facts])  # type: ignore[operator]
    return table


def attention_table(lines: list[AttentionLine], label: Label = model_label) -> Table:
    table = Table(show_header=True, box=None, padding=(0, 1))
    table.add_column("model", overflow="fold")
    table.add_column("layers × heads", justify="right")
    table.add_column("mean entropy (bits)", justify="right")
    table.add_column("to first token", justify="right")
    table.add_column("to special tokens", justify="right")
    for line in lines:
        special = "— (none)" if line.to_special is None else f"{line.to_special:.1%}"
        name = label(line.family, line.model)
        table.add_row(
            name if line.map == "self" else f"{name} · {line.map}",
            f"{line.layers} × {line.heads}",
            format_nats(line.mean_entropy, 2),
            f"{line.to_first:.1%}",
            special,
        )
    return table


def time_table(result: ComparisonResult, label: Label = model_label) -> Table:
    table = Table(show_header=True, box=None, padding=(0, 1))
    table.add_column("model", overflow="fold")
    table.add_column("load", justify="right", no_wrap=True)
    table.add_column("first\npass", justify="right", no_wrap=True)
    for name in SECTIONS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("forward\ntotal", justify="right", style="bold", no_wrap=True)
    for record in result.time:
        cells = [
            label(record.family, record.model),
            format_seconds(record.load_seconds),
            format_seconds(record.first_pass_seconds),
        ]
        for name in SECTIONS:
            seconds = record.forward_seconds.get(name, 0.0)
            passes = record.forward_passes.get(name, 0)
            warm = passes - (record.first_pass_section == name)
            cells.append(f"{format_seconds(seconds)} ({passes})" if warm else f"— ({passes})")
        cells.append(format_seconds(record.total_forward_seconds))
        table.add_row(*cells)
    return table


def scored_lines(result: ComparisonResult) -> list[Text]:
    """Which sentence the scores are of, and why that one: whose filling it is, and the other views' fillings
    where they differ (each can be scored with `gbcli score`)."""
    line = Text.assemble(("Scores of: ", "bold"), result.scored_text)
    if result.scored_filling is None:
        return [line]
    family, view = HEADINGS[result.scored_filling]
    lines = [line, Text(f"filled by {family} ({view}), which runs first; all models score this sentence", style="dim")]
    others: dict[str, list[str]] = {}  # a different filling → the views that chose it
    for filling in result.predictions.fillings:
        # GPT's left-context filling is the uninformed one by design: the views that read the whole text are named.
        if filling.text != result.scored_text and filling.column != "gpt_left":
            others.setdefault(filling.text, []).append(" ".join(HEADINGS[filling.column]))
    for text, names in others.items():
        lines.append(
            Text(f'{" and ".join(names)} filled it differently: {text} (gbcli score "{text}" scores it)', style="dim")
        )
    return lines


def comparison_view(result: ComparisonResult, full: bool = False) -> RenderableType:
    """The compact screen (predictions and scores), or with `full` every section: facts, tokens, attention, time."""
    prediction_note = Text(f"asked: {result.predictions_note}", style="dim")
    parts: list[RenderableType] = [Text.assemble(("compare: ", "bold"), result.text)]
    if full:
        parts += [
            section("Model facts"),
            WholeNames(partial(facts_table, result.facts), [(fact.family, fact.model) for fact in result.facts]),
            section("Tokenization"),
            AlignedPieces(result.tokenization),
            counts_line(result.tokenization),
        ]
    parts += [
        section("Predictions"),
        prediction_note,
        fill_mask_view(result.predictions, compact=not full),
        section("Scores"),
    ]
    parts += scored_lines(result)
    parts.append(whole_names_table(result.scores))
    parts += tokens_scored_notes(result.scores)
    if len(result.scores.columns) > 1:
        parts.append(scale_note(result.scores))
    if not full:
        parts.append(Text("--full adds the model facts, tokenization, attention and time sections.", style="dim"))
        return Group(*parts)
    parts += [
        section("Attention (mean over layers, heads and tokens)"),
        WholeNames(
            partial(attention_table, result.attention),
            list(dict.fromkeys((line.family, line.model) for line in result.attention)),
        ),
        section("Time"),
        Text(
            f"start-up: {result.startup_seconds:.2f} s importing torch, transformers and the models' code (once "
            "per process)",
            style="dim",
        ),
        WholeNames(partial(time_table, result), [(record.family, record.model) for record in result.time]),
        Text(
            "load = reading the checkpoint; first pass = each model's first forward pass (one-time set-up); the "
            "sections = seconds inside the later forward passes, (n) = number of forward passes, — = the first pass "
            "only",
            style="dim",
        ),
    ]
    return Group(*parts)
