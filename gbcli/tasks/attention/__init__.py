"""Attention weights: which tokens each token looks at, in a causal LM and in a masked LM.

GPT-2 must not see the tokens it is trained to predict, so a mask hides every key to the right of the query:
its attention matrices are lower-triangular. BERT is trained to fill blanks from both sides, so every token
attends to every other one: its matrices are full squares.

One forward pass gives every layer and head. The weights are the model's own post-softmax attention
probabilities, read with the eager attention implementation, because the fused kernels (sdpa, flash) never
materialise them. `compute_attention` and `summarize` are the reusable API; the rest picks what one screen shows.
"""

from gbcli.tasks.attention.maps import (
    ATTENTION_FREE,
    DECODER_INPUT,
    HALF_ROW_SUM_TOLERANCE,
    MEAN,
    ROW_SUM_TOLERANCE,
    SEQ2SEQ_MAPS,
    SPECIAL_ROLES,
    AttentionMap,
    AttentionResult,
    AttentionToken,
    check_map,
    check_text,
    compute_attention,
    eager_attention,
    eager_twin,
    label_tokens,
    refuse_attention_free,
)
from gbcli.tasks.attention.report import (
    AttendedToken,
    AttentionReport,
    ExportInfo,
    LayerFocus,
    ModelAttentionView,
    TokenFocus,
    build_report,
    model_view,
    token_focus,
)
from gbcli.tasks.attention.summary import (
    STAT_ALIASES,
    STATS,
    AttentionSummary,
    HeadStats,
    check_layer_and_head,
    find_query_token,
    is_punctuation,
    parse_head,
    resolve_head,
    resolve_layer,
    resolve_stat,
    summarize,
)

__all__ = [
    "ATTENTION_FREE",
    "DECODER_INPUT",
    "HALF_ROW_SUM_TOLERANCE",
    "MEAN",
    "ROW_SUM_TOLERANCE",
    "SEQ2SEQ_MAPS",
    "SPECIAL_ROLES",
    "STATS",
    "STAT_ALIASES",
    "AttendedToken",
    "AttentionMap",
    "AttentionReport",
    "AttentionResult",
    "AttentionSummary",
    "AttentionToken",
    "ExportInfo",
    "HeadStats",
    "LayerFocus",
    "ModelAttentionView",
    "TokenFocus",
    "build_report",
    "check_layer_and_head",
    "check_map",
    "check_text",
    "compute_attention",
    "eager_attention",
    "eager_twin",
    "find_query_token",
    "is_punctuation",
    "label_tokens",
    "model_view",
    "parse_head",
    "refuse_attention_free",
    "resolve_head",
    "resolve_layer",
    "resolve_stat",
    "summarize",
    "token_focus",
]
