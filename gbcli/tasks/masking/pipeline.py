"""fill-mask from texts to results: parse, tokenize, run each model's column on batches, collect the results.

`fill_mask` does one text and raises on a bad one; `fill_mask_lines` does many and reports per line;
`fill_mask_in_turn` does one text a model at a time, for a caller that releases each model when it is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial

from gbcli.errors import usage_error
from gbcli.lm.fast.threads import run_beside, side_by_side
from gbcli.loading.models import LoadedModel
from gbcli.tasks import seq2seq
from gbcli.tasks.masking.bart import BartColumn
from gbcli.tasks.masking.bert import BertColumn
from gbcli.tasks.masking.column import Column, RunSettings
from gbcli.tasks.masking.gpt import GptColumns
from gbcli.tasks.masking.masks import target_words
from gbcli.tasks.masking.results import FillMaskResult
from gbcli.tasks.masking.text import TextState, parse_text
from gbcli.tasks.tokenization import unknown_text_warning

DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 32


class _Run:
    """The columns of one fill-mask run, in the order they depend on each other: BERT first, then GPT-2 (whose
    whole-sentence candidates include BERT's top-k and whose other blanks hold BERT's joint filling), then BART."""

    def __init__(self, models: dict[str, LoadedModel], settings: RunSettings) -> None:
        self.settings = settings
        bert, gpt, bart = models.get("bert"), models.get("gpt"), models.get("bart")
        self.bert = BertColumn(bert, settings) if bert is not None else None
        self.columns: list[tuple[str, Column]] = [
            (family, column)
            for family, column in (
                ("bert", self.bert),
                ("gpt", GptColumns(gpt, settings) if gpt is not None else None),
                ("bart", BartColumn(bart, settings) if bart is not None else None),
            )
            if column is not None
        ]

    def tokenize(self, texts: list[TextState]) -> None:
        """BERT's ids for the texts that parsed (the only tokenizing done before the batches are formed)."""
        if self.bert is not None:
            self.bert.tokenize([s for s in texts if s.error is None])

    def columns_in_turn(self, chunk: list[TextState]) -> Iterator[str]:
        """Each model's column for a chunk of texts, in dependency order; yields the family after each.

        On CPU, GPT-2's left-context column runs beside BERT's (each on half the threads): it needs nothing of
        BERT's, and small batches leave a second thread of one product mostly idle (benchmarks/run.py, row `warm`:
        a warm `fill-mask`). BERT sets no error while it runs
        (texts too long for it got theirs when tokenized), so both see the same texts as in turn.
        """
        gpt = next((column for family, column in self.columns if family == "gpt"), None)
        beside = self.bert is not None and isinstance(gpt, GptColumns) and side_by_side(self.bert.lm, gpt.lm)
        for family, column in self.columns:
            ready = [s for s in chunk if s.error is None]
            if beside and family == "bert":
                # GPT-2's warnings of this phase come after BERT's, as in turn (each side appends as it goes).
                shared, gpt.settings = gpt.settings, replace(gpt.settings, warnings=[])
                try:
                    run_beside(partial(column.run, ready), partial(gpt.run_left, ready))
                finally:
                    later, gpt.settings = gpt.settings.warnings, shared
                    for message in later:
                        shared.warn(message)
            elif beside and family == "gpt":
                gpt.run_whole(ready)
            else:
                column.run(ready)
            yield family


def fill_mask(
    models: dict[str, LoadedModel],
    text: str,
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
) -> FillMaskResult:
    """Fill the masks of one text with every model given ("bert": masked LM, "gpt": causal LM, "bart": seq2seq).

    Raises GbcliError (exit 2) for a text without mask, with too many masks, or too long for a model.
    """
    result = fill_mask_lines(models, [text], top_k, targets)[0]
    result.line = None
    if result.error is not None:
        raise usage_error(result.error, result.hint)
    result.warnings += [warning for lm in models.values() if (warning := unknown_text_warning(lm, [text]))]
    return result


