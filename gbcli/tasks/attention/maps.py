"""The attention maps of one text: the model's own post-softmax weights from one eager forward pass (a twin
sharing the model's tensors where the fused kernels would hide them), labelled and checked against the labels."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from gbcli.errors import GbcliError, usage_error
from gbcli.loading.capability import FastPath, installed_version, missing
from gbcli.loading.models import LoadedModel
from gbcli.loading.versions import TRANSFORMERS_RANGE
from gbcli.tasks.finite import check_finite
from gbcli.tasks.tokenization import readable_piece

MEAN = "mean"  # --head mean: the average over a layer's heads


@dataclass
class AttentionToken:
    """One input token as the heatmap labels it."""

    index: int
    id: int
    piece: str  # the raw vocabulary entry, e.g. Ġduck or ##s
    label: str  # what a reader sees, e.g. ␣duck or ·s; special tokens keep their name ([CLS])
    special: bool
    role: str | None = None  # for special tokens: cls, sep, mask, pad, bos, eos or unk


@dataclass
class AttentionMap:
    """One stack of attention weights: `weights[layer, head, query, key]`, post-softmax, float32.

    GPT and BERT have one map, "self". A seq2seq model has several (encoder, decoder, cross), whose queries
    and keys are different token sequences; that is why each map carries its own.
    """

    name: str
    causal: bool
    queries: list[AttentionToken]
    keys: list[AttentionToken]
    weights: np.ndarray

    @property
    def layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def heads(self) -> int:
        return int(self.weights.shape[1])

    def matrix(self, layer: int, head: int | None) -> np.ndarray:
        """The query × key matrix of one head, or the mean over the layer's heads for head=None."""
        stack = self.weights[layer]
        return stack.mean(axis=0) if head is None else stack[head]


@dataclass
class AttentionResult:
    """Every attention weight of one model on one text, from one forward pass."""

    family: str
    model: str
    kind: str
    implementation: str  # the attention implementation that produced the weights (always eager)
    maps: list[AttentionMap]

    @property
    def main(self) -> AttentionMap:
        return self.maps[0]

    @property
    def tokens(self) -> list[AttentionToken]:
        return self.main.queries

    def map(self, name: str) -> AttentionMap:
        for item in self.maps:
            if item.name == name:
                return item
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------------
# One forward pass
# ---------------------------------------------------------------------------------------------------------------


def check_text(text: str) -> str:
    if not text.strip():
        raise usage_error("The text is empty.", 'Give some text, e.g. gbcli attention "The duck quacks."')
    return text


SPECIAL_ROLES = ("cls", "sep", "mask", "pad", "bos", "eos", "unk")


def label_tokens(tokenizer: Any, ids: list[int]) -> list[AttentionToken]:
    """Readable labels; special tokens keep their own names and get their role from the tokenizer."""
    special_ids = set(tokenizer.all_special_ids)
    roles: dict[int, str] = {}
    for role in reversed(SPECIAL_ROLES):  # the first role wins: GPT-2's <|endoftext|> is bos, eos and unk at once
        role_id = getattr(tokenizer, f"{role}_token_id", None)
        if isinstance(role_id, int):
            roles[role_id] = role
    tokens = []
    for index, token_id in enumerate(ids):
        piece = tokenizer.convert_ids_to_tokens(token_id)
        special = token_id in special_ids
        label = piece if special else readable_piece(piece, tokenizer.decode([token_id]))
        tokens.append(AttentionToken(index, int(token_id), piece, label, special, roles.get(token_id)))
    return tokens


def _probe() -> str | None:
    """Why the eager switch cannot run on this transformers (None: it can): the names `eager_attention` and
    `eager_twin` read (every 5.x has them)."""
    import torch
    from transformers import GPT2Config, PreTrainedModel

    return (
        missing(PreTrainedModel, "_can_set_attn_implementation", "_from_config", "set_attn_implementation")
        or missing(GPT2Config(), "_attn_implementation")
        or missing(torch.nn.Module(), "_buffers")
    )


# Not a speed path: the only way to the weights. Off (a transformers without these names), `attention` says so.
EAGER_SWITCH = FastPath("eager attention switch", "nothing (attention cannot run)", _probe)


