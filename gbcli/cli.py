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
from click import exceptions as click_errors
from typer.core import TyperGroup

from gbcli import __version__
from gbcli.errors import INTERRUPTED, USAGE, GbcliError, explain_os_error, usage_error
from gbcli.finite import check_finite
from gbcli.models import FAMILIES, FAMILY_INFO, Family, LoadedModel, LoadOptions, display_name


class GbcliGroup(TyperGroup):
    """The command group, whose usage errors (a bad option value, an unknown option or command) end like every
    other error: an `error:` line and a `hint:` line on stderr, exit 2, instead of Typer's boxed panel."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as error:  # plain `gbcli`: the help, as Click itself shows it
            if not standalone_mode:
                raise
            error.show()
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
    rich_markup_mode=None,  # plain Click help: the Rich formatter costs ~0.2 s of imports per --help
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


def requested_columns(
    families: list[Family], specs: dict[Family, str | None], options: LoadOptions
) -> list[tuple[Family, str]]:
    """(family, spec) of each chosen column, after checking that every one of them can be had (one error for all)."""
    from gbcli.models import check_available, resolve_spec

    requested = [(family, resolve_spec(family, specs.get(family))) for family in families]
    check_available(requested, options)
    if options.revision is not None:
        folders = [spec for _, spec in requested if os.path.isdir(spec)]
        if folders:  # a folder has no revisions: say so rather than ignore the option silently
            what = "folder" if len(folders) == 1 else "folders"
            _print_warnings([f"--revision {options.revision} does not apply to the local {what} "
                             f"{', '.join(folders)}; a folder is read as it is."])
    return requested


def load_column(family: Family, spec: str, options: LoadOptions, *, need_head: bool = True) -> LoadedModel:
    """Load one model (once per process), with a status line on stderr while it loads."""
    from gbcli.models import load_model
    from gbcli.render.common import animated

    console = stderr_console()
    message = f"Loading {FAMILY_INFO[family].flag[2:].upper()} model {spec} …"
    if not animated(console):  # NO_COLOR or not a terminal: no spinner, whose redraws are escape codes
        return load_model(family, spec, options, need_head=need_head)
    with console.status(message, spinner="dots"):
        return load_model(family, spec, options, need_head=need_head)


def load_columns(
    families: list[Family], specs: dict[Family, str | None], options: LoadOptions, *, need_head: bool = True
) -> list[LoadedModel]:
    """Load each chosen model once, after checking that all of them can be had."""
    requested = requested_columns(families, specs, options)
    return [load_column(family, spec, options, need_head=need_head) for family, spec in requested]


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
        bool,
        typer.Option("--version", "-V", callback=version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
    no_server: Annotated[
        bool, typer.Option("--no-server", help="Run here even if a `gbcli serve` is up (also GBCLI_NO_SERVER=1); "
                           "may also follow the command.")
    ] = False,
) -> None:
    """GPT-style and BERT-style transformers side by side: see how a causal LM and a masked LM differ."""


@app.command()
@handle_errors
def generate(
    prompt: Annotated[
        list[str],
        typer.Argument(help="The prompt, quoted, or - to read stdin. [MASK] in it is taken literally.",
                       metavar="PROMPT", show_default=False),
    ],
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

    if len(prompt) > 1:  # the shell split an unquoted prompt into words
        joined = " ".join(prompt)
        raise usage_error(f"The prompt came as {len(prompt)} separate words.",
                          f'Quote a prompt of several words: gbcli generate "{joined}"')
    runners = {"gpt": generate_causal, "bert": generate_masked, "bart": generate_seq2seq}
    families = choose_columns(models, with_bart)
    settings = DecodingSettings.from_options(
        max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, num_beams=num_beams, num_return_sequences=num_return_sequences,
        seed=seed,
    )
    text = check_prompt(read_text(prompt[0], "prompt"))
    options = load_options(device, dtype, revision, offline)
    requested = requested_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options)
    result = GenerationResult(prompt=text, decoding=settings.describe(), settings=settings)
    console = stdout_console()
    from gbcli.render.common import animated

    stream = animated(console) and not json_output
    columns: list[LoadedModel] = []
    # Each model is loaded just before it writes, so the first column streams while the later ones wait to load.
    # Loading stays outside `interrupt_exits_130`: a Ctrl-C that lands inside torch's or transformers' imports must
    # end the process at once (gbcli.entry), not raise KeyboardInterrupt half-way through an import.
    if stream:
        from rich.live import Live

        from gbcli.models import load_model
        from gbcli.render.common import terminal_echo_off

        view = StreamingView(text, [(family, display_name(spec)) for family, spec in requested])
        with terminal_echo_off(), Live(view, console=console, refresh_per_second=12, transient=True) as live:
            try:
                for family, spec in requested:
                    view.loading(family)  # the spinner lives in the view: one live display per terminal
                    lm = load_model(family, spec, options)
                    columns.append(lm)
                    with interrupt_exits_130():
                        result.columns.append(runners[family](lm, text, settings, view.update))
            except KeyboardInterrupt:
                view.interrupted = True  # the last frame, whole and without the cursor, stays on the screen
                live.transient = False
                raise
    else:
        written: dict[str, str] = {}  # each column's text so far, for Ctrl-C
        try:
            for family, spec in requested:
                lm = load_column(family, spec, options)
                columns.append(lm)
                with interrupt_exits_130():
                    result.columns.append(runners[family](lm, text, settings,
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
    words: Annotated[bool, typer.Option("--words", help="Show and export each word's surprisal: the tokenizer's "
                                        "own words, their pieces' log-probabilities summed.")] = False,
    bits: Annotated[bool, typer.Option("--bits", help="Log-probabilities in bits (base 2) instead of nats.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV: a row per text and model (per token with "
                                             "--tokens, per word with --words).")] = False,
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

    _refuse_under_torchrun("score")
    if json_output and csv_output:
        raise usage_error("--json and --csv cannot be combined.", "Choose one output format.")
    if csv_output and tokens and words:
        raise usage_error("--csv has a row per token or a row per word, not both.", "Drop --tokens or --words.")
    families = choose_columns(models, with_bart)
    settings = ScoreSettings.from_options(bos=bos, stride=stride, pll=pll, with_tokens=tokens, with_words=words,
                                          bits=bits)
    items = numbered_texts(texts, file)
    if file is None and len(items) > 1 and all(len(text.split()) == 1 for _, text in items):
        # `gbcli score rome is the capital`: the shell made four one-word texts of what was meant as one.
        joined = " ".join(text for _, text in items)
        _print_warnings([f"every text is a single word, so {len(items)} one-word texts are scored separately; "
                         f'to score one sentence, quote it: gbcli score "{joined}"'])
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart}, options)
    records, seconds, passes, unknown = [], Counter(), Counter(), []
    streaming = json_output or csv_output
    # A bar redrawn between streamed records would garble a terminal; on a pipe or a file it costs nothing.
    from gbcli.render.common import animated

    show_progress = file is not None and animated(stderr_console()) and not (streaming and sys.stdout.isatty())
    with interrupt_exits_130(), progress_bar(len(items), show_progress) as advance:
        for number, batch in enumerate(iter_scores(columns, items, settings)):
            check_finite(batch.records, columns)
            if csv_output and number == 0:  # after the first check: a refused run leaves stdout empty
                csv_header(tokens, with_words=words)
            unknown.extend(r for r in batch.records if any(c.unknown_tokens for c in r.columns))
            advance(len(batch.records))
            seconds.update(batch.seconds)
            passes.update(batch.forward_passes)
            if json_output:
                for record in batch.records:
                    print_json(record, lines=True)
            elif csv_output:
                write_csv(batch.records, tokens, with_words=words)
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
        typer.Option("--file", "-f", help="One text per line (- = stdin lines; empty lines skipped), batched; JSON "
                     "Lines with --json.",
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

    _refuse_under_torchrun("fill-mask")
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
                                   batch_size=batch_size, on_progress=advance, first_line=begin + 1,
                                   skip_empty=True)
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


def _refuse_under_torchrun(command: str) -> None:
    """Commands not yet shared among torchrun's processes would each run the whole input: refused, not repeated."""
    from gbcli.distributed import detect

    if detect() is not None:
        raise usage_error(f"`gbcli {command}` does not run under torchrun yet: every process would do the whole job.",
                          "Run it as one process; under torchrun, use `gbcli pairs --file F --output OUT`.")


