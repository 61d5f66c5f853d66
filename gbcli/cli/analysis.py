"""The commands that show what the models do with one text: tokenize, attention, compare, lens, context and
saliency. Each parses its options, calls its task, renders the result."""

from __future__ import annotations

from typing import Annotated

import typer

from gbcli.cli.options import JsonOption, ModelChoice, model_options
from gbcli.cli.reporting import handle_errors, interrupt_exits_130, show, warn_unknown
from gbcli.errors import usage_error
from gbcli.tasks.finite import check_finite


@handle_errors
@model_options
def tokenize(
    text: Annotated[str, typer.Argument(help="The text, or - to read stdin.")],
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Both tokenizers side by side: pieces, ids and counts, aligned by the characters each piece covers."""
    from gbcli.jobs.inputs import read_text
    from gbcli.render.tokenization import tokenization_view
    from gbcli.tasks.tokenization import tokenize as tokenize_task

    families = choice.families()
    source = read_text(text)
    # The tokenizers alone: no weights, no torch (a second or two cold, where loading the models took twenty).
    columns = choice.load_tokenizers(families)
    result = tokenize_task(columns, source)
    show(result, json_output, tokenization_view)


@handle_errors
@model_options
def attention(
    text: Annotated[str, typer.Argument(help="The text, or - to read stdin.")],
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            help="Layer to show, 1 to L as in lens and context (0 is "
            "the embeddings); negative counts from the end (default -1, the last).",
            show_default=False,
        ),
    ] = None,
    head: Annotated[str, typer.Option("--head", help="A head, from 0 (negative from the end), or mean.")] = "mean",
    summary: Annotated[
        bool,
        typer.Option(
            "--summary",
            help="A table of every layer × head (entropy, distance, share of attention "
            "to the first token, [CLS], [SEP], punctuation, previous token) and a grid by --stat.",
        ),
    ] = False,
    stat: Annotated[
        str,
        typer.Option(
            "--stat",
            help="Statistic of the --summary grid: entropy, distance, to_first, to_cls, "
            "to_sep, to_punct, to_special or previous.",
        ),
    ] = "entropy",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="For one query token (a word, or an index from 0), the tokens it attends to most in each layer.",
            show_default=False,
        ),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many attended tokens --token lists per layer.")] = 5,
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            help="Write every layer and head to FILE: .json, .npz, .html (one "
            "self-contained page) or .png (needs gbcli[plot]).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --export replace an existing file.")] = False,
    window: Annotated[
        int, typer.Option("--window", help="First key column shown when a heatmap is wider than the terminal.")
    ] = 0,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Attention heatmaps: GPT-2 looks only left (lower-triangular), BERT both ways (a full square).

    BART shows three: encoder (both ways), decoder (left only) and cross-attention (output over input).
    """
    from gbcli.jobs.inputs import read_text
    from gbcli.tasks.attention import (
        build_report,
        check_layer_and_head,
        check_text,
        compute_attention,
        parse_head,
        resolve_stat,
    )

    families = choice.families()
    head_index = parse_head(head)
    stat_name = resolve_stat(stat)
    if window < 0:
        raise usage_error("--window must be 0 or more.", "It is the first key column shown, counting from 0.")
    target = None
    if export is not None:  # before any model loads
        from gbcli.render.export import check_export_target

        target = check_export_target(export, force)
    source = check_text(read_text(text))
    check_layer_and_head(choice.shapes(families), layer, head_index)  # config.json says: no model loads for this
    # The views' modules after the usage checks: a mistake is refused having imported only what checks it.
    from gbcli.render.attention import attention_view
    from gbcli.render.common import print_json, stderr_console, stdout_console
    from gbcli.render.export import export_attention

    columns = choice.load(families, need_head=False)
    warn_unknown(columns, [source])
    with interrupt_exits_130():
        results = [compute_attention(lm, source) for lm in columns]
    check_finite(results, columns)
    report = build_report(
        source, results, layer=layer, head=head_index, summary=summary, stat=stat_name, token=token, top=top
    )
    if target is not None:
        report.export = export_attention(target, source, results, head_index)
    if json_output:
        print_json(report)
    else:
        stdout_console().print(attention_view(report, window))
        if report.export is not None:
            stderr_console().print(f"wrote {report.export.path} ({report.export.format}, {report.export.bytes} bytes)")


@handle_errors
@model_options
def compare(
    text: Annotated[str, typer.Argument(help="A sentence, with or without [MASK] blanks, or - to read stdin.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many predictions per blank and model.")] = 5,
    full: Annotated[
        bool, typer.Option("--full", help="Every section: model facts, tokenization, attention and time too.")
    ] = False,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Predictions and scores of one sentence on one screen; --full adds facts, tokens, attention and time."""
    from gbcli.jobs.inputs import read_text
    from gbcli.render.comparison import comparison_view
    from gbcli.tasks.comparison import compare as compare_task
    from gbcli.tasks.masking import MASK_PATTERN, check_fill_options
    from gbcli.tasks.masking.masks import split_masks

    check_fill_options(top_k)
    families = choice.families()
    source = read_text(text)
    if MASK_PATTERN.search(source):
        split_masks(source)  # too many masks: said before any model (or torch) loads
    columns = choice.load(families)
    warn_unknown(columns, [source])
    with interrupt_exits_130():
        # The models are used one after the other; each is let go once its sections are done (peak memory).
        result = compare_task(columns, source, top_k, release=True)
    check_finite(result, columns)
    show(result, json_output, lambda r: comparison_view(r, full=full))


@handle_errors
@model_options
def lens(
    text: Annotated[
        str,
        typer.Argument(
            help="A sentence with one [MASK] or <mask> blank (GPT-2 and BART also "
            "take one without: they predict the next word), or - to read stdin."
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many predictions per layer.")] = 5,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Logit lens: what each layer would predict at the blank if the model stopped there.

    GPT-2: each block's residual stream through ln_f and the tied unembedding; BERT: each layer through its
    masked-LM head; BART: its decoder's layers, the encoder's output fixed.
    """
    from gbcli.jobs.inputs import read_text
    from gbcli.render.lens import lens_view
    from gbcli.tasks.lens import check_top_k
    from gbcli.tasks.lens import lens as lens_task
    from gbcli.tasks.prediction import check_text

    check_top_k(top_k)
    families = choice.families()
    source = read_text(text)
    check_text(source, families)  # before any model loads
    columns = choice.load(families)
    warn_unknown(columns, [source])
    with interrupt_exits_130():
        result = lens_task(columns, source, top_k)
        check_finite(result, columns)
    show(result, json_output, lens_view)


@handle_errors
@model_options
def context(
    texts: Annotated[
        list[str],
        typer.Argument(
            help="One text with --change, two texts that differ in one place, "
            "or several sentences with --word; - reads one from stdin."
        ),
    ],
    change: Annotated[
        str | None,
        typer.Option(
            "--change",
            help="WORD=NEW: compare the text with WORD (its first time standing alone) replaced by NEW.",
            show_default=False,
        ),
    ] = None,
    word: Annotated[
        str | None,
        typer.Option(
            "--word",
            help="Compare this word's contextual vectors across the sentences, layer by layer.",
            show_default=False,
        ),
    ] = None,
    measure: Annotated[
        str, typer.Option("--measure", help="What the grid shows: cosine (distance) or l2 (relative); --json has both.")
    ] = "cosine",
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """How far every hidden state moves when one word changes: GPT-2's states before it stay exactly put.

    With --word, how alike a word's vectors are across sentences at each layer (e.g. bank by a river and in town).
    """
    from gbcli.jobs.inputs import read_text
    from gbcli.render.context import MEASURES, context_view
    from gbcli.tasks.context import check_texts, context_shift, word_similarity

    if measure not in MEASURES:
        raise usage_error(f"Unknown --measure '{measure}'.", f"Choose from: {', '.join(MEASURES)}.")
    families = choice.families()
    sources, mode = check_texts([read_text(t) for t in texts], change, word)
    columns = choice.load(families, need_head=False)
    warn_unknown(columns, sources)
    with interrupt_exits_130():
        if mode == "word":
            result = word_similarity(columns, sources, word or "")
        else:
            result = context_shift(columns, sources, change)
        check_finite(result, columns)
    show(result, json_output, lambda r: context_view(r, measure))


@handle_errors
@model_options
def saliency(
    text: Annotated[
        str,
        typer.Argument(
            help="A sentence with one [MASK] or <mask> blank (GPT-2 and BART also "
            "take one without: the next word), or - to read stdin."
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(
            "--target", help="Explain this word (one token) instead of each model's top prediction.", show_default=False
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="ig (integrated gradients), gxi (gradient × input) or both.")
    ] = "both",
    steps: Annotated[
        int, typer.Option("--steps", help="Integrated gradients: points on the path from the baseline.")
    ] = 50,
    *,
    choice: ModelChoice,
    json_output: JsonOption = False,
) -> None:
    """Which input tokens drove the prediction at the blank: BERT draws on both sides, GPT-2 on the left only.

    Gradient × input and integrated gradients of log p(target) on the input embeddings, with IG's completeness
    error.
    """
    from gbcli.jobs.inputs import read_text
    from gbcli.tasks.prediction import check_text
    from gbcli.tasks.saliency_options import check_options

    methods = check_options(method, steps)
    if target is not None and not target.strip():
        raise usage_error("--target is empty.", "For example --target duck.")
    families = choice.families()
    source = read_text(text)
    check_text(source, families)  # before any model loads
    from gbcli.render.saliency import saliency_view
    from gbcli.tasks.saliency import saliency as saliency_task

    columns = choice.load(families)
    warn_unknown(columns, [source])
    with interrupt_exits_130():
        result = saliency_task(columns, source, target.strip() if target else None, methods, steps)
        check_finite(result, columns)
    show(result, json_output, saliency_view)
