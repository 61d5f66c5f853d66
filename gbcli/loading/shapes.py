"""How many layers and attention heads a model has, read from its config.json alone: no torch, no weights.

A `--layer 40` on a 12-layer model, or a `--head 20` on a 12-head one, is a usage mistake that needs no model: the
commands check it against these counts before anything loads, and say it in the words they use after a load.

    read_shape("bert", "bert-base-uncased")   # ModelShape(family='bert', name='bert-base-uncased',
                                              #            stacks=[StackShape(name='', layers=12, heads=12)])

A seq2seq model has two stacks, `encoder` and `decoder`; every other model one, named "". The shape is None where
the config cannot be read here (a hub id not cached yet, a folder without config.json, a config that names its
counts in keys this module does not know): the loader then reports what is wrong, and the commands check the
option after the load, as before. Nothing here imports torch, transformers or numpy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gbcli.loading.families import Family
from gbcli.loading.models import POSITION_KEYS, display_name, max_positions

# The names config.json gives its counts, GPT-2's first (n_layer, n_head), then BERT's and its kin's; transformers
# maps them onto num_hidden_layers and num_attention_heads in the built config, but the file keeps its own.
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads")


@dataclass(frozen=True)
class StackShape:
    """One stack of blocks: its name ("" for a model's one body), its blocks and its heads per block."""

    name: str
    layers: int
    heads: int


@dataclass(frozen=True)
class ModelShape:
    """A model as its config.json describes it; `name` is what screens call it (LoadedModel.name)."""

    family: Family
    name: str
    stacks: list[StackShape]
    positions: int | None = None  # the tokens it can hold, where config.json names them (LoadedModel.max_positions)


def _count(config: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def stacks_of(config: dict[str, Any]) -> list[StackShape] | None:
    """The stacks a config.json describes; None where its keys are not ones this module knows."""
    if config.get("is_encoder_decoder"):
        counts = [
            (
                name,
                _count(config, (f"{name}_layers",)),
                _count(config, (f"{name}_attention_heads",)),
            )
            for name in ("encoder", "decoder")
        ]
        if any(layers is None or heads is None for _, layers, heads in counts):
            return None  # T5 and others name them otherwise: the check waits for the loaded model
        return [StackShape(name, layers, heads) for name, layers, heads in counts]  # type: ignore[arg-type]
    layers, heads = _count(config, LAYER_KEYS), _count(config, HEAD_KEYS)
    if layers is None or heads is None:
        return None
    return [StackShape("", layers, heads)]


def _config_file(spec: str, revision: str | None) -> Path | None:
    """A folder's config.json, or a hub id's cached one; None where neither is on disk."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        found = folder / "config.json"
        return found if found.is_file() else None
    if os.path.lexists(spec):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache  # late: start-up (a folder needs no hub client)

        cached = try_to_load_from_cache(spec, "config.json", revision=revision)
    except Exception:  # an id the hub client rejects: the loader explains it
        return None
    return Path(cached) if isinstance(cached, str) else None


def read_shape(family: Family, spec: str, revision: str | None = None) -> ModelShape | None:
    """The layers and heads of the model `spec` names, from its config.json alone; None where it cannot be read."""
    path = _config_file(spec, revision)
    if path is None:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the loader says what is wrong with the file
    stacks = stacks_of(config) if isinstance(config, dict) else None
    if stacks is None:
        return None
    return ModelShape(family, display_name(spec), stacks, positions_of(config))


def positions_of(config: dict[str, Any]) -> int | None:
    """The tokens the model can hold, as `gbcli.loading.models.max_positions` reads them from the built config;
    None where config.json names none (the loaded model then falls back to its tokenizer's limit)."""
    if not any(isinstance(config.get(key), int) and config[key] > 0 for key in POSITION_KEYS):
        return None
    return max_positions(SimpleNamespace(**config))