@contextmanager
def eager_attention(model: Any) -> Iterator[Any]:
    """Yield a model that runs the eager implementation, which returns its softmax weights.

    The loaded model is cached and shared with other commands in the process; they keep their sdpa kernels, so
    the previous implementation is restored afterwards. An architecture that cannot switch at run time (Falcon:
    no AttentionInterface) silently stays on sdpa, where `output_attentions=True` adds sdpa's boolean mask to the
    scores as 0/1 instead of 0/-inf and returns weights on future keys. For those, the pass runs on an eager twin
    built around the same weight tensors (nothing is copied).
    """
    if not EAGER_SWITCH.on:
        raise GbcliError(
            f"transformers {installed_version('transformers')} cannot switch {type(model).__name__} to "
            f"eager attention here ({EAGER_SWITCH.reason}), so its attention weights cannot be read.",
            f'Install a transformers gbcli supports: pip install "transformers{TRANSFORMERS_RANGE}"',
        )
    previous = model.config._attn_implementation
    if previous == "eager":
        yield model
        return
    if not type(model)._can_set_attn_implementation():
        yield eager_twin(model)
        return
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


def eager_twin(model: Any) -> Any:
    """The same architecture built for eager attention around `model`'s own parameters and buffers.

    It is built on the meta device (no memory, no random initialisation), then every parameter, buffer and other
    tensor attribute is the original's object, so its outputs are the model's with eager attention.
    """
    import torch

    config = copy.deepcopy(model.config)
    with torch.device("meta"):
        twin = type(model)._from_config(config, attn_implementation="eager", dtype=model.dtype)
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    originals = dict(model.named_modules())
    for name, module in twin.named_modules():
        original = originals[name]
        for attribute, value in list(vars(module).items()):
            if attribute == "_buffers":
                for buffer_name in value:
                    value[buffer_name] = original._buffers[buffer_name]
            elif isinstance(value, torch.Tensor):
                setattr(module, attribute, getattr(original, attribute))
    left = [name for name, tensor in [*twin.named_parameters(), *twin.named_buffers()] if tensor.is_meta]
    if left or twin.config._attn_implementation != "eager":
        raise GbcliError(
            f"{type(model).__name__} cannot run its eager attention, so its attention weights cannot be read.",
            "Use another architecture for `gbcli attention`.",
        )
    return twin.eval()


def compute_attention(lm: LoadedModel, text: str) -> AttentionResult:
    """Tokenize the text as the model would (with its special tokens) and read every layer's attention."""
    import torch

    check_text(text)
    ids = lm.tokenizer(text)["input_ids"]
    if not ids:
        raise usage_error("The text tokenizes to nothing.", "Give some visible text.")
    specials = " with its special tokens" if any(i in lm.tokenizer.all_special_ids for i in ids) else ""
    lm.check_fits(len(ids), f"the text{specials}", f"Shorten the text to at most {lm.max_positions} tokens.")
    input_ids = torch.tensor([ids], device=lm.device)
    if getattr(lm.model.config, "is_encoder_decoder", False):
        return _encoder_decoder_attention(lm, ids)
    refuse_attention_free(lm)
    # The body alone (base_model): the language-model head would cost a vocabulary-sized projection and change no
    # weight.
    with eager_attention(lm.model) as model, torch.inference_mode():
        output = model.base_model(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_attentions=True
        )
    weights = _stack(lm, getattr(output, "attentions", None))
    tokens = label_tokens(lm.tokenizer, ids)
    self_map = check_map(lm, AttentionMap("self", lm.kind == "causal", tokens, tokens, weights))
    return AttentionResult(lm.family, lm.name, lm.kind, "eager", [self_map])


def _stack(lm: LoadedModel, attentions: Any) -> np.ndarray:
    """Per-layer attention tensors of a batch of one, as [layer, head, query, key] float32."""
    import torch

    if not attentions or any(a is None or a.dim() != 4 for a in attentions):
        raise GbcliError(
            f"{lm.name} returned no attention weights (implementation {lm.model.config._attn_implementation}).",
            "This architecture cannot switch to eager attention at run time.",
        )
    return torch.stack([a[0] for a in attentions]).float().cpu().numpy()


# Architectures that mix tokens without attention weights (state-space models, linear recurrences): model type →
# what they use instead. RWKV's `output_attentions` returns its time-mixing outputs, which are not weights at all.
ATTENTION_FREE: dict[str, str] = {
    "mamba": "a selective state-space recurrence",
    "mamba2": "a selective state-space recurrence",
    "falcon_mamba": "a selective state-space recurrence",
    "rwkv": "RWKV's linear time-mixing recurrence",
}


