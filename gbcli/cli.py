"""The gbcli command line: parse options, call one task, render its result, map errors to exit codes.

No model logic lives here, and nothing here imports torch or transformers at module level, so that
`gbcli --help` stays instant.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from typer._click import exceptions as click_errors  # Typer 0.29 vendors Click: its exceptions live here
from typer.core import TyperGroup

from gbcli import __version__
from gbcli.errors import INTERRUPTED, USAGE, GbcliError, explain_os_error, usage_error
from gbcli.finite import check_finite
from gbcli.models import FAMILIES, FAMILY_INFO, Family, LoadedModel, LoadOptions


class GbcliGroup(TyperGroup):
    """The command group, whose usage errors (a bad option value, an unknown option or command) end like every
    other error: an `error:` line and a `hint:` line on stderr, exit 2, instead of Typer's boxed panel."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError:  # plain `gbcli`: Typer has printed the help already
            if not standalone_mode:
                raise
            sys.exit(USAGE)
        except click_errors.ClickException as error:
            if not standalone_mode:
                raise
            report_click_error(error)
            sys.exit(error.exit_code)
        except typer.Abort:  # end of input at a prompt
            if not standalone_mode:
                raise
            stderr_console().print("[yellow]interrupted[/]")
            sys.exit(INTERRUPTED)
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


def report_click_error(error: click_errors.ClickException) -> None:
    """Click's message as our `error:`, the command's usage line and where the help is as the `hint:`."""
    context = getattr(error, "ctx", None)
    message = error.format_message().strip()
    if context is not None:
        usage = context.get_usage().strip().removeprefix("Usage: ")
        hint = f"Usage: {usage} · see `{context.command_path} --help` for what each option accepts."
    else:
        hint = "See `gbcli --help`."
    console = stderr_console()
    console.print(f"[bold red]error:[/] {_escape(message)}")
    console.print(f"[dim]hint:[/] {_escape(hint)}")


