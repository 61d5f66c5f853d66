"""The logit lens: what each model would predict if its computation stopped after a given layer.

Every layer of a transformer writes into the same residual stream, so the stream after layer ℓ can be read out
with the model's own final read-out, as if the layers above it were skipped (nostalgebraist 2020):

- GPT-2: the residual stream after each block, through the final layer norm `ln_f` and the tied unembedding.
  The last hidden state GPT-2 reports has `ln_f` applied already, so it goes through the unembedding alone
  (applying `ln_f` twice is the classic logit-lens bug);
- BERT: each layer's hidden states through the masked-LM head (dense, activation, layer norm, decoder). Every
  BERT layer ends in a layer norm, so nothing else is needed;
- BART: the decoder's hidden states (the encoder's output fixed) through `lm_head` and its logit bias.

The read-out happens at the position that predicts the blank: the `[MASK]` itself for BERT, the token before
the blank (or the text's last token, without a blank) for GPT-2 and for BART's decoder. Each layer gets its top-k,
the rank and probability of the model's final answer, and the KL divergence from the final distribution. The last
row is the model's own output (the logits of its forward pass), and `final_check` says how far the lens's read-out
of the last hidden state is from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gbcli.errors import GbcliError, usage_error
from gbcli.lm.heads import MLM_HEADS
from gbcli.loading.models import LoadedModel
from gbcli.tasks.prediction import blank_segments, encoder_extras, prediction_query, token_label

if TYPE_CHECKING:
    import torch

DEFAULT_TOP_K = 5
KL_NOTE = "KL = KL(final ‖ layer), nats: how far a layer's distribution is from the model's final one"


@dataclass
class LensToken:
    """One vocabulary token at one layer: its readable piece and the probability the read-out gives it."""

    token: str  # readable piece (␣duck for GPT-2's Ġduck)
    id: int
    prob: float
    logprob: float


@dataclass
class LensLayer:
    """What the read-out says after one layer (layer 0 = the embeddings)."""

    layer: int
    name: str  # emb, then 1, 2, ...
    top: list[LensToken]
    answer_rank: int  # 1 = the final answer is this layer's top prediction too
    answer_prob: float
    kl_from_final: float  # KL(final ‖ this layer), nats; 0 at the last layer


@dataclass
class ModelLens:
    """One model's lens at one position of the text."""

    family: str
    model: str
    kind: str
    readout: str  # how a hidden state becomes logits
    layer_kind: str  # what a layer is called: block (GPT-2), layer (BERT), decoder layer (BART)
    tokens: list[str]  # what the model reads (readable pieces; BART: its decoder's input)
    position: int  # the index in `tokens` whose hidden states are read
    predicts: str  # what the position predicts, in words
    answer: LensToken  # the model's own top prediction (the last row's #1)
    layers: list[LensLayer] = field(default_factory=list)
    final_check: float = 0.0  # max |lens read-out of the last hidden state − the model's logits| at the position


@dataclass
class LensResult:
    """Everything `gbcli lens` says about one text."""

    text: str
    top_k: int
    models: list[ModelLens] = field(default_factory=list)
    note: str = KL_NOTE


def check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise usage_error(f"--top-k must be at least 1, not {top_k}.", "For example --top-k 5.")


def lens(models: list[LoadedModel], text: str, top_k: int = DEFAULT_TOP_K) -> LensResult:
    """Each model's logit lens on the text: at its one blank, or (GPT-2, BART) after its last word."""
    check_top_k(top_k)
    segments = blank_segments(text)
    result = LensResult(text=text, top_k=top_k)
    runners: dict[str, Callable[[LoadedModel, str, list[str] | None, int], ModelLens]] = {
        "causal": _causal_lens,
        "masked": _masked_lens,
        "seq2seq": _seq2seq_lens,
    }
    for lm in models:
        if lm.kind not in runners or not lm.has_lm_head:
            raise GbcliError(
                f"{lm.name} has no language-model head, so there is nothing to read the layers with.",
                "Use a checkpoint with its head; `gbcli context` works with a bare encoder.",
                exit_code=2,
            )
        result.models.append(runners[lm.kind](lm, text, segments, top_k))
    return result


# --------------------------------------------------------------------------------------------------------------
# One model each
# --------------------------------------------------------------------------------------------------------------


