"""`gbcli fill-mask`: the blanks of one text, or of every line of a file (batched, streamed as JSON Lines)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gbcli.cli.options import ForceOption, JsonOption, ModelChoice, OutputOption, ResumeOption, model_options
from gbcli.cli.reporting import handle_errors, interrupt_exits_130, print_warnings
from gbcli.cli.streams import (
    Records,
    check_output_options,
    json_lines,
    output_job,
    print_output_summary,
    under_torchrun_needs_output,
)
from gbcli.errors import usage_error
from gbcli.tasks.finite import check_finite

if TYPE_CHECKING:
    from gbcli.jobs.inputs import FileLines


@handle_errors
@model_options
def fill_mask_command(
    text: Annotated[
        str | None,
        typer.Argument(help="Text with one or more [MASK] or <mask> blanks, or - to read stdin.", show_default=False),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help="One text per line (- = stdin lines; empty lines skipped), batched; JSON Lines with --json.",
            show_default=False,
        ),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            "-k",
            help="How many candidates per blank and model (default 5; the "
            "--file table shows the best one unless -k is given).",
            show_default=False,
        ),
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets",
            help="Also score these words in every column: WORD[,WORD...]; a word of several pieces is scored whole.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per forward pass with --file.")] = 32,
    output: OutputOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Fill in the blanks: BERT reads both sides of each mask, GPT-2 only the words before it.

    With BART (--with-bart), each blank gets spans of any length from beam search over the restored text.
    """
    from gbcli.jobs.inputs import read_text, valid_argument
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.masking import fill_mask_view
    from gbcli.tasks.masking import DEFAULT_TOP_K, check_fill_options, fill_mask, parse_targets
    from gbcli.tasks.masking.masks import split_masks

    if (text is None) == (file is None):
        raise usage_error(
            "Give either a TEXT or --file, not both." if text is not None else "No text given.",
            'For example: gbcli fill-mask "the [MASK] quacks in the park ."',
        )
    check_output_options("fill-mask", output, resume, force, file)
    under_torchrun_needs_output("fill-mask", output, file)
    shown_in_table = 1 if top_k is None else top_k  # --file's table: one line per text, unless asked for more
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    check_fill_options(top_k, batch_size)
    words = parse_targets(None if targets is None else valid_argument(targets, "--targets"))
    families = choice.families()
    if file is not None:
        _fill_mask_file(
            file,
            choice,
            families,
            top_k,
            words,
            batch_size,
            json_output,
            output=output,
            resume=resume,
            force=force,
            shown=shown_in_table,
        )
        return
    source = read_text(text)
    split_masks(source)  # no mask, or too many: said before any model (or torch) loads
    columns = choice.load(families)
    with interrupt_exits_130():
        result = fill_mask({lm.family: lm for lm in columns}, source, top_k, words)
    check_finite(result, columns)
    print_warnings(result.warnings)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(fill_mask_view(result))


def _fill_mask_file(
    file: str,
    choice: ModelChoice,
    families,
    top_k: int,
    words: list[str],
    batch_size: int,
    json_output: bool,
    *,
    output: str | None,
    resume: bool,
    force: bool,
    shown: int = 1,
) -> None:
    """`fill-mask --file`: every line's blanks, JSON Lines streamed as they come (or into --output), or one table
    at the end with the `shown` best candidates of each blank."""
    from gbcli.jobs.inputs import FileLines, read_lines
    from gbcli.jobs.plan import fill_mask_file
    from gbcli.render.common import stderr_console, stdout_console
    from gbcli.render.masking import fill_mask_lines_view
    from gbcli.render.progress import line_progress
    from gbcli.tasks.masking import MASK_PATTERN, MASK_SPELLINGS

    # --output reads the file a chunk at a time (memory does not grow with it); a table needs every line at once.
    lines = FileLines(file) if output is not None else read_lines(file)
    if not any(MASK_PATTERN.search(line) for line in lines):  # before any model loads
        raise usage_error(
            f"No line of {'standard input' if file == '-' else repr(file)} has a mask to fill.",
            f'Write {MASK_SPELLINGS} where a word is missing, e.g. "the [MASK] quacks in the park ."',
        )
    if output is not None:
        _fill_mask_into(
            output, file, lines, choice, families, top_k, words, batch_size, json_output, resume=resume, force=force
        )
        return
    columns = choice.load(families)
    records = Records(json_lines if json_output else None)
    with interrupt_exits_130(), line_progress(len(lines), "filling masks") as advance:
        tally = fill_mask_file(
            columns,
            lines,
            top_k,
            words,
            batch_size=batch_size,
            on_results=records,
            on_progress=advance,
            on_warnings=print_warnings,
        )
    if not json_output:
        stdout_console().print(fill_mask_lines_view(records.kept, shown))
    some_failed = tally.check()
    if some_failed:
        stderr_console().print(f"[yellow]{some_failed}[/]")


def _fill_mask_into(
    output: str,
    file: str,
    lines: FileLines,
    choice: ModelChoice,
    families,
    top_k: int,
    words: list[str],
    batch_size: int,
    json_output: bool,
    *,
    resume: bool,
    force: bool,
) -> None:
    """`fill-mask --file --output`: the records into the file (here, or shared among torchrun's processes); rank 0
    then says how many lines it holds and which could not be filled, as the streamed run does."""
    from gbcli.jobs.jsonl_output import FILL_MASK_RECORDS, each_record
    from gbcli.jobs.plan import LineTally, fill_mask_plan
    from gbcli.render.common import stderr_console

    resumed = output_job(
        output,
        FILL_MASK_RECORDS,
        resume=resume,
        force=force,
        options=choice.load_options(),
        label="filling masks",
        plan=lambda options: fill_mask_plan(choice.load(families, options), lines, top_k, words, batch_size, output),
    )
    if resumed is None:
        return
    tally = LineTally()
    warnings: list[str] = []
    for record in each_record(output, FILL_MASK_RECORDS):
        if not tally.done:
            warnings = record["warnings"]
        tally.done += 1
        if record["error"] is not None:
            tally.failures.append((record["line"], record["error"]))
    print_warnings(warnings)
    print_output_summary(file, output, tally.done, resumed, json_output=json_output, failed=len(tally.failures))
    some_failed = tally.check()
    if some_failed:
        stderr_console().print(f"[yellow]{some_failed}[/]")
