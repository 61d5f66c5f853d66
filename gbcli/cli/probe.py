"""The commands that ask what each layer knows: `probe` (a linear probe on every layer's frozen states) and
`similarity` (the cosine of pooled sentence vectors, with the anisotropy baseline). Each parses its options,
calls its task, renders the result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gbcli.cli.options import JsonOption, ModelChoice, model_options
from gbcli.cli.reporting import handle_errors, interrupt_exits_130, show, warn_unknown
from gbcli.errors import usage_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from gbcli.jobs.labelled import LabelledData
    from gbcli.lm.hidden import EncodedInput
    from gbcli.loading.models import LoadedModel
    from gbcli.render.export import ExportTarget
    from gbcli.tasks.probe import ProbeOptions, ProbeResult

POOL_HELP = (
    "Sentence pooling: mean of the text's own pieces (default for every family, so the comparison is "
    "fair), first (BERT: [CLS], untrained for this without fine-tuning; GPT-2: its first piece, which "
    "has read nothing else) or last (GPT-2: the only piece that has read the whole text; BERT: [SEP])."
)


@handle_errors
@model_options
def probe(
    file: Annotated[
        str | None,
        typer.Argument(
            help="Labelled data: .jsonl, .csv or .tsv with text and label columns (and word, or text_a and text_b).",
            show_default=False,
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="A built-in task instead of a file: right-context, agreement or sentiment.",
            show_default=False,
        ),
    ] = None,
    write_task: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--write-task",
            help="Write the built-in task NAME to FILE (JSONL) and stop.",
            metavar="NAME FILE",
            show_default=False,
        ),
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option("--format", help="jsonl, csv or tsv (default: from the extension).", show_default=False),
    ] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="The column of the texts.")] = "text",
    label_field: Annotated[str, typer.Option("--label-field", help="The column of the labels.")] = "label",
    word: Annotated[
        str | None,
        typer.Option(
            "--word",
            help="Probe this word (its first whole-word occurrence) on every line: a word-level probe.",
            show_default=False,
        ),
    ] = None,
    word_pool: Annotated[
        str,
        typer.Option(
            "--word-pool",
            help="A word's pieces: last (default: the one piece "
            "that has read the whole word in every family, GPT-2's earlier pieces "
            "have not), first or mean.",
        ),
    ] = "last",
    pool: Annotated[str, typer.Option("--pool", help=POOL_HELP)] = "mean",
    test_size: Annotated[
        float, typer.Option("--test-size", help="The share of examples held out in each split.")
    ] = 0.25,
    test: Annotated[
        str | None, typer.Option("--test", help="A test file (same columns) instead of splits.", show_default=False)
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="How many random stratified splits.")] = 3,
    folds: Annotated[
        int | None, typer.Option("--folds", help="Stratified k-fold instead of --seeds splits.", show_default=False)
    ] = None,
    control: Annotated[
        str, typer.Option("--control", help="random-init (the same architectures with random weights) or none.")
    ] = "random-init",
    control_task: Annotated[
        bool,
        typer.Option(
            "--control-task",
            help="Also Hewitt and Liang's control task (labels reassigned per word type) and the selectivity.",
        ),
    ] = False,
    truncate: Annotated[
        bool, typer.Option("--truncate", help="Cut texts longer than a model's context instead of refusing them.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache of states.")] = False,
    png: Annotated[
        str | None,
        typer.Option(
            "--png", help="Also draw the accuracies per layer to FILE.png (needs gbcli[plot]).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --png or --write-task replace a file.")] = False,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """A linear probe on every layer's frozen hidden states: what each layer of GPT-2 and BERT knows.

    Logistic regression (regularisation chosen by cross-validation on the training part) per layer, the same
    splits for every model, beside the majority class and random-weight controls. States are cached under
    ~/.cache/gbcli/states (GBCLI_CACHE_DIR): a second run with other probe options reads them back.
    """
    from gbcli.jobs.builtin_tasks import builtin_task
    from gbcli.jobs.builtin_tasks import write_task as write_builtin_task
    from gbcli.jobs.labelled import read_labelled
    from gbcli.tasks.probe_options import ProbeOptions, check_options, require_scikit_learn

    if write_task is not None:
        name, path = write_task
        count = write_builtin_task(name, path, force=force)
        from gbcli.render.common import stderr_console

        stderr_console().print(f"wrote {count} examples of the built-in task '{name}' to {path}")
        return
    if (file is None) == (task is None):
        raise usage_error(
            "Give a data FILE or --task NAME (one of them).",
            "For example: gbcli probe --task right-context, or gbcli probe data.csv",
        )
    require_scikit_learn()
    options = ProbeOptions(
        pool=pool,
        word_pool=word_pool,
        test_size=test_size,
        seeds=seeds,
        folds=folds,  # type: ignore[arg-type]
        control=control,
        control_task=control_task,
        truncate=truncate,
    )  # type: ignore[arg-type]
    check_options(options)
    if test is not None and folds is not None:
        raise usage_error("--test and --folds cannot be combined.", "A test file is one split; folds are k.")
    target = _png_target(png, force)
    families = choice.families()
    fields = {"file_format": file_format, "text_field": text_field, "label_field": label_field, "word": word}
    data = read_labelled(file, **fields) if file is not None else builtin_task(task or "")
    if task is not None and word is not None:
        raise usage_error("--word applies to a data file.", "A built-in task says its own words.")
    test_data = read_labelled(test, **fields) if test is not None else None
    load_options = choice.load_options()
    columns = choice.load(families, load_options, need_head=False)
    warn_unknown(columns, labelled_texts(data, test_data))
    with interrupt_exits_130():
        result = _run_probe(columns, data, options, test_data, use_cache=not no_cache)
    if target is not None:
        from gbcli.render.export import write_atomically
        from gbcli.render.probe import write_probe_png

        write_atomically(target, lambda handle: write_probe_png(handle, result))
    from gbcli.render.probe import probe_view

    show(result, json_output, probe_view)
    if target is not None:
        from gbcli.render.common import stderr_console

        stderr_console().print(f"wrote {target.path}")


def labelled_texts(*datasets: LabelledData | None) -> list[str]:
    """Every text the models read from the data: each example's text and a pair's second text."""
    return [
        text
        for data in datasets
        if data is not None
        for example in data.examples
        for text in (example.text, example.text_b)
        if text is not None
    ]


def _png_target(png: str | None, force: bool) -> ExportTarget | None:
    if png is None:
        return None
    from gbcli.render.export import check_export_target

    if not png.lower().endswith(".png"):
        raise usage_error(f"--png '{png}' does not end in .png.", "For example --png probe.png")
    return check_export_target(png, force)


def _run_probe(
    columns: list[LoadedModel],
    data: LabelledData,
    options: ProbeOptions,
    test_data: LabelledData | None,
    *,
    use_cache: bool,
) -> ProbeResult:
    """The probe, its states read from (and written to) the cache, a bar while they are computed."""
    from gbcli.jobs.state_cache import cached_states
    from gbcli.lm.hidden import RANDOM_INIT_SEED, stack_names
    from gbcli.render.progress import line_progress
    from gbcli.tasks.probe import probe, row_title

    cache: dict[str, str] = {}

    def states(lm: LoadedModel, inputs: list[EncodedInput], random_init: bool) -> list[Sequence[np.ndarray]]:
        title = row_title(lm, "", random_init)
        with line_progress(len(inputs), f"states {title}", rate_unit="texts") as advance:
            arrays, hit = cached_states(
                lm,
                inputs,
                stack_names(lm),
                RANDOM_INIT_SEED if random_init else None,
                use_cache=use_cache,
                on_batch=advance,
            )
        cache[title] = "off" if not use_cache else "hit" if hit else "stored"
        return arrays

    result = probe(columns, data, options, test=test_data, states=states)
    result.cache = cache
    return result


@handle_errors
@model_options
def similarity(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Two or more texts (- reads one from stdin).", show_default=False)
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="Read the texts from FILE, one per line.", show_default=False)
    ] = None,
    pool: Annotated[str, typer.Option("--pool", help=POOL_HELP)] = "mean",
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            help="Layer, from 0 (the embeddings); negative counts from the end (default -1, the last).",
            show_default=False,
        ),
    ] = None,
    by_layer: Annotated[bool, typer.Option("--by-layer", help="For two texts: the cosine at every layer.")] = False,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Sentence similarity as each family represents sentences: cosines of pooled states, side by side.

    Each layer's anisotropy baseline (the mean cosine of unrelated reference sentences, Ethayarajh 2019) and the
    adjusted similarity (cosine − baseline) say whether 0.97 in GPT-2's top layer means alike. Bare encoders
    (a sentence-transformers folder) work: no head is needed.
    """
    from gbcli.jobs.inputs import numbered_texts
    from gbcli.tasks.layer_choice import check_states_layer

    sources = [text for _, text in numbered_texts(texts, file)]
    families = choice.families()
    if not by_layer:  # --by-layer shows every layer and reads no --layer
        check_states_layer(choice.shapes(families), layer)  # config.json says: no model loads for this
    from gbcli.tasks.similarity_options import check_inputs

    check_inputs(sources, pool, by_layer)  # before the task, which imports torch
    from gbcli.render.similarity import similarity_view
    from gbcli.tasks.similarity import similarity as similarity_task

    columns = choice.load(families, need_head=False)
    warn_unknown(columns, sources)
    with interrupt_exits_130():
        result = similarity_task(columns, sources, pool=pool, layer=layer, by_layer=by_layer)  # type: ignore[arg-type]
    show(result, json_output, similarity_view)