def _causal_lens(lm: LoadedModel, text: str, segments: list[str] | None, top_k: int) -> ModelLens:
    import torch

    query = prediction_query(lm, text, segments)
    ids, position = query.ids, query.position
    norm = _final_norm(lm)
    head = lm.model.get_output_embeddings()
    input_ids = torch.tensor([ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, output_hidden_states=True)
    hidden = out.hidden_states
    # hidden[-1] is the last block's output after ln_f (transformers returns last_hidden_state there).
    # Read out every position, as the model does, so that the last layer's read-out is its very computation
    # (clone: a view of one row would keep each layer's whole [tokens × vocabulary] logits alive).
    readouts = [head(norm(h))[0, position].clone() for h in hidden[:-1]] + [head(hidden[-1])[0, position].clone()]
    return _model_lens(
        lm,
        ids,
        position,
        query.predicts,
        "final layer norm (ln_f), then the tied unembedding",
        readouts,
        out.logits[0, position],
        "block",
        top_k,
    )


def _masked_lens(lm: LoadedModel, text: str, segments: list[str] | None, top_k: int) -> ModelLens:
    import torch

    query = prediction_query(lm, text, segments)
    ids, position = query.ids, query.position
    known = MLM_HEADS.get(type(lm.model).__name__)
    if known is None:
        raise GbcliError(
            f"The lens does not know the masked-LM head of {type(lm.model).__name__}.",
            f"Supported: {', '.join(MLM_HEADS)}.",
        )
    heads = [getattr(lm.model, name) for name in known[1]]

    def head(hidden: torch.Tensor) -> torch.Tensor:
        for module in heads:
            hidden = module(hidden)
        return hidden

    input_ids = torch.tensor([ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, **encoder_extras(lm, input_ids), output_hidden_states=True)
    readouts = [head(h)[0, position].clone() for h in out.hidden_states]
    names = " → ".join(known[1])
    return _model_lens(
        lm,
        ids,
        position,
        query.predicts,
        f"the masked-LM head ({names})",
        readouts,
        out.logits[0, position],
        "layer",
        top_k,
    )


def _seq2seq_lens(lm: LoadedModel, text: str, segments: list[str] | None, top_k: int) -> ModelLens:
    import torch

    query = prediction_query(lm, text, segments)
    assert query.decoder_ids is not None
    source, decoder_ids, position = query.ids, query.decoder_ids, query.position
    model = lm.model
    decoder = model.get_decoder()
    norm = getattr(decoder, "layer_norm", None) or (lambda hidden: hidden)  # mBART has one; BART does not
    bias = getattr(model, "final_logits_bias", None)
    unembed = model.get_output_embeddings()

    def head(hidden: torch.Tensor) -> torch.Tensor:
        logits = unembed(hidden)
        return logits + bias.to(logits.dtype) if bias is not None else logits

    source_ids = torch.tensor([source], device=lm.device)
    target_ids = torch.tensor([decoder_ids], device=lm.device)
    with torch.inference_mode():
        out = model(
            input_ids=source_ids,
            attention_mask=torch.ones_like(source_ids),
            decoder_input_ids=target_ids,
            output_hidden_states=True,
        )
    hidden = out.decoder_hidden_states
    readouts = [head(norm(h))[0, position].clone() for h in hidden[:-1]] + [head(hidden[-1])[0, position].clone()]
    return _model_lens(
        lm,
        decoder_ids,
        position,
        query.predicts,
        "decoder states through lm_head + logit bias (encoder output fixed)",
        readouts,
        out.logits[0, position],
        "decoder layer",
        top_k,
    )


# --------------------------------------------------------------------------------------------------------------
# From read-outs to the result
# --------------------------------------------------------------------------------------------------------------


def _model_lens(
    lm: LoadedModel,
    ids: list[int],
    position: int,
    predicts: str,
    readout: str,
    readouts: list[torch.Tensor],
    output_logits: torch.Tensor,
    layer_word: str,
    top_k: int,
) -> ModelLens:
    """Turn the per-layer logits at the position into the result; the last row is the model's own output."""
    import torch

    final_check = float((readouts[-1].float() - output_logits.float()).abs().max())
    rows = [r.float() for r in readouts[:-1]] + [output_logits.float()]
    final_logprobs = torch.log_softmax(rows[-1], dim=-1)
    answer_id = int(final_logprobs.argmax())
    k = min(top_k, final_logprobs.shape[-1])
    layers = []
    for index, logits in enumerate(rows):
        logprobs = torch.log_softmax(logits, dim=-1)
        values, top_ids = logprobs.topk(k)
        # KL(final ‖ layer): the information lost by stopping here, measured where the final model puts its mass.
        kl = float((final_logprobs.exp() * (final_logprobs - logprobs)).sum().clamp_min(0.0))
        if index == len(rows) - 1:
            kl = 0.0
        rank = int((logprobs > logprobs[answer_id]).sum()) + 1
        layers.append(
            LensLayer(
                layer=index,
                name="emb" if index == 0 else str(index),
                top=[_token(lm, int(t), float(v)) for t, v in zip(top_ids.tolist(), values.tolist(), strict=True)],
                answer_rank=rank,
                answer_prob=float(logprobs[answer_id].exp()),
                kl_from_final=kl,
            )
        )
    labels = [token_label(lm, i) for i in ids]
    return ModelLens(
        lm.family,
        lm.name,
        lm.kind,
        readout,
        layer_word,
        labels,
        position,
        predicts,
        _token(lm, answer_id, float(final_logprobs[answer_id])),
        layers,
        final_check,
    )


def _token(lm: LoadedModel, token_id: int, logprob: float) -> LensToken:
    return LensToken(token_label(lm, token_id), token_id, math.exp(logprob), logprob)


def _final_norm(lm: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The causal LM's last layer norm, the one between the residual stream and the unembedding."""
    body = lm.model.base_model
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm", "layer_norm"):
        module = getattr(body, name, None)
        if module is not None:
            return module
    raise GbcliError(
        f"The lens cannot find the final layer norm of {type(lm.model).__name__}.",
        "It knows GPT-2 (ln_f) and models whose body calls it norm or final_layer_norm.",
    )
