"""Per-head statistics of attention (`--summary`) and the choice of layer, head and query token a screen shows."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gbcli.errors import usage_error
from gbcli.tasks.attention.maps import MEAN, SEQ2SEQ_MAPS, AttentionMap, AttentionResult, AttentionToken
from gbcli.tasks.layer_choice import head_position, layer_position

if TYPE_CHECKING:
    from gbcli.loading.shapes import ModelShape

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
    "first": "to_first",
    "cls": "to_cls",
    "sep": "to_sep",
    "punct": "to_punct",
    "punctuation": "to_punct",
    "special": "to_special",
    "prev": "previous",
    "previous_token": "previous",
    "dist": "distance",
}


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
            rows[item.layer - 1][item.head] = item.get(stat)
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
            # Layers are numbered 1..L, as every command numbers them (0 is the embeddings).
            per_head.append(HeadStats(layer=layer + 1, head=head, **values))  # type: ignore[arg-type]
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
    """The index (from 0) of the block numbered `layer` (gbcli.tasks.layer_choice.layer_position)."""
    amap = amap or result.main
    return layer_position(_map_name(result, amap), amap.layers, layer)


def resolve_head(result: AttentionResult, head: int | None, amap: AttentionMap | None = None) -> int | None:
    amap = amap or result.main
    return head_position(_map_name(result, amap), amap.heads, head)


def check_layer_and_head(shapes: list[ModelShape], layer: int | None, head: int | None) -> None:
    """--layer and --head against each model's counts from its config.json, before any model loads: the messages
    `resolve_layer` and `resolve_head` give after a load. An encoder-decoder's cross-attention has the decoder's
    layers and heads."""
    for shape in shapes:
        stacks = {stack.name: stack for stack in shape.stacks}
        if "" in stacks:
            maps = [(shape.name, stacks[""])]
        else:
            maps = [(f"{shape.name}'s {name}", stacks["decoder" if name == "cross" else name]) for name in SEQ2SEQ_MAPS]
        for name, stack in maps:
            layer_position(name, stack.layers, layer)
            head_position(name, stack.heads, head)


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
