"""Reading predictions at chosen positions of many sequences: log-probabilities of given tokens, and the top k.

Every analysis of gbcli that scores tokens is a set of reads: "at position p of this sequence, how likely is
token t, and which tokens are most likely". BERT's pseudo-log-likelihood reads each masked copy at its mask;
GPT-2 reads position p for the token at p + 1. All reads of all sequences run as rows of as few right-padded
forward passes as the budget allows, and the vocabulary is projected at the read positions only.

Log-probabilities are `logit - logsumexp(logits)`, in float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gbcli.lm.batching import Order, padded_batches
from gbcli.lm.heads import forward_at, logsumexp_in_blocks, model_inputs

if TYPE_CHECKING:
    import torch

    from gbcli.loading.models import LoadedModel

# One step's alternatives: the `top` most likely tokens of the raw distribution, (id, log-probability), best first.
TopTokens = list[tuple[int, float]]

# The logsumexp over the vocabulary runs this many reads at a time (its temporary is as large as its input).
NORMALISER_BLOCK = 256

# Told as run_reads works: (model family, sequences added to the work, sequences done). A command that may run long
# (score's masked copies: one per token) sets it to draw progress; nothing is told when it is unset.
READ_PROGRESS: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("gbcli_read_progress", default=None)


@dataclass
class Reads:
    """One input sequence and what to read at some of its positions; the results are filled in by run_reads."""

    ids: list[int]
    positions: list[int]  # positions whose output (prediction) is read
    targets: list[list[int]] | None = None  # per position: token ids whose log-probability to read
    top: int = 0  # per position: how many of the most likely tokens to read
    target_logprobs: list[list[float]] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)


def run_reads(
    lm: LoadedModel,
    reads: list[Reads],
    *,
    max_tokens: int | None = None,
    max_rows: int | None = None,
    order: Order = "longest",
) -> int:
    """Fill in every Reads, batched under `max_tokens` padded tokens and `max_rows` rows; the forward passes run.

    The model runs in inference mode; the caller's sequences must fit the model (see LoadedModel.check_fits).
    """
    import torch

    passes = 0
    sequences = [needed_ids(lm, r) for r in reads]
    progress = READ_PROGRESS.get()
    if progress is not None:
        progress(lm.family, len(reads), 0)
    for batch in padded_batches(sequences, lm.pad_id, lm.device, max_tokens=max_tokens, max_rows=max_rows, order=order):
        with torch.inference_mode():
            read_batch(lm, model_inputs(lm, batch.ids, batch.attention_mask), [reads[i] for i in batch.indices])
        passes += 1
        if progress is not None:
            progress(lm.family, 0, len(batch.indices))
    return passes


def needed_ids(lm: LoadedModel, reads: Reads) -> list[int]:
    """The tokens a pass must run for these reads: a causal LM's outputs up to the last read position depend on
    no later token, so a scored sequence's last token (read as a target, never as an input) is not run."""
    if lm.family == "gpt" and reads.positions:
        return reads.ids[: max(reads.positions) + 1]
    return reads.ids


def read_batch(lm: LoadedModel, inputs: dict[str, Any], chosen: list[Reads]) -> Any:
    """One forward pass on `inputs` (row r holds chosen[r]'s ids, at positions that count from 0 after any
    cached ones): the logits at every read position, normalised, split per Reads; the model's output comes back,
    for its cache."""
    import torch

    device = lm.device
    rows = torch.tensor([r for r, q in enumerate(chosen) for _ in q.positions], dtype=torch.long, device=device)
    cols = torch.tensor([p for q in chosen for p in q.positions], dtype=torch.long, device=device)
    logits, output = forward_at(lm, inputs, rows, cols)
    logits = logits.float()
    norm = logsumexp_in_blocks(logits, NORMALISER_BLOCK)
    wanted = _target_logprobs(logits, norm, chosen)
    top = max(q.top for q in chosen)
    if top:
        values, indices = logits.topk(min(top, logits.shape[-1]), dim=-1)
        top_values, top_indices = (values - norm[:, None]).tolist(), indices.tolist()
    flat = 0
    for query in chosen:
        count = len(query.positions)
        query.target_logprobs = wanted[flat : flat + count]
        if query.top:
            query.top_ids = [row[: query.top] for row in top_indices[flat : flat + count]]
            query.top_logprobs = [row[: query.top] for row in top_values[flat : flat + count]]
        flat += count
    return output


def _target_logprobs(logits: torch.Tensor, norm: torch.Tensor, chosen: list[Reads]) -> list[list[float]]:
    """log p(target) of every (read, target) pair, in one gather; a list per read position."""
    import torch

    read_index, target_ids, counts = [], [], []
    flat = 0
    for query in chosen:
        for k in range(len(query.positions)):
            targets = query.targets[k] if query.targets is not None else []
            read_index += [flat] * len(targets)
            target_ids += targets
            counts.append(len(targets))
            flat += 1
    if not target_ids:
        return [[] for _ in counts]
    device = logits.device
    read = torch.tensor(read_index, dtype=torch.long, device=device)
    values = (logits[read, torch.tensor(target_ids, dtype=torch.long, device=device)] - norm[read]).tolist()
    out, start = [], 0
    for count in counts:
        out.append(values[start : start + count])
        start += count
    return out


def scored_tokens(ids: list[int], score_from: int) -> Reads:
    """The reads of a causal LM's log p(ids[i] | ids[:i]) for score_from <= i < len(ids) (score_from >= 1).

    A causal LM's output at position i - 1 is its prediction of the token at i, so token i is read there.
    """
    return Reads(ids, list(range(score_from - 1, len(ids) - 1)), [[t] for t in ids[score_from:]])


def next_tokens(ids: list[int], top: int) -> Reads:
    """The read of a causal LM's `top` most likely tokens after `ids`."""
    return Reads(ids, [len(ids) - 1], top=top)


def token_logprobs(reads: Reads) -> list[float]:
    """The log-probability of each token of a `scored_tokens` read, in order."""
    return [values[0] for values in reads.target_logprobs]


def causal_logprobs(
    lm: LoadedModel,
    sequences: list[list[int]],
    score_from: list[int],
    *,
    max_tokens: int | None = None,
    max_rows: int | None = None,
    order: Order = "longest",
) -> tuple[list[list[float]], int]:
    """log p(ids[i] | ids[:i]) for score_from[s] <= i < len(ids), of each sequence s; the forward passes run."""
    reads = [scored_tokens(ids, start) for ids, start in zip(sequences, score_from, strict=True)]
    passes = run_reads(lm, reads, max_tokens=max_tokens, max_rows=max_rows, order=order) if reads else 0
    return [token_logprobs(r) for r in reads], passes


def top_tokens(raw_logprobs: Any, top: int) -> TopTokens:
    """The `top` most likely tokens of one raw log-probability row, best first (none when `top` is 0)."""
    if top <= 0:
        return []
    values, indices = raw_logprobs.topk(min(top, raw_logprobs.shape[-1]))
    return list(zip(indices.tolist(), values.tolist(), strict=True))
