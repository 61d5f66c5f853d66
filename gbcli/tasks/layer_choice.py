"""A layer or a head chosen by number (`attention --layer/--head`, `similarity --layer`): where it points, or the
usage error that says which numbers the model has.

The same words come before a load, from the counts config.json gives (`gbcli.loading.shapes`), and after it, from the
loaded model's own outputs: a `--layer 40` on a 12-layer model is refused in a fraction of a second, not after the
models load. Only `gbcli.errors` is imported here, so a command can check before torch is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gbcli.errors import usage_error

if TYPE_CHECKING:
    from gbcli.loading.shapes import ModelShape


def layer_position(name: str, count: int, layer: int | None) -> int:
    """The index (from 0) of the attention block numbered `layer` of the map `name` with `count` blocks: blocks
    count 1..L as in `lens` and `context`, where 0 is the embeddings (which attend to nothing); negative counts
    from the end (-1 = last); None is the last."""
    if layer is None:
        return count - 1
    if layer == 0:
        raise usage_error(
            f"Layer 0 is the embeddings, which attend to nothing; {name}'s attention layers are 1 to {count}.",
            "Give a layer from 1, or a negative one from the end (-1 is the last).",
        )
    if not -count <= layer <= count:
        raise usage_error(
            f"{name} has {count} layers, numbered 1 to {count} (0 is the embeddings); --layer {layer} is out of range.",
            "Give a layer from 1, or a negative one from the end (-1 is the last).",
        )
    return layer - 1 if layer > 0 else layer % count


def head_position(name: str, count: int, head: int | None) -> int | None:
    """The index of head `head` of the map `name` with `count` heads per layer (negative from the end); None is the
    mean over the heads."""
    if head is None:
        return None
    if not -count <= head < count:
        raise usage_error(
            f"{name} has {count} heads per layer, numbered 0 to {count - 1}; --head {head} is out of range.",
            "Give a head from 0, a negative one from the end, or --head mean.",
        )
    return head % count


def layer_index(layer: int | None, layers: int, name: str) -> int:
    """--layer as an index into a model's `layers` hidden states (the embeddings are 0; negative counts from the
    end; None is the last)."""
    if layer is None:
        return layers - 1
    index = layer if layer >= 0 else layers + layer
    if not 0 <= index < layers:
        raise usage_error(
            f"{name} has layers 0 (the embeddings) to {layers - 1}; --layer {layer} is not one.",
            f"Give --layer between {-layers} and {layers - 1}.",
        )
    return index


def check_states_layer(shapes: Sequence[ModelShape], layer: int | None) -> None:
    """`layer_index` against each model's (and each BART stack's) blocks from its config.json, before any model
    loads."""
    for shape in shapes:
        for stack in shape.stacks:
            layer_index(layer, stack.layers + 1, shape.name)  # + 1: the embeddings are layer 0
