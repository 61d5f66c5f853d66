"""Which input tokens drove a prediction: gradient × input and integrated gradients on the input embeddings.

The function explained is f = log p(target), the model's log-probability of the target token at the blank (BERT:
at the `[MASK]`; GPT-2: after the words before the blank, the only ones it reads; BART: in its decoder, after the
words before the blank, with the whole text in its encoder). Attributions are taken on the token embeddings x,
relative to a baseline x' that zeroes the text's own tokens and keeps the special tokens ([CLS], [SEP], the mask,
<|endoftext|>) as they are, so those get no attribution: they are the question, not the evidence.

- gradient × input: a_i = (x_i − x'_i) · ∇_{x_i} f(x), one backward pass (Shrikumar et al. 2016);
- integrated gradients: a_i = (x_i − x'_i) · mean_k ∇_{x_i} f(x' + α_k (x − x')), α_k = (k + ½) / m, the midpoint
  rule over m steps (Sundararajan et al. 2017). They satisfy completeness, Σ a_i = f(x) − f(x'), up to the error
  of the m-step rule, and the result states that error.

captum computes the same, but it is a sizeable dependency for some twenty lines, and its layer hooks would have to
be mapped onto three architectures anyway; written here, every step can be read and checked against autograd.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from gbcli.errors import GbcliError, usage_error
from gbcli.lm.heads import MLM_HEADS
from gbcli.loading.models import LoadedModel
from gbcli.tasks.prediction import Query, blank_segments, encoder_extras, prediction_query, token_label
from gbcli.tasks.saliency_options import (  # re-exported: the methods are part of the saliency API
    DEFAULT_STEPS as DEFAULT_STEPS,
)
from gbcli.tasks.saliency_options import (
    MAX_STEPS as MAX_STEPS,
)
from gbcli.tasks.saliency_options import (
    METHOD_CHOICES as METHOD_CHOICES,
)
from gbcli.tasks.saliency_options import (
    METHODS as METHODS,
)
from gbcli.tasks.saliency_options import (
    Method as Method,
)
from gbcli.tasks.saliency_options import (
    check_options as check_options,
)
from gbcli.tasks.tokenization import readable_piece

STEP_BATCH = 16  # path points per forward pass
COMPLETENESS_TOLERANCE = 0.01  # relative: above it, the path integral needs more --steps ...
COMPLETENESS_FLOOR = 1e-4  # ... unless the error is below this many nats (f(x) ≈ f(x') makes relative meaningless)
Role = Literal["text", "special", "unseen"]

NOTE = (
    "f = log p(target) at the blank; attributions on the token embeddings from a baseline that zeroes the text's "
    "tokens and keeps the special ones (they get none); share = |a| / Σ|a|; + raised f, − lowered it."
)


@dataclass
class SalientToken:
    """One token of the text and what each method gives it. Unseen tokens are not in the model's input at all."""

    index: int | None  # position in the model's input (BART: its encoder's); None for unseen tokens
    token: str
    role: Role
    gradient_x_input: float | None = None
    gradient_x_input_share: float | None = None
    integrated_gradients: float | None = None
    integrated_gradients_share: float | None = None


@dataclass
class Completeness:
    """Integrated gradients' check: Σ a_i against f(x) − f(x')."""

    steps: int
    attribution_sum: float
    f_input: float
    f_baseline: float
    error: float  # |Σ a_i − (f(x) − f(x'))|
    relative_error: float  # error / |f(x) − f(x')|
    tolerance: float = COMPLETENESS_TOLERANCE
    holds: bool = True  # relative_error ≤ tolerance, or error ≤ COMPLETENESS_FLOOR


@dataclass
class Target:
    token: str
    id: int
    prob: float
    chosen: bool  # given with --target, rather than the model's top prediction


@dataclass
class ModelSaliency:
    family: str
    model: str
    kind: str
    predicts: str
    target: Target
    tokens: list[SalientToken]
    completeness: Completeness | None
    most_salient: str | None  # the token with the largest share (integrated gradients if computed)


