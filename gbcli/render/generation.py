"""The `generate` screen: each model's continuation side by side, optionally coloured by token probability."""

from __future__ import annotations

import math

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import Phrases, ProbText, SideBySide, format_nats, format_prob, format_seconds, prob_legend
from gbcli.tasks.decoding_options import DecodingSettings
from gbcli.tasks.generation import Alternative, Continuation, GeneratedToken, GenerationResult, ModelGeneration
from gbcli.tasks.tokenization import readable_piece

CHOSEN_MARK = "▸"  # before the token written, among the ones the model weighed: readable without colour


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
    # A token with no text (the end-of-text token a sequence stops at) is named, so its probability has a place.
    return ProbText(
        [(token.text or f" {token.piece}", math.exp(token.logprob)) for token in continuation.tokens], prefix=text
    )


# Punctuation that reads as one sign when a tokenizer joins its tokens without a space: ".." looks like an ellipsis.
JOINING_MARKS = set(".,!?;:-")


def joined_marks(continuation: Continuation) -> list[str]:
    """Runs of two or more punctuation tokens written without a space between them (BERT's `paris..`): each run's
    text, for a note that they are separate tokens."""
    runs: list[str] = []
    current = ""
    count = 0
    for token in continuation.tokens:
        if token.text and set(token.text) <= JOINING_MARKS:
            current += token.text
            count += 1
            continue
        if count > 1:
            runs.append(current)
        current, count = "", 0
    if count > 1:
        runs.append(current)
    return runs


def column_panel(prompt: str, column: ModelGeneration, show_probs: bool) -> Panel:
    parts: list[RenderableType] = []
    for index, continuation in enumerate(column.continuations):
        if len(column.continuations) > 1:
            parts.append(Text(f"#{index + 1}", style="cyan"))
        parts.append(continuation_text(prompt, continuation, show_probs))
        mean = continuation.mean_logprob
        summary = f"mean log-prob {format_nats(mean)} per token" if mean is not None else "no tokens"
        if continuation.stopped_at_eos:
            end = continuation.tokens[-1].piece if continuation.tokens else ""
            summary += f" · stopped at end of text ({end})" if end else " · stopped at end of text"
        parts.append(Text(summary, style="italic"))
        runs = list(dict.fromkeys(joined_marks(continuation)))
        if runs:
            shown = ", ".join(f"'{run}' is {len(run)} tokens" for run in runs)
            parts.append(Text(f"{shown}, not one sign (--show-probs marks each token)", style="dim"))
    stats = Table.grid(padding=(0, 1))
    stats.add_column(no_wrap=True)
    stats.add_column()
    # The speed counts every sequence (they are decoded as one batch), so the row says how many there are.
    several = len(column.continuations)
    stats.add_row("tokens", f"{column.new_tokens} × {several} sequences" if several > 1 else str(column.new_tokens))
    stats.add_row("speed", f"{column.tokens_per_second:.1f} tokens/s ({format_seconds(column.seconds)})")
    if column.reads:
        stats.add_row("reads", Text(column.reads, style="dim"))
    stats.add_row("method", Text(column.method, style="dim"))
    parts.append(stats)
    return Panel(Group(*parts), title=f"{family_title(column.family)} · {column.model}", expand=True)


def alternative_cell(alternative: Alternative) -> Text:
    """`▸␣there 0.4123` for the token written, `␣a 0.0812` for another the model weighed."""
    shown = readable_piece(alternative.piece, alternative.text)
    cell = Text(CHOSEN_MARK + shown, style="bold") if alternative.chosen else Text(shown)
    cell.append(" " + format_prob(math.exp(alternative.logprob)), style="" if alternative.chosen else "dim")
    return cell


def written_cell(token: GeneratedToken) -> Text:
    """The token written, when it is not among the alternatives shown (sampling may pick an unlikely one)."""
    return alternative_cell(Alternative(token.id, token.piece, token.text, token.logprob, True)).append(
        " (below these)", style="italic dim"
    )


class AlternativesTable:
    """One row per step: its number, then the tokens the model weighed most, best first, the one written marked.

    Aligned columns when every cell fits the width whole; otherwise (a large K, a narrow terminal) each step's cells
    flow onto as many lines as they need, wrapped between cells, never inside one."""

    def __init__(self, continuation: Continuation) -> None:
        widest = max((len(token.alternatives) for token in continuation.tokens), default=0)
        # A last cell for the written token where sampling picked one below the alternatives shown.
        below = any(not any(a.chosen for a in token.alternatives) for token in continuation.tokens)
        self.rows: list[tuple[str, list[Text]]] = []
        for step, token in enumerate(continuation.tokens, start=1):
            cells = [alternative_cell(alternative) for alternative in token.alternatives]
            cells += [Text("")] * (widest - len(cells))
            if below:
                cells.append(Text("") if any(a.chosen for a in token.alternatives) else written_cell(token))
            self.rows.append((str(step), cells))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.rows:
            return
        numbers = max(len(number) for number, _ in self.rows)
        columns = len(self.rows[0][1])
        widths = [max(cell_len(cells[k].plain) for _, cells in self.rows) for k in range(columns)]
        if numbers + sum(widths) + 2 * columns <= options.max_width:
            yield self._aligned()
        else:
            yield from self._flowing(numbers)

    def _aligned(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="dim", no_wrap=True)
        for _ in self.rows[0][1]:
            table.add_column(no_wrap=True)
        for number, cells in self.rows:
            table.add_row(number, *cells)
        return table

    def _flowing(self, numbers: int) -> RenderResult:
        for number, cells in self.rows:  # the cells under the first, each line after the step's number
            phrases = [("", Text(number.rjust(numbers), style="dim"))] + [("  ", cell) for cell in cells if cell.plain]
            yield Phrases(phrases, indent=numbers + 2)


