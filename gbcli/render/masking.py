"""The `fill-mask` screen: per blank, BERT's guesses beside GPT-2's, left context only and whole sentence.

The word GPT-2 settles on once it sees the whole sentence is marked in every column, so a reader sees at once
where the right-hand context changes the answer: BERT has it at the top, GPT-2's left-context column does not.
With BART, a fourth column holds the spans (of any length) its beams wrote in the blank, and a table of every
beam follows, with beam search's scores and the beams that rewrote the text around the blanks, marked.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gbcli.loading.families import family_title
from gbcli.render.common import Phrases, format_nats, format_prob
from gbcli.render.model_names import NamesLine
from gbcli.tasks.masking import CHOICE_POOL, FillMaskResult, MaskColumn, MaskPrediction, MaskSlot, SpanInfilling
from gbcli.tasks.masking.results import JOINT_BEAMS
from gbcli.tasks.tokenization import SPACE_MARK, readable_piece

HEADINGS: dict[str, tuple[str, str]] = {
    "bert": ("BERT", "both sides"),
    "gpt_left": ("GPT", "left context only"),
    "gpt_whole": ("GPT", "whole sentence"),
    "bart": ("BART", "span, any length"),
}
NOTHING = "(nothing)"  # BART may restore a blank as no text at all
REWRITE_STYLE = "yellow"
WINNER_STYLE = "bold green"
MASK_STYLE = "reverse cyan"


def prediction_label(prediction: MaskPrediction) -> str:
    """How a reader sees the candidate: `␣duck` for GPT-2's Ġduck, `was·p` for WordPiece was ##p."""
    if not prediction.pieces:
        return prediction.word or NOTHING
    if any(piece.startswith("##") and len(piece) > 2 for piece in prediction.pieces):
        return "".join(readable_piece(piece) for piece in prediction.pieces)
    # A byte-level piece without its space (GPT-2's `p` after `␣was`) already reads as joined.
    return with_space_mark(prediction.pieces, readable_piece(prediction.pieces[0], prediction.text))


def with_space_mark(pieces: list[str], shown: str) -> str:
    """`␣lima` where the first piece carries a leading space (Ġlima) but the text shown has dropped it (BART's
    span is read off the text, trimmed): `Ġlima` and `lima` are different tokens, never two identical rows."""
    if pieces and pieces[0][:1] in ("Ġ", "▁") and len(pieces[0]) > 1 and not shown.startswith(SPACE_MARK):
        return SPACE_MARK + shown.lstrip()
    return shown


def marked_text(result: FillMaskResult, highlight: int | None = None) -> Text:
    """The input with its masks picked out (the one being discussed brighter than the rest)."""
    text = Text()
    cursor = 0
    for slot in result.masks:
        text.append(result.text[cursor : slot.start])
        style = MASK_STYLE if highlight in (None, slot.index) else "cyan"
        text.append(result.text[slot.start : slot.end], style=style)
        cursor = slot.end
    text.append(result.text[cursor:])
    return text


def _winner(slot: MaskSlot) -> str | None:
    """The word the most informed view chose: GPT-2 on the whole sentence, else BERT."""
    for column in (slot.gpt_whole, slot.bert):
        if column is not None and column.predictions:
            return column.predictions[0].word
    return None


def _cell(prediction: MaskPrediction, winner: str | None, top: bool) -> Text:
    label = prediction_label(prediction)
    if len(prediction.pieces) > 1 and " " in prediction.word.strip():
        # a BART span of several words
        label = f"{with_space_mark(prediction.pieces, prediction.word)} ({len(prediction.pieces)} tokens)"
    elif len(prediction.pieces) > 1:
        label += f" ({len(prediction.pieces)} pieces)"
    style = WINNER_STYLE if winner is not None and prediction.word == winner else ("bold" if top else "")
    return Text(label, style=style)