app = typer.Typer(
    cls=GbcliGroup,
    name="gbcli",
    help="GPT-style and BERT-style transformers side by side: see how a causal LM and a masked LM differ.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

F = TypeVar("F", bound=Callable[..., Any])

# Options that mean the same thing on every command.
GptOption = Annotated[
    str | None,
    typer.Option("--gpt", envvar="GBCLI_GPT", help="Causal LM: hub id or local folder (default gpt2).",
                 show_default=False, rich_help_panel="Models"),
]
BertOption = Annotated[
    str | None,
    typer.Option("--bert", envvar="GBCLI_BERT", help="Masked LM: hub id or local folder (default bert-base-uncased).",
                 show_default=False, rich_help_panel="Models"),
]
BartOption = Annotated[
    str | None,
    typer.Option("--bart", envvar="GBCLI_BART", help="Encoder-decoder (seq2seq) denoiser: hub id or local folder "
                 "(default facebook/bart-base). Shown with --with-bart or --models ...,bart.",
                 show_default=False, rich_help_panel="Models"),
]
WithBartOption = Annotated[
    bool,
    typer.Option("--with-bart", help="Add BART's column to the ones --models chooses.", rich_help_panel="Models"),
]
ModelsOption = Annotated[
    str,
    typer.Option("--models", help="Which columns to show, comma-separated: gpt, bert, bart.", rich_help_panel="Models"),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.", rich_help_panel="Models")
]
DtypeOption = Annotated[
    str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.", rich_help_panel="Models")
]
RevisionOption = Annotated[
    str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).", rich_help_panel="Models")
]
OfflineOption = Annotated[
    bool,
    typer.Option("--offline", help="Never touch the network (also HF_HUB_OFFLINE=1).", rich_help_panel="Models"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def stderr_console():
    from gbcli.render.common import stderr_console as make

    return make()


def report_error(error: GbcliError, command: str = "") -> None:
    console = stderr_console()
    console.print(f"[bold red]error:[/] {_escape(error.message)}")
    hint = error.hint or f"See `gbcli {command + ' ' if command else ''}--help` for what each option accepts."
    console.print(f"[dim]hint:[/] {_escape(hint)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def handle_errors(function: F) -> F:
    """Every command ends in a message and an exit code, never a traceback, whatever goes wrong."""

    command = function.__name__.removesuffix("_command").replace("_", "-")

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if sys.stdout is None:  # Python's stdout when the shell closed it (`gbcli ... >&-`)
                raise explain_os_error(OSError(errno.EBADF, "Bad file descriptor"))
            value = function(*args, **kwargs)
            sys.stdout.flush()  # a full disk (`> /dev/full`) shows here, while we can still say so
            return value
        except GbcliError as error:
            report_error(error, command)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr_console().print("[yellow]interrupted[/]")
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`gbcli ... | head -1`): stop quietly, and keep Python's exit from complaining.
            _discard_stdout()
            raise typer.Exit(0) from None
        except typer.Exit:
            raise
        except OSError as error:  # the world around us: a full disk, a permission, a closed stream
            _discard_stdout()
            report_error(explain_os_error(error), command)
            raise typer.Exit(1) from None
        except MemoryError:
            report_error(GbcliError("Out of memory.", "Use a smaller model or shorter texts, or free some memory."))
            raise typer.Exit(1) from None
        except Exception as error:  # a bug, or a failure below us that we did not foresee
            if os.environ.get("GBCLI_DEBUG"):
                raise
            first_line = (str(error).strip().splitlines() or [""])[0]
            report_error(
                GbcliError(
                    f"Unexpected {type(error).__name__}: {first_line}",
                    "Set GBCLI_DEBUG=1 to see the traceback, and please report it.",
                )
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered for a broken or full stream is not written again
    (and Python's exit does not complain about it)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):  # no stdout at all, or not a real file
        pass


def choose_columns(models: str, with_bart: bool, allowed: tuple[Family, ...] = FAMILIES) -> list[Family]:
    """The model columns of a command: --models in the order given, and BART after them with --with-bart."""
    families = parse_models(models, allowed)
    if with_bart and "bart" not in families:
        families.append("bart")
    return families


def parse_models(models: str, allowed: tuple[Family, ...] = FAMILIES) -> list[Family]:
    """`gpt,bert` → ["gpt", "bert"], in the order given, each once."""
    chosen: list[Family] = []
    for raw in models.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in allowed:
            raise usage_error(f"Unknown model column '{name}' in --models.", f"Choose from: {', '.join(allowed)}.")
        if name not in chosen:
            chosen.append(name)  # type: ignore[arg-type]
    if not chosen:
        raise usage_error("--models names no model.", f"Choose from: {', '.join(allowed)}.")
    return chosen


def load_options(device: str, dtype: str, revision: str | None, offline: bool) -> LoadOptions:
    if device not in {"auto", "cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise usage_error(f"Unknown device '{device}'.", "Use one of: auto, cpu, cuda, mps.")
    if dtype not in {"auto", "float32", "bfloat16", "float16"}:
        raise usage_error(f"Unknown dtype '{dtype}'.", "Use one of: auto, float32, bfloat16, float16.")
    return LoadOptions(device=device, dtype=dtype, revision=revision, offline=offline)


def load_columns(
    families: list[Family], specs: dict[Family, str | None], options: LoadOptions, *, need_head: bool = True
) -> list[LoadedModel]:
    """Load each chosen model once, with a status line on stderr while it loads."""
    from gbcli.models import load_model, resolve_spec

    loaded = []
    console = stderr_console()
    for family in families:
        spec = resolve_spec(family, specs.get(family))
        with console.status(f"Loading {FAMILY_INFO[family].flag[2:].upper()} model {spec} …", spinner="dots"):
            loaded.append(load_model(family, spec, options, need_head=need_head))
    return loaded


@contextmanager
def interrupt_exits_130() -> Iterator[None]:
    """Restore Python's default SIGINT handling so that Ctrl-C reaches us as KeyboardInterrupt inside torch."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        if previous is not signal.default_int_handler and sys.platform != "win32":
            signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
    finally:
        try:
            signal.signal(signal.SIGINT, previous)
        except (TypeError, ValueError):  # pragma: no cover - not in the main thread
            pass


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gbcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """GPT-style and BERT-style transformers side by side: see how a causal LM and a masked LM differ."""


@app.command()
@handle_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt, or - to read stdin. [MASK] in it is taken literally.")],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="How many tokens to add.")] = 40,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")] = False,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="Sampling temperature (default 1.0).", show_default=False)
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Sample from the k most likely (default 50).")] = None,
    top_p: Annotated[
        float | None, typer.Option("--top-p", help="Nucleus sampling mass in (0, 1] (default 1.0).")
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option("--repetition-penalty", help="Penalty > 1 discourages repeats (default 1.0).")
    ] = None,
    num_beams: Annotated[int, typer.Option("--num-beams", help="Beam search with this many beams.")] = 1,
    num_return_sequences: Annotated[
        int, typer.Option("-n", "--num-return-sequences", help="How many continuations per model.")
    ] = 1,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed: the same seed gives the same text.")] = None,
    show_probs: Annotated[
        bool, typer.Option("--show-probs", help="Colour each generated token by its probability.")
    ] = False,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """GPT-2 continues the prompt; BERT tries the same by iterative mask filling; BART writes through its decoder."""
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.generation import StreamingView, generation_view
    from gbcli.tasks.decoding import DecodingSettings
    from gbcli.tasks.generation import GenerationResult, check_prompt, generate_causal, generate_masked
    from gbcli.tasks.seq2seq import generate_seq2seq

    runners = {"gpt": generate_causal, "bert": generate_masked, "bart": generate_seq2seq}
    families = choose_columns(models, with_bart)
    settings = DecodingSettings.from_options(
        max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, num_beams=num_beams, num_return_sequences=num_return_sequences,
        seed=seed,
    )
    text = check_prompt(read_text(prompt, "prompt"))
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options)
    result = GenerationResult(prompt=text, decoding=settings.describe(), settings=settings)
    console = stdout_console()
    stream = console.is_terminal and not json_output
    with interrupt_exits_130():
        if stream:
            from rich.live import Live

            view = StreamingView(text, [(lm.family, lm.name) for lm in columns])
            with Live(view, console=console, refresh_per_second=12, transient=True) as live:
                try:
                    for lm in columns:
                        result.columns.append(runners[lm.family](lm, text, settings, view.update))
                except KeyboardInterrupt:
                    live.transient = False  # keep what was written so far on the screen
                    raise
        else:
            written: dict[str, str] = {}  # each column's text so far, for Ctrl-C
            try:
                for lm in columns:
                    result.columns.append(runners[lm.family](lm, text, settings,
                                                             lambda family, so_far: written.update({family: so_far})))
            except KeyboardInterrupt:
                if not json_output:  # a pipe or a file keeps what was generated (JSON: never half a document)
                    _write_partial_generation(text, columns, written)
                raise
    check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        console.print(generation_view(result, show_probs))


@app.command()
@handle_errors
def tokenize(
    text: Annotated[str, typer.Argument(help="The text, or - to read stdin.")],
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """Both tokenizers side by side: pieces, ids and counts, aligned by the characters each piece covers."""
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.tokenization import tokenization_view
    from gbcli.tasks.tokenization import tokenize as tokenize_task

    families = choose_columns(models, with_bart)
    source = read_text(text)
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options, need_head=False)
    result = tokenize_task(columns, source)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(tokenization_view(result))


@app.command()
@handle_errors
def score(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to score, each on its own; - reads one text from stdin.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Score each non-empty line of this file (- = stdin lines).")
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", help="GPT: how far the window moves over a text longer than the context "
                     "(default: half the context).", show_default=False),
    ] = None,
    bos: Annotated[
        bool, typer.Option("--bos/--no-bos", help="GPT: predict the first token after the BOS token "
                           "(<|endoftext|>), so it is scored too; --no-bos leaves it unscored.")
    ] = True,
    pll: Annotated[
        str, typer.Option("--pll", help="BERT: original (Salazar et al. 2020) or within-word (Kauf and Ivanova "
                          "2023: also mask the later pieces of the same word).")
    ] = "original",
    tokens: Annotated[bool, typer.Option("--tokens", help="Show each token's surprisal, coloured.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV: a row per text and model (per token with "
                                             "--tokens).")] = False,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON Lines, one record per text.")] = False,
) -> None:
    """GPT-2's perplexity and BERT's pseudo-perplexity of each text (two different scales)."""
    from collections import Counter

    from gbcli.inputs import numbered_texts
    from gbcli.render.common import print_json, stderr_console, stdout_console
    from gbcli.render.scoring import csv_header, progress_bar, score_view, write_csv
    from gbcli.tasks.scoring import ScoreSettings, iter_scores, unknown_token_warnings

    if json_output and csv_output:
        raise usage_error("--json and --csv cannot be combined.", "Choose one output format.")
    families = choose_columns(models, with_bart)
    settings = ScoreSettings.from_options(bos=bos, stride=stride, pll=pll, with_tokens=tokens)
    items = numbered_texts(texts, file)
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options)
    records, seconds, passes, unknown = [], Counter(), Counter(), []
    streaming = json_output or csv_output
    # A bar redrawn between streamed records would garble a terminal; on a pipe or a file it costs nothing.
    show_progress = file is not None and stderr_console().is_terminal and not (streaming and sys.stdout.isatty())
    with interrupt_exits_130(), progress_bar(len(items), show_progress) as advance:
        for number, batch in enumerate(iter_scores(columns, items, settings)):
            check_finite(batch.records, columns)
            if csv_output and number == 0:  # after the first check: a refused run leaves stdout empty
                csv_header(tokens)
            unknown.extend(r for r in batch.records if any(c.unknown_tokens for c in r.columns))
            advance(len(batch.records))
            seconds.update(batch.seconds)
            passes.update(batch.forward_passes)
            if json_output:
                for record in batch.records:
                    print_json(record, lines=True)
            elif csv_output:
                write_csv(batch.records, tokens)
            else:
                records.extend(batch.records)
    if not (json_output or csv_output):
        stdout_console().print(score_view(records, seconds=dict(seconds), passes=dict(passes)))
    _print_warnings(unknown_token_warnings(unknown))


@app.command("fill-mask")
@handle_errors
def fill_mask_command(
    text: Annotated[
        str | None,
        typer.Argument(help="Text with one or more [MASK] or <mask> blanks, or - to read stdin.", show_default=False),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="One text per line (- = stdin lines), batched; JSON Lines with --json.",
                     show_default=False),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many candidates per blank and model.")] = 5,
    targets: Annotated[
        str | None,
        typer.Option("--targets", help="Also score these words in every column: WORD[,WORD...]; a word of "
                     "several pieces is scored whole.", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Texts per forward pass with --file.")] = 32,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """Fill in the blanks: BERT reads both sides of each mask, GPT-2 only the words before it.

    With BART (--with-bart), each blank gets spans of any length from beam search over the restored text.
    """
    from gbcli.inputs import read_lines, read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.masking import fill_mask_lines_view, fill_mask_view
    from gbcli.tasks.masking import (
        MASK_PATTERN,
        MASK_SPELLINGS,
        check_fill_options,
        fill_mask,
        fill_mask_lines,
        parse_targets,
    )

    if (text is None) == (file is None):
        raise usage_error("Give either a TEXT or --file, not both." if text is not None else "No text given.",
                          'For example: gbcli fill-mask "the [MASK] quacks in the park ."')
    check_fill_options(top_k, batch_size)
    words = parse_targets(targets)
    families = choose_columns(models, with_bart)
    specs = {"gpt": gpt, "bert": bert, "bart": bart}
    if file is None:
        source = read_text(text)
        columns = load_columns(families, specs, load_options(device, dtype, revision, offline))
        with interrupt_exits_130():
            result = fill_mask({lm.family: lm for lm in columns}, source, top_k, words)
        check_finite(result, columns)
        _print_warnings(result.warnings)
        if json_output:
            print_json(result)
        else:
            stdout_console().print(fill_mask_view(result))
        return
    lines = read_lines(file)
    if not any(MASK_PATTERN.search(line) for line in lines):  # before any model loads
        raise usage_error(f"No line of {'standard input' if file == '-' else repr(file)} has a mask to fill.",
                          f"Write {MASK_SPELLINGS} where a word is missing, e.g. \"the [MASK] quacks in the park .\"")
    columns = load_columns(families, specs, load_options(device, dtype, revision, offline))
    results: list = []  # kept for the table only: JSON Lines stream out, so memory stays flat on long files
    failures: list = []
    done = 0
    # A chunk at a time, so JSON Lines stream out in input order and Ctrl-C keeps every finished line.
    chunk = max(FILL_MASK_CHUNK_LINES, batch_size)
    with interrupt_exits_130(), _line_progress(len(lines)) as advance:
        for begin in range(0, len(lines), chunk):
            part = fill_mask_lines({lm.family: lm for lm in columns}, lines[begin : begin + chunk], top_k, words,
                                   batch_size=batch_size, on_progress=advance, first_line=begin + 1)
            check_finite(part, columns)
            if begin == 0:
                _print_warnings(part[0].warnings if part else [])
            if json_output:
                for result in part:
                    print_json(result, lines=True)
            else:
                results.extend(part)
            done += len(part)
            failures.extend((r.line, r.error) for r in part if r.error is not None)
    if not json_output:
        stdout_console().print(fill_mask_lines_view(results))
    if len(failures) == done:  # every line's reason is a usage error: empty, no mask, too many, too long
        raise usage_error(f"None of the {done} lines could be filled; each says why in its place.",
                          f"Line {failures[0][0]}: {failures[0][1]}")
    if failures:
        stderr_console().print(f"[yellow]{len(failures)} of {done} lines could not be filled; "
                               "each says why in its place.[/]")


def _write_partial_generation(prompt: str, columns: list[LoadedModel], written: dict[str, str]) -> None:
    """After Ctrl-C off a terminal: each model's text so far, one paragraph per model, before exit 130."""
    from gbcli.models import family_title
    from gbcli.render.common import visible_controls

    for lm in columns:
        if lm.family in written:
            sys.stdout.write(f"{family_title(lm.family)} · {lm.name} (interrupted): "
                             f"{visible_controls(prompt + written[lm.family])}\n")
    sys.stdout.flush()


FILL_MASK_CHUNK_LINES = 128  # lines sorted and batched together; their results are printed before the next chunk


def _print_warnings(warnings: list[str]) -> None:
    console = stderr_console()
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {_escape(warning)}")


@contextmanager
def _line_progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for files of more than a few lines (none when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = stderr_console()
    if total <= 5 or not console.is_terminal:
        yield lambda done: None
        return
    columns = (TextColumn("filling masks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("fill-mask", total=total)
        yield lambda done: progress.advance(task, done)


@app.command()
@handle_errors
def attention(
    text: Annotated[str, typer.Argument(help="The text, or - to read stdin.")],
    layer: Annotated[
        int | None, typer.Option("--layer", help="Layer to show, from 0; negative counts from the end "
                                 "(default -1, the last).", show_default=False)
    ] = None,
    head: Annotated[str, typer.Option("--head", help="A head, from 0 (negative from the end), or mean.")] = "mean",
    summary: Annotated[
        bool, typer.Option("--summary", help="A table of every layer × head (entropy, distance, share of attention "
                           "to the first token, [CLS], [SEP], punctuation, previous token) and a grid by --stat.")
    ] = False,
    stat: Annotated[
        str, typer.Option("--stat", help="Statistic of the --summary grid: entropy, distance, to_first, to_cls, "
                          "to_sep, to_punct, to_special or previous.")
    ] = "entropy",
    token: Annotated[
        str | None, typer.Option("--token", help="For one query token (a word, or an index from 0), the tokens it "
                                 "attends to most in each layer.", show_default=False)
    ] = None,
    top: Annotated[int, typer.Option("--top", help="How many attended tokens --token lists per layer.")] = 5,
    export: Annotated[
        str | None, typer.Option("--export", help="Write every layer and head to FILE: .json, .npz, .html (one "
                                 "self-contained page) or .png (needs gbcli\\[plot]).", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --export replace an existing file.")] = False,
    window: Annotated[
        int, typer.Option("--window", help="First key column shown when a heatmap is wider than the terminal.")
    ] = 0,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """Attention heatmaps: GPT-2 looks only left (lower-triangular), BERT both ways (a full square).

    BART shows three: encoder (both ways), decoder (left only) and cross-attention (output over input).
    """
    from gbcli.export import check_export_target, export_attention
    from gbcli.inputs import read_text
    from gbcli.render.attention import attention_view
    from gbcli.render.common import print_json, stderr_console, stdout_console
    from gbcli.tasks.attention import build_report, check_text, compute_attention, parse_head, resolve_stat

    families = choose_columns(models, with_bart)
    head_index = parse_head(head)
    stat_name = resolve_stat(stat)
    if top < 1:
        raise usage_error("--top must be at least 1.", "e.g. --top 5")
    if window < 0:
        raise usage_error("--window must be 0 or more.", "It is the first key column shown, counting from 0.")
    target = check_export_target(export, force) if export is not None else None  # before any model loads
    source = check_text(read_text(text))
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart},
                           load_options(device, dtype, revision, offline), need_head=False)
    with interrupt_exits_130():
        results = [compute_attention(lm, source) for lm in columns]
    check_finite(results, columns)
    report = build_report(source, results, layer=layer, head=head_index, summary=summary, stat=stat_name,
                          token=token, top=top)
    if target is not None:
        report.export = export_attention(target, source, results, head_index)
    if json_output:
        print_json(report)
    else:
        stdout_console().print(attention_view(report, window))
        if report.export is not None:
            stderr_console().print(f"wrote {report.export.path} ({report.export.format}, {report.export.bytes} bytes)")


@app.command()
@handle_errors
def compare(
    text: Annotated[str, typer.Argument(help="A sentence, with or without [MASK] blanks, or - to read stdin.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many predictions per blank and model.")] = 5,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """The whole difference on one screen: model facts, tokens, predictions, scores, attention and time."""
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.comparison import comparison_view
    from gbcli.tasks.comparison import compare as compare_task
    from gbcli.tasks.masking import check_fill_options

    check_fill_options(top_k)
    families = choose_columns(models, with_bart)
    source = read_text(text)
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options)
    with interrupt_exits_130():
        # The models are used one after the other; each is let go once its sections are done (peak memory).
        result = compare_task(columns, source, top_k, release=True)
    check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(comparison_view(result))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
