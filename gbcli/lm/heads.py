"""The vocabulary projection, applied only at the positions whose prediction is read.

The projection (hidden size × vocabulary) is the largest matrix of a small model's forward pass, and most
analyses read one or a few positions of each row. `logits_at` hands the model's output layer just those
hidden states, through a pre-hook on `get_output_embeddings()`: the same rule for every architecture, the same
numbers as the full logits, a fraction of the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from gbcli.loading.models import LoadedModel

# Masked LMs whose prediction head is a plain function of one position's hidden state: (encoder attribute, head
# modules applied in order). The logit lens applies the head to every layer and saliency runs the encoder on
# embeddings, so both need the head as a function of its own, not only the projection `logits_at` narrows.
MLM_HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BertForMaskedLM": ("bert", ("cls",)),
    "RobertaForMaskedLM": ("roberta", ("lm_head",)),
    "XLMRobertaForMaskedLM": ("roberta", ("lm_head",)),
    "CamembertForMaskedLM": ("roberta", ("lm_head",)),
    "AlbertForMaskedLM": ("albert", ("predictions",)),
    "DistilBertForMaskedLM": ("distilbert", ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")),
    "ElectraForMaskedLM": ("electra", ("generator_predictions", "generator_lm_head")),
}


# The vocabulary projection runs in blocks (see project_in_blocks) on CPU for outputs this wide, of blocks this size.
BLOCKED_VOCABULARY = 8192
BLOCK_BYTES = 2 << 20


def model_inputs(lm: LoadedModel, ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
    """The forward arguments of a padded batch: ids and mask, and the segment ids (all 0: one sentence) of a
    model whose tokenizer makes them (BERT)."""
    import torch

    inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": attention_mask}
    if "token_type_ids" in lm.tokenizer.model_input_names:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def logits_at(lm: LoadedModel, inputs: dict[str, Any], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The vocabulary logits at (rows[k], cols[k]) of one forward pass on `inputs`: [len(rows), vocabulary].

    The output layer sees only the selected hidden states. A model whose output layer is not a plain Linear, or
    is not where its logits come from (the hook then never fires), runs whole and is indexed afterwards.
    """
    return forward_at(lm, inputs, rows, cols)[0]


def forward_at(
    lm: LoadedModel, inputs: dict[str, Any], rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """`logits_at`, and the model's whole output (its cache, when `inputs` ask for one)."""
    import torch

    head = lm.model.get_output_embeddings()
    handle = None
    in_blocks = False
    if isinstance(head, torch.nn.Linear):

        def select(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            return (args[0][rows, cols], *args[1:])

        handle = head.register_forward_pre_hook(select)
        if (
            head.weight.device.type == "cpu"
            and head.out_features >= BLOCKED_VOCABULARY
            and len(rows) > 1
            and "forward" not in vars(head)
        ):  # a forward another library set on the layer is left alone
            # An instance attribute shadows Linear.forward for this pass only; hooks still run around it.
            head.forward = lambda hidden: project_in_blocks(hidden, head.weight, head.bias)
            in_blocks = True
    try:
        output = lm.model(**inputs)
    finally:
        if handle is not None:
            handle.remove()
        if in_blocks:
            del head.forward
    logits = output.logits
    if logits.dim() == 3:
        logits = logits[rows, cols]
    return logits, output


def project_in_blocks(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear(hidden, weight, bias)`, a block of the vocabulary's rows at a time: the same numbers (each logit is
    the same dot product), faster on CPU.

    For several rows MKL packs the whole [vocabulary × hidden] matrix into a buffer per call; GPT-2's 154 MB then
    goes through memory three times. A block of ~2 MB stays in cache while it is packed and used (benchmarks/run.py,
    rows `fill-mask` and `warm`; the figures in benchmarks/HISTORY.md).
    """
    import torch

    rows = max(256, BLOCK_BYTES // (weight.shape[1] * weight.element_size()))
    return torch.cat(
        [
            torch.nn.functional.linear(hidden, block, None if bias is None else bias[start : start + rows])
            for start, block in zip(range(0, weight.shape[0], rows), weight.split(rows), strict=True)
        ],
        dim=-1,
    )


def logsumexp_in_blocks(logits: torch.Tensor, rows: int) -> torch.Tensor:
    """`logits.logsumexp(-1)`, a block of `rows` along the first dimension at a time.

    logsumexp's temporary is as large as its input: 411 MB for 2,048 reads of GPT-2's vocabulary at once.
    """
    import torch

    return torch.cat([block.logsumexp(-1) for block in logits.split(rows)])
