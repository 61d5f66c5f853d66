"""`gbcli score` and `gbcli pairs`: log-probabilities of texts, and which sentence of a minimal pair each model
prefers; both over one text or every line of a file (into --output, also under torchrun)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from gbcli.cli.options import ForceOption, ModelChoice, OutputOption, ResumeOption, model_options
from gbcli.cli.reporting import (
    _escape,
    handle_errors,
    interrupt_exits_130,
    print_warnings,
    stderr_console,
    warn_unknown,
)
from gbcli.cli.streams import (
    Records,
    check_output_options,
    json_lines,
    output_job,
    print_output_summary,
    under_torchrun_needs_output,
)
from gbcli.errors import usage_error
from gbcli.loading.families import LoadOptions
from gbcli.tasks.finite import check_finite

if TYPE_CHECKING:
    from gbcli.jobs.pair_file import FileRun, PairFields
    from gbcli.loading.models import LoadedModel
    from gbcli.tasks.pairs import PairsSummary
    from gbcli.tasks.scoring import ScoreSettings

# The scoring conventions, the same on both commands.
BosOption = Annotated[
    bool,
    typer.Option(
        "--bos/--no-bos",
        help="GPT: predict the first token after the BOS token "
        "(<|endoftext|>), so it is scored too; --no-bos leaves it unscored.",
    ),
]
PllOption = Annotated[
    str,
    typer.Option(
        "--pll",
        help="BERT: original (Salazar et al. 2020) or within-word (Kauf and Ivanova "
        "2023: also mask the later pieces of the same word).",
    ),
]
BitsOption = Annotated[bool, typer.Option("--bits", help="Log-probabilities in bits (base 2) instead of nats.")]


@handle_errors
@model_options
def score(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to score, each on its own; - reads one text from stdin.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Score each non-empty line of this file (- = stdin lines).")
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            help="GPT: how far the window moves over a text longer than the context (default: half the context).",
            show_default=False,
        ),
    ] = None,
    bos: BosOption = True,
    pll: PllOption = "original",
    tokens: Annotated[bool, typer.Option("--tokens", help="Show each token's surprisal, coloured.")] = False,
    words: Annotated[
        bool,
        typer.Option(
            "--words",
            help="Show and export each word's surprisal: the tokenizer's "
            "own words, their pieces' log-probabilities summed.",
        ),
    ] = False,
    bits: BitsOption = False,
    csv_output: Annotated[
        bool,
        typer.Option(
            "--csv", help="Print CSV: a row per text and model (per token with --tokens, per word with --words)."
        ),
    ] = False,
    output: OutputOption = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    *,
    choice: ModelChoice,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON Lines, one record per text.")] = False,
) -> None:
    """GPT-2's perplexity and BERT's pseudo-perplexity of each text (two different scales)."""
    from gbcli.jobs.inputs import numbered_texts
    from gbcli.jobs.plan import score_in_batches
    from gbcli.render.common import stdout_console
    from gbcli.render.scoring import progress_bar, score_view
    from gbcli.tasks.scoring import ScoreSettings, unknown_token_warnings

    if json_output and csv_output:
        raise usage_error("--json and --csv cannot be combined.", "Choose one output format.")
    check_output_options("score", output, resume, force, file)
    if output is not None and csv_output:
        raise usage_error(
            "--output writes JSON Lines: it cannot go with --csv.",
            "Drop --csv (the file holds every number --json prints), or drop --output.",
        )
    under_torchrun_needs_output("score", output, file)
    if csv_output and tokens and words:
        raise usage_error("--csv has a row per token or a row per word, not both.", "Drop --tokens or --words.")
    families = choice.families()
    settings = ScoreSettings.from_options(
        bos=bos, stride=stride, pll=pll, with_tokens=tokens, with_words=words, bits=bits
    )
    if file is not None and output is not None:
        _score_into(output, file, settings, resume=resume, force=force, choice=choice, json_output=json_output)
        return
    items = numbered_texts(texts, file)
    if file is None and len(items) > 1 and all(len(text.split()) == 1 for _, text in items):
        # `gbcli score rome is the capital`: the shell made four one-word texts of what was meant as one.
        joined = " ".join(text for _, text in items)
        print_warnings(
            [
                f"every text is a single word, so {len(items)} one-word texts are scored separately; "
                f'to score one sentence, quote it: gbcli score "{joined}"'
            ]
        )
    columns = choice.load(families)
    records = _score_records(json_output, csv_output, tokens, words)
    streaming = json_output or csv_output
    # A bar redrawn between streamed records would garble a terminal; on a pipe or a file it costs nothing. A long
    # text is long work too (BERT: a masked copy per token), so its models' sequences have bars of their own
    # (with NO_COLOR, plain lines of the same counts: gbcli.render.progress).
    show_progress = stderr_console().is_terminal and not (streaming and sys.stdout.isatty())
    with (
        interrupt_exits_130(),
        progress_bar(len(items) if file is not None else 0, show_progress, sequences=True) as advance,
    ):
        totals = score_in_batches(columns, items, settings, on_results=records, on_progress=advance)
    if not streaming:
        stdout_console().print(score_view(records.kept, seconds=dict(totals.seconds), passes=dict(totals.passes)))
    print_warnings(unknown_token_warnings(totals.unknown))


def _score_into(
    output: str,
    file: str,
    settings: ScoreSettings,
    *,
    resume: bool,
    force: bool,
    choice: ModelChoice,
    json_output: bool,
) -> None:
    """`score --file --output`: the records into the file (here, or shared among torchrun's processes), the file
    read a chunk at a time; then what rank 0 says about it."""
    from gbcli.jobs.inputs import FileLines
    from gbcli.jobs.jsonl_output import SCORE_RECORDS, each_record
    from gbcli.jobs.plan import score_plan, unknown_in
    from gbcli.tasks.scoring import unknown_token_warnings

    families = choice.families()
    texts = FileLines(file)
    resumed = output_job(
        output,
        SCORE_RECORDS,
        resume=resume,
        force=force,
        options=choice.load_options(),
        plan=lambda options: score_plan(choice.load(families, options), texts, settings, output),
    )
    if resumed is None:
        return
    lines = 0
    unknown = []
    for record in each_record(output, SCORE_RECORDS):
        lines += 1
        unknown.extend(unknown_in([record]))
    print_output_summary(file, output, lines, resumed, json_output=json_output)
    print_warnings(unknown_token_warnings(unknown))


def _score_records(json_output: bool, csv_output: bool, tokens: bool, words: bool) -> Records:
    """JSON Lines or CSV rows written as each batch is scored, else the records kept for the table."""
    from gbcli.render.scoring import csv_header, write_csv

    if json_output:
        return Records(json_lines)
    if not csv_output:
        return Records()
    header_written = False

    def csv_rows(batch: list) -> None:
        nonlocal header_written
        if not header_written:  # after the first batch is checked finite: a refused run leaves stdout empty
            csv_header(tokens, with_words=words)
            header_written = True
        write_csv(batch, tokens, with_words=words)

    return Records(csv_rows)


@handle_errors
@model_options
def pairs(
    good: Annotated[
        str | None, typer.Argument(help="The good (grammatical, expected) sentence.", show_default=False)
    ] = None,
    bad: Annotated[str | None, typer.Argument(help="The bad sentence of the pair.", show_default=False)] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help="Pairs, one a line: TSV (good, bad; an optional header) or "
            "JSON Lines with BLiMP's fields (sentence_good, sentence_bad, UID ...).",
            show_default=False,
        ),
    ] = None,
    file_format: Annotated[
        str, typer.Option("--format", help="Of --file: auto (by extension, else by the first line), tsv or jsonl.")
    ] = "auto",
    good_field: Annotated[
        str,
        typer.Option(
            "--good-field", help="--file: the good sentence's field (a JSON key, or a column named in a TSV header)."
        ),
    ] = "sentence_good",
    bad_field: Annotated[str, typer.Option("--bad-field", help="--file: the bad sentence's field.")] = "sentence_bad",
    group_field: Annotated[
        str | None,
        typer.Option(
            "--group-field",
            help="--file: accuracy per value of this field (default: the "
            "first of UID, phenomenon, linguistics_term, field the file has).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="--file: write each pair's result to this file as JSON Lines (stdout keeps the accuracy).",
            show_default=False,
        ),
    ] = None,
    resume: ResumeOption = False,
    force: ForceOption = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="--file: pairs scored together (both sentences of each share the model's batches).",
        ),
    ] = 32,
    bos: BosOption = True,
    pll: PllOption = "original",
    words: Annotated[
        bool | None,
        typer.Option(
            "--words/--no-words",
            help="Word surprisals of both sentences, aligned (default: on for one pair, off for --file).",
            show_default=False,
        ),
    ] = None,
    bits: BitsOption = False,
    *,
    choice: ModelChoice,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (--file: JSON Lines, a record per pair and the accuracy last).")
    ] = False,
) -> None:
    """Minimal pairs: which of two sentences each model prefers, and at which words."""
    from gbcli.jobs.inputs import read_text
    from gbcli.jobs.pair_file import PairFields
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.pairs import pair_view
    from gbcli.tasks import pairs as task
    from gbcli.tasks.scoring import ScoreSettings

    if file is not None and (good is not None or bad is not None):
        raise usage_error("Give a pair as two arguments or --file, not both.")
    check_output_options("pairs", output, resume, force, file)
    families = choice.families()
    settings = ScoreSettings.from_options(
        bos=bos,
        stride=None,
        pll=pll,
        with_tokens=False,
        with_words=words if words is not None else file is None,
        bits=bits,
    )
    options = choice.load_options()
    if file is not None:
        _pairs_file(
            file,
            PairFields(good_field, bad_field, group_field),
            file_format,
            output,
            resume,
            force,
            batch_size,
            settings,
            options,
            load=lambda options: choice.load(families, options),
            json_output=json_output,
        )
        return
    if good is None or bad is None:
        raise usage_error(
            "Give two sentences (good, then bad), or --file.",
            'e.g. gbcli pairs "the keys are here ." "the keys is here ."',
        )
    pair = task.PairInput(line=1, good=read_text(good, "good sentence"), bad=read_text(bad, "bad sentence"))
    task.check_pair_text(pair)
    columns = choice.load(families, options)
    task.check_pair_fits(pair, columns)
    warn_unknown(columns, [pair.good, pair.bad])
    with interrupt_exits_130():
        (result,) = task.score_pairs(columns, [pair], settings)
        check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(pair_view(result, task.PAIR_NOTE))


def _pairs_file(
    path: str,
    fields: PairFields,
    file_format: str,
    output: str | None,
    resume: bool,
    force: bool,
    batch_size: int,
    settings: ScoreSettings,
    options: LoadOptions,
    *,
    load: Callable[[LoadOptions], list[LoadedModel]],
    json_output: bool,
) -> None:
    """`pairs --file`: score the pairs a chunk at a time (into --output here or shared among torchrun's processes,
    or streamed), then print the accuracy."""
    from gbcli.jobs.plan import failed_lines_error
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.pairs import summary_view
    from gbcli.tasks import pairs as task

    under_torchrun_needs_output("pairs", output, path)
    if output is not None:
        finished = _pairs_into(
            path, fields, file_format, output, resume, force, batch_size, settings, options, load=load
        )
        if finished is None:  # not rank 0: only rank 0 prints
            return
        run, resumed, columns = finished
    else:
        run, columns = _pairs_file_here(
            path, fields, file_format, batch_size, settings, load=lambda: load(options), json_output=json_output
        )
        resumed = 0
    summary: PairsSummary = task.summarize(run.tally, path, resumed, run.failures, run.group_field, columns, settings)
    if json_output:
        print_json(summary, lines=output is None)
    else:
        stdout_console().print(summary_view(summary))
    if run.failures:
        raise failed_lines_error(path, run.failures, summary.pairs)


def _pairs_into(
    path: str,
    fields: PairFields,
    file_format: str,
    output: str,
    resume: bool,
    force: bool,
    batch_size: int,
    settings: ScoreSettings,
    options: LoadOptions,
    *,
    load: Callable[[LoadOptions], list[LoadedModel]],
) -> tuple[FileRun, int, list[LoadedModel]] | None:
    """`pairs --file --output` in one process or as one of torchrun's; on rank 0 the run with its tally read back
    from the finished file, how many records an earlier run had written, and the models."""
    from gbcli.jobs import pair_file
    from gbcli.jobs.jsonl_output import PAIR_RECORDS, each_record
    from gbcli.jobs.plan import pairs_plan
    from gbcli.tasks import pairs as task

    entries, group_field = pair_file.read_pair_file(path, file_format, fields)
    known: dict = {}  # what the plan found, for the summary

    def plan(options: LoadOptions):
        known["columns"] = columns = load(options)
        known["run"] = run = pair_file.prepare_file_run(columns, entries, group_field)
        return pairs_plan(columns, run, settings, batch_size, output)

    resumed = output_job(
        output,
        PAIR_RECORDS,
        resume=resume,
        force=force,
        options=options,
        plan=plan,
        announce=lambda: _say_failures(known["run"]),
    )
    if resumed is None:
        return None
    run = known["run"]
    groups = {pair.line: pair.group for pair in run.pairs}
    for record in each_record(output, PAIR_RECORDS):
        _, verdicts = task.outcomes(record)
        run.tally.add(groups.get(record["line"]), verdicts)  # grouped as this run groups (--group-field may change)
    return run, resumed, known["columns"]


def _say_failures(run: FileRun) -> None:
    for failure in run.failures:  # all known before any scoring: say them at once
        stderr_console().print(f"[bold red]error:[/] line {failure.line}: {_escape(failure.message)}")


def _pairs_file_here(
    path: str,
    fields: PairFields,
    file_format: str,
    batch_size: int,
    settings: ScoreSettings,
    *,
    load: Callable[[], list[LoadedModel]],
    json_output: bool,
) -> tuple[FileRun, list[LoadedModel]]:
    """`pairs --file` in one process, without --output: the records streamed as JSON Lines as they come (with
    --json), the accuracy added up."""
    from gbcli.jobs import pair_file
    from gbcli.jobs.plan import score_pair_file
    from gbcli.render.scoring import progress_bar

    entries, group_field = pair_file.read_pair_file(path, file_format, fields)
    columns = load()
    run = pair_file.prepare_file_run(columns, entries, group_field)
    _say_failures(run)
    show_progress = stderr_console().is_terminal and not (json_output and sys.stdout.isatty())
    with interrupt_exits_130(), progress_bar(len(run.pairs), show_progress) as advance:
        score_pair_file(
            columns,
            run,
            settings,
            batch_size,
            on_results=json_lines if json_output else lambda results: None,
            on_progress=advance,
        )
    return run, columns
