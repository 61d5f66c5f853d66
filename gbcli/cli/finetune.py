"""`gbcli finetune`: the same classification task, the same recipe, GPT-2 beside BERT: who learns it, how fast."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gbcli.cli.options import JsonOption, ModelChoice, model_options, requested_columns
from gbcli.cli.reporting import handle_errors, interrupt_exits_130, show, warn_unknown
from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.builtin_tasks import BUILTIN_TASKS

if TYPE_CHECKING:
    from gbcli.tasks.finetune.data import FinetuneData
    from gbcli.tasks.finetune.plan import Plan
    from gbcli.tasks.finetune.results import FinetuneResult

TASKS = ", ".join(BUILTIN_TASKS)
TRAIN_HINT = "Install the train extra: pip install 'gbcli[train]' (Trainer needs accelerate)."
RECIPE_PANEL = "Recipe (the same for every family; --set FAMILY.NAME=VALUE for one)"
DATA_PANEL = "Data"
RUN_PANEL = "Output and resume"


def check_train_extra() -> None:
    """Trainer needs accelerate (and gbcli's metrics scikit-learn): say how to get them before anything loads."""
    missing = [name for name in ("accelerate", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        names = ", ".join("scikit-learn" if m == "sklearn" else m for m in missing)
        raise GbcliError(f"Fine-tuning needs {names}, which is not installed.", TRAIN_HINT)


def check_precision(device: str, dtype: str) -> None:
    """Trainer's float16 is mixed precision with a loss scaler, which runs on a GPU only; bfloat16 runs anywhere."""
    if dtype == "float16" and (device == "cpu" or (device == "auto" and not _accelerator())):
        raise usage_error("--dtype float16 trains on a GPU only.", "Use --dtype bfloat16 (or float32) on a CPU.")
    if device.startswith("cuda:") and device != "cuda:0":
        raise usage_error(
            f"--device {device}: Trainer trains on the first visible GPU.",
            f"Choose the GPU with CUDA_VISIBLE_DEVICES={device.removeprefix('cuda:')} and --device cuda.",
        )


def parse_threshold(raw: str) -> tuple[float | None, float | None]:
    """'90%' → a fraction of each family's own final accuracy; '0.8' → one accuracy for all."""
    text = raw.strip()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
            if not 0 < fraction <= 1:
                raise ValueError
            return fraction, None
        value = float(text)
        if not 0 < value <= 1:
            raise ValueError
        return None, value
    except ValueError:
        raise usage_error(
            f"--threshold '{raw}' is neither a percentage (90%) nor an accuracy (0.85).",
            "e.g. --threshold 90% (of each family's own final accuracy) or --threshold 0.85",
        ) from None


def read_data(
    file: str | None, dev: str | None, task: str | None, file_format: str | None, text_field: str, label_field: str
) -> tuple[list, list | None, str]:
    """The training examples, the dev examples (None: hold some out) and the data's name, by the shared reader."""
    from gbcli.jobs.builtin_tasks import builtin_task
    from gbcli.jobs.labelled import read_labelled

    if (file is None) == (task is None):
        raise usage_error(
            "Give a data FILE or --task NAME (not both).",
            "e.g. gbcli finetune train.jsonl --dev dev.jsonl, or gbcli finetune --task sentiment",
        )
    fields = {"file_format": file_format, "text_field": text_field, "label_field": label_field}
    if task is not None:
        data = builtin_task(task)
        name = f"task {task}"
    else:
        data = read_labelled(file, **fields)  # type: ignore[arg-type]
        name = Path(file).name  # type: ignore[arg-type]
    dev_examples = read_labelled(dev, **fields, min_labels=1).examples if dev is not None else None
    return data.examples, dev_examples, name


@handle_errors
@model_options
def finetune(
    file: Annotated[
        str | None,
        typer.Argument(
            help="Training data: JSONL, CSV or TSV with text and label columns "
            "(text_a and text_b for pairs), as for `gbcli probe`.",
            show_default=False,
        ),
    ] = None,
    dev: Annotated[
        str | None,
        typer.Option(
            "--dev",
            help="Dev data (same format). Default: 20% of FILE held out, stratified, the same for every seed.",
            rich_help_panel=DATA_PANEL,
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help=f"A built-in task instead of FILE: {TASKS} (the probe's; "
            "word columns are ignored: fine-tuning classifies whole texts).",
            rich_help_panel=DATA_PANEL,
            show_default=False,
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="jsonl, csv or tsv (default: by extension).",
            rich_help_panel=DATA_PANEL,
            show_default=False,
        ),
    ] = None,
    text_field: Annotated[
        str, typer.Option("--text-field", help="The text column.", rich_help_panel=DATA_PANEL)
    ] = "text",
    label_field: Annotated[
        str, typer.Option("--label-field", help="The label column.", rich_help_panel=DATA_PANEL)
    ] = "label",
    max_train_samples: Annotated[
        int | None,
        typer.Option(
            "--max-train-samples",
            help="Train on the first N training examples only (a quick class demo).",
            rich_help_panel=DATA_PANEL,
            show_default=False,
        ),
    ] = None,
    learning_rate: Annotated[
        float,
        typer.Option(
            "--learning-rate", "--lr", help="Peak learning rate (BERT paper: 2e-5).", rich_help_panel=RECIPE_PANEL
        ),
    ] = 2e-5,
    epochs: Annotated[
        float, typer.Option("--epochs", help="Passes over the training data.", rich_help_panel=RECIPE_PANEL)
    ] = 3.0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Examples per step and process.", rich_help_panel=RECIPE_PANEL)
    ] = 32,
    gradient_accumulation: Annotated[
        int, typer.Option("--gradient-accumulation", help="Batches per optimizer step.", rich_help_panel=RECIPE_PANEL)
    ] = 1,
    warmup: Annotated[
        float,
        typer.Option(
            "--warmup",
            help="Share of the steps with a linearly rising learning rate (then linear decay to 0).",
            rich_help_panel=RECIPE_PANEL,
        ),
    ] = 0.1,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay.", rich_help_panel=RECIPE_PANEL)
    ] = 0.01,
    max_length: Annotated[
        int,
        typer.Option(
            "--max-length", help="Longest input in tokens (longer ones are cut).", rich_help_panel=RECIPE_PANEL
        ),
    ] = 128,
    freeze_below: Annotated[
        int | None,
        typer.Option(
            "--freeze-below",
            help="Train only layers LAYER and above (from 0) and the head; the embeddings and lower layers stay.",
            rich_help_panel=RECIPE_PANEL,
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="The first seed (head initialisation, data order, dropout).", rich_help_panel=RECIPE_PANEL
        ),
    ] = 42,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Runs per family (seeds SEED, SEED+1, ...): the final accuracy gets a 95% interval.",
            rich_help_panel=RECIPE_PANEL,
        ),
    ] = 1,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A per-family value, FAMILY.NAME=VALUE, e.g. gpt.learning_rate=5e-5 (repeatable).",
            rich_help_panel=RECIPE_PANEL,
            show_default=False,
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option(
            "--eval-every",
            help="Steps between dev evaluations (default: ~10 per epoch; and always at step 0 and the end).",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="The accuracy to reach: a share of each family's own final accuracy (90%) or one accuracy (0.85).",
        ),
    ] = "90%",
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            help="Zero-shot point: a template with {text} and "
            '{label}, e.g. "{text} It was {label}." (needs --verbalizer).',
            show_default=False,
        ),
    ] = None,
    verbalizer: Annotated[
        str | None,
        typer.Option(
            "--verbalizer", help="LABEL=WORD for each label, e.g. positive=great,negative=terrible.", show_default=False
        ),
    ] = None,
    output_dir: Annotated[
        str,
        typer.Option(
            "--output-dir",
            "-o",
            help="Where each family's model, Trainer state and curves go.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = "gbcli-finetune",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on with the run in --output-dir from its last checkpoint (same options and data only).",
            rich_help_panel=RUN_PANEL,
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run in --output-dir.", rich_help_panel=RUN_PANEL)
    ] = False,
    save_every: Annotated[
        int | None,
        typer.Option(
            "--save-every",
            help="Steps between checkpoints (default: one per epoch); only the last is kept.",
            rich_help_panel=RUN_PANEL,
            show_default=False,
        ),
    ] = None,
    estimate: Annotated[
        bool | None,
        typer.Option(
            "--estimate/--no-estimate",
            help="Time a few steps of each family first and print the whole run's estimated time (default: on CPU).",
            show_default=False,
        ),
    ] = None,
    png: Annotated[
        str | None,
        typer.Option(
            "--png", help="Draw the curves with their intervals to FILE (needs gbcli[plot]).", show_default=False
        ),
    ] = None,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Fine-tune GPT-2 and BERT for classification with one recipe, and compare their learning curves.

    GPT-2 gets its end-of-text token as the pad token, right padding, and its head on the last non-pad token (as
    GPT2ForSequenceClassification does). Built on transformers' Trainer: checkpoints, --resume, bf16 (--dtype
    bfloat16: mixed precision, float32 weights), and data-parallel training under torchrun or `accelerate launch`.
    """
    from gbcli.render.export import check_export_target
    from gbcli.tasks.finetune.data import prepare
    from gbcli.tasks.finetune.recipe import Recipe, check_recipe, parse_overrides, with_overrides
    from gbcli.tasks.finetune.zero_shot import parse_template, parse_verbalizer

    families = choice.families()
    options = choice.load_options()
    check_precision(options.device, options.dtype)
    fraction, value = parse_threshold(threshold)
    if seeds < 1:
        raise usage_error("--seeds must be at least 1.", "e.g. --seeds 3")
    if (prompt is None) != (verbalizer is None):
        raise usage_error(
            "--prompt and --verbalizer go together.",
            'e.g. --prompt "{text} It was {label}." --verbalizer positive=great,negative=terrible',
        )
    if prompt is not None:
        parse_template(prompt)
    base = check_recipe(
        Recipe(
            learning_rate,
            epochs,
            batch_size,
            warmup,
            weight_decay,
            max_length,
            gradient_accumulation,
            freeze_below,
            eval_every,
            save_every,
        )
    )
    parse_overrides(overrides or [])
    recipes = {family: with_overrides(base, family, overrides or []) for family in families}
    png_target = check_export_target(png, True) if png is not None else None
    check_train_extra()
    train, dev_examples, name = read_data(file, dev, task, file_format, text_field, label_field)
    data = prepare(train, dev_examples, name, max_train_samples=max_train_samples)
    words = parse_verbalizer(verbalizer, data.labels) if verbalizer is not None else None
    from gbcli.tasks.finetune.plan import Plan

    plan = Plan(
        requested_columns(families, choice.specs, options),
        recipes,
        [seed + i for i in range(seeds)],
        Path(output_dir),
        device=options.device,
        dtype=options.dtype,
        revision=options.revision,
        offline=options.offline,
        resume=resume,
        threshold_fraction=fraction,
        threshold_value=value,
        prompt=prompt,
        verbalizer=words,
    )
    result = _train(choice, data, plan, force=force, estimate=estimate)
    if result is None:  # a worker process of a distributed run: the main process reports
        return
    if png_target is not None:
        from gbcli.render.export import write_atomically
        from gbcli.render.finetune import write_curves_png

        write_atomically(png_target, lambda handle: write_curves_png(handle, result))
    from gbcli.render.finetune import finetune_view

    show(result, json_output, finetune_view)


def _train(
    choice: ModelChoice, data: FinetuneData, plan: Plan, *, force: bool, estimate: bool | None
) -> FinetuneResult | None:
    """Check the output folder and the checkpoints, then train with progress on stderr; the result on the main
    process (None on torchrun's other processes)."""
    from gbcli.tasks.finetune.run_folder import check_output

    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:  # before torch and the Trainer are imported
        check_output(plan.output, plan.manifest(data), resume=plan.resume, force=force)
    from gbcli.loading.models import release_model
    from gbcli.render.common import animated, stderr_console
    from gbcli.render.finetune import estimate_text, training_progress
    from gbcli.tasks.finetune.head_to_head import compare_finetuning

    # The gbcli loader checks each checkpoint against its flag (a BERT given to --gpt is refused) and serves the
    # zero-shot point; the classifiers are then built from the same files.
    families = [family for family, _ in plan.columns]
    language_models = choice.load(families, need_head=plan.prompt is not None)  # type: ignore[arg-type]
    if rank == 0:
        warn_unknown(language_models, data_texts(data))
    if plan.prompt is not None:
        plan.language_models = {lm.family: lm for lm in language_models}
    else:
        for lm in language_models:  # checked; its memory is the classifiers' now
            release_model(lm)
    console = stderr_console()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if estimate is None:
        estimate = plan.device == "cpu" or (plan.device == "auto" and not _accelerator())
    on_estimate = (lambda found: console.print(estimate_text(found))) if estimate and not distributed else None
    with interrupt_exits_130():
        try:
            with training_progress(console, animated(console) and rank == 0) as listener:
                result = compare_finetuning(data, plan, listener if rank == 0 else None, on_estimate)
        except KeyboardInterrupt:
            console.print(
                f"[dim]hint:[/] the last checkpoints are in {plan.output}/: run the same command with "
                "--resume to go on from them."
            )
            raise
    return result if rank == 0 else None


def data_texts(data: FinetuneData) -> list[str]:
    """Every text the classifiers read: each training and dev example's text and a pair's second text."""
    return [text for example in (*data.train, *data.dev) for text in (example.text, example.text_b) if text is not None]


def _accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()
