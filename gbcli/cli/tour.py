"""`gbcli tour`: the differences between GPT-2 and BERT, a step at a time, each shown live on the loaded models."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import click
import typer

from gbcli.cli.options import ModelChoice, load_column, model_options, requested_columns
from gbcli.cli.reporting import handle_errors, interrupt_exits_130
from gbcli.errors import GbcliError

if TYPE_CHECKING:
    from gbcli.tasks.tour import ModelFlags, StepSpec, TourSettings, TourStep
    from gbcli.tasks.tour.steps import ModelPool

TOUR_FAMILIES = "gpt,bert,bart"  # the tour's default --models: step 8 is BART's


@handle_errors
@model_options
def tour(
    steps: Annotated[
        str | None,
        typer.Option("--steps", help="Only these steps, e.g. 1,4,7 (default: all eight).", show_default=False),
    ] = None,
    no_pause: Annotated[
        bool, typer.Option("--no-pause", help="Go on without waiting between steps (it never waits off a terminal).")
    ] = False,
    budget: Annotated[
        float,
        typer.Option(
            "--budget",
            help="Seconds a slow step (fine-tuning) may take; one estimated to take "
            "longer is skipped with its estimate.",
        ),
    ] = 60.0,  # gbcli.tasks.tour.DEFAULT_BUDGET (not imported here: --help stays light)
    html: Annotated[
        str | None,
        typer.Option(
            "--html",
            help="Also write the tour as one self-contained HTML page (a handout: figures embedded, nothing fetched).",
            show_default=False,
        ),
    ] = None,
    markdown: Annotated[
        str | None, typer.Option("--markdown", help="Also write the tour as a Markdown notes file.", show_default=False)
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --html and --markdown replace existing files.")] = False,
    *,
    choice: ModelChoice,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON Lines: one record per step, as each is done.")
    ] = False,
) -> None:
    """A guided tour of how GPT-2 and BERT differ: each claim shown on your models, its numbers read out.

    Eight steps: attention, generation, the pre-training objectives, left against both contexts, perplexity
    against pseudo-perplexity, layers, fine-tuning and BART. On a terminal it waits between steps (Enter to go
    on, q to stop). Without --models it uses all three families (BART for step 8).
    """
    from gbcli.jobs.builtin_tasks import builtin_task
    from gbcli.render.handout import check_handout_target
    from gbcli.tasks.tour import LABELLED_TASKS, TourSettings, check_budget, parse_steps

    chosen, budget = parse_steps(steps), check_budget(budget)  # before the steps (and torch) are imported
    targets = [
        check_handout_target(path, force, option)
        for path, option in ((html, "--html"), (markdown, "--markdown"))
        if path is not None
    ]
    from gbcli.render.common import stdout_console
    from gbcli.render.tour import closing_view
    from gbcli.tasks.tour.steps import ModelPool, chosen_steps

    settings = TourSettings(
        steps=chosen,
        budget=budget,
        model_flags=_model_flags(choice),
        load=choice.load_options(),
        labelled={name: builtin_task(name) for name in LABELLED_TASKS},
        probe_states=_cached_probe_states,
    )
    if _models_defaulted():
        choice = replace(choice, models=TOUR_FAMILIES)
    families = choice.families()
    options = choice.load_options()
    pool = ModelPool(lambda family: _load(choice, family, options), families)
    pausing = not (no_pause or json_output) and sys.stdin.isatty() and sys.stdout.isatty()
    shown, stopped = _walk(chosen_steps(settings), settings, pool, json_output=json_output, pausing=pausing)
    for target in targets:
        target.write(shown)
    if not json_output:
        console = stdout_console()
        console.print(closing_view(shown, stopped))
        for target in targets:
            console.print(f"wrote {target.path}", style="dim")
    _refuse_an_empty_or_failed_tour(shown, pool)


def _walk(
    specs: list[StepSpec], settings: TourSettings, pool: ModelPool, *, json_output: bool, pausing: bool
) -> tuple[list[TourStep], bool]:
    """Each step as soon as it is done (a JSON Lines record, or its view), waiting between steps when `pausing`;
    the steps shown, and whether the user stopped the tour."""
    from gbcli.render.common import print_json, stdout_console
    from gbcli.render.tour import step_view
    from gbcli.tasks.tour.steps import run_step

    shown: list[TourStep] = []
    for position, spec in enumerate(specs):
        reason = pool.prepare(spec)  # loading stays outside interrupt_exits_130 (see gbcli.entry)
        with interrupt_exits_130():
            step = run_step(spec, settings, pool, reason)
        shown.append(step)
        if json_output:
            print_json(step, lines=True)
        else:
            stdout_console().print(step_view(step))
            stdout_console().print()
        if pausing and position < len(specs) - 1 and not _go_on():
            return shown, True
    return shown, False


def _refuse_an_empty_or_failed_tour(shown: list[TourStep], pool: ModelPool) -> None:
    """Exit 1 when no model could be had at all, or when a step failed (after the others were shown)."""
    if shown and pool.missing and all(step.status == "skipped" for step in shown):
        raise GbcliError(
            "No step of the tour could be shown: " + "; ".join(pool.missing.values()),
            "Give models that can be had: --gpt, --bert and --bart take a hub id or a local folder.",
        )
    failed = [str(step.number) for step in shown if step.status == "failed"]
    if failed:
        raise GbcliError(
            f"Step{'s' if len(failed) > 1 else ''} {', '.join(failed)} of the tour failed; the others were shown.",
            "The reason is given under each failed step; `gbcli COMMAND --help` for the command it names.",
        )


def _models_defaulted() -> bool:
    """--models not given: the tour shows all three families (BART in step 8); a given --models is obeyed."""
    context = click.get_current_context(silent=True)
    if context is None:
        return True
    source = context.get_parameter_source("models")
    return source is None or source.name == "DEFAULT"


def _model_flags(choice: ModelChoice) -> ModelFlags:
    """The model options as given, for the commands each step names (the env variables apply to those as well)."""
    from gbcli.tasks.tour import ModelFlags

    by_family = {family: [f"--{family}", spec] for family, spec in choice.specs.items() if spec}
    words: list[str] = []
    for flag, value, default in (
        ("--device", choice.device, "auto"),
        ("--dtype", choice.dtype, "auto"),
        ("--revision", choice.revision, None),
    ):
        if value != default and value is not None:
            words += [flag, value]
    if choice.offline:
        words.append("--offline")
    return ModelFlags(by_family, words)


def _load(choice: ModelChoice, family: str, options):
    [(family_, spec)] = requested_columns([family], choice.specs, options)  # type: ignore[list-item]
    return load_column(family_, spec, options)


def _cached_probe_states(lm, inputs, random_init: bool):
    """The probe's states as `gbcli probe` reads them: from its on-disk cache when there, else computed (with a
    bar, as the probe command shows) and stored, so that the step's deeper command reads them back at once."""
    from gbcli.jobs.state_cache import cached_states
    from gbcli.lm.hidden import RANDOM_INIT_SEED, stack_names
    from gbcli.render.progress import line_progress
    from gbcli.tasks.probe import row_title

    with line_progress(len(inputs), f"states {row_title(lm, '', random_init)}", rate_unit="texts") as advance:
        arrays, _ = cached_states(
            lm, inputs, stack_names(lm), RANDOM_INIT_SEED if random_init else None, use_cache=True, on_batch=advance
        )
    return arrays


def _go_on() -> bool:
    """Wait for Enter (go on) or q (stop). Read as a line, so that it also works through a warm server."""
    from gbcli.render.common import stderr_console

    stderr_console().print("[dim]Enter: next step · q then Enter: stop[/]", end="")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return bool(answer) and answer.strip().lower() not in {"q", "quit"}
