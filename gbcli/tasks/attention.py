"""Attention weights: which tokens each token looks at, in a causal LM and in a masked LM.

GPT-2 must not see the tokens it is trained to predict, so a mask hides every key to the right of the query:
its attention matrices are lower-triangular. BERT is trained to fill blanks from both sides, so every token
attends to every other one: its matrices are full squares.

One forward pass gives every layer and head. The weights are the model's own post-softmax attention
probabilities, read with the eager attention implementation, because the fused kernels (sdpa, flash) never
materialise them. `compute_attention` and `summarize` are the reusable API; the rest picks what one screen shows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gbcli.errors import GbcliError, usage_error
from gbcli.models import LoadedModel
from gbcli.tasks.tokenization import readable_piece

MEAN = "mean"  # --head mean: the average over a layer's heads

# Per-head statistics of `--summary`: name → what it measures. Shares are averaged over all query tokens.
STATS: dict[str, str] = {
    "entropy": "entropy of each query's attention, in bits (0 = all on one token)",
    "distance": "mean |query − key| distance, weighted by attention",
    "to_first": "share of attention on the first token",
    "to_cls": "share of attention on [CLS] tokens",
    "to_sep": "share of attention on [SEP] tokens",
    "to_punct": "share of attention on punctuation tokens",
    "to_special": "share of attention on any special token",
    "previous": "share of attention on the token just before the query",
}
STAT_ALIASES: dict[str, str] = {
    "first": "to_first", "cls": "to_cls", "sep": "to_sep", "punct": "to_punct", "punctuation": "to_punct",
    "special": "to_special", "prev": "previous", "previous_token": "previous", "dist": "distance",
}


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


@contextmanager
def eager_attention(model: Any) -> Iterator[Any]:
    """Yield a model that runs the eager implementation, which returns its softmax weights.

    The loaded model is cached and shared with other commands in the process; they keep their sdpa kernels, so
    the previous implementation is restored afterwards. An architecture that cannot switch at run time (Falcon:
    no AttentionInterface) silently stays on sdpa, where `output_attentions=True` adds sdpa's boolean mask to the
    scores as 0/1 instead of 0/-inf and returns weights on future keys. For those, the pass runs on an eager twin
    built around the same weight tensors (nothing is copied).
    """
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
    import copy

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
        output = model.base_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  output_attentions=True)
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
        from gbcli.finite import check_finite

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
        output = model.base_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                  decoder_input_ids=decoder_input, output_attentions=True)
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


@dataclass
class HeadStats:
    """What one head does, averaged over the query tokens. None: the input has no such token."""

    layer: int
    head: int
    entropy: float
    distance: float | None  # None for cross-attention, whose queries and keys are different sequences
    to_first: float
    to_cls: float | None
    to_sep: float | None
    to_punct: float | None
    to_special: float | None
    previous: float | None

    def get(self, stat: str) -> float | None:
        return getattr(self, stat)


@dataclass
class AttentionSummary:
    """Statistics of every head of one attention map, and their means over all heads."""

    family: str
    model: str
    map: str
    layers: int
    heads: int
    per_head: list[HeadStats]
    mean: dict[str, float | None]

    def grid(self, stat: str) -> list[list[float | None]]:
        """stat as a layer × head grid."""
        rows: list[list[float | None]] = [[None] * self.heads for _ in range(self.layers)]
        for item in self.per_head:
            rows[item.layer][item.head] = item.get(stat)
        return rows


def is_punctuation(token: AttentionToken) -> bool:
    text = token.label.lstrip("␣·").strip()
    return not token.special and bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def _share(weights: np.ndarray, columns: list[int]) -> np.ndarray | None:
    """Mean over queries of the attention on the given key columns, per (layer, head); None if no such column."""
    if not columns:
        return None
    return weights[..., columns].sum(axis=-1, dtype=np.float64).mean(axis=-1)


def summarize(result: AttentionResult, map_name: str | None = None) -> AttentionSummary:
    """Entropy, distance and where the attention goes, for every head of one map (default: the main one).

    [CLS] and [SEP] are the tokens the tokenizer declares as its cls and sep tokens (<s> and </s> for RoBERTa).
    """
    amap = result.map(map_name) if map_name else result.main
    w = amap.weights  # float32; sums below accumulate in float64
    n_queries = w.shape[-2]
    logs = np.log2(np.where(w > 0, w, np.float32(1.0)))
    entropy = -(w * logs).sum(axis=-1, dtype=np.float64).mean(axis=-1)
    q_pos = np.array([t.index for t in amap.queries])[:, None]
    k_pos = np.array([t.index for t in amap.keys])[None, :]
    same_sequence = amap.queries == amap.keys
    distance = None
    if same_sequence:  # a distance between positions of two different sequences would mean nothing
        distance = (w * np.abs(q_pos - k_pos).astype(np.float32)).sum(axis=-1, dtype=np.float64).mean(axis=-1)
    keys = amap.keys
    stats: dict[str, np.ndarray | None] = {
        "entropy": entropy,
        "distance": distance,
        "to_first": _share(w, [0]),
        "to_cls": _share(w, [k.index for k in keys if k.role == "cls"]),
        "to_sep": _share(w, [k.index for k in keys if k.role == "sep"]),
        "to_punct": _share(w, [k.index for k in keys if is_punctuation(k)]),
        "to_special": _share(w, [k.index for k in keys if k.special]),
        "previous": None,
    }
    if same_sequence and n_queries > 1:
        # Only self-attention has a "previous token": the key one position left of the query.
        rows = np.arange(1, n_queries)
        stats["previous"] = w[..., rows, rows - 1].mean(axis=-1)
    per_head = []
    for layer in range(amap.layers):
        for head in range(amap.heads):
            values = {name: (None if v is None else float(v[layer, head])) for name, v in stats.items()}
            per_head.append(HeadStats(layer=layer, head=head, **values))  # type: ignore[arg-type]
    mean = {name: (None if v is None else float(v.mean())) for name, v in stats.items()}
    return AttentionSummary(result.family, result.model, amap.name, amap.layers, amap.heads, per_head, mean)


def resolve_stat(stat: str) -> str:
    name = stat.strip().lower().replace("-", "_")
    name = STAT_ALIASES.get(name, name)
    if name not in STATS:
        raise usage_error(f"Unknown statistic '{stat}' for --stat.", f"Choose from: {', '.join(STATS)}.")
    return name


# ---------------------------------------------------------------------------------------------------------------
# Choosing what to show: a layer, a head, a query token
# ---------------------------------------------------------------------------------------------------------------


def parse_head(head: str) -> int | None:
    """--head: 'mean' (None) or a head index, negative counting from the end."""
    value = head.strip().lower()
    if value in {MEAN, "avg", "average"}:
        return None
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    raise usage_error(f"--head must be a head index or 'mean', not '{head}'.", "e.g. --head 0, --head -1, --head mean")


def _map_name(result: AttentionResult, amap: AttentionMap) -> str:
    return result.model if len(result.maps) == 1 else f"{result.model}'s {amap.name}"


def resolve_layer(result: AttentionResult, layer: int | None, amap: AttentionMap | None = None) -> int:
    """A layer index from 0, negative from the end (-1 = last); None is the last layer."""
    amap = amap or result.main
    count = amap.layers
    if layer is None:
        return count - 1
    if not -count <= layer < count:
        raise usage_error(
            f"{_map_name(result, amap)} has {count} layers, numbered 0 to {count - 1}; --layer {layer} is out of "
            "range.",
            "Give a layer from 0, or a negative one from the end (-1 is the last).",
        )
    return layer % count


def resolve_head(result: AttentionResult, head: int | None, amap: AttentionMap | None = None) -> int | None:
    amap = amap or result.main
    count = amap.heads
    if head is None:
        return None
    if not -count <= head < count:
        raise usage_error(
            f"{_map_name(result, amap)} has {count} heads per layer, numbered 0 to {count - 1}; --head {head} is out "
            "of range.",
            "Give a head from 0, a negative one from the end, or --head mean.",
        )
    return head % count


def _word_key(label: str) -> str:
    return label.lstrip("␣·").strip().lower()


def find_query_token(result: AttentionResult, spec: str, amap: AttentionMap | None = None) -> tuple[int, str | None]:
    """--token: an index (negative from the end) or a word; a word in several pieces is found by its first piece.

    Returns the index and a note for the reader when the choice needed one.
    """
    amap = amap or result.main
    tokens, name = amap.queries, _map_name(result, amap)
    value = spec.strip()
    if re.fullmatch(r"-?\d+", value):
        index = int(value)
        if not -len(tokens) <= index < len(tokens):
            raise usage_error(
                f"--token {index} is out of range: {name}'s input has {len(tokens)} tokens, numbered 0 to "
                f"{len(tokens) - 1}.",
                "Give a token index from 0, a negative one from the end, or a word.",
            )
        return index % len(tokens), None
    word = value.lower()
    if not word:
        raise usage_error("--token is empty.", "Give a word of the text or a token index.")
    matches: list[tuple[int, int]] = []  # (first piece, number of pieces)
    for start, token in enumerate(tokens):
        if token.label.strip().lower() == word or (not token.special and _word_key(token.label) == word):
            matches.append((start, 1))
            continue
        if token.special or token.label.startswith("·"):
            continue  # a word starts at a piece that does not continue the previous one
        joined = _word_key(token.label)
        end = start + 1
        while word.startswith(joined) and joined != word and end < len(tokens):
            nxt = tokens[end]
            if nxt.special or nxt.label.startswith("␣"):
                break
            joined += nxt.label.lstrip("·").lower()
            end += 1
        if joined == word and end - start > 1:
            matches.append((start, end - start))
    if not matches:
        shown = " ".join(t.label for t in tokens[:40]) + (" …" if len(tokens) > 40 else "")
        raise usage_error(
            f"'{spec}' is not a token of {name}'s input ({shown}).",
            "Give a word of the text, or a token index (0 is the first token).",
        )
    index, pieces = matches[0]
    notes = []
    if pieces > 1:
        parts = " + ".join(t.label for t in tokens[index : index + pieces])
        notes.append(f"'{spec}' is {pieces} pieces for {name} ({parts}); showing the first")
    if len(matches) > 1:
        notes.append(f"it occurs {len(matches)} times; showing the first (use a token index to pick another)")
    return index, "; ".join(notes) or None


@dataclass
class AttendedToken:
    index: int
    label: str
    weight: float


@dataclass
class LayerFocus:
    layer: int
    top: list[AttendedToken]


@dataclass
class TokenFocus:
    """For one query token: the keys it attends to most, layer by layer."""

    query: AttentionToken
    head: int | str
    note: str | None
    layers: list[LayerFocus]


def token_focus(
    result: AttentionResult, query: int, head: int | None, top: int = 5, amap: AttentionMap | None = None
) -> TokenFocus:
    amap = amap or result.main
    layers = []
    for layer in range(amap.layers):
        row = amap.matrix(layer, head)[query]
        order = np.argsort(-row, kind="stable")[:top]
        layers.append(
            LayerFocus(layer, [AttendedToken(int(k), amap.keys[k].label, float(row[k])) for k in order if row[k] > 0])
        )
    return TokenFocus(amap.queries[query], MEAN if head is None else head, None, layers)


# ---------------------------------------------------------------------------------------------------------------
# What one run shows, for people (render/attention.py) and for scripts (--json)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelAttentionView:
    """One model's column: its tokens and the chosen query × key matrix, plus summary or focus when asked."""

    family: str
    model: str
    kind: str
    causal: bool
    layers: int
    heads: int
    tokens: list[AttentionToken]  # the query tokens (rows)
    layer: int
    head: int | str  # a head index, or "mean"
    matrix: list[list[float]]
    summary: AttentionSummary | None = None
    focus: TokenFocus | None = None
    map: str = "self"  # an encoder-decoder has three views: encoder, decoder and cross
    keys: list[AttentionToken] | None = None  # the key tokens (columns) when they are not the query tokens

    @property
    def key_tokens(self) -> list[AttentionToken]:
        return self.tokens if self.keys is None else self.keys


