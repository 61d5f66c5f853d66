"""`gbcli saliency`'s methods and steps, checked in a module that imports nothing heavy: a mistake is refused before
torch is imported (`gbcli.tasks.saliency` imports torch at its top)."""

from __future__ import annotations

from typing import Literal

from gbcli.errors import usage_error

Method = Literal["gxi", "ig"]
METHODS: dict[str, str] = {"gxi": "gradient × input", "ig": "integrated gradients"}
METHOD_CHOICES: dict[str, tuple[Method, ...]] = {"both": ("gxi", "ig"), "gxi": ("gxi",), "ig": ("ig",)}
DEFAULT_STEPS = 50
MAX_STEPS = 2000


def check_options(method: str, steps: int) -> tuple[Method, ...]:
    if method not in METHOD_CHOICES:
        raise usage_error(f"Unknown --method '{method}'.", "Choose from: ig, gxi, both.")
    if not 1 <= steps <= MAX_STEPS:
        raise usage_error(f"--steps must be between 1 and {MAX_STEPS}, not {steps}.", "For example --steps 50.")
    return METHOD_CHOICES[method]
