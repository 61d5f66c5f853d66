"""The gbcli command line: parse options, call one task, render its result, map errors to exit codes.

This package holds the Typer `app` and `main`; `options` the options every command shares (and the loading of the
models they name), `reporting` the error mapping and what goes to stderr, and one module per group of commands.
No model logic lives here, and nothing here imports torch or transformers at module level, so that
`gbcli --help` stays instant. The one rule for imports inside functions here: a command imports the rooms below
the CLI that it runs (`warm`, `jobs`, `render`, `tasks`, `lm`, `loading`) and the heavy libraries (torch, Rich)
inside its own body, so that `--help` imports the command modules alone (tests/test_late_imports.py, rule 1;
tests/test_startup.py; benchmarks row `startup`). Everything else, the standard library, Typer and the other modules
of `cli`, `gbcli.settings`, `gbcli.terminal` and `gbcli.errors`, is imported at the top; type-only imports sit
under `if TYPE_CHECKING:`.

The top room: it may import `warm`, `jobs`, `render`, `tasks`, `lm`, `loading`, `terminal` and `gbcli.errors`;
nothing imports it but `gbcli.entry`. (The warm shell and server run its Typer app, given to them by `cli.serve`.)
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer
from click import exceptions as click_errors
from typer.core import TyperGroup

from gbcli import __version__
from gbcli.cli import analysis, fill_mask, finetune, generation, probe, scoring, serve, tour
from gbcli.cli.config import config_app
from gbcli.cli.options import (
    ModelChoice,
    choose_columns,
    load_column,
    load_columns,
    load_options,
    model_options,
    parse_models,
    requested_columns,
)
from gbcli.cli.reporting import (
    handle_errors,
    interrupt_exits_130,
    print_warnings,
    report_error,
    say,
    stderr_console,
)
from gbcli.errors import INTERRUPTED, USAGE, GbcliError
from gbcli.settings import read_config

__all__ = [  # what other modules and the tests import from gbcli.cli
    "ModelChoice",
    "app",
    "choose_columns",
    "handle_errors",
    "interrupt_exits_130",
    "load_column",
    "load_columns",
    "load_options",
    "main",
    "model_options",
    "parse_models",
    "print_warnings",
    "report_error",
    "requested_columns",
    "stderr_console",
]


class GbcliGroup(TyperGroup):
    """The command group, whose usage errors (a bad option value, an unknown option or command) end like every
    other error: an `error:` line and a `hint:` line on stderr, exit 2, instead of Typer's boxed panel."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
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
    """Click's message as our `error:`, the command's usage line and where the help is as the `hint:`; a mistyped
    command or option gets one "did you mean" (Typer and Click each add one of their own) and its own hint."""
    context = getattr(error, "ctx", None)
    message = error.format_message().strip()
    typo = typo_error(error, context)
    if typo is not None:
        message, hint = typo
    elif context is not None:
        usage = context.get_usage().strip().removeprefix("Usage: ")
        hint = f"Usage: {usage} · see `{context.command_path} --help` for what each option accepts."
    else:
        hint = "See `gbcli --help`."
    say("error:", "bold red", message)
    say("hint:", "dim", hint)


def typo_error(error: click_errors.ClickException, context: Any) -> tuple[str, str] | None:
    """(message, hint) for an unknown command or option: the name, then the closest names gbcli has."""
    import difflib  # late: start-up (only a mistyped name needs it)

    if isinstance(error, click_errors.NoSuchOption):
        where = f"`{context.command_path} --help`" if context is not None else "`gbcli --help`"
        close = difflib.get_close_matches(
            error.option_name, [name for name in (error.possibilities or []) if name.startswith("-")], n=2, cutoff=0.7
        )
        guess = f"Did you mean {' or '.join(close)}? " if close else ""
        return f"No such option {error.option_name}.", f"{guess}{where} lists this command's options."
    unknown = re.match(r"No such command '(.+?)'", error.format_message())
    if unknown is None or context is None:
        return None
    names = context.command.list_commands(context)
    close = difflib.get_close_matches(unknown.group(1), names, n=2, cutoff=0.7)
    guess = f"Did you mean {' or '.join(close)}? " if close else ""
    return f"No such command '{unknown.group(1)}'.", f"{guess}`gbcli --help` lists the commands."


app = typer.Typer(
    cls=GbcliGroup,
    name="gbcli",
    help="GPT-style and BERT-style transformers side by side: see how a causal LM and a masked LM differ.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain Click help: the Rich formatter's imports would slow every --help (row `startup`)
)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gbcli {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
    no_server: Annotated[
        bool,
        typer.Option(
            "--no-server",
            help="Run here even if a `gbcli serve` is up (also GBCLI_NO_SERVER=1); may also follow the command.",
        ),
    ] = False,
) -> None:
    """GPT-style and BERT-style transformers side by side: see how a causal LM and a masked LM differ."""
    if context.invoked_subcommand != "config":  # `gbcli config` is how a broken settings file gets mended
        check_settings_file()


def check_settings_file() -> None:
    """The user's settings file, read before the command: a bad one is an error naming its line, an unknown key a
    warning (gbcli.settings)."""
    try:
        config = read_config()
    except GbcliError as error:
        report_error(error)
        sys.exit(USAGE)
    if config.warnings:  # (the console costs `--help` the import of Rich)
        print_warnings(config.warnings)


# In the order `gbcli --help` lists them.
app.command()(generation.generate)
app.command()(analysis.tokenize)
app.command()(scoring.score)
app.command("fill-mask")(fill_mask.fill_mask_command)
app.command()(analysis.attention)
app.command()(analysis.compare)
app.command()(analysis.lens)
app.command()(analysis.context)
app.command()(analysis.saliency)
app.command()(scoring.pairs)
app.command()(probe.probe)
app.command()(probe.similarity)
app.command()(finetune.finetune)
app.command()(tour.tour)
app.command()(serve.shell)
app.command()(serve.serve)
app.command()(serve.ps)
app.command()(serve.stop)
app.add_typer(config_app, name="config")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: a running `gbcli serve` answers if there is one, else this process does.

    Given `argv`, the client side has run already (gbcli.entry, before typer is imported) and this process answers.
    """
    if argv is None:
        from gbcli.warm.client import forward_or_in_process

        argv = forward_or_in_process(sys.argv[1:])
    app(args=argv, prog_name="gbcli")
