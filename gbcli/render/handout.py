"""The tour as a handout: one self-contained HTML page (`--html`) or a Markdown notes file (`--markdown`).

The page needs nothing but itself: no script, no font, no style sheet or image from anywhere else. Every figure is
inline SVG drawn here from the step's own results (attention heatmaps, the per-layer curves of the lens, the shift
grids), every number is the one the terminal showed, and each step ends with the exact command that reruns it.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gbcli.errors import GbcliError, usage_error
from gbcli.render.export import ExportTarget, write_atomically
from gbcli.tasks.tour import STEP_NUMBERS, TourStep

VERDICT_WORDS = {
    "agrees": "these models bear the claim out",
    "contradicts": "these models contradict the claim",
    "mixed": "these models bear the claim out only in part",
    "unsettled": "these numbers do not settle the claim",
}


@dataclass(frozen=True)
class HandoutTarget:
    path: Path
    format: str  # html or markdown
    force: bool

    def write(self, steps: list[TourStep]) -> None:
        page = handout_html(steps) if self.format == "html" else handout_markdown(steps)
        write_atomically(ExportTarget(self.path, self.format, self.force), lambda handle: handle.write(page.encode()))


def check_handout_target(path: str, force: bool, option: str) -> HandoutTarget:
    """Refuse a handout path that cannot be written, before any model loads."""
    if not path.strip():
        example = "handout.html" if option == "--html" else "notes.md"
        raise usage_error(f"{option} needs a file name.", f"e.g. {option} {example}")
    target = Path(path).expanduser()
    folder = target.parent
    if not folder.exists():
        raise usage_error(f"The folder '{folder}' for {option} does not exist.", "Create it first, or choose another.")
    if not folder.is_dir():
        raise usage_error(f"'{folder}' in the {option} path is not a folder.", "Choose a path inside a folder.")
    if target.is_dir():
        raise usage_error(f"'{path}' is a folder.", f"Give a file name, e.g. {option} handout.html.")
    if target.exists() and not force:
        raise usage_error(f"'{path}' already exists.", "Pass --force to overwrite it, or choose another name.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GbcliError(
            f"Cannot write to the folder '{folder}': permission denied.", "Choose a folder you can write.", exit_code=2
        )
    return HandoutTarget(target, "html" if option == "--html" else "markdown", force)


# ---------------------------------------------------------------------------------------------------------------
# Figures: inline SVG
# ---------------------------------------------------------------------------------------------------------------

CELL = 22
FONT = "font-family:system-ui,sans-serif;font-size:11px"


def _shade(value: float) -> str:
    """White at 0, deep blue at 1 (values are clamped to [0, 1])."""
    v = min(max(value, 0.0), 1.0)
    r, g, b = (int(255 - v * (255 - c)) for c in (8, 48, 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_svg(
    matrix: Sequence[Sequence[float | None]],
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
    scale: float = 1.0,
) -> str:
    """A grid of shaded cells with row and column labels; `scale` is the value drawn darkest, None is hatched grey."""
    left = 8 + 7 * max((len(r) for r in rows), default=1)
    top = 8 + 7 * max((len(c) for c in columns), default=1) + 18
    width = max(left + CELL * len(columns) + 8, 12 + 7 * len(title))
    height = top + CELL * len(rows) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" style="{FONT}">',
        f'<text x="4" y="14" style="font-weight:600">{html.escape(title)}</text>',
    ]
    for j, label in enumerate(columns):
        x, y = left + CELL * j + CELL / 2 + 4, top - 4
        parts.append(f'<text x="{x:.0f}" y="{y}" transform="rotate(-90 {x:.0f} {y})">{html.escape(label)}</text>')
    for i, (label, values) in enumerate(zip(rows, matrix, strict=True)):
        y = top + CELL * i
        parts.append(f'<text x="{left - 4}" y="{y + CELL / 2 + 4:.0f}" text-anchor="end">{html.escape(label)}</text>')
        for j, value in enumerate(values):
            x = left + CELL * j
            if value is None:
                fill, tip = "#d8d8d8", "none"
            else:
                fill, tip = _shade(value / scale if scale > 0 else 0.0), f"{value:.4g}"
            parts.append(
                f'<rect x="{x}" y="{y}" width="{CELL - 1}" height="{CELL - 1}" fill="{fill}">'
                f"<title>{html.escape(rows[i])} → {html.escape(columns[j])}: {tip}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def line_chart_svg(
    series: dict[str, Sequence[float]], x_labels: Sequence[str], title: str, y_label: str, x_label: str = "layer"
) -> str:
    """Lines over shared x positions, y from 0 to 1 (probabilities, accuracies)."""
    width, height, left, bottom, top = 420, 220, 44, 34, 26
    plot_w, plot_h = width - left - 110, height - top - bottom
    count = max(len(x_labels), 2)

    def at(i: int, value: float) -> tuple[float, float]:
        return left + plot_w * i / (count - 1), top + plot_h * (1 - min(max(value, 0.0), 1.0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}" style="{FONT}">',
        f'<text x="4" y="14" style="font-weight:600">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        _, y = at(0, tick)
        parts.append(f'<text x="{left - 4}" y="{y + 4:.0f}" text-anchor="end">{tick:g}</text>')
    for i, label in enumerate(x_labels):
        x, _ = at(i, 0)
        parts.append(f'<text x="{x:.0f}" y="{top + plot_h + 14}" text-anchor="middle">{html.escape(label)}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">{html.escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="12" y="{top + plot_h / 2:.0f}" transform="rotate(-90 12 {top + plot_h / 2:.0f})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for k, (name, values) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (at(i, v) for i, v in enumerate(values)))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(values):
            x, y = at(i, v)
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{html.escape(name)}, '
                f"{html.escape(x_labels[i] if i < len(x_labels) else str(i))}: {v:.4g}</title></circle>"
            )
        parts.append(
            f'<text x="{left + plot_w + 10}" y="{top + 14 + 16 * k}" fill="{colour}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _family_name(family: str) -> str:
    return {"gpt": "GPT-2", "bert": "BERT", "bart": "BART"}.get(family, family)


def step_figures(step: TourStep) -> list[str]:
    """The SVG figures of one shown step, from its results."""
    figures: list[str] = []
    results = step.results
    if "attention" in results:
        for view in results["attention"].models:
            title = (
                f"{_family_name(view.family)} {view.map if view.map != 'self' else ''} attention, layer "
                f"{view.layer}, mean of {view.heads} heads".replace("  ", " ")
            )
            figures.append(
                heatmap_svg(view.matrix, [t.label for t in view.tokens], [t.label for t in view.key_tokens], title)
            )
    if "context" in results:
        for shift in results["context"].shifts:
            rows = [p.token + (f"→{p.other}" if p.other else "") for p in shift.positions]
            matrix = [p.cosine for p in shift.positions]
            peak = max((v for row in matrix for v in row if v is not None), default=1.0) or 1.0
            figures.append(
                heatmap_svg(
                    matrix,
                    rows,
                    shift.layers,
                    f"{_family_name(shift.family)}: cosine distance per layer (darkest {peak:.3g})",
                    scale=peak,
                )
            )
    if "probe" in results:
        probed = results["probe"]
        rows = [row for row in probed.rows if not row.random_init]
        curves = {f"{_family_name(row.family)}": [score.accuracy for score in row.layers] for row in rows}
        longest = max(rows, key=lambda row: len(row.layers))
        curves["majority baseline"] = [probed.majority.accuracy] * len(longest.layers)
        figures.append(
            line_chart_svg(
                curves,
                [score.layer for score in longest.layers],
                f"probe accuracy by layer: {probed.source}",
                "accuracy",
            )
        )
    if "finetune" in results:
        tuned = results["finetune"]
        curves = {
            f"{_family_name(f.family)} dev accuracy": [point.accuracy for point in f.curve] for f in tuned.families
        }
        steps = [str(point.examples) for point in tuned.families[0].curve] if tuned.families else []
        figures.append(
            line_chart_svg(
                curves,
                steps,
                "learning curves: dev accuracy by training examples seen",
                "accuracy",
                x_label="training examples",
            )
        )
    return figures


# ---------------------------------------------------------------------------------------------------------------
# Tables of numbers, shared by the page and the notes
# ---------------------------------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "—"
    return str(value)


def figure_rows(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """The step's figures as (name, value) rows, nested ones as `model · name`; lists are left to the figures."""
    rows: list[tuple[str, str]] = []
    for name, value in figures.items():
        label = f"{prefix}{name.replace('_', ' ')}"
        if isinstance(value, dict):
            rows += figure_rows(value, f"{label} · ")
        elif isinstance(value, list):
            rows.append((label, ", ".join(_number(v) for v in value)))
        else:
            rows.append((label, _number(value)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #1b1b1f;
       line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
section { border-top: 2px solid #dde; padding-top: .6rem; margin-top: 1.6rem; }
h2 { font-size: 1.2rem; margin: .2rem 0; }
.claim { font-weight: 600; }
.verdict { display: inline-block; padding: .1rem .5rem; border-radius: .3rem; font-size: .9rem; }
.agrees { background: #e3f4e1; color: #145214; } .contradicts { background: #fbe1e1; color: #8a1111; }
.mixed, .unsettled { background: #fdf3d6; color: #6b4e00; } .skipped, .failed { background: #eee; color: #444; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; margin: .6rem 0; }
table { border-collapse: collapse; font-size: .9rem; margin: .4rem 0; }
td, th { border: 1px solid #ccd; padding: .15rem .5rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f4f4f8; padding: .5rem .7rem; border-radius: .3rem; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.meta { color: #555; font-size: .9rem; }
.contents li { margin: .15rem 0; } .contents .verdict { font-size: .8rem; margin-left: .4rem; }
"""


def _table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=n' if i else ''}>{html.escape(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _step_html(step: TourStep) -> str:
    parts = [
        f'<section id="step-{step.number}"><h2>Step {step.number} of {len(STEP_NUMBERS)}: '
        f"{html.escape(step.title)}</h2>",
        f'<p class="claim">{html.escape(step.claim)}</p>',
    ]
    if step.status != "shown":
        parts.append(f'<p><span class="verdict {step.status}">{step.status}</span> {html.escape(step.note or "")}</p>')
    else:
        if step.verdict is not None:
            parts.append(f'<p><span class="verdict {step.verdict}">{VERDICT_WORDS[step.verdict]}</span></p>')
        parts.append("<p>" + html.escape(" ".join(step.reading)) + "</p>")
        figures = step_figures(step)
        if figures:
            parts.append('<div class="figures">' + "".join(f"<figure>{svg}</figure>" for svg in figures) + "</div>")
        parts.append(_table_html(["figure", "value"], figure_rows(step.figures)))
        if step.note:
            parts.append(f'<p class="meta">note: {html.escape(step.note)}</p>')
    parts.append(
        '<p class="meta">Rerun it, or go deeper:</p><pre><code>'
        + html.escape("\n".join(step.commands))
        + "</code></pre></section>"
    )
    return "".join(parts)


def _models_line(steps: list[TourStep]) -> str:
    """Which models the numbers come from, read off the results themselves."""
    names: dict[str, str] = {}
    for step in steps:
        for result in step.results.values():
            for item in result if isinstance(result, list) else [result]:
                for family, model in _model_names(item):
                    names.setdefault(family, model)
    return ", ".join(f"{_family_name(f)}: {m}" for f, m in names.items())


def _model_names(result: Any) -> list[tuple[str, str]]:
    found = []
    for attribute in ("models", "columns", "shifts"):
        for entry in getattr(result, attribute, None) or []:
            if isinstance(entry, str):
                continue
            family, model = getattr(entry, "family", None), getattr(entry, "model", None)
            if family and model:
                found.append((family, model))
    if isinstance(getattr(result, "models", None), dict):
        found += list(result.models.items())
    return found


def _contents_html(steps: list[TourStep]) -> str:
    """The steps with where each stands, linked to their sections."""
    items = []
    for step in steps:
        standing = VERDICT_WORDS[step.verdict] if step.verdict is not None else step.status
        css = step.verdict or step.status
        items.append(
            f'<li value="{step.number}"><a href="#step-{step.number}">{html.escape(step.title)}</a> '
            f'<span class="verdict {css}">{html.escape(standing)}</span></li>'
        )
    return '<ol class="contents">' + "".join(items) + "</ol>" if items else ""


def handout_html(steps: list[TourStep]) -> str:
    models = _models_line(steps)
    body = _contents_html(steps) + "".join(_step_html(step) for step in steps)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>GPT-2 and BERT, side by side: a gbcli tour</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n"
        "<h1>GPT-2 and BERT, side by side</h1>\n"
        '<p class="meta">A gbcli tour: each claim shown on real models, its numbers read out. '
        f"Models: {html.escape(models or 'none loaded')}.</p>\n"
        f"{body}\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# The notes
# ---------------------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def handout_markdown(steps: list[TourStep]) -> str:
    lines = ["# GPT-2 and BERT, side by side: a gbcli tour", "", f"Models: {_models_line(steps) or 'none loaded'}.", ""]
    for step in steps:
        lines += [f"## Step {step.number} of {len(STEP_NUMBERS)}: {step.title}", "", f"**{step.claim}**", ""]
        if step.status != "shown":
            lines += [f"*{step.status}*: {step.note or ''}", ""]
        else:
            if step.verdict is not None:
                lines += [f"*{VERDICT_WORDS[step.verdict]}*", ""]
            lines += [" ".join(step.reading), "", "| figure | value |", "|---|---:|"]
            lines += [f"| {_md_cell(name)} | {_md_cell(value)} |" for name, value in figure_rows(step.figures)]
            lines.append("")
            if step.note:
                lines += [f"note: {step.note}", ""]
        lines += ["```console", *(f"$ {command}" for command in step.commands), "```", ""]
    return "\n".join(lines)
