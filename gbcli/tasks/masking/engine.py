"""The batched forward passes under fill-mask: right-padded batches, logits at chosen positions only.

Moved here unchanged from the one-file `tasks/masking.py`; the shared model layer (`gbcli/lm/`) is to replace it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gbcli.models import LoadedModel
from gbcli.tasks.scoring import logsumexp_in_blocks

if TYPE_CHECKING:
    import torch


@dataclass
class _MaskedQuery:
    """Token ids for a masked LM, and what to read at some positions: the top tokens, and chosen tokens."""

    ids: list[int]
    positions: list[int]
    top: int = 0
    wanted: list[list[int]] | None = None  # per position: token ids whose log-prob to read
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    wanted_logprobs: list[list[float]] = field(default_factory=list)


@dataclass
class _CausalQuery:
    """Token ids for a causal LM: read log p(ids[i] | ids[:i]) for i >= score_from, and the top next tokens
    after ids[: top_at + 1]."""

    ids: list[int]
    score_from: int
    top_at: int | None = None
    top: int = 0
    token_logprobs: list[float] = field(default_factory=list)
    top_ids: list[int] = field(default_factory=list)
    top_logprobs: list[float] = field(default_factory=list)


def _batches(lm: LoadedModel, sequences: list[list[int]], batch_size: int):
    """Indices of the sequences in batches of similar length, with their right-padded ids and attention mask.

    Right padding keeps every real token at the position it has unbatched, and the attention mask hides the
    padding from it, so a batched number equals the unbatched one.
    """
    import torch

    pad = lm.tokenizer.pad_token_id
    if pad is None:
        pad = lm.tokenizer.eos_token_id or 0
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chosen)
        ids = torch.full((len(chosen), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, i in enumerate(chosen):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[row, : len(sequences[i])] = 1
        yield chosen, ids.to(lm.device), attention.to(lm.device)


def _run_masked(lm: LoadedModel, queries: list[_MaskedQuery], batch_size: int) -> None:
    import torch

    if not queries:
        return
    for chosen, ids, attention in _batches(lm, [q.ids for q in queries], batch_size):
        batch = [queries[i] for i in chosen]
        rows = torch.tensor([r for r, q in enumerate(batch) for _ in q.positions], device=lm.device)
        cols = torch.tensor([p for q in batch for p in q.positions], device=lm.device)
        logprobs = torch.log_softmax(masked_lm_logits(lm, ids, attention, rows, cols).float(), dim=-1)
        top = max(q.top for q in batch)
        if top:
            values, indices = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
            values, indices = values.tolist(), indices.tolist()
        flat = 0
        for query in batch:
            query.top_ids, query.top_logprobs, query.wanted_logprobs = [], [], []
            for position in range(len(query.positions)):
                if query.top:
                    query.top_ids.append(indices[flat][: query.top])
                    query.top_logprobs.append(values[flat][: query.top])
                if query.wanted is not None:
                    wanted = query.wanted[position]
                    picked = logprobs[flat, wanted].tolist() if wanted else []
                    query.wanted_logprobs.append(picked)
                flat += 1


def _run_causal(lm: LoadedModel, queries: list[_CausalQuery], batch_size: int) -> None:

    if not queries:
        return
    for chosen, ids, attention in _batches(lm, [q.ids for q in queries], batch_size):
        logits = lm.model(input_ids=ids, attention_mask=attention).logits.float()
        # log p(token i | tokens before it), from the logits one position earlier. The normaliser is taken a row
        # at a time: 2 MB of temporary a row here against 40 MB for a batch.
        norm = logsumexp_in_blocks(logits, 1)
        following = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] - norm[:, :-1]
        following = following.tolist()
        for row, i in enumerate(chosen):
            query = queries[i]
            query.token_logprobs = following[row][query.score_from - 1 : len(query.ids) - 1]
            if query.top_at is not None and query.top:
                logprobs = logits[row, query.top_at] - norm[row, query.top_at]
                values, indices = logprobs.topk(min(query.top, logprobs.shape[-1]))
                query.top_ids, query.top_logprobs = indices.tolist(), values.tolist()


# Masked LMs whose vocabulary projection we apply to the mask positions only: (encoder attribute, head modules
# applied in order). Projecting every position onto a 30k vocabulary costs as much as a good part of the
# encoder; the answer needs only the masks. Every other architecture runs whole (`masked_lm_logits` fallback).
MLM_HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BertForMaskedLM": ("bert", ("cls",)),
    "RobertaForMaskedLM": ("roberta", ("lm_head",)),
    "XLMRobertaForMaskedLM": ("roberta", ("lm_head",)),
    "CamembertForMaskedLM": ("roberta", ("lm_head",)),
    "AlbertForMaskedLM": ("albert", ("predictions",)),
    "DistilBertForMaskedLM": ("distilbert", ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    "ElectraForMaskedLM": ("electra", ("generator_predictions", "generator_lm_head")),
}


def masked_lm_logits(
    lm: LoadedModel, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """The masked LM's vocabulary logits at (rows[i], cols[i]) of a padded batch: [len(rows), vocab]."""
    import torch

    model = lm.model
    inputs = {"input_ids": ids, "attention_mask": attention}
    if "token_type_ids" in lm.tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    known = MLM_HEADS.get(type(model).__name__)
    if known is not None:
        encoder_name, head_names = known
        encoder = getattr(model, encoder_name, None)
        heads = [getattr(model, name, None) for name in head_names]
        if encoder is not None and all(h is not None for h in heads):
            hidden = encoder(**inputs)[0][rows, cols]
            for head in heads:
                hidden = head(hidden)
            return hidden
    return model(**inputs).logits[rows, cols]


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))