def refuse_attention_free(lm: LoadedModel) -> None:
    """A model without attention has no map to show: say so, instead of a crash or an empty map."""
    model_type = getattr(lm.model.config, "model_type", "")
    if model_type in ATTENTION_FREE:
        raise GbcliError(
            f"{lm.name} ({type(lm.model).__name__}) has no attention: this model has no attention weights to show; "
            f"it mixes tokens with {ATTENTION_FREE[model_type]}.",
            "Use a transformer for `gbcli attention`; generate, score and fill-mask work with this model.",
            exit_code=2,
        )


# How far a row of softmax weights may sum from 1: float32 rounding, and bfloat16/float16 weights.
ROW_SUM_TOLERANCE = 1e-4
HALF_ROW_SUM_TOLERANCE = 2e-2


def check_map(lm: LoadedModel, amap: AttentionMap) -> AttentionMap:
    """Hold the weights to what their labels claim: every row a probability distribution over the keys, and a
    causal map exactly zero above the diagonal. A map that is not is refused, never shown under those labels."""
    import torch

    weights = amap.weights
    expected = (len(amap.queries), len(amap.keys))
    tolerance = ROW_SUM_TOLERANCE if lm.dtype == torch.float32 else HALF_ROW_SUM_TOLERANCE
    problem = None
    if weights.shape[-2:] != expected:
        problem = f"its {amap.name} map is {weights.shape[-2]} x {weights.shape[-1]}, not {expected[0]} x {expected[1]}"
    elif not np.isfinite(weights).all():
        check_finite(amap, [lm])  # an overflow is the arithmetic's, not the architecture's: say it as such
    elif (weights < 0).any():
        problem = f"its {amap.name} map holds negative weights"
    elif np.abs(weights.sum(axis=-1, dtype=np.float64) - 1).max() > tolerance:
        worst = float(np.abs(weights.sum(axis=-1, dtype=np.float64) - 1).max())
        problem = f"rows of its {amap.name} map sum to 1 ± {worst:.3g}, so they are not softmax weights"
    elif amap.causal:
        above = np.triu(np.ones(expected, dtype=bool), k=1)
        future = float(weights[..., above].max()) if above.any() else 0.0
        if future != 0.0:
            problem = f"its causal {amap.name} map puts weight up to {future:.3g} on future keys (above the diagonal)"
    if problem is not None:
        raise GbcliError(
            f"{lm.name} ({type(lm.model).__name__}): {problem}; gbcli will not show weights that are not the "
            "model's attention.",
            "Please report this architecture; the other commands still work with it.",
        )
    return amap


# What each of an encoder-decoder's three maps is, for the reader: name → description.
SEQ2SEQ_MAPS: dict[str, str] = {
    "encoder": "encoder self-attention: bidirectional, each input token sees every input token",
    "decoder": "decoder self-attention: causal, each output token sees only the output tokens to its left",
    "cross": "cross-attention: each output token (row) looks at every encoded input token (column)",
}
DECODER_INPUT = (
    "the decoder reads the text shifted right after its start token, as when it is trained to reconstruct it"
)


def _encoder_decoder_attention(lm: LoadedModel, ids: list[int]) -> AttentionResult:
    """BART's three maps from one teacher-forced pass: the encoder reads the text and the decoder reads the same
    text shifted right (its start token first), which is how it is trained to write the text back."""
    import torch

    start = getattr(lm.model.generation_config, "decoder_start_token_id", None)
    if not isinstance(start, int):
        start = lm.model.config.decoder_start_token_id
    decoder_ids = [start, *ids[:-1]]
    input_ids = torch.tensor([ids], device=lm.device)
    decoder_input = torch.tensor([decoder_ids], device=lm.device)
    with eager_attention(lm.model) as model, torch.inference_mode():
        output = model.base_model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            decoder_input_ids=decoder_input,
            output_attentions=True,
        )
    encoder_tokens = label_tokens(lm.tokenizer, ids)
    decoder_tokens = label_tokens(lm.tokenizer, decoder_ids)
    maps = [
        AttentionMap("encoder", False, encoder_tokens, encoder_tokens, _stack(lm, output.encoder_attentions)),
        AttentionMap("decoder", True, decoder_tokens, decoder_tokens, _stack(lm, output.decoder_attentions)),
        AttentionMap("cross", False, decoder_tokens, encoder_tokens, _stack(lm, output.cross_attentions)),
    ]
    maps = [check_map(lm, amap) for amap in maps]
    return AttentionResult(lm.family, lm.name, lm.kind, "eager", maps)


# ---------------------------------------------------------------------------------------------------------------
# Per-head statistics (--summary)
# ---------------------------------------------------------------------------------------------------------------
