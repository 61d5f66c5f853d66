"""No NaN or infinity ever reaches the user as a number.

A model with a NaN in its weights (a damaged checkpoint, a bad conversion) or one that overflows in half precision
produces NaN or infinite logits, and every probability, perplexity and attention weight read from them is
meaningless. Printing `p nan` with exit 0 is the worst failure this tool can have. Weights are checked when a
model loads (`checkpoint_checks.check_finite_weights`, which names the tensor); what the arithmetic itself makes
(an overflow) is caught here: every result is checked once, just before it is printed, and a non-finite number
becomes an error that names the model.

Every number a command prints lives in its result dataclass, so checking the result covers every command and
every path that computed it (batched, streamed or written-out decoding steps alike).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gbcli.errors import GbcliError
from gbcli.loading.families import family_title

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """Where a non-finite number sits in a result: the field's path, its value, and the model it came from."""

    path: str
    value: float
    model: str | None


def find_non_finite(value: Any, path: str = "", model: str | None = None) -> NonFinite | None:
    """The first NaN or ±infinity in a result (dataclasses, lists, dicts, floats, numpy arrays), or None.

    `model` is the name of the nearest enclosing object that says which model it is about (a `model` field).
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else NonFinite(path, value, model)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        owner = getattr(value, "model", None)
        model = owner if isinstance(owner, str) else model
        for field in dataclasses.fields(value):
            found = find_non_finite(getattr(value, field.name), f"{path}.{field.name}".lstrip("."), model)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_non_finite(item, f"{path}[{index}]", model)
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_non_finite(item, f"{path}.{key}".lstrip("."), model)
            if found is not None:
                return found
        return None
    if type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "fc":
        import numpy as np

        bad = np.flatnonzero(~np.isfinite(value))
        if bad.size:
            return NonFinite(path, float(value.flat[bad[0]]), model)
    return None


def describe(number: float) -> str:
    return "NaN" if math.isnan(number) else ("infinity" if number > 0 else "-infinity")


def check_finite(result: Any, models: Sequence[LoadedModel]) -> None:
    """Raise an error naming the model if any number in `result` is NaN or infinite."""
    found = find_non_finite(result)
    if found is None:
        return
    lm = next((m for m in models if m.name == found.model), None)
    if lm is None and len(models) == 1:
        lm = models[0]
    who = f"{family_title(lm.family)} model '{lm.spec}'" if lm is not None else f"model '{found.model or '?'}'"
    field = found.path.rsplit(".", 1)[-1] or "its output"
    # The weights were checked when the model loaded (checkpoint_checks.check_finite_weights): this is the arithmetic's.
    raise GbcliError(
        f"{who} computed {describe(found.value)} for {field} (at {found.path}): a number overflowed, so no "
        "result is shown.",
        "Try --dtype float32 if the model runs in half precision; otherwise check the checkpoint.",
    )