def fill_mask_lines(
    models: dict[str, LoadedModel],
    lines: Sequence[str],
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
    first_line: int = 1,
    skip_empty: bool = False,
) -> list[FillMaskResult]:
    """Fill the masks of many texts, batched: one result per line, in input order.

    A line that cannot be done (empty, no mask, too many masks, too long) gets `error` and `hint` and does not
    stop the others. Texts are sorted by length and padded into batches of `batch_size`, so that every number
    equals the unbatched one. on_progress(n) is called as n more lines are done. With `skip_empty`, empty lines
    get no result at all.
    """
    import torch

    run, names = _start_run(models, top_k, targets, batch_size)
    states = [parse_text(number, line, names) for number, line in enumerate(lines, start=first_line)]
    with torch.inference_mode():
        run.tokenize(states)
        valid = [s for s in states if s.error is None]
        if on_progress and len(valid) < len(states):
            on_progress(len(states) - len(valid))
        valid.sort(key=lambda s: len(s.bert.ids) if s.bert is not None else len(s.text))
        for start in range(0, len(valid), batch_size):
            chunk = valid[start : start + batch_size]
            for _ in run.columns_in_turn(chunk):
                pass
            if on_progress:
                on_progress(len(chunk))
    # --file skips empty lines, as `score --file` does (the others keep their line numbers).
    return [s.finish(run.settings) for s in states if not (skip_empty and not s.text.strip())]


def check_fill_options(top_k: int, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Refuse a top-k or batch size below 1 (the CLI calls this before loading any model)."""
    if top_k < 1:
        raise usage_error(f"--top-k must be at least 1, not {top_k}.", "For example --top-k 5.")
    if batch_size < 1:
        raise usage_error(f"--batch-size must be at least 1, not {batch_size}.", "For example --batch-size 32.")


def _start_run(
    models: dict[str, LoadedModel], top_k: int, targets: Sequence[str], batch_size: int
) -> tuple[_Run, dict[str, str]]:
    """Check the models and options of a fill-mask run; the run, and each family's display name."""
    check_fill_options(top_k, batch_size)
    targets = target_words(targets)
    bert, gpt, bart = models.get("bert"), models.get("gpt"), models.get("bart")
    if bert is None and gpt is None and bart is None:
        raise usage_error(
            "fill-mask needs a masked LM (bert), a causal LM (gpt) or a seq2seq model (bart).", "Use --models gpt,bert."
        )
    if bert is not None:
        bert.require_mask_token("fill blanks", "Use a masked LM for --bert.")
    if bart is not None:
        seq2seq.check_seq2seq(bart)
    names = {family: lm.name for family, lm in models.items() if family in ("bert", "gpt", "bart")}
    return _Run(models, RunSettings(top_k, list(targets), batch_size)), names


def fill_mask_in_turn(
    models: dict[str, LoadedModel],
    text: str,
    top_k: int = DEFAULT_TOP_K,
    targets: Sequence[str] = (),
) -> Iterator[tuple[str, FillMaskResult]]:
    """`fill_mask`, one model at a time: yields (family, the result so far) as each model's column is done.

    The order is fill_mask's own (bert, gpt, bart), which is the order the columns depend on each other in
    (GPT-2's whole-sentence candidates include BERT's top-k), so the final result equals `fill_mask`'s. Between
    two steps the caller may use the model just finished for other work and release it (`compare` does).
    """
    import torch

    run, names = _start_run(models, top_k, targets, DEFAULT_BATCH_SIZE)
    state = parse_text(1, text, names)
    with torch.inference_mode():
        run.tokenize([state])
    steps = run.columns_in_turn([state]) if state.error is None else iter(())
    while True:
        with torch.inference_mode():
            family = next(steps, None)
        if state.error is not None:
            raise usage_error(state.error.message, state.error.hint)
        if family is None:
            return
        result = state.finish(run.settings)
        result.line = None
        yield family, result