def _print_warnings(warnings: list[str]) -> None:
    console = stderr_console()
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {_escape(warning)}")


@contextmanager
def _line_progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for files of more than a few lines (none when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from gbcli.render.common import animated

    console = stderr_console()
    if total <= 5 or not animated(console):
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
    full: Annotated[
        bool, typer.Option("--full", help="Every section: model facts, tokenization, attention and time too.")
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
    """Predictions and scores of one sentence on one screen; --full adds facts, tokens, attention and time."""
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
        stdout_console().print(comparison_view(result, full=full))


@app.command()
@handle_errors
def lens(
    text: Annotated[str, typer.Argument(help="A sentence with one [MASK] or <mask> blank (GPT-2 and BART also "
                                        "take one without: they predict the next word), or - to read stdin.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many predictions per layer.")] = 5,
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
    """Logit lens: what each layer would predict at the blank if the model stopped there.

    GPT-2: each block's residual stream through ln_f and the tied unembedding; BERT: each layer through its
    masked-LM head; BART: its decoder's layers, the encoder's output fixed.
    """
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.lens import lens_view
    from gbcli.tasks.lens import check_top_k
    from gbcli.tasks.lens import lens as lens_task
    from gbcli.tasks.prediction import check_text

    check_top_k(top_k)
    families = choose_columns(models, with_bart)
    source = read_text(text)
    check_text(source, families)  # before any model loads
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart},
                           load_options(device, dtype, revision, offline))
    with interrupt_exits_130():
        result = lens_task(columns, source, top_k)
        check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(lens_view(result))


@app.command()
@handle_errors
def context(
    texts: Annotated[list[str], typer.Argument(help="One text with --change, two texts that differ in one place, "
                                               "or several sentences with --word; - reads one from stdin.")],
    change: Annotated[
        str | None, typer.Option("--change", help="WORD=NEW: compare the text with WORD (its first time standing "
                                 "alone) replaced by NEW.", show_default=False)
    ] = None,
    word: Annotated[
        str | None, typer.Option("--word", help="Compare this word's contextual vectors across the sentences, "
                                 "layer by layer.", show_default=False)
    ] = None,
    measure: Annotated[str, typer.Option("--measure", help="What the grid shows: cosine (distance) or l2 "
                                         "(relative); --json has both.")] = "cosine",
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
    """How far every hidden state moves when one word changes: GPT-2's states before it stay exactly put.

    With --word, how alike a word's vectors are across sentences at each layer (e.g. bank by a river and in town).
    """
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.context import MEASURES, context_view
    from gbcli.tasks.context import check_texts, context_shift, word_similarity

    if measure not in MEASURES:
        raise usage_error(f"Unknown --measure '{measure}'.", f"Choose from: {', '.join(MEASURES)}.")
    families = choose_columns(models, with_bart)
    sources, mode = check_texts([read_text(t) for t in texts], change, word)
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart},
                           load_options(device, dtype, revision, offline), need_head=False)
    with interrupt_exits_130():
        if mode == "word":
            result = word_similarity(columns, sources, word or "")
        else:
            result = context_shift(columns, sources, change)
        check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(context_view(result, measure))


