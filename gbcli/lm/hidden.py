"""Every layer's hidden states of one model for many texts, pooled to one vector per text and layer.

`encode_inputs` turns each text (a sentence, a pair, or a sentence with one word marked by its characters) into
the ids the model reads and the positions to pool; `pooled_states` runs them in right-padded batches cut by
length, every layer at once (`output_hidden_states=True`), and yields, batch by batch, one float32 array
[rows, layers, hidden] per stack, so that a caller can stream them to disk and hold one batch at a time.

Pooling, per text (sentence level): `mean` of the text's own pieces (special tokens such as [CLS] and [SEP]
left out, so that every family averages the same words), `first` (BERT: [CLS]; GPT-2: its first piece, which has
read nothing else) or `last` (GPT-2: its last piece, the only one that has read the whole text; BERT: [SEP]).
Word level: the pieces that cover the word, `first`, `last` or `mean` of them.

A pair is encoded as the family encodes one: the tokenizer's own pair encoding where it has one (BERT:
`[CLS] a [SEP] b [SEP]` with segment ids; BART: `<s> a </s></s> b </s>`), else, for a tokenizer that adds nothing
between two texts (GPT-2), the two texts joined by a space.

BART gives two stacks: its encoder (bidirectional) and its decoder (causal), the decoder reading the text shifted
right after its start token, as in training, so that its piece i is read at position i + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import AutoModel

from gbcli.errors import GbcliError
from gbcli.lm.batching import cut_batches
from gbcli.lm.pooling import POOLS as POOLS  # re-exported: the pools are part of what lm.hidden computes
from gbcli.lm.pooling import Pool

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel

RANDOM_INIT_SEED = 0  # the control's weights: the same on every run, so that they can be cached
# Padded tokens per forward pass. On a CPU small batches win: every layer's states of the batch are kept, and a
# batch whose activations outgrow the caches runs slower per token (benchmarks/probe_rows.py); a GPU wants more.
CPU_BATCH_TOKENS = 512
GPU_BATCH_TOKENS = 8192


@dataclass(frozen=True)
class EncodedInput:
    """One text as the model reads it, and the positions whose states are averaged into its vector (empty when a
    word's characters fall on no piece: the caller refuses that line)."""

    ids: list[int]
    token_types: list[int] | None  # BERT's segment ids of a pair; None when the model takes none
    positions: list[int]


@dataclass(frozen=True)
class TextItem:
    """What to encode: a text, a pair's second text, or the characters of the word to probe in `text`."""

    text: str
    text_b: str | None = None
    span: tuple[int, int] | None = None


def is_encoder_decoder(lm: LoadedModel) -> bool:
    return bool(getattr(lm.model.config, "is_encoder_decoder", False))


def stack_names(lm: LoadedModel) -> list[str]:
    """The stacks whose states `pooled_states` gives: BART's encoder and decoder, else the one body ("")."""
    return ["encoder", "decoder"] if is_encoder_decoder(lm) else [""]


def joins_pairs_with_space(lm: LoadedModel) -> bool:
    """Whether the tokenizer puts nothing between the two texts of a pair (GPT-2), so that they are joined with a
    space; BERT and BART tokenizers encode a pair with their separators."""
    tok = lm.tokenizer
    alone = len(tok("a", add_special_tokens=False)["input_ids"]) + len(tok("b", add_special_tokens=False)["input_ids"])
    return len(tok("a", "b")["input_ids"]) <= alone


def encode_inputs(lm: LoadedModel, items: Sequence[TextItem], pool: Pool) -> list[EncodedInput]:
    """Each item's ids and the positions `pool` averages: of a word's pieces (`span`), or of the whole text."""
    join = any(item.text_b is not None for item in items) and joins_pairs_with_space(lm)
    encoded = []
    for item in items:
        offsets = item.span is not None
        if item.text_b is not None and not join:
            out = lm.tokenizer(item.text, item.text_b, return_special_tokens_mask=True)
        else:
            text = f"{item.text} {item.text_b}" if item.text_b is not None else item.text
            out = lm.tokenizer(text, return_special_tokens_mask=True, return_offsets_mapping=offsets)
        ids = list(out["input_ids"])
        token_types = list(out["token_type_ids"]) if "token_type_ids" in out and item.text_b is not None else None
        if item.span is not None:
            start, end = item.span
            pieces = [i for i, (a, b) in enumerate(out["offset_mapping"]) if b > a and a < end and b > start]
            # No piece on the word (a tokenizer that drops it): no position, which the caller refuses.
            positions = pieces if pool == "mean" or not pieces else [pieces[0] if pool == "first" else pieces[-1]]
        elif pool == "first":
            positions = [0]
        elif pool == "last":
            positions = [len(ids) - 1]
        else:
            positions = [i for i, special in enumerate(out["special_tokens_mask"]) if not special] or [0]
        encoded.append(EncodedInput(ids, token_types, positions))
    return encoded


def batch_tokens(lm: LoadedModel) -> int:
    return CPU_BATCH_TOKENS if lm.device.type == "cpu" else GPU_BATCH_TOKENS


def pooled_states(
    lm: LoadedModel,
    inputs: Sequence[EncodedInput],
    *,
    max_tokens: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """(indices, one float32 array [rows, layers, hidden] per stack) batch after batch, longest texts first.

    Layer 0 is the embeddings, then one per block (GPT-2's last is after its final layer norm, as
    `output_hidden_states` gives it). `on_batch(rows)` is called after each batch (a progress bar)."""
    body = lm.model.base_model
    seq2seq = is_encoder_decoder(lm)
    start_id = _decoder_start_id(lm) if seq2seq else None
    pad = lm.pad_id
    lengths = [len(item.ids) for item in inputs]
    for group in cut_batches(lengths, max_tokens=max_tokens or batch_tokens(lm)):
        width = max(lengths[i] for i in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        types = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, : lengths[i]] = torch.tensor(inputs[i].ids)
            mask[row, : lengths[i]] = 1
            if inputs[i].token_types is not None:
                types[row, : lengths[i]] = torch.tensor(inputs[i].token_types)
        extra = {"token_type_ids": types.to(lm.device)} if any(inputs[i].token_types for i in group) else {}
        with torch.inference_mode():
            if seq2seq:
                # Shifted right after the start token; the padding after each row's end is masked out as well.
                decoder_ids = torch.cat([torch.full((len(group), 1), start_id), ids[:, :-1]], dim=1)
                out = body(
                    input_ids=ids.to(lm.device),
                    attention_mask=mask.to(lm.device),
                    decoder_input_ids=decoder_ids.to(lm.device),
                    decoder_attention_mask=mask.to(lm.device),
                    output_hidden_states=True,
                )
                stacks = [(out.encoder_hidden_states, 0), (out.decoder_hidden_states, 1)]
            else:
                out = body(
                    input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), output_hidden_states=True, **extra
                )
                stacks = [(out.hidden_states, 0)]
            arrays = [_pooled(hidden, [inputs[i] for i in group], shift) for hidden, shift in stacks]
        yield group, arrays
        if on_batch is not None:
            on_batch(len(group))


def _pooled(hidden: tuple[torch.Tensor, ...], rows: list[EncodedInput], shift: int) -> np.ndarray:
    """[rows, layers, hidden] float32: the mean of each row's positions (moved by `shift` in BART's decoder)."""
    layers = torch.stack(hidden, dim=1)  # [rows, layers, width, hidden]
    vectors = []
    for row, item in enumerate(rows):
        picked = layers[row, :, [p + shift for p in item.positions]].float()
        vectors.append(picked[:, 0] if len(item.positions) == 1 else picked.mean(dim=1))
    return torch.stack(vectors).cpu().numpy()


def _decoder_start_id(lm: LoadedModel) -> int:
    """The token BART's decoder starts from (</s>), as generation and the training loss use it."""
    # A bare BartModel (the random-init control) has no generation config; its config holds the id too.
    for source in (getattr(lm.model, "generation_config", None), lm.model.config):
        value = getattr(source, "decoder_start_token_id", None)
        if isinstance(value, int):
            return value
    raise GbcliError(f"{lm.name} declares no decoder start token.", "Check the checkpoint's config.json.")


def layer_states(
    lm: LoadedModel, inputs: Sequence[EncodedInput], *, on_batch: Callable[[int], None] | None = None
) -> list[np.ndarray]:
    """Every layer's pooled states of each stack, [layers, examples, hidden], all in memory."""
    stacks: list[np.ndarray] = []
    for indices, arrays in pooled_states(lm, inputs, on_batch=on_batch):
        if not stacks:
            stacks = [np.empty((a.shape[1], len(inputs), a.shape[2]), dtype=np.float32) for a in arrays]
        for stack, array in zip(stacks, arrays, strict=True):
            stack[:, indices] = array.transpose(1, 0, 2)
    return stacks


def random_init_copy(lm: LoadedModel, seed: int = RANDOM_INIT_SEED) -> LoadedModel:
    """The same architecture and tokenizer with freshly initialised weights (the control)."""
    torch.manual_seed(seed)
    body = AutoModel.from_config(lm.model.config).to(dtype=lm.dtype, device=lm.device).eval()
    return replace(lm, model=body, has_lm_head=False, extras={**lm.extras, "random_init_seed": seed})