@dataclass
class SaliencyResult:
    text: str
    methods: list[str]
    steps: int
    models: list[ModelSaliency] = field(default_factory=list)
    note: str = NOTE


def saliency(
    models: list[LoadedModel],
    text: str,
    target: str | None = None,
    methods: tuple[Method, ...] = ("gxi", "ig"),
    steps: int = DEFAULT_STEPS,
) -> SaliencyResult:
    """Each model's attributions for its prediction at the one blank of the text (or of the next word)."""
    segments = blank_segments(text)
    result = SaliencyResult(text=text, methods=list(methods), steps=steps)
    for lm in models:
        if not lm.has_lm_head:
            raise GbcliError(
                f"{lm.name} has no language-model head, so it predicts nothing to explain.",
                "Use a checkpoint with its head; `gbcli context` works with a bare encoder.",
                exit_code=2,
            )
        result.models.append(_model_saliency(lm, text, segments, target, methods, steps))
    return result


# --------------------------------------------------------------------------------------------------------------
# One model
# --------------------------------------------------------------------------------------------------------------


def _model_saliency(
    lm: LoadedModel, text: str, segments: list[str] | None, target: str | None, methods: tuple[Method, ...], steps: int
) -> ModelSaliency:
    query = prediction_query(lm, text, segments)
    f = _log_prob_function(lm, query)
    embed = lm.model.get_input_embeddings()
    ids = torch.tensor([query.ids], device=lm.device)
    with torch.no_grad():
        x = embed(ids)[0].clone()
        logprobs = f(x[None], None)[0]
    special = set(lm.tokenizer.all_special_ids)
    held = torch.tensor([i in special for i in query.ids], device=lm.device)
    baseline = torch.where(held[:, None], x, torch.zeros_like(x))
    target_id, chosen = _target_id(lm, target, query) if target is not None else (int(logprobs.argmax()), False)

    def objective(points: torch.Tensor) -> torch.Tensor:
        return f(points, target_id)

    gxi = ig = None
    completeness = None
    if "gxi" in methods:
        gxi = ((x - baseline) * _gradients(objective, x[None])[0]).sum(-1)
    if "ig" in methods:
        alphas = (torch.arange(steps, device=lm.device, dtype=x.dtype) + 0.5) / steps
        total = torch.zeros_like(x)
        for begin in range(0, steps, STEP_BATCH):
            a = alphas[begin : begin + STEP_BATCH, None, None]
            total += _gradients(objective, baseline[None] + a * (x - baseline)[None]).sum(0)
        ig = ((x - baseline) * total / steps).sum(-1)
        with torch.no_grad():
            f_x, f_base = float(objective(x[None])[0]), float(objective(baseline[None])[0])
        attribution_sum = float(ig.double().sum())
        error = abs(attribution_sum - (f_x - f_base))
        relative = error / abs(f_x - f_base) if f_x != f_base else 0.0
        completeness = Completeness(
            steps,
            attribution_sum,
            f_x,
            f_base,
            error,
            relative,
            holds=relative <= COMPLETENESS_TOLERANCE or error <= COMPLETENESS_FLOOR,
        )
    tokens = _tokens(lm, query, held, gxi, ig)
    if segments is not None and lm.kind == "causal":
        tokens += _unseen(lm, segments)
    shares = [(t.integrated_gradients_share if ig is not None else t.gradient_x_input_share) or 0.0 for t in tokens]
    # None when nothing can be attributed (GPT-2 with a blank at the very start reads only <|endoftext|>).
    most = tokens[max(range(len(tokens)), key=lambda i: shares[i])].token if any(shares) else None
    chosen_target = Target(token_label(lm, target_id), target_id, float(logprobs[target_id].exp()), chosen)
    return ModelSaliency(lm.family, lm.name, lm.kind, query.predicts, chosen_target, tokens, completeness, most)


