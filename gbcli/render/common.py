"""Consoles, JSON output and the readable display of tokenizer pieces, shared by every view."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any

import rich.text
from rich.cells import cell_len
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from gbcli.terminal import deferred_interrupt, no_color, visible_json, visible_text

# Probability bands for token colours (`generate --show-probs`, `score --tokens`), from confident to surprised.
PROB_BANDS: list[tuple[float, str, str]] = [
    (0.5, "bold green", "p ≥ 0.5"),
    (0.2, "green", "0.2–0.5"),
    (0.05, "yellow", "0.05–0.2"),
    (0.01, "dark_orange", "0.01–0.05"),
    (0.0, "red", "< 0.01"),
]


# One number format on every screen (the JSON keeps full precision).


def format_prob(prob: float | None) -> str:
    """A probability: four decimals, or two significant digits below 0.0001 (never a bare 0.000)."""
    if prob is None or not math.isfinite(prob):
        return "—"
    return f"{prob:.4f}" if prob >= 1e-4 or prob == 0.0 else f"{prob:.1e}"


def format_nats(value: float | None, digits: int = 3) -> str:
    """A log-probability, log-likelihood, surprisal or entropy (in nats or bits): `digits` decimals, — when
    missing, and never a bare -0.000 (a value too small for the decimals keeps its exponent)."""
    if value is None or not math.isfinite(value):
        return "—"
    if value != 0.0 and abs(value) < 0.5 / 10**digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def titled_line(title: str, body: str) -> Text:
    """`GPT ids: 464 12`: a bold title, then the plain text."""
    line = Text(title, style="bold")
    line.append(body)
    return line


def format_perplexity(value: float | None, digits: int = 5) -> str:
    """A (pseudo-)perplexity to five significant digits: float noise between batch sizes stays out of sight."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{round(value, digits - 1 - magnitude):.{decimals}f}"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s"


def prob_style(prob: float) -> str:
    for floor, style, _ in PROB_BANDS:
        if prob >= floor:
            return style
    return PROB_BANDS[-1][1]


def prob_mark(prob: float) -> str:
    """A token's probability written after it where colour cannot be shown: `[0.42]`, `[<.01]`."""
    return f"[{prob:.2f}]" if prob >= 0.01 else "[<.01]"


def colourless(console: Console) -> bool:
    """No colour reaches this console (NO_COLOR, or not a terminal): probabilities must be written out."""
    return console.no_color or console.color_system is None


class Phrases:
    """Phrases on a line, wrapped only between them: a phrase (`Σ log p(word) -1.878`, `colour: 0 ███ 1`) goes
    whole to the next line where it does not fit; only a phrase wider than the whole line wraps inside, between
    its words. Each phrase is (separator before it, text); a line never starts with a separator, and a line after the
    first starts with `indent` spaces (a hanging indent)."""

    def __init__(self, phrases: list[tuple[str, Text]], style: str = "", indent: int = 0) -> None:
        self.phrases = phrases
        self.style = style
        self.indent = indent

    def __rich_console__(self, console: Console, options: Any):
        width = options.max_width
        line, empty = Text(style=self.style), True
        for separator, phrase in self.phrases:
            if not empty and cell_len(line.plain + separator + phrase.plain) > width:
                yield line
                line, empty = Text(" " * self.indent, style=self.style), True
            if not empty:
                line.append(separator)
            line.append_text(phrase)
            empty = empty and not phrase.plain
        yield line


class ProbLegend:
    """What the probability colours mean, or, where there is no colour, what the written marks mean."""

    def __init__(self, intro: str) -> None:
        self.intro = intro

    def __rich_console__(self, console: Console, options: Any):
        phrases: list[tuple[str, Text]] = [("", Text(self.intro.rstrip()))]
        if colourless(console):
            phrases += [(" ", Text("[p] after each token is its probability,")), (" ", Text("[<.01] below 0.01"))]
        else:
            phrases += [(" ", Text(f" {label} ", style=f"reverse {style}")) for _, style, label in PROB_BANDS]
        yield Phrases(phrases)


class ColourWords:
    """A legend line that names a colour (`special tokens in magenta`) on a console that shows colour, and says the
    same without the colour word where none can show (NO_COLOR, a pipe): no legend points at a colour not there."""

    def __init__(self, coloured: str, plain: str, style: str = "dim") -> None:
        self.coloured = coloured
        self.plain = plain
        self.style = style

    def __rich_console__(self, console: Console, options: Any):
        yield Text(self.plain if colourless(console) else self.coloured, style=self.style)