def slot_table(slot: MaskSlot) -> Table:
    """One row per rank, two cells (candidate, probability) per view; the --targets words below a rule."""
    columns = slot.columns()
    table = Table(show_edge=False, pad_edge=False, header_style="bold", box=None, padding=(0, 1))
    table.add_column("#", justify="right", style="dim")
    for column in columns:
        family, view = HEADINGS[column.column]
        # Two short header lines (family, view), so four views fit side by side in 80 columns; the model names
        # are on a line of their own above the tables (NamesLine), where a long one is never cut mid-word.
        table.add_column(Text.assemble((family, "bold"), "\n", (view, "dim italic")), overflow="fold")
        table.add_column(
            Text("p(sent.)" if column.column == "gpt_whole" else "p", style="bold"), justify="right", no_wrap=True
        )
    winner = _winner(slot)
    rows = shown_rows(slot)
    for rank in range(rows):
        cells: list[Text | str] = [str(rank + 1)]
        for column in columns:
            if rank < len(column.predictions) and rank < rows:
                prediction = column.predictions[rank]
                cells += [_cell(prediction, winner, rank == 0), format_prob(prediction.prob)]
            elif rank == 0 and column.column == "bart":
                cells += [Text("none: every beam rewrote the text", style=REWRITE_STYLE), ""]
            else:
                cells += ["", ""]
        table.add_row(*cells)
    if any(c.targets for c in columns):
        table.add_section()
        for index in range(len(columns[0].targets)):
            cells = ["target"]
            for column in columns:
                prediction = column.targets[index]
                cells += [_cell(prediction, winner, False), format_prob(prediction.prob)]
            table.add_row(*cells)
    return table


def shown_rows(slot: MaskSlot) -> int:
    """Rows of the table: the other columns' top-k; the whole-sentence ranking of the larger pool is cut there."""
    others = [len(c.predictions) for c in slot.columns() if c.column != "gpt_whole"]
    return max(max(others) if others else len(slot.gpt_whole.predictions if slot.gpt_whole else []), 1)


def pool_note(slot: MaskSlot) -> Text | None:
    """What the whole-sentence column's p is a share of."""
    whole = slot.gpt_whole
    if whole is None:
        return None
    rows = shown_rows(slot)
    text = Text(f"GPT whole sentence: p(sent.) ranks among {len(whole.predictions)} candidates", style="dim")
    sources = [
        f"the {CHOICE_POOL} most likely of {' and of '.join(names)}"
        for names in [
            [
                HEADINGS[c.column][0] + (" left" if c.column == "gpt_left" else "")
                for c in (slot.bert, slot.gpt_left)
                if c is not None
            ]
        ]
        if names
    ]
    if whole.targets:
        sources.append("--targets")
    if sources:
        text.append(" (" + ", ".join(sources) + ")", style="dim")
    if len(whole.predictions) > rows:
        text.append(f"; the top {rows} are shown, --json lists all", style="dim")
    return text