@app.command()
@handle_errors
def saliency(
    text: Annotated[str, typer.Argument(help="A sentence with one [MASK] or <mask> blank (GPT-2 and BART also "
                                        "take one without: the next word), or - to read stdin.")],
    target: Annotated[
        str | None, typer.Option("--target", help="Explain this word (one token) instead of each model's top "
                                 "prediction.", show_default=False)
    ] = None,
    method: Annotated[str, typer.Option("--method", help="ig (integrated gradients), gxi (gradient × input) "
                                        "or both.")] = "both",
    steps: Annotated[int, typer.Option("--steps", help="Integrated gradients: points on the path from the "
                                       "baseline.")] = 50,
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
    """Which input tokens drove the prediction at the blank: BERT draws on both sides, GPT-2 on the left only.

    Gradient × input and integrated gradients of log p(target) on the input embeddings, with IG's completeness
    error.
    """
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.saliency import saliency_view
    from gbcli.tasks.prediction import check_text
    from gbcli.tasks.saliency import check_options
    from gbcli.tasks.saliency import saliency as saliency_task

    methods = check_options(method, steps)
    if target is not None and not target.strip():
        raise usage_error("--target is empty.", "For example --target duck.")
    families = choose_columns(models, with_bart)
    source = read_text(text)
    check_text(source, families)  # before any model loads
    columns = load_columns(families, {"gpt": gpt, "bert": bert, "bart": bart},
                           load_options(device, dtype, revision, offline))
    with interrupt_exits_130():
        result = saliency_task(columns, source, target.strip() if target else None, methods, steps)
        check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(saliency_view(result))


@app.command()
@handle_errors
def pairs(
    good: Annotated[str | None, typer.Argument(help="The good (grammatical, expected) sentence.",
                                               show_default=False)] = None,
    bad: Annotated[str | None, typer.Argument(help="The bad sentence of the pair.", show_default=False)] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Pairs, one a line: TSV (good, bad; an optional header) or "
                                 "JSON Lines with BLiMP's fields (sentence_good, sentence_bad, UID ...).",
                                 show_default=False)
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="Of --file: auto (by extension, else by the first "
                                             "line), tsv or jsonl.")] = "auto",
    good_field: Annotated[str, typer.Option("--good-field", help="--file: the good sentence's field "
                                            "(a JSON key, or a column named in a TSV header).")] = "sentence_good",
    bad_field: Annotated[str, typer.Option("--bad-field", help="--file: the bad sentence's field.")] = "sentence_bad",
    group_field: Annotated[
        str | None, typer.Option("--group-field", help="--file: accuracy per value of this field (default: the "
                                 "first of UID, phenomenon, linguistics_term, field the file has).", show_default=False)
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="--file: write each pair's result to this file as JSON "
                                 "Lines (stdout keeps the accuracy).", show_default=False)
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted --output file: its finished "
                                         "lines are kept, not scored again.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Let --output replace an existing file.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="--file: pairs scored together (both sentences of "
                                            "each share the model's batches).")] = 32,
    bos: Annotated[
        bool, typer.Option("--bos/--no-bos", help="GPT: predict the first token after the BOS token "
                           "(<|endoftext|>), so it is scored too; --no-bos leaves it unscored.")
    ] = True,
    pll: Annotated[
        str, typer.Option("--pll", help="BERT: original (Salazar et al. 2020) or within-word (Kauf and Ivanova "
                          "2023: also mask the later pieces of the same word).")
    ] = "original",
    words: Annotated[
        bool | None, typer.Option("--words/--no-words", help="Word surprisals of both sentences, aligned (default: "
                                  "on for one pair, off for --file).", show_default=False)
    ] = None,
    bits: Annotated[bool, typer.Option("--bits", help="Log-probabilities in bits (base 2) instead of nats.")] = False,
    models: ModelsOption = "gpt,bert",
    with_bart: WithBartOption = False,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON (--file: JSON Lines, a record per pair "
                                              "and the accuracy last).")] = False,
) -> None:
    """Minimal pairs: which of two sentences each model prefers, and at which words."""
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.pairs import pair_view
    from gbcli.tasks import pairs as task
    from gbcli.tasks.scoring import ScoreSettings

    if file is not None and (good is not None or bad is not None):
        raise usage_error("Give a pair as two arguments or --file, not both.")
    if file is None and (output is not None or resume):
        raise usage_error("--output and --resume go with --file.", "e.g. gbcli pairs --file blimp.jsonl -o out.jsonl")
    if resume and output is None:
        raise usage_error("--resume needs --output: the file to continue.")
    if batch_size < 1:
        raise usage_error(f"--batch-size must be at least 1 (got {batch_size}).")
    families = choose_columns(models, with_bart)
    settings = ScoreSettings.from_options(bos=bos, stride=None, pll=pll, with_tokens=False,
                                          with_words=words if words is not None else file is None, bits=bits)
    specs: dict[Family, str | None] = {"gpt": gpt, "bert": bert, "bart": bart}
    options = load_options(device, dtype, revision, offline)
    if file is not None:
        from gbcli.distributed import detect

        world = detect()  # a torchrun job of several processes, or None (then torch.distributed is never imported)
        if world is not None:
            from dataclasses import replace

            from gbcli.distributed import start

            if output is None:
                raise usage_error("Under torchrun, pairs --file needs --output: the processes write one file.",
                                  "e.g. torchrun --nproc-per-node 2 -m gbcli pairs --file blimp.jsonl -o out.jsonl")
            options = replace(options, device=start(world, options.device))
        _pairs_file(file, task.PairFields(good_field, bad_field, group_field), file_format, output, resume, force,
                    batch_size, settings, load=lambda: load_columns(families, specs, options), json_output=json_output,
                    world=world)
        return
    if good is None or bad is None:
        raise usage_error("Give two sentences (good, then bad), or --file.",
                          'e.g. gbcli pairs "the keys are here ." "the keys is here ."')
    pair = task.PairInput(line=1, good=read_text(good, "good sentence"), bad=read_text(bad, "bad sentence"))
    task.check_pair_text(pair)
    columns = load_columns(families, specs, options)
    task.check_pair_fits(pair, columns)
    with interrupt_exits_130():
        (result,) = task.score_pairs(columns, [pair], settings)
        check_finite(result, columns)
    if json_output:
        print_json(result)
    else:
        stdout_console().print(pair_view(result, task.PAIR_NOTE))


