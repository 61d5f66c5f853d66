"""The gbcli command line: parse options, call one task, render its result, map errors to exit codes.

No model logic lives here, and nothing here imports torch or transformers at module level, so that
`gbcli --help` stays instant.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer

from gbcli import __version__
from gbcli.errors import INTERRUPTED, GbcliError, usage_error
from gbcli.models import FAMILIES, FAMILY_INFO, Family, LoadedModel, LoadOptions

app = typer.Typer(
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
ModelsOption = Annotated[
    str,
    typer.Option("--models", help="Which columns to show, comma-separated: gpt, bert.", rich_help_panel="Models"),
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


def report_error(error: GbcliError) -> None:
    console = stderr_console()
    console.print(f"[bold red]error:[/] {_escape(error.message)}")
    if error.hint:
        console.print(f"[dim]hint:[/] {_escape(error.hint)}")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def handle_errors(function: F) -> F:
    """Every command ends in a message and an exit code, never a traceback, whatever goes wrong."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except GbcliError as error:
            report_error(error)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr_console().print("[yellow]interrupted[/]")
            raise typer.Exit(INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`gbcli ... | head -1`): stop quietly, and keep Python's exit from complaining.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
        except typer.Exit:
            raise
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
    gpt: GptOption = None,
    bert: BertOption = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    json_output: JsonOption = False,
) -> None:
    """GPT-2 continues the prompt; BERT tries the same by iterative mask filling. Side by side."""
    from gbcli.inputs import read_text
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.generation import StreamingView, generation_view
    from gbcli.tasks.decoding import DecodingSettings
    from gbcli.tasks.generation import GenerationResult, check_prompt, generate_causal, generate_masked

    families = parse_models(models, ("gpt", "bert"))
    settings = DecodingSettings.from_options(
        max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, num_beams=num_beams, num_return_sequences=num_return_sequences,
        seed=seed,
    )
    text = check_prompt(read_text(prompt, "prompt"))
    options = load_options(device, dtype, revision, offline)
    columns = load_columns(families, {"gpt": gpt, "bert": bert}, options)
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
                        runner = generate_causal if lm.family == "gpt" else generate_masked
                        result.columns.append(runner(lm, text, settings, view.update))
                except KeyboardInterrupt:
                    live.transient = False  # keep what was written so far on the screen
                    raise
        else:
            for lm in columns:
                runner = generate_causal if lm.family == "gpt" else generate_masked
                result.columns.append(runner(lm, text, settings))
    if json_output:
        print_json(result)
    else:
        console.print(generation_view(result, show_probs))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