def verdict(slot: MaskSlot, result: FillMaskResult | None = None) -> Text | None:
    """One sentence on what the right-hand context did at this blank: only what is true of this input."""
    left, whole, bert = slot.gpt_left, slot.gpt_whole, slot.bert
    left_top, bert_top = _top_word(left), _top_word(bert)
    if left_top is None or whole is None or not whole.predictions:
        return None
    top_left = left_top
    left_word, whole_word = top_left.word, whole.predictions[0].word
    text = Text()
    if top_left.special:
        # GPT's next token would end the text; the fillings take its most likely word instead, consistently.
        text.append(
            f"GPT's most likely next token is {top_left.word} (p {format_prob(top_left.prob)}): it would "
            "end the text here. Fillings use words only, "
        )
        word = next((p.word for p in left.predictions if not p.special), None)
        left_word = word if word is not None else left_word
        text.append(f"so its left-context word is {left_word!r}. ")
    right_hand = result is None or bool(result.text[slot.end :].strip())
    if not right_hand and whole.predictions[0].joins_previous:
        # A piece that continues the word before (`p` after `frobnicate `) drops the space before the blank: GPT
        # then reads the word before in other tokens, and that sentence's likelihood is no next-token probability.
        assert result is not None
        before = result.text[: slot.start].split()
        joined = (before[-1] if before else "") + whole_word
        text.append(
            f"Nothing follows the blank, yet GPT's whole-sentence ranking is led by {whole_word!r}, a piece that "
            f"joins the word before it ({joined!r}, the space before the blank dropped): GPT reads that word in "
            "other tokens then, so this is the likelihood of another sentence, not a next-token probability."
        )
    elif not right_hand:
        text.append(
            "Nothing follows the blank, so the whole sentence adds no context: GPT's whole-sentence ranking is "
            f"each candidate's probability after the left context, led by {whole_word!r}."
        )
    elif left_word != whole_word:
        text.append("The right-hand context changes GPT's answer: ", style="bold")
        text.append(f"{left_word!r} from the left context alone, ")
        text.append(f"{whole_word!r}", style=WINNER_STYLE)
        text.append(" once it reads the whole sentence.")
    else:
        text.append(f"GPT says {whole_word!r} from the left context alone and from the whole sentence.")
    if bert_top is not None:
        # GPT's word after a glued mask ("the [MASK],[MASK]") keeps the space it brings; BERT's never has one.
        agrees = bert_top.word.strip() == whole_word.strip()
        text.append(f" BERT's top guess {bert_top.word!r} " + ("agrees." if agrees else "differs."))
    if slot.bart is not None and slot.bart.predictions:
        span = slot.bart.predictions[0].word
        text.append(f" BART writes {span!r}" + (" too." if span.strip() == whole_word.strip() else "."))
    return text


def _top_word(column: MaskColumn | None) -> MaskPrediction | None:
    """A column's best prediction that is text (not a padded vocabulary row shown as <id N>)."""
    if column is None:
        return None
    return next((p for p in column.predictions if not p.undecodable), None)


FILLING_MEASURES: dict[str, str] = {
    "bert": "Σ log p(word)",  # the chosen tokens' log-probabilities, each at its blank
    "gpt_left": "Σ log p(word)",
    "gpt_whole": "log p(sentence)",  # the whole sentence's log-likelihood
    "bart": "log p(output)",  # BART writing that whole text
}


def filling_lines(result: FillMaskResult) -> Group:
    """Each view's filled-in sentence and its score, each score labelled for what it measures.

    One line of prose per view (labels padded to one width), so a narrow terminal wraps it as text and never
    splits a sentence across the cells of a grid."""
    labels = {f.column: " ".join(HEADINGS[f.column]) for f in result.fillings}
    width = max((len(label) for label in labels.values()), default=0)
    lines: list[RenderableType] = []
    for filling in result.fillings:
        # Each phrase moves whole to the next line where it does not fit (Phrases): never `Σ log` / `p(word)`.
        phrases = [(" · ", Text(f"{FILLING_MEASURES[filling.column]} {format_nats(filling.logprob)}", style="dim"))]
        if len(result.masks) > 1 and filling.column == "bert":
            phrases.append(
                (" · ", Text("filled in order " + ", ".join(f"#{m + 1}" for m in filling.order), style="dim"))
            )
        if len(result.masks) > 1 and filling.column == "gpt_whole":
            phrases.append(
                (
                    " · ",
                    Text(f"the best of a beam search ({JOINT_BEAMS} beams) over the blanks' candidates", style="dim"),
                )
            )
        line = Text(labels[filling.column].ljust(width) + "  ", style="bold")
        line.append(filling.text)
        lines.append(Phrases([("", line), *[("  " if k == 0 else sep, text) for k, (sep, text) in enumerate(phrases)]]))
    return Group(*lines)


