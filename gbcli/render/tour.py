"""The tour on a terminal: each step as a screen of its own, the claim, the view of the command it names, the
reading of its numbers and that command to go deeper."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from gbcli.render.attention import heatmap_view
from gbcli.render.context import context_view
from gbcli.render.finetune import charts, header, legend, summary_table
from gbcli.render.generation import generation_view
from gbcli.render.masking import fill_mask_view
from gbcli.render.probe import probe_view
from gbcli.render.scoring import score_view
from gbcli.render.similarity import similarity_view
from gbcli.tasks.tour import STEP_NUMBERS, TourStep

VERDICT_MARKS = {
    "agrees": ("✓ these models bear the claim out", "green"),
    "contradicts": ("✗ these models contradict the claim", "bold red"),
    "mixed": ("~ these models bear the claim out only in part", "yellow"),
    "unsettled": ("? these numbers do not settle the claim", "yellow"),
}


def demonstration(step: TourStep) -> list[RenderableType]:
    """The same view the named command prints for the same result."""
    results = step.results
    parts: list[RenderableType] = []
    if "attention" in results:
        parts.append(heatmap_view(results["attention"]))
    if "generate" in results:
        parts.append(generation_view(results["generate"], show_alternatives=True))
        parts.append(judge_table(step))
    elif "score" in results:
        parts.append(score_view(results["score"]))
    if "fill-mask" in results:
        parts.append(fill_mask_view(results["fill-mask"], compact=True))
    if "context" in results:
        parts.append(context_view(results["context"]))
    if "probe" in results:
        parts += [Text(""), probe_view(results["probe"])]
    if "similarity" in results:
        parts += [Text(""), similarity_view(results["similarity"])]
    if "finetune" in results:
        parts += finetune_parts(results["finetune"])
    return parts


def finetune_parts(result) -> list[RenderableType]:
    """`gbcli finetune`'s view without its reading (the step reads it) and without the run's folder (the tour's
    scratch, gone once the step is done)."""
    return [header(result), Text(""), charts(result), legend(result), Text(""), summary_table(result)]


def judge_table(step: TourStep) -> Table:
    """Step 2: each model's text as each model judges it."""
    figures = step.figures
    table = Table(
        title="each text as each model judges it (lower: more likely)", title_justify="left", title_style="bold"
    )
    table.add_column("judge")
    table.add_column("GPT-2's text", justify="right")
    table.add_column("BERT's text", justify="right")
    for judge, label in (("gpt_judge", "GPT-2 perplexity"), ("bert_judge", "BERT pseudo-perplexity")):
        values = figures[judge]
        table.add_row(label, *(f"{values[k]:.4g}" if values[k] is not None else "—" for k in ("gpt_text", "bert_text")))
    return table


def step_heading(step: TourStep) -> Rule:
    return Rule(Text(f"Step {step.number}/{len(STEP_NUMBERS)} · {step.title}", style="bold"), align="left")


def step_view(step: TourStep) -> RenderableType:
    parts: list[RenderableType] = [step_heading(step), Text(step.claim, style="bold")]
    if step.status == "skipped":
        parts.append(Text.assemble(("skipped: ", "yellow"), step.note or ""))
    elif step.status == "failed":
        parts.append(Text.assemble(("failed: ", "bold red"), step.note or ""))
    else:
        parts.append(Text(""))
        parts += demonstration(step)
        parts.append(Text(""))
        parts.append(Text(" ".join(step.reading)))
        if step.verdict is not None:
            mark, style = VERDICT_MARKS[step.verdict]
            parts.append(Text(mark, style=style))
        if step.note:
            parts.append(Text(f"note: {step.note}", style="dim"))
    parts.append(Text("deeper:", style="dim"))
    parts += [Text(f"  {command}", style="cyan") for command in step.commands]
    return Group(*parts)


def closing_view(steps: list[TourStep], stopped: bool) -> Text:
    """One line after the last step: what was shown, skipped or failed, and the handout when one was written."""
    counts = {status: sum(1 for s in steps if s.status == status) for status in ("shown", "skipped", "failed")}
    text = Text("tour " + ("stopped" if stopped else "done") + ": ", style="bold")
    text.append(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    contradicted = [str(s.number) for s in steps if s.verdict == "contradicts"]
    if contradicted:
        text.append(
            f"; contradicted at step{'s' if len(contradicted) > 1 else ''} {', '.join(contradicted)}", style="red"
        )
    return text