@dataclass
class ExportInfo:
    path: str
    format: str
    bytes: int


@dataclass
class AttentionReport:
    text: str
    models: list[ModelAttentionView] = field(default_factory=list)
    stat: str | None = None
    export: ExportInfo | None = None


def model_view(
    result: AttentionResult,
    layer: int | None,
    head: int | None,
    *,
    summary: AttentionSummary | None = None,
    focus: TokenFocus | None = None,
    amap: AttentionMap | None = None,
) -> ModelAttentionView:
    amap = amap or result.main
    chosen_layer = resolve_layer(result, layer, amap)
    chosen_head = resolve_head(result, head, amap)
    matrix = amap.matrix(chosen_layer, chosen_head)
    return ModelAttentionView(
        family=result.family,
        model=result.model,
        kind=result.kind,
        causal=amap.causal,
        layers=amap.layers,
        heads=amap.heads,
        tokens=amap.queries,
        layer=chosen_layer,
        head=MEAN if chosen_head is None else chosen_head,
        matrix=matrix.tolist(),  # float32 → float is exact
        summary=summary,
        focus=focus,
        map=amap.name,
        keys=None if amap.keys == amap.queries else amap.keys,
    )


def build_report(
    text: str,
    results: list[AttentionResult],
    *,
    layer: int | None = None,
    head: int | None = None,
    summary: bool = False,
    stat: str = "entropy",
    token: str | None = None,
    top: int = 5,
) -> AttentionReport:
    """The chosen layer and head of every model, with the per-head summary and one token's focus when asked."""
    report = AttentionReport(text=text, stat=stat if summary else None)
    for result in results:
        for amap in result.maps:  # one view for GPT and BERT; encoder, decoder and cross for BART
            focus = None
            if token is not None:
                index, note = find_query_token(result, token, amap)
                focus = token_focus(result, index, resolve_head(result, head, amap), top, amap)
                focus.note = note
            report.models.append(model_view(
                result, layer, head, summary=summarize(result, amap.name) if summary else None, focus=focus,
                amap=amap,
            ))
    return report
