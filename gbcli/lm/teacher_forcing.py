"""Teacher forcing of an encoder-decoder: the log-probability of given decoder sequences for one source.

The encoder reads the source once; its states are shared by every target, whose decoder inputs are right-padded
rows of one decoder pass, so padding never precedes a real token and the causal mask keeps it out of every real
token's view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gbcli.lm.batching import padded_batches

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel


def teacher_forced_logprobs(
    lm: LoadedModel, source: Sequence[int], targets: Sequence[Sequence[int]]
) -> list[list[float]]:
    """log p(target[t] | target[:t], source) for t >= 1, for each target (which starts with the decoder start)."""
    return teacher_forced_reads(lm, source, targets)[0]


def teacher_forced_reads(
    lm: LoadedModel, source: Sequence[int], targets: Sequence[Sequence[int]], top: int = 0
) -> tuple[list[list[float]], list[list[list[tuple[int, float]]]]]:
    """`teacher_forced_logprobs`, and at each scored position of each target the `top` most likely tokens of the
    same distribution, (id, log-probability) best first."""
    import torch

    if not targets:
        return [], []
    # All targets in one decoder pass, in their own order: the decoder input of each is all but its last token.
    batch = next(padded_batches([list(t[:-1]) for t in targets], lm.pad_id, order="given"))
    encoder_ids = torch.tensor([list(source)], device=lm.device)
    with torch.inference_mode():
        encoded = lm.model.get_encoder()(input_ids=encoder_ids, attention_mask=torch.ones_like(encoder_ids))
        hidden = encoded.last_hidden_state.expand(len(targets), -1, -1)
        logits = lm.model(
            encoder_outputs=(hidden,),
            attention_mask=torch.ones(hidden.shape[:2], dtype=torch.long, device=lm.device),
            decoder_input_ids=batch.ids.to(lm.device),
            decoder_attention_mask=batch.attention_mask.to(lm.device),
        ).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    out, tops = [], []
    for row, target in enumerate(targets):
        wanted = torch.tensor(list(target[1:]), device=lm.device)
        out.append(logprobs[row, : len(target) - 1].gather(-1, wanted[:, None])[:, 0].tolist())
        if top > 0:
            values, indices = logprobs[row, : len(target) - 1].topk(min(top, logprobs.shape[-1]), dim=-1)
            tops.append([list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)])
        else:
            tops.append([[] for _ in target[1:]])
    return out, tops