def column_note(columns: list[MaskColumn]) -> Phrases:
    names = {c.column for c in columns}
    parts = []
    if "bert" in names:
        parts.append("BERT p: softmax over the whole vocabulary")
    if "gpt_left" in names:
        parts.append("GPT left p: next-token probability from the words before the blank")
    if "gpt_whole" in names:
        parts.append(
            "GPT whole p(sent.): each candidate's sentence likelihood as a share of all the candidates' sentences"
        )
    if "bart" in names:
        parts.append(
            "BART p: one row per span, from the best beam that kept the text and wrote it there, the probability of "
            "writing that beam's whole text; rows in the beam search's order (its beam score), so p need not fall"
        )
    # A target of several pieces is one word; how each column chains its pieces' probabilities.
    several = {c.column for c in columns for p in [*c.predictions, *c.targets] if len(p.token_ids) > 1}
    if "bert" in several:
        parts.append(
            "BERT, a word of k pieces: p(piece 1 | k masks) × p(piece 2 | piece 1 shown, the rest masked) × "
            "…, left to right"
        )
    if "gpt_left" in several:
        parts.append("GPT left, a word of k pieces: p(piece 1 | left) × p(piece 2 | left, piece 1) × … (chain rule)")
    # The measures of the filled-in lines that this screen shows (BART's log p(output) is its p line's).
    measures = []
    if names & {"bert", "gpt_left"}:
        measures.append("Σ log p(word): the filled words' log-probabilities")
    if "gpt_whole" in names:
        measures.append("log p(sentence): the whole sentence's log-likelihood")
    if measures:
        parts.append("; ".join(measures))
    return Phrases([(" · " if index else "", Text(part)) for index, part in enumerate(parts)], style="dim")