def alternatives_section(column: ModelGeneration) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text(f"{family_title(column.family)} · {column.model}: the tokens weighed at each step", style="bold")
    ]
    for index, continuation in enumerate(column.continuations):
        if len(column.continuations) > 1:
            parts.append(Text(f"#{index + 1}", style="cyan"))
        parts.append(AlternativesTable(continuation))
    return parts


def alternatives_legend(result: GenerationResult) -> Text:
    text = Text(
        f"{CHOSEN_MARK} the token written; each number is the raw model probability (before temperature, "
        "top-k and top-p), from the logits the token was chosen from",
        style="dim",
    )
    if any(column.family == "bert" for column in result.columns):
        text.append("; BERT weighs special tokens such as [SEP] but its loop never writes one", style="dim")
    if any(column.family != "gpt" or len(column.continuations) > 1 for column in result.columns):
        text.append(
            "; a column decoded by beam search, several sequences or BART is read by one teacher-forced "
            "pass over what it wrote",
            style="dim",
        )
    return text


def generation_view(
    result: GenerationResult, show_probs: bool = False, *, show_alternatives: bool = False
) -> RenderableType:
    panels = [column_panel(result.prompt, column, show_probs) for column in result.columns]
    parts: list[RenderableType] = [SideBySide(panels)]
    if show_alternatives:
        for column in result.columns:
            parts += alternatives_section(column)
        parts.append(alternatives_legend(result))
    parts.append(Text(f"decoding: {result.decoding}", style="dim"))
    if show_probs:
        parts.append(prob_legend("token probability (raw model, before temperature/top-k/top-p): "))
    return Group(*parts)


def beam_search_so_far(beams: int) -> str:
    """What a streamed beam search shows: its first-ranked beam, which a later step may replace."""
    return f"best of {beams} beams so far"


def plain_progress_line(family: str, name: str, settings: DecodingSettings, so_far: str, sequence: int) -> str:
    """Where a column's writing is, in a plain line (a terminal with NO_COLOR, where the live view cannot redraw):
    `GPT · gpt2: sequence 3 of 30, 41 words so far`, or a beam search's best beam so far."""
    sequences = len(settings.one_stream_each())
    where = f"sequence {sequence + 1} of {sequences}, " if sequences > 1 else ""
    words = len(so_far.split())
    what = f"{beam_search_so_far(settings.num_beams)}: " if settings.mode == "beam" and settings.num_beams > 1 else ""
    return f"{family_title(family)} · {name}: {where}{what}{words} word{'' if words == 1 else 's'} so far"


class StreamingView:
    """What a terminal shows while tokens arrive: one panel per model, filling as each writes."""

    def __init__(self, prompt: str, columns: list[tuple[str, str]], sequences: int = 1, beams: int = 1) -> None:
        self.prompt = prompt
        self.columns = columns  # (family, model name)
        self.sequences = sequences  # how many each model writes in turn (sampling with -n)
        self.beams = beams  # beam search shows the beam that ranks first so far, which may change at any step
        self.texts: dict[str, list[str]] = {family: [""] for family, _ in columns}
        self.active: str | None = None
        # Until the first model is ready nothing is being written: the first column shows that it loads.
        self.loading_family: str | None = columns[0][0] if columns else None
        # After Ctrl-C the last frame is printed whole, taller than the terminal if need be.
        self.interrupted = False
        self.importing = False  # the loading column waits for torch and transformers, not yet for its model

    def loading(self, family: str, *, importing: bool = False) -> None:
        """This column's model is being loaded (the ones before it have finished writing); `importing` while torch
        and transformers are imported first (once per process)."""
        self.loading_family = family
        self.importing = importing

    def finish(self, generation: ModelGeneration) -> None:
        """A column has finished: its sequences as the model ended them (a beam search's final ranking, not the
        beam that led at its last step), and no longer the one being written."""
        self.texts[generation.family] = [continuation.text for continuation in generation.continuations]
        if self.active == generation.family:
            self.active = None

    def update(self, family: str, text: str, sequence: int = 0) -> None:
        self.active = family
        self.loading_family = None
        texts = self.texts[family]
        texts += [""] * (sequence + 1 - len(texts))
        texts[sequence] = text

    def panels(self) -> list[Panel]:
        panels = []
        for family, name in self.columns:
            texts = self.texts[family]
            body = Text(overflow="fold")  # see continuation_text
            for index, text in enumerate(texts):
                if self.sequences > 1 or len(texts) > 1:
                    body.append(f"{'' if index == 0 else chr(10)}#{index + 1} ", style="cyan")
                body.append(self.prompt, style="dim")
                body.append(text, style="bold")
            if family == self.loading_family:
                what = "importing torch and transformers (once per process)" if self.importing else f"loading {name}"
                body = Text(f"{what} …", style="dim italic")
            elif family == self.active and not self.interrupted:
                body.append("▌", style="blink")
            elif family == self.active:  # the sequence Ctrl-C cut short, as the piped output marks it
                body.append(" (interrupted)", style="italic yellow")
            title = f"{family_title(family)} · {name}"
            if self.sequences > 1 and family == self.active:
                title += f" · sequence {len(texts)} of {self.sequences}"
            if self.beams > 1 and family == self.active:
                title += f" · {beam_search_so_far(self.beams)}"
            panels.append(Panel(body, title=title, expand=True))
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
            lines = [lines[0], *lines[len(lines) - (room - 1) :]]
        for line in lines:
            yield from line
            yield Segment.line()
