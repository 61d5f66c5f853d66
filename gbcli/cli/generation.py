"""`gbcli generate`: each model continues the prompt in turn, streamed into a live view on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from gbcli.cli.options import JsonOption, ModelChoice, load_column, model_options, requested_columns
from gbcli.cli.reporting import handle_errors, interrupt_exits_130, warn_unknown
from gbcli.errors import usage_error
from gbcli.loading.families import Family, LoadOptions, family_title
from gbcli.tasks.finite import check_finite
from gbcli.terminal import terminal_echo_off

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel
    from gbcli.tasks.generation import GenerationResult, ModelGeneration


@handle_errors
@model_options
def generate(
    prompt: Annotated[
        list[str],
        typer.Argument(
            help="The prompt, quoted, or - to read stdin. [MASK] in it is taken literally.",
            metavar="PROMPT",
            show_default=False,
        ),
    ],
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="How many tokens to add.")] = 40,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")] = False,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            help="Sampling temperature (default 1.0; at least 0.01, --greedy below that).",
            show_default=False,
        ),
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
        int,
        typer.Option(
            "-n",
            "--num-return-sequences",
            help="How many continuations (sequences, not tokens: "
            "that is --max-new-tokens) each model writes; sampled ones are written one after the "
            "other, each kept on Ctrl-C.",
        ),
    ] = 1,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed: the same seed gives the same text.")] = None,
    show_probs: Annotated[
        bool, typer.Option("--show-probs", help="Colour each generated token by its probability.")
    ] = False,
    alternatives: Annotated[
        int | None,
        typer.Option(
            "--alternatives",
            metavar="K",
            show_default=False,
            help="At each step, the K tokens the model weighed most, with their probabilities, the one "
            "written marked (--json always holds them: K, or 5).",
        ),
    ] = None,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """GPT-2 continues the prompt; BERT tries the same by iterative mask filling; BART writes through its decoder."""
    from gbcli.jobs.inputs import read_text
    from gbcli.tasks.decoding_options import settings_from_options
    from gbcli.tasks.generation_options import check_prompt, check_room_before_load

    if len(prompt) > 1:  # the shell split an unquoted prompt into words
        joined = " ".join(prompt)
        raise usage_error(
            f"The prompt came as {len(prompt)} separate words.",
            f'Quote a prompt of several words: gbcli generate "{joined}"',
        )
    families = choice.families()
    settings = settings_from_options(
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        seed=seed,
        alternatives=alternatives,
    )
    text = check_prompt(read_text(prompt[0], "prompt"))
    check_room_before_load(choice.shapes(families), settings.max_new_tokens)  # config.json says: no model loads
    # what runs the models, imported once the text and the options have passed
    from gbcli.render.common import animated, print_json, stdout_console
    from gbcli.render.generation import generation_view
    from gbcli.tasks.generation import GenerationResult

    options = choice.load_options()
    requested = requested_columns(families, choice.specs, options)
    result = GenerationResult(prompt=text, decoding=settings.describe(), settings=settings)
    console = stdout_console()
    columns: list[LoadedModel] = []
    if animated(console) and not json_output:
        _generate_live(console, requested, options, result, columns)
    else:
        _generate_plain(requested, options, result, columns, keep_partial=not json_output)
    check_finite(result, columns)
    warn_unknown(columns, [text])
    if json_output:
        print_json(result)
    else:
        console.print(generation_view(result, show_probs, show_alternatives=alternatives is not None))


def _generate_in_turn(
    requested: list[tuple[Family, str]],
    result: GenerationResult,
    columns: list[LoadedModel],
    load: Callable[[Family, str], LoadedModel],
    on_text: Callable[[str, str], None],
    on_done: Callable[[ModelGeneration], None] | None = None,
) -> None:
    """Each model is loaded just before it writes, so the first column streams while the later ones wait to load.

    Loading stays outside `interrupt_exits_130`: a Ctrl-C that lands inside torch's or transformers' imports must
    end the process at once (gbcli.entry), not raise KeyboardInterrupt half-way through an import.
    """
    from gbcli.tasks.generation.causal import generate_causal
    from gbcli.tasks.generation.masked import generate_masked
    from gbcli.tasks.seq2seq import generate_seq2seq

    runners = {"gpt": generate_causal, "bert": generate_masked, "bart": generate_seq2seq}
    for family, spec in requested:
        lm = load(family, spec)
        columns.append(lm)
        with interrupt_exits_130():
            result.columns.append(runners[family](lm, result.prompt, result.settings, on_text))
        if on_done is not None:
            on_done(result.columns[-1])


def _generate_live(
    console,
    requested: list[tuple[Family, str]],
    options: LoadOptions,
    result: GenerationResult,
    columns: list[LoadedModel],
) -> None:
    """On a terminal: the columns fill in as they are written; Ctrl-C keeps what was written on the screen."""
    from rich.live import Live

    from gbcli.loading.models import display_name, libraries_imported, load_model
    from gbcli.render.generation import StreamingView

    sequences = len(result.settings.one_stream_each())  # sampling with -n: written one after the other
    beams = result.settings.num_beams if result.settings.mode == "beam" else 1
    view = StreamingView(result.prompt, [(family, display_name(spec)) for family, spec in requested], sequences, beams)
    if requested:  # the first frame already says what the wait is
        view.loading(requested[0][0], importing=not libraries_imported())

    def load(family: Family, spec: str) -> LoadedModel:
        from gbcli.loading.models import import_libraries

        view.loading(family, importing=True)  # the spinner lives in the view: one live display per terminal
        import_libraries()  # the first model's wait is mostly this: the view says so, then names the model
        view.loading(family)
        return load_model(family, spec, options)

    with terminal_echo_off(), Live(view, console=console, refresh_per_second=12, transient=True) as live:
        try:
            _generate_in_turn(requested, result, columns, load, view.update, view.finish)
        except KeyboardInterrupt:
            view.interrupted = True  # the last frame, whole and without the cursor, stays on the screen
            live.transient = False
            raise


def _generate_plain(
    requested: list[tuple[Family, str]],
    options: LoadOptions,
    result: GenerationResult,
    columns: list[LoadedModel],
    *,
    keep_partial: bool,
) -> None:
    """Off a terminal (or with --json): the view once all are written; Ctrl-C writes each model's text so far
    when `keep_partial` (a pipe or a file keeps what was generated; JSON is never half a document)."""
    from gbcli.loading.models import display_name
    from gbcli.render.generation import plain_progress_line
    from gbcli.render.progress import plain_ticker

    written: dict[str, dict[int, str]] = {}  # each column's sequences so far, for Ctrl-C
    ticker = plain_ticker()  # a terminal with NO_COLOR: where the writing is, a plain line every few seconds
    names = dict(requested)

    def keep(family: str, so_far: str, sequence: int = 0) -> None:
        written.setdefault(family, {})[sequence] = so_far
        if ticker is not None:
            ticker.tick(
                lambda: plain_progress_line(family, display_name(names[family]), result.settings, so_far, sequence)
            )

    try:
        _generate_in_turn(requested, result, columns, lambda family, spec: load_column(family, spec, options), keep)
    except KeyboardInterrupt:
        if keep_partial:
            _write_partial_generation(result, columns, written)
        raise


def _write_partial_generation(
    result: GenerationResult, columns: list[LoadedModel], written: dict[str, dict[int, str]]
) -> None:
    """After Ctrl-C off a terminal: each model's sequences so far, one paragraph each (the last one cut short; in a
    beam search, the beam that ranked first when it stopped), before exit 130."""
    from gbcli.render.common import visible_controls
    from gbcli.render.generation import beam_search_so_far

    prompt = result.prompt
    cut = "interrupted"
    if result.settings.mode == "beam":
        cut += f", {beam_search_so_far(result.settings.num_beams)}"

    finished = {generation.family: generation.continuations for generation in result.columns}
    for lm in columns:
        if lm.family in finished:  # every sequence whole, as the model ended them (a beam search's final ranking)
            texts = {index: c.text for index, c in enumerate(finished[lm.family])}
        else:  # the column Ctrl-C cut: the sequences before the last are whole
            texts = written.get(lm.family, {})
        for index, text in sorted(texts.items()):
            number = f" #{index + 1}" if len(texts) > 1 else ""
            state = cut if lm.family not in finished and index == max(texts) else "whole"
            sys.stdout.write(
                f"{family_title(lm.family)} · {lm.name}{number} ({state}): {visible_controls(prompt + text)}\n"
            )
    sys.stdout.flush()