def _pairs_file(path: str, fields, file_format: str, output: str | None, resume: bool, force: bool,
                batch_size: int, settings, *, load: Callable[[], list[LoadedModel]], json_output: bool,
                world=None) -> None:
    """`pairs --file`: score the pairs a chunk at a time (here, or shared among torchrun's processes), then print
    the accuracy."""
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.pairs import summary_view
    from gbcli.tasks import pairs as task

    if world is not None:
        from gbcli.corpus_jobs import pairs_file_distributed

        finished = pairs_file_distributed(world, path, fields, file_format, output, resume, force, batch_size,
                                          settings, load=load)
        if finished is None:  # not rank 0: only rank 0 prints
            return
        run, resumed, columns = finished
    else:
        run, resumed, columns = _pairs_file_here(path, fields, file_format, output, resume, force, batch_size,
                                                 settings, load=load, json_output=json_output)
    summary = task.summarize(run.tally, path, len(resumed.records), run.failures, run.group_field, columns, settings)
    if json_output:
        print_json(summary, lines=output is None)
    else:
        stdout_console().print(summary_view(summary))
    if run.failures:
        count = len(run.failures)
        lines = ", ".join(str(f.line) for f in run.failures[:10]) + (" ..." if count > 10 else "")
        plural = "s" * (count != 1)
        scored = f"{summary.pairs} pair{'s' * (summary.pairs != 1)} {'were' if summary.pairs != 1 else 'was'}"
        raise GbcliError(f"{count} line{plural} of {path} failed (line{plural} {lines}); the other {scored} scored.",
                         "Fix or remove those lines; with --output and --resume only they are scored again.")


