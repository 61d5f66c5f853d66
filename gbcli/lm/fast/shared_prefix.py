"""Scoring many sequences that begin alike: the shared tokens run through a causal LM once, not once per sequence.

Ranking the candidates of a blank scores sentences that differ only from the blank on ("The capital of France
is Paris." / "... is Rome."). A causal LM's state after the shared tokens is the same for all of them, so
`grouped_logprobs` runs the longest common token prefix of each group once, with the model's KV cache, and then
only the differing suffixes: packed side by side into one row after that cache where the architecture allows it,
else as padded rows against copies of it. The numbers are the full passes' (the same attention over the same
keys, in a different batch shape: ~1e-6 apart in float32; tests/test_prefix_scoring.py holds every cached
architecture to the full pass).

A model without a KV cache that can be copied along the batch (Mamba's and RWKV's recurrent states) scores every
sequence whole, as `causal_logprobs` does; so does every model on a transformers whose cache classes are not the
ones this module reads (PREFIX_CACHE's probe).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gbcli.lm.batching import padded_batches
from gbcli.lm.heads import forward_at, logsumexp_in_blocks, model_inputs
from gbcli.lm.reads import NORMALISER_BLOCK, Reads, causal_logprobs, read_batch, token_logprobs
from gbcli.loading.capability import FastPath, missing

if TYPE_CHECKING:
    import torch

    from gbcli.loading.models import LoadedModel

# Architectures whose forward takes explicit position ids and a 4D attention mask as given (transformers passes a
# 4D mask through untouched): their continuations run packed into one row, each attending to the prefix and to
# its own earlier tokens (see _run_packed). Each is held to the full pass in tests/test_prefix_scoring.py; a
# model whose mask transformers must shape itself (a sliding window, ALiBi, positions counted from the mask) is
# not one of them, and runs its continuations as padded rows.
PACKED_MODEL_TYPES = frozenset(
    {"gpt2", "gpt_neox", "gptj", "llama", "qwen2", "phi", "gpt_bigcode", "mistral", "opt", "falcon", "bert"}
)
PACK_TOKENS = 512  # the most continuation tokens one packed pass runs (its mask is PACK_TOKENS x (prefix + that))
# What one more forward pass costs, in tokens of a batch: on CPU a small model's pass reads all its weights
# whatever its size, so a pass of one token costs about as much as a dozen more tokens in a pass (GPT-2-small, one
# thread; benchmarks/run.py, rows `fill-mask` and `warm`).
PASS_TOKENS = 12
_CACHES = "caches_prefix"  # lm.extras: whether the model's prefix cache can be copied (see caches_prefix)


def _probe() -> str | None:
    """Why prefixes cannot be kept on this transformers (None: they can): the cache classes `_key_value_cache`
    reads, the copy along the batch `_run_padded` makes, and the config's attention implementation that
    `packs_continuations` reads."""
    from transformers import GPT2Config
    from transformers.cache_utils import DynamicCache

    return missing(DynamicCache(), "layers", "batch_repeat_interleave") or missing(GPT2Config(), "_attn_implementation")


PREFIX_CACHE = FastPath("shared-prefix cache", "whole sequences", _probe)


@dataclass
class Prefix:
    """A causal LM's state after `ids`, kept to score continuations of them: its KV cache, the log-probabilities
    of its own tokens from `score_from` on, and of every token that could come next."""

    ids: list[int]
    score_from: int
    cache: Any
    logprobs: list[float]  # log p(ids[i] | ids[:i]) for score_from <= i < len(ids)
    next_logprobs: torch.Tensor  # [vocabulary] float32: log p(t | ids)

    def starts(self, sequences: list[list[int]]) -> bool:
        """Whether every sequence begins with these ids and goes on past them."""
        size = len(self.ids)
        return all(len(s) > size and s[:size] == self.ids for s in sequences)


def grouped_logprobs(
    lm: LoadedModel,
    groups: list[list[list[int]]],
    score_from: int,
    *,
    max_rows: int | None = None,
    known: Sequence[Prefix] = (),
) -> list[list[list[float]]]:
    """log p(ids[i] | ids[:i]) for score_from <= i < len(ids), of each sequence of each group (as
    `causal_logprobs` gives them); each group's longest common prefix runs once where the model allows it, and
    not at all when a `known` prefix (run before, with the same score_from) starts every sequence of the group."""
    out: list[list[list[float]] | None] = []
    for group in groups:
        prefix = next((p for p in known if p.score_from == score_from and p.starts(group)), None)
        if prefix is None and len(group) > 1 and caches_prefix(lm) is not False:
            # The prefix keeps at least one token of every sequence out, so each has a continuation to score.
            shared = min(common_prefix_length(group), min(len(s) for s in group) - 1)
            prefix = run_prefix(lm, group[0][:shared], score_from) if shared >= max(1, score_from) else None
        out.append(
            None
            if prefix is None
            else [prefix.logprobs + rest for rest in continuation_logprobs(lm, prefix, group, max_rows=max_rows)]
        )
    # The rest (a model without a usable cache, a group without a shared start) run whole, batched together.
    whole = [ids for group, scores in zip(groups, out, strict=True) if scores is None for ids in group]
    if whole:
        scores, _ = causal_logprobs(lm, whole, [score_from] * len(whole), max_rows=max_rows, order="shortest")
        start = 0
        for k, group in enumerate(groups):
            if out[k] is None:
                out[k] = scores[start : start + len(group)]
                start += len(group)
    return [scores for scores in out if scores is not None]


def run_prefix(lm: LoadedModel, ids: list[int], score_from: int) -> Prefix | None:
    """One pass over `ids` (score_from >= 1, at most len(ids)) that keeps the model's KV cache; None when the
    model has none that a batch of continuations can be run against (and from then on for this model)."""
    import torch

    if caches_prefix(lm) is False:
        return None
    device = lm.device
    positions = list(range(score_from - 1, len(ids)))
    with torch.inference_mode():
        tensor = torch.tensor([ids], dtype=torch.long, device=device)
        rows = torch.zeros(len(positions), dtype=torch.long, device=device)
        cols = torch.tensor(positions, dtype=torch.long, device=device)
        logits, output = forward_at(
            lm, {**model_inputs(lm, tensor, torch.ones_like(tensor)), "use_cache": True}, rows, cols
        )
        cache = _key_value_cache(output)
        lm.extras[_CACHES] = cache is not None
        if cache is None:
            return None
        logits = logits.float()
        logprobs = logits - logsumexp_in_blocks(logits, NORMALISER_BLOCK)[:, None]
        # Position p predicts token p + 1: the prefix's own tokens, all but the last position.
        own = logprobs[torch.arange(len(positions) - 1, device=device), tensor[0, cols[:-1] + 1]]
    return Prefix(list(ids), score_from, cache, own.tolist(), logprobs[-1])


def continuation_logprobs(
    lm: LoadedModel, prefix: Prefix, sequences: list[list[int]], *, max_rows: int | None = None
) -> list[list[float]]:
    """log p(ids[i] | ids[:i]) for len(prefix.ids) <= i < len(ids), of each sequence (each begins with the
    prefix and goes on past it): the first token from the prefix's last position, the rest run after its cache,
    packed into one row (`packs_continuations`), else in padded batches of at most `max_rows` rows of alike
    lengths."""
    import torch

    size = len(prefix.ids)
    # A suffix's last token is only read, never run (see needed_ids); a one-token suffix is read whole at the
    # prefix's last position; the others run, little padding with them.
    suffixes = [Reads(s[size:-1], list(range(len(s) - size - 1)), [[t] for t in s[size + 1 :]]) for s in sequences]
    running = [k for k, r in enumerate(suffixes) if r.positions]
    with torch.inference_mode():
        firsts = prefix.next_logprobs[
            torch.tensor([s[size] for s in sequences], dtype=torch.long, device=prefix.next_logprobs.device)
        ].tolist()
        lengths = [len(suffixes[k].ids) for k in running]
        if packs_continuations(lm, max((len(s) for s in sequences), default=0)):
            for group in packs(lengths, PACK_TOKENS):
                _run_packed(lm, prefix, [suffixes[running[i]] for i in group])
        else:
            for group in suffix_batches(lengths, max_rows):
                _run_padded(lm, prefix, [suffixes[running[i]] for i in group])
    return [[first] + token_logprobs(suffix) for first, suffix in zip(firsts, suffixes, strict=True)]


def packs_continuations(lm: LoadedModel, longest: int) -> bool:
    """Whether the model's continuations of one prefix, `longest` tokens at most with it, run packed into one row
    (PACKED_MODEL_TYPES; a sliding window is fine when no sequence is as long as it)."""
    config = lm.model.config
    window = getattr(config, "sliding_window", None)
    return (
        config.model_type in PACKED_MODEL_TYPES
        and (not window or longest < window)
        and not getattr(config, "alibi", False)
        and config._attn_implementation in ("eager", "sdpa")
        and "position_ids" in inspect.signature(lm.model.forward).parameters
    )


def packs(lengths: list[int], budget: int) -> list[list[int]]:
    """The indices of `lengths`, in order, cut into runs of at most `budget` tokens (a longer one alone)."""
    groups: list[list[int]] = []
    used = budget
    for index, length in enumerate(lengths):
        if used + length > budget:
            groups.append([])
            used = 0
        groups[-1].append(index)
        used += length
    return groups


def _run_padded(lm: LoadedModel, prefix: Prefix, chosen: list[Reads]) -> None:
    """One pass of the continuations in `chosen` as right-padded rows, each against its own copy of the prefix's
    cache."""
    import torch

    size, device = len(prefix.ids), lm.device
    (batch,) = padded_batches([r.ids for r in chosen], lm.pad_id, device, order="given")
    past = copy.deepcopy(prefix.cache)
    past.batch_repeat_interleave(len(chosen))
    mask = torch.cat(
        [torch.ones((len(chosen), size), dtype=batch.attention_mask.dtype, device=device), batch.attention_mask], dim=1
    )
    read_batch(lm, {**model_inputs(lm, batch.ids, mask), _cache_argument(lm): past, "use_cache": True}, chosen)


def _run_packed(lm: LoadedModel, prefix: Prefix, chosen: list[Reads]) -> None:
    """One pass of every continuation in `chosen` side by side in one row, after the prefix's cache (not copied
    along the batch: there is one row). Each token sits at its own position and sees the prefix and the earlier
    tokens of its own continuation only, so its output is the one a row of its own would give (~1e-6 apart).

    On CPU one pass of N tokens costs much less than two of N/2: every pass streams all the weights.
    """
    import torch

    size, device = len(prefix.ids), lm.device
    ids = [t for r in chosen for t in r.ids]
    positions = [size + j for r in chosen for j in range(len(r.ids))]
    owner = torch.tensor([k for k, r in enumerate(chosen) for _ in r.ids], device=device)
    count = len(ids)
    earlier = torch.ones((count, count), dtype=torch.bool, device=device).tril()
    allowed = torch.ones((count, size + count), dtype=torch.bool, device=device)
    allowed[:, size:] = earlier & (owner[:, None] == owner[None, :])
    mask = torch.zeros(allowed.shape, dtype=lm.dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(lm.dtype).min)  # additive: eager attention adds it, sdpa takes it
    packed = Reads(ids, list(range(count)), [t for r in chosen for t in r.targets or []])
    tensor = torch.tensor([ids], dtype=torch.long, device=device)
    inputs: dict[str, Any] = {
        **model_inputs(lm, tensor, mask[None, None]),
        "position_ids": torch.tensor([positions], device=device),
        _cache_argument(lm): copy.deepcopy(prefix.cache),
        "use_cache": True,
    }
    read_batch(lm, inputs, [packed])
    flat = 0
    for reads in chosen:
        reads.target_logprobs = packed.target_logprobs[flat : flat + len(reads.positions)]
        flat += len(reads.positions)


def caches_prefix(lm: LoadedModel) -> bool | None:
    """Whether the model's state after a prefix is a KV cache that can be copied along the batch: known from its
    forward's arguments, or once its first prefix pass showed which cache it keeps (None until then).

    RWKV carries a `state`, not a cache; Mamba's cache holds recurrent states (LinearAttentionLayer), which a
    suffix of several tokens cannot be run against as keys and values can.
    """
    if _CACHES not in lm.extras and (_cache_argument(lm) is None or not PREFIX_CACHE.on):
        lm.extras[_CACHES] = False
    return lm.extras.get(_CACHES)


def _cache_argument(lm: LoadedModel) -> str | None:
    """The name the model's forward takes its cache under (`cache` in transformers 5.x, `past_key_values` before)."""
    parameters = inspect.signature(lm.model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _key_value_cache(output: Any) -> Any:
    """The KV cache a prefix pass returned, or None when it is not one of attention keys and values only."""
    from transformers import cache_utils

    cache = getattr(output, "cache", None)
    if cache is None:
        cache = getattr(output, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    # Recurrent states kept as cache layers (5.5 on); before, Mamba's cache was a class of its own, without layers.
    recurrent = getattr(cache_utils, "LinearAttentionCacheLayerMixin", ())
    if not layers or not all(
        isinstance(layer, cache_utils.DynamicLayer) and not isinstance(layer, recurrent) for layer in layers
    ):
        return None
    return cache


def common_prefix_length(sequences: list[list[int]]) -> int:
    """How many tokens every sequence begins with alike."""
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for other in sequences[1:]:
        same = 0
        while same < length and other[same] == first[same]:
            same += 1
        length = same
    return length


def suffix_batches(lengths: list[int], max_rows: int | None) -> list[list[int]]:
    """The indices of `lengths` cut into batches of at most `max_rows` rows that run the fewest tokens: sorted by
    length, then split where a narrower batch saves more padding than one more pass costs (PASS_TOKENS)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    limit = max_rows or len(order)
    # best[j]: the cheapest cost of the first j sorted rows; cut[j]: where its last batch starts.
    best, cut = [0.0] + [float("inf")] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        width = lengths[order[end - 1]]
        for start in range(max(0, end - limit), end):
            cost = best[start] + PASS_TOKENS + (end - start) * width
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], len(order)
    while end > 0:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]
