"""What `gbcli generate` checks of its prompt and options before any model loads, in a module that imports nothing
heavy: a mistake is refused before torch is imported (`gbcli.tasks.generation` imports torch at its top)."""

from __future__ import annotations

from collections.abc import Sequence

from gbcli.errors import usage_error
from gbcli.loading.shapes import ModelShape


def check_prompt(prompt: str) -> str:
    if not prompt.strip():
        raise usage_error("The prompt is empty.", 'Give some text, e.g. gbcli generate "Once upon a time".')
    return prompt


def check_room_before_load(shapes: Sequence[ModelShape], max_new_tokens: int) -> None:
    """New tokens that alone fill a model's positions leave no room for any prompt: said from config.json, before
    the model loads (`gbcli.tasks.generation.results.check_room` says the rest once the prompt's tokens are
    counted)."""
    for shape in shapes:
        if shape.positions is not None and max_new_tokens >= shape.positions:
            raise usage_error(
                f"{shape.name} can hold {shape.positions} tokens: --max-new-tokens {max_new_tokens} leaves no room "
                "for the prompt.",
                f"Lower --max-new-tokens below {shape.positions}, less the prompt's tokens.",
            )