def _pairs_file_here(path: str, fields, file_format: str, output: str | None, resume: bool, force: bool,
                     batch_size: int, settings, *, load: Callable[[], list[LoadedModel]], json_output: bool):
    """`pairs --file` in one process: the pairs a chunk at a time, the records streamed as they come."""
    from gbcli.render.common import dumps, print_json
    from gbcli.render.scoring import progress_bar
    from gbcli.tasks import pairs as task

    entries, group_field = task.read_pair_file(path, file_format, fields)
    resumed = task.open_output(output, resume=resume, force=force) if output else task.ResumedOutput({}, False)
    columns = load()
    run = task.prepare_file_run(columns, entries, group_field, resumed, settings, output)
    for failure in run.failures:  # all known before any scoring: say them at once
        stderr_console().print(f"[bold red]error:[/] line {failure.line}: {_escape(failure.message)}")
    show_progress = stderr_console().is_terminal and not (json_output and output is None and sys.stdout.isatty())
    try:
        with interrupt_exits_130(), progress_bar(run.todo, show_progress) as advance:
            for chunk in task.iter_pair_chunks(run.pairs, run.done, batch_size):
                results = task.score_pairs(columns, chunk, settings)
                check_finite(results, columns)
                if output is not None:
                    task.append_records(output, [dumps(r, indent=None) + "\n" for r in results])
                elif json_output:
                    for result in results:
                        print_json(result, lines=True)
                for result in results:
                    run.tally.add(*task.outcomes(result))
                advance(len(results))
    except KeyboardInterrupt:
        if output is not None:
            stderr_console().print(f"[yellow]{run.tally.pairs} pairs are in {_escape(output)}; run the same command "
                                   "with --resume to continue.[/]")
        raise
    return run, resumed, columns


