"""What a user chooses of the tour before it starts: its steps, its time budget, and the built-in tasks it learns from,
checked in a module that imports nothing heavy, so a mistake is refused before torch is imported (the steps' module
imports every task the tour runs)."""

from __future__ import annotations

import math

from gbcli.errors import usage_error

STEP_NUMBERS = (1, 2, 3, 4, 5, 6, 7, 8)  # `steps.STEPS`, in order (tests/test_tour.py holds the two together)
RIGHT_CONTEXT_TASK = "right-context"  # the built-in probing task of step 6
FINETUNE_TASK = "sentiment"  # the built-in fine-tuning task of step 7
LABELLED_TASKS = (RIGHT_CONTEXT_TASK, FINETUNE_TASK)  # the built-in tasks the tour learns from


def parse_steps(raw: str | None) -> tuple[int, ...]:
    """`1,4,7` → (1, 4, 7), in tour order, each once; None → every step."""
    if raw is None:
        return STEP_NUMBERS
    chosen: set[int] = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) not in STEP_NUMBERS:
            raise usage_error(
                f"--steps: there is no step '{part}'.",
                f"Choose from {STEP_NUMBERS[0]} to {STEP_NUMBERS[-1]}, e.g. --steps 1,4,7.",
            )
        chosen.add(int(part))
    if not chosen:
        raise usage_error("--steps names no step.", "For example --steps 1,4,7.")
    return tuple(sorted(chosen))


def check_budget(budget: float) -> float:
    if not math.isfinite(budget) or budget <= 0:
        raise usage_error(f"--budget must be a number of seconds above 0, not {budget}.", "For example --budget 60.")
    return budget
