"""A checkpoint made into a sequence classifier: the right head class, a pad token for GPT-2, frozen lower layers.

GPT-2 was pre-trained without padding, so its tokenizer has no pad token and `run_glue.py` stops on "tokenizer
does not have a padding token" (transformers #9785). It gets its end-of-text token as the pad, right padding, and
`config.pad_token_id`, from which `GPT2ForSequenceClassification` finds each row's last non-pad token: the one
position whose state has read the whole text (a causal model's earlier states have not), where its head reads.
Right padding puts the pads after that token, where causal attention keeps them from changing it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from gbcli.errors import GbcliError, usage_error
from gbcli.loading.models import quiet_transformers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def classification_architectures() -> list[str]:
    """The model types transformers has a sequence-classification head for."""
    return sorted(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)


def check_head_class(config: Any, spec: str, flag: str) -> str:
    """The name of the classification class for this checkpoint, or a refusal that says which kinds work."""
    name = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(config.model_type)
    if name is None:
        known = classification_architectures()
        common = [
            t for t in ("gpt2", "bert", "roberta", "distilbert", "bart", "electra", "deberta-v2", "llama") if t in known
        ]
        raise usage_error(
            f"{spec} ({flag}) is a '{config.model_type}' model, for which transformers has no sequence-classification "
            "head.",
            f"Fine-tuning works with {len(known)} architectures, among them {', '.join(common)}; pick a checkpoint "
            "of one of them.",
        )
    return name


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Right padding, and a pad token where there is none (GPT-2: its end-of-text token)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise GbcliError(
                "The tokenizer has neither a pad token nor an end-of-text token to pad with.",
                "Give a checkpoint whose tokenizer defines one of them.",
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_classifier(
    spec: str,
    labels: list[str],
    tokenizer: PreTrainedTokenizerBase,
    flag: str,
    *,
    revision: str | None = None,
    offline: bool = False,
) -> PreTrainedModel:
    """The checkpoint with a new, seeded classification head of len(labels) outputs, in float32 for training."""
    quiet_transformers()
    common: dict[str, Any] = {"revision": revision, "local_files_only": offline}
    config = AutoConfig.from_pretrained(spec, **common)
    check_head_class(config, spec, flag)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.pad_token_id = tokenizer.pad_token_id
    config.problem_type = "single_label_classification"
    model = AutoModelForSequenceClassification.from_pretrained(spec, config=config, dtype=torch.float32, **common)
    return model


def layer_index(name: str) -> int | None:
    """The transformer block a parameter belongs to (`transformer.h.3.…`, `bert.encoder.layer.3.…`), else None."""
    found = re.search(r"\.(?:h|layer|layers|block)\.(\d+)\.", name)
    return int(found.group(1)) if found else None


def freeze_below(model: PreTrainedModel, layer: int) -> int:
    """Train only blocks `layer` and above, and the head: the embeddings and the lower blocks keep their weights.
    Returns the number of parameters left to train."""
    layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", 0)
    if layer > layers:
        raise usage_error(
            f"--freeze-below {layer} is above the model's {layers} layers.",
            f"Choose from 0 (train everything) to {layers} (train only the head).",
        )
    head_prefixes = (
        "score.",
        "classifier.",
        "classification_head.",
        "pooler.",
        "bert.pooler.",
        "ln_f.",
        "transformer.ln_f.",
    )
    for name, parameter in model.named_parameters():
        index = layer_index(name)
        if index is not None:
            parameter.requires_grad = index >= layer
        elif any(name.startswith(p) or f".{p}" in f".{name}" for p in head_prefixes):
            parameter.requires_grad = True
        else:  # embeddings (and their layer norm): below every block
            parameter.requires_grad = layer == 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