@app.command()
@handle_errors
def shell(
    models: Annotated[
        str | None, typer.Option("--models", help="Models to load at start, comma-separated: gpt, bert, bart "
                                 "(default gpt,bert); also every command's default.", show_default=False,
                                 rich_help_panel="Models")
    ] = None,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Every command prints JSON: one document per "
                                              "command, one per line.")] = False,
) -> None:
    """Load the models once, then type commands without `gbcli` (help, models, set, load, exit): answers at once.

    A line of text alone runs fill-mask on it when it holds a mask, compare otherwise. Off a terminal
    (`gbcli shell < commands.txt`) it reads the commands from stdin, without prompt or colour.
    """
    from gbcli.shell import Session, run_shell

    load_options(device, dtype, None, False)  # refuse a bad --device or --dtype before anything loads
    session = Session(json_lines=json_output)
    for name, value in (("models", models), ("device", device), ("dtype", dtype)):
        if value is not None and value != "auto":
            session.defaults[name] = value
    families = parse_models(models or "gpt,bert")
    code = run_shell(session, families, {"gpt": gpt, "bert": bert, "bart": bart})
    raise typer.Exit(code)


@app.command()
@handle_errors
def serve(
    keep_alive: Annotated[
        str, typer.Option("--keep-alive", help="Unload a model after this long unused: 30m, 90s, 2h, or never.")
    ] = "30m",
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background; its log goes to the runtime "
                                         "folder's server.log.")] = False,
    models: Annotated[
        str | None, typer.Option("--models", help="Models to load at start, comma-separated: gpt, bert, bart "
                                 "(default: those named by --gpt/--bert/--bart or GBCLI_*, else gpt,bert).",
                                 show_default=False, rich_help_panel="Models")
    ] = None,
    gpt: GptOption = None,
    bert: BertOption = None,
    bart: BartOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
) -> None:
    """Keep models loaded in a local server: every other command then uses it by itself (--no-server: not).

    It listens on a Unix socket only this user can open, in $XDG_RUNTIME_DIR/gbcli (else /tmp/gbcli-UID). Other
    models load on the first request that names them. `gbcli ps` lists what it holds; `gbcli stop` ends it.
    """
    from gbcli.warm import parse_duration

    seconds = parse_duration(keep_alive)
    options = load_options(device, dtype, None, False)
    specs: dict[Family, str | None] = {"gpt": gpt, "bert": bert, "bart": bart}
    named = [family for family in FAMILIES if specs[family]]
    families = parse_models(models) if models else named or ["gpt", "bert"]
    if detach:
        from gbcli.serving import start_detached

        argv = ["serve", "--keep-alive", keep_alive, "--models", ",".join(families), "--device", device,
                "--dtype", dtype]
        for family in FAMILIES:
            if specs[family]:
                argv += [FAMILY_INFO[family].flag, str(specs[family])]
        raise typer.Exit(start_detached(argv))
    from gbcli.server import run_server

    def preload() -> None:
        for family in families:
            try:
                load_columns([family], specs, options)
            except GbcliError as error:  # the others still load; this one reports again when a request names it
                stderr_console().print(f"[yellow]warning:[/] {_escape(error.message)}")

    raise typer.Exit(run_server(seconds, preload))


@app.command()
@handle_errors
def ps(json_output: JsonOption = False) -> None:
    """The running server: its process, and the models it holds with their memory and idle time."""
    from gbcli.serving import show_status

    raise typer.Exit(show_status(json_output))


@app.command()
@handle_errors
def stop() -> None:
    """Stop the running server (it finishes the request it is running first)."""
    from gbcli.serving import stop_server

    raise typer.Exit(stop_server())


def main() -> None:
    """Console-script entry point: a running `gbcli serve` answers if there is one, else this process does."""
    from gbcli.client import forward, strip_no_server

    argv, in_process = strip_no_server(sys.argv[1:])
    if not in_process:
        code = forward(argv)
        if code is not None:
            sys.exit(code)
    app(args=argv, prog_name="gbcli")


if __name__ == "__main__":  # pragma: no cover
    main()