def prob_legend(intro: str) -> ProbLegend:
    return ProbLegend(intro)


class ProbText:
    """Text whose tokens are coloured by probability, or followed by `[p]` on a console without colour.

    `pieces` are (text, probability or None); a piece with None is shown as it is.
    """

    def __init__(
        self, pieces: list[tuple[str, float | None]], *, prefix: Text | None = None, extra_style: str = ""
    ) -> None:
        self.pieces = pieces
        self.prefix = prefix
        self.extra_style = extra_style

    def text(self, plain: bool, starts: list[int] | None = None) -> Text:
        """The text; `starts`, when given, receives where each piece begins in it."""
        text = self.prefix.copy() if self.prefix is not None else Text()
        text.overflow = "fold"  # never an ellipsis over a token (see render.generation.continuation_text)
        for piece, prob in self.pieces:
            if starts is not None:
                starts.append(len(text))
            if prob is None:
                text.append(piece)
            elif plain:
                # The mark goes before trailing spaces or newlines, so it stays on the token's line.
                body = piece.rstrip()
                text.append(body + prob_mark(prob) + piece[len(body) :])
            else:
                text.append(piece, style=f"{prob_style(prob)} {self.extra_style}".strip())
        return text

    def __rich_console__(self, console: Console, options: Any):
        plain = colourless(console)
        if not plain:
            yield self.text(plain)
            return
        # Written-out marks make runs like `park[0.22].[1.00].[1.00]` one long word: where one does not fit the
        # width it is broken between tokens, never inside a token or its mark (`.[0.9` / `9]`).
        starts: list[int] = []
        text = self.text(plain, starts)
        yield Text("\n").join(wrap_at(text, set(starts), options.max_width))

    def __rich_measure__(self, console: Console, options: Any):
        return Measurement.get(console, options, self.text(colourless(console)))


def wrap_at(text: Text, boundaries: set[int], width: int) -> list[Text]:
    """`text` in lines of at most `width` cells: broken at spaces, and a word wider than the width broken at the
    given boundaries (then, only where one piece alone is wider, inside it)."""
    plain = text.plain
    lines: list[Text] = []
    for paragraph_start, paragraph in _paragraphs(plain):
        line_start, line_width, index = paragraph_start, 0, paragraph_start
        end = paragraph_start + len(paragraph)
        while index < end:
            # The next word and the spaces before it.
            word_start = index
            while word_start < end and plain[word_start] == " ":
                word_start += 1
            word_end = word_start
            while word_end < end and plain[word_end] != " ":
                word_end += 1
            if not line_width:  # a line starts at a word, never with the spaces before it
                line_start = word_start
            gap = cell_len(plain[index:word_start]) if line_width else 0
            word = cell_len(plain[word_start:word_end])
            if line_width and line_width + gap + word > width:
                lines.append(text[line_start:index])
                line_start, line_width, gap = word_start, 0, 0
            if word <= width - line_width - gap or word_start == word_end:
                line_width += gap + word
                index = word_end
                continue
            # A word wider than the room: fill the line up to the last boundary that fits, then go on.
            cut = word_start
            for point in sorted(b for b in boundaries if word_start < b < word_end):
                if line_width + gap + cell_len(plain[word_start:point]) <= width:
                    cut = point
            if cut == word_start:  # no boundary fits: one piece wider than the line folds inside it
                cut = word_start + 1
                while cut < word_end and line_width + gap + cell_len(plain[word_start : cut + 1]) <= width:
                    cut += 1
            lines.append(text[line_start:cut])
            line_start, line_width, index = cut, 0, cut
        lines.append(text[line_start:end])
    return lines


def _paragraphs(plain: str) -> list[tuple[int, str]]:
    """(start, text) of each line of `plain` as written (its own newlines kept as breaks)."""
    out, start = [], 0
    for line in plain.split("\n"):
        out.append((start, line))
        start += len(line) + 1
    return out


def _colour_system() -> str | None:
    # Rich drops colour for NO_COLOR but still sends bold, dim and reverse: no colour system sends none of them.
    return None if no_color() else "auto"


