"""Fill in the blank: BERT reads both sides of a mask, GPT-2 only the words before it.

A masked LM was trained to predict hidden tokens from the whole sentence, so it can use what follows the blank.
A causal LM was trained to predict the next token from the ones before it, so at the blank it knows only the left
context. It can still judge complete sentences, though: put each candidate in the blank and compare the
likelihoods of the whole sentences. Four columns come out of this, one per view:

- `bert`: the masked LM's top-k at each mask, a softmax over the whole vocabulary (as `pipeline("fill-mask")`);
- `gpt_left`: the causal LM's next-token top-k given only the text before the mask;
- `gpt_whole`: the candidates (BERT's top-k, GPT-2's left top-k and the targets) ranked by the causal LM's
  log-likelihood of the complete sentence, normalised over the candidates;
- `bart`: an encoder-decoder denoiser restores the whole text, and what it wrote in each blank is a span of any
  number of tokens.

The package reads like a pipeline (`pipeline`): parse the text at its masks (`masks`, `text`), run each model's
column on padded batches of similar length (`bert`, `gpt`, `bart`, on the shared `column` and the batched
forward passes of `gbcli.lm`), and turn log-probabilities into the dataclasses of `results`.
"""

from gbcli.tasks.masking.bart import infill_spans
from gbcli.tasks.masking.column import CHOICE_POOL
from gbcli.tasks.masking.masks import MASK_PATTERN, MASK_SPELLINGS, MAX_MASKS, fill_text, parse_targets, split_masks
from gbcli.tasks.masking.pipeline import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOP_K,
    check_fill_options,
    fill_mask,
    fill_mask_in_turn,
    fill_mask_lines,
)
from gbcli.tasks.masking.results import (
    FILLING_METHODS,
    ColumnName,
    Filling,
    FillMaskResult,
    MaskColumn,
    MaskPrediction,
    MaskSlot,
    SpanBeam,
    SpanFill,
    SpanInfilling,
)

__all__ = [
    "CHOICE_POOL",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_TOP_K",
    "FILLING_METHODS",
    "MASK_PATTERN",
    "MASK_SPELLINGS",
    "MAX_MASKS",
    "ColumnName",
    "FillMaskResult",
    "Filling",
    "MaskColumn",
    "MaskPrediction",
    "MaskSlot",
    "SpanBeam",
    "SpanFill",
    "SpanInfilling",
    "check_fill_options",
    "fill_mask",
    "fill_mask_in_turn",
    "fill_mask_lines",
    "fill_text",
    "infill_spans",
    "parse_targets",
    "split_masks",
]
