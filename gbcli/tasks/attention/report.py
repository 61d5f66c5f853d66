"""What one attention screen shows: each model's map, its summary, and where one query token looks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gbcli.tasks.attention.maps import MEAN, AttentionMap, AttentionResult, AttentionToken
from gbcli.tasks.attention.summary import AttentionSummary, find_query_token, resolve_head, resolve_layer, summarize


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
            LayerFocus(
                layer + 1,  # numbered 1..L, as every command numbers layers
                [AttendedToken(int(k), amap.keys[k].label, float(row[k])) for k in order if row[k] > 0],
            )
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
        layer=chosen_layer + 1,  # numbered 1..L, as every command numbers layers (0 is the embeddings)
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
            report.models.append(
                model_view(
                    result,
                    layer,
                    head,
                    summary=summarize(result, amap.name) if summary else None,
                    focus=focus,
                    amap=amap,
                )
            )
    return report