# Control characters in the user's text or a model's output are shown, never obeyed (gbcli.terminal.visible_text: also
# bidirectional controls and invisible characters). Rich's Text drops only five of them (BEL, BS, VT, FF, CR),
# silently, and lets ESC through. Every Text, table cell and markup string passes Rich's `strip_control_codes` as it
# is built (before its width is measured), so there each becomes its escape: on a terminal and off it, in every
# view, columns still aligned. Tab and newline keep their meaning.


def visible_controls(text: str) -> str:
    """`the\x1b[31m duck` → `the\\x1b[31m duck`: every character that is not printable (but tab and newline) as
    its escape."""
    return visible_text(text)


rich.text.strip_control_codes = visible_controls  # type: ignore[assignment]


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=False, color_system=_colour_system())


def stderr_console() -> Console:
    # soft_wrap: an error stays one line however narrow the terminal, so scripts can grep it.
    return Console(stderr=True, highlight=False, soft_wrap=True, color_system=_colour_system())


def animated(console: Console) -> bool:
    """Spinners, progress bars and live redraws move the cursor with escape codes: only in a terminal, not with
    NO_COLOR (which asks for output free of escape codes; progress then comes as plain lines: gbcli.terminal)."""
    return console.is_terminal and not no_color()


def to_jsonable(value: Any) -> Any:
    """Dataclasses to dicts, non-finite floats to null (JSON has no NaN), tuples to lists.

    NumPy arrays are passed through as they are: the caller chooses how exactly to write them (the attention
    export writes exact float32 values to .json, six decimals into its HTML page)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


# Line separators that JSON leaves raw but that str.splitlines() and older JavaScript split lines on: escaped, a
# JSON Lines record stays one line for every reader. (Outside strings JSON holds only ASCII, so this is safe.)
_LINE_BREAKING = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, indent=indent).translate(_LINE_BREAKING)


def print_json(value: Any, *, lines: bool = False) -> None:
    """One JSON document (or one JSON Lines record) on stdout, flushed so a pipe sees it at once; on a terminal
    with every character that is not printable as its `\\u` escape (the same JSON, nothing obeyed by the terminal).

    Ctrl-C is held back until the record is out: an interrupted run never leaves half a line behind.
    """
    text = dumps(value, indent=None if lines else 2) + "\n"
    if _isatty(sys.stdout):
        text = visible_json(text)
    with deferred_interrupt():
        sys.stdout.write(text)
        sys.stdout.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class SideBySide:
    """One renderable per model: side by side when they fit the width, else one below the other.

    Two layouts. Equal columns (the default) share the whole width, for panels whose text wraps (generate's): side
    by side when each column gets `min_column_width` and every panel's title fits whole. Natural widths
    (`natural=True`) keep each item at its own width, `gap` apart, for items that must not wrap (attention's
    heatmaps): side by side when their widths add up to the width.
    """

    def __init__(self, renderables: list, min_column_width: int = 36, *, natural: bool = False, gap: int = 1) -> None:
        self.renderables = renderables
        self.min_column_width = min_column_width
        self.natural = natural
        self.gap = gap

    def __rich_console__(self, console, options):
        if self.natural:
            widths = [Measurement.get(console, options, item).maximum for item in self.renderables]
            if len(self.renderables) > 1 and sum(widths) + self.gap * (len(widths) - 1) <= options.max_width:
                grid = Table.grid(padding=(0, self.gap))
                for item_width in widths:
                    grid.add_column(width=item_width, no_wrap=True)
                grid.add_row(*self.renderables)
                yield grid
            else:
                yield Group(*self.renderables)
            return
        # A panel's title is cut at its border, never wrapped: side by side only where every title fits whole.
        titles = [getattr(renderable, "title", None) for renderable in self.renderables]
        widest_title = max(
            (rich.text.Text.from_markup(t).cell_len if isinstance(t, str) else t.cell_len for t in titles if t),
            default=0,
        )
        column_width = max(self.min_column_width, widest_title + len("╭─  ─╮") + 1)
        if len(self.renderables) > 1 and options.max_width >= column_width * len(self.renderables):
            grid = Table.grid(expand=True, padding=(0, self.gap))
            for _ in self.renderables:
                grid.add_column(ratio=1)
            grid.add_row(*self.renderables)
            yield grid
        else:
            yield Group(*self.renderables)
