"""The `generate` screen: each model's continuation side by side, optionally coloured by token probability."""

from __future__ import annotations

import math

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from gbcli.loading.models import family_title
from gbcli.render.common import ProbText, SideBySide, format_nats, format_seconds, prob_legend
from gbcli.tasks.generation import Continuation, GenerationResult, ModelGeneration


def continuation_text(prompt: str, continuation: Continuation, show_probs: bool) -> RenderableType:
    # The prompt dim, the continuation bold: two spans of one unstyled Text, never bold and dim at once.
    # overflow="fold": a word wider than the panel folds rather than being cut; and Rich measures a wrapped line's
    # trailing space in characters, so a line holding a wide character (き) that ends exactly at the edge would
    # otherwise lose its last word to an ellipsis.
    text = Text(overflow="fold")
    text.append(prompt, style="dim")
    if not show_probs:
        text.append(continuation.text, style="bold")
        return text
    return ProbText([(token.text, math.exp(token.logprob)) for token in continuation.tokens], prefix=text)


def column_panel(prompt: str, column: ModelGeneration, show_probs: bool) -> Panel:
    parts: list[RenderableType] = []
    for index, continuation in enumerate(column.continuations):
        if len(column.continuations) > 1:
            parts.append(Text(f"#{index + 1}", style="cyan"))
        parts.append(continuation_text(prompt, continuation, show_probs))
        mean = continuation.mean_logprob
        summary = f"mean log-prob {format_nats(mean)} per token" if mean is not None else "no tokens"
        if continuation.stopped_at_eos:
            summary += " · stopped at end of text"
        parts.append(Text(summary, style="italic"))
    stats = Table.grid(padding=(0, 1))
    stats.add_column(no_wrap=True)
    stats.add_column()
    # The speed counts every sequence (they are decoded as one batch), so the row says how many there are.
    several = len(column.continuations)
    stats.add_row("tokens", f"{column.new_tokens} × {several} sequences" if several > 1 else str(column.new_tokens))
    stats.add_row("speed", f"{column.tokens_per_second:.1f} tokens/s ({format_seconds(column.seconds)})")
    stats.add_row("method", Text(column.method, style="dim"))
    parts.append(stats)
    return Panel(Group(*parts), title=f"{family_title(column.family)} · {column.model}", expand=True)


def generation_view(result: GenerationResult, show_probs: bool = False) -> RenderableType:
    panels = [column_panel(result.prompt, column, show_probs) for column in result.columns]
    parts: list[RenderableType] = [SideBySide(panels)]
    parts.append(Text(f"decoding: {result.decoding}", style="dim"))
    if show_probs:
        parts.append(prob_legend("token probability (raw model, before temperature/top-k/top-p): "))
    return Group(*parts)


class StreamingView:
    """What a terminal shows while tokens arrive: one panel per model, filling as each writes."""

    def __init__(self, prompt: str, columns: list[tuple[str, str]]) -> None:
        self.prompt = prompt
        self.columns = columns  # (family, model name)
        self.texts: dict[str, str] = {family: "" for family, _ in columns}
        self.active: str | None = None
        # Until the first model is ready nothing is being written: the first column shows that it loads.
        self.loading_family: str | None = columns[0][0] if columns else None
        # After Ctrl-C the last frame is printed whole, taller than the terminal if need be.
        self.interrupted = False

    def loading(self, family: str) -> None:
        """This column's model is being loaded (the ones before it have finished writing)."""
        self.loading_family = family

    def update(self, family: str, text: str) -> None:
        self.active = family
        self.loading_family = None
        self.texts[family] = text

    def panels(self) -> list[Panel]:
        panels = []
        for family, name in self.columns:
            body = Text(overflow="fold")  # see continuation_text
            body.append(self.prompt, style="dim")
            body.append(self.texts[family], style="bold")
            if family == self.loading_family:
                body = Text(f"loading {name} …", style="dim italic")
            elif family == self.active and not self.interrupted:
                body.append("▌", style="blink")
            panels.append(Panel(body, title=f"{family_title(family)} · {name}", expand=True))
        return panels

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        view = SideBySide(self.panels())
        if self.interrupted:
            yield view
            return
        # A live display taller than the terminal cannot be redrawn (its top has scrolled away, so every later frame
        # would leave a copy behind), and Rich would show its top while the new tokens arrive at the bottom: keep
        # the panels' top border and their newest lines within the screen.
        lines = console.render_lines(view, options, pad=False)
        room = max(3, options.max_height - 1)
        if len(lines) > room:
            lines = [lines[0], *lines[len(lines) - (room - 1):]]
        for line in lines:
            yield from line
            yield Segment.line()