def _log_prob_function(lm: LoadedModel, query: Query) -> Callable[[torch.Tensor, int | None], torch.Tensor]:
    """f(embeddings [batch, tokens, d], target) → log p(target) per row (all log-probs for target None).

    Only the predicting position goes through the vocabulary projection: integrated gradients run the model on
    a batch of path points, and logits at every position would cost batch × tokens × vocabulary floats.
    """
    model = lm.model
    ids = torch.tensor([query.ids], device=lm.device)
    extras = encoder_extras(lm, ids)
    decoder = None if query.decoder_ids is None else torch.tensor([query.decoder_ids], device=lm.device)
    known = MLM_HEADS.get(type(model).__name__) if lm.kind == "masked" else None
    # A causal LM predicts at its last position, so it can keep the logits of that one alone.
    keep_last = lm.kind == "causal" and "logits_to_keep" in inspect.signature(model.forward).parameters

    def logits_at_position(points: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        if known is not None:
            hidden = getattr(model, known[0])(inputs_embeds=points, **inputs)[0][:, query.position]
            for name in known[1]:
                hidden = getattr(model, name)(hidden)
            return hidden
        if keep_last:
            return model(inputs_embeds=points, **inputs, logits_to_keep=1).logits[:, -1]
        return model(inputs_embeds=points, **inputs).logits[:, query.position]

    def f(points: torch.Tensor, target: int | None) -> torch.Tensor:
        batch = points.shape[0]
        inputs: dict[str, Any] = {k: v.expand(batch, -1) for k, v in extras.items()}
        if decoder is not None:
            inputs["decoder_input_ids"] = decoder.expand(batch, -1)
        logprobs = torch.log_softmax(logits_at_position(points, inputs).float(), dim=-1)
        return logprobs if target is None else logprobs[:, target]

    return f


def _gradients(objective: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """∇ f at each point of a batch (rows are independent, so the gradient of the sum is each row's own)."""
    # gbcli switches gradients off when it loads a model; attribution needs them here, and only here.
    with torch.enable_grad():
        points = points.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(points).sum(), points)
    return grad


def _target_id(lm: LoadedModel, word: str, query: Query) -> tuple[int, bool]:
    """The one vocabulary token that writes the word in the blank; anything else is refused."""
    tok = lm.tokenizer
    spaced = (" " + word) if query.space_before and lm.kind != "masked" else word
    ids = tok(spaced, add_special_tokens=False)["input_ids"]
    if len(ids) != 1 or (tok.unk_token_id is not None and ids[0] == tok.unk_token_id):
        pieces = " ".join(readable_piece(p) for p in tok.convert_ids_to_tokens(ids)) or "nothing"
        raise usage_error(
            f"--target '{word}' is not one token of {lm.name} (it tokenizes to {pieces}).",
            "Choose a word the model writes as a single token; `gbcli tokenize` shows how it splits.",
        )
    return ids[0], True


def _tokens(
    lm: LoadedModel, query: Query, held: torch.Tensor, gxi: torch.Tensor | None, ig: torch.Tensor | None
) -> list[SalientToken]:
    tokens = []
    totals = {name: float(values.abs().sum()) for name, values in (("gxi", gxi), ("ig", ig)) if values is not None}
    for index, token_id in enumerate(query.ids):
        fixed = bool(held[index])
        token = SalientToken(index, token_label(lm, token_id), "special" if fixed else "text")
        if not fixed:
            if gxi is not None:
                token.gradient_x_input = float(gxi[index])
                token.gradient_x_input_share = abs(token.gradient_x_input) / totals["gxi"] if totals["gxi"] else 0.0
            if ig is not None:
                token.integrated_gradients = float(ig[index])
                token.integrated_gradients_share = (
                    abs(token.integrated_gradients) / totals["ig"] if totals["ig"] else 0.0
                )
        tokens.append(token)
    return tokens


def _unseen(lm: LoadedModel, segments: list[str]) -> list[SalientToken]:
    """The blank and what follows it: GPT-2 predicts the blank without reading them."""
    tok = lm.tokenizer
    right = tok(segments[1], add_special_tokens=False)["input_ids"] if segments[1].strip() else []
    return [SalientToken(None, "[blank]", "unseen")] + [SalientToken(None, token_label(lm, i), "unseen") for i in right]