def bart_beams_table(infilling: SpanInfilling, blanks: int) -> Table:
    """Every beam of BART's search: the spans it put in the blanks, the probability of its whole output (raw
    model, teacher-forced) and beam search's own score. A beam that rewrote the text around the blanks has no
    span to show: it is marked, with what it wrote instead."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold", box=None, padding=(0, 1))
    table.add_column("beam", justify="right", style="dim")
    for blank in range(blanks):
        table.add_column(f"mask #{blank + 1}" if blanks > 1 else "span in the blank")
    table.add_column("p(output)", justify="right")
    table.add_column("beam score", justify="right")
    for beam in infilling.beams:
        score = f"{beam.sequence_score:.4f}"
        if beam.spans is None:
            wrote = Text("✗ rewrote the text: ", style=REWRITE_STYLE)
            wrote.append(beam.output, style="dim")
            table.add_row(str(beam.rank), wrote, *[""] * (blanks - 1), format_prob(beam.prob), score, style="dim")
            continue
        spans = [
            Text(
                with_space_mark(span.pieces, span.text) if span.text else NOTHING,
                style="bold" if beam is infilling.fillings[0] else "",
            )
            for span in beam.spans
        ]
        table.add_row(str(beam.rank), *spans, format_prob(beam.prob), score)
    return table


def bart_section(result: FillMaskResult) -> list[RenderableType]:
    infilling = result.bart
    if infilling is None:
        return []
    kept, rewrites = len(infilling.fillings), len(infilling.rewrites)
    heading = Text(f"BART · {infilling.model}: beam search, {len(infilling.beams)} beams", style="bold underline")
    parts: list[RenderableType] = [Text(""), heading, bart_beams_table(infilling, len(result.masks))]
    summary = f"{kept} of {len(infilling.beams)} beams kept the text around the blanks"
    if rewrites:
        summary += f"; {rewrites} rewrote it (marked ✗), so no span can be read off them"
    parts.append(Text(summary + ".", style=REWRITE_STYLE if not kept else "dim"))
    parts.append(
        Text(
            "p(output): probability that BART writes exactly that text, from the masked text (raw model, "
            "teacher-forced) · beam score: " + infilling.sequence_score,
            style="dim",
        )
    )
    return parts


def context_lines(slot: MaskSlot) -> list[Text]:
    """With several blanks, the text each column read for this one (the blank as ___): GPT's left column holds its
    own earlier fills, the whole-sentence column the joint filling of the other blanks."""
    lines = []
    for column in slot.columns():
        if column.context is None or column.column == "bert":
            continue
        family, view = HEADINGS[column.column]
        line = Text(f"  {family} {view} read: ", style="dim")
        line.append(column.context)
        lines.append(line)
    return lines


def fill_mask_view(result: FillMaskResult, compact: bool = False) -> RenderableType:
    """A single text: the masked sentence, which models read it, one table per blank, then each view's filled-in
    sentence.

    `compact` (compare's default screen) leaves out BART's table of beams and the notes on each column."""
    parts: list[RenderableType] = [marked_text(result)]
    if result.models:
        # In the order of the views: a local folder's name (`gpt2-finetuned-squad-v2`) is longer than a view's
        # column, whose header would fold it mid-word.
        parts.append(
            NamesLine(
                [
                    (family_title(family), result.models[family])
                    for family in ("bert", "gpt", "bart")
                    if family in result.models
                ]
            )
        )
    several = len(result.masks) > 1
    for slot in result.masks:
        parts.append(Text(""))
        if several:
            heading = Text(f"mask #{slot.index + 1}: ", style="bold")
            heading.append_text(marked_text(result, slot.index))
            parts.append(heading)
        parts.append(slot_table(slot))
        if several:
            parts += context_lines(slot)
        if not compact:
            note = pool_note(slot)
            if note is not None:
                parts.append(note)
        note = verdict(slot, result)
        if note is not None:
            parts.append(note)
    if not compact:
        parts += bart_section(result)
    parts.append(Text(""))
    parts.append(Text("best joint filling" if several else "filled in", style="bold underline"))
    parts.append(filling_lines(result))
    if result.masks:  # what each p column means, on compare's compact screen too
        parts.append(column_note(result.masks[0].columns()))
    return Group(*parts)


def fill_mask_lines_view(results: list[FillMaskResult], per_blank: int = 1) -> RenderableType:
    """Many texts: one row per line with each view's `per_blank` best guesses at every blank, errors in place, and a
    line that says how many each cell holds."""
    shown = next((r for r in results if r.error is None and r.masks), None)
    views = [c.column for c in shown.masks[0].columns()] if shown else []
    table = Table(header_style="bold", show_lines=False)
    table.add_column("line", justify="right", style="dim")
    table.add_column("text", overflow="ellipsis", no_wrap=True, max_width=60)
    for view in views:
        family, label = HEADINGS[view]
        table.add_column(Text.assemble((family, "bold"), "\n", (label, "dim italic")), overflow="fold")
    for result in results:
        cells: list[Text | str] = [str(result.line), marked_text(result) if result.masks else Text(result.text)]
        if result.error is not None:
            cells.append(Text(f"error: {result.error}", style="red"))
            cells += [""] * (len(views) - 1)
        else:
            for view in views:
                cell = Text()
                for slot in result.masks:
                    column = getattr(slot, view)
                    if cell:
                        cell.append("; " if per_blank == 1 else "\n")
                    if per_blank > 1 and len(result.masks) > 1:
                        cell.append(f"#{slot.index + 1}\n", style="dim")
                    if column is None or not column.predictions:
                        cell.append("–")
                        continue
                    for rank, prediction in enumerate(column.predictions[:per_blank]):
                        if rank:
                            cell.append("\n")
                        cell.append(prediction_label(prediction), style="bold" if rank == 0 else "")
                        cell.append(f" {format_prob(prediction.prob)}", style="dim")
                cells.append(cell)
        table.add_row(*cells)
    if per_blank == 1:
        how = "each cell: the best candidate of each blank; -k N shows the N best"
    else:
        how = f"each cell: the {per_blank} best candidates of each blank, best first"
        if "bart" in views:
            how += " (BART: different spans, in its beam search's order)"
    return Group(table, Text(how, style="dim"))
