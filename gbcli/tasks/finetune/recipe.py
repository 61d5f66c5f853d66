"""One fine-tuning recipe for every family: the BERT paper's defaults, the same for all unless a family is given its
own values (`--set gpt.learning_rate=5e-5`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from gbcli.errors import usage_error

# BERT (Devlin et al. 2019, appendix A.3) and GPT (Radford et al. 2018, section 4.1) both fine-tune for about three
# epochs at a learning rate of a few 1e-5 with a linear warm-up; these are BERT's: 2e-5, 3 epochs, batch 32, 10%.
DEFAULT_POINTS_PER_EPOCH = 10


@dataclass(frozen=True)
class Recipe:
    """The training options of one family's runs."""

    learning_rate: float = 2e-5
    epochs: float = 3.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    gradient_accumulation: int = 1
    freeze_below: int | None = None  # train only layers >= this one (from 0), and the head
    eval_every: int | None = None  # optimizer steps between dev evaluations; None: ~10 per epoch
    save_every: int | None = None  # optimizer steps between checkpoints; None: once per epoch

    def steps_per_epoch(self, train_examples: int, processes: int = 1) -> int:
        """Optimizer steps in one epoch, as Trainer counts them (the last, partial batch is kept)."""
        batches = math.ceil(train_examples / (self.batch_size * processes))
        return max(1, batches // self.gradient_accumulation)

    def total_steps(self, train_examples: int, processes: int = 1) -> int:
        return math.ceil(self.epochs * self.steps_per_epoch(train_examples, processes))

    def evaluation_interval(self, train_examples: int, processes: int = 1) -> int:
        if self.eval_every is not None:
            return self.eval_every
        return max(1, round(self.steps_per_epoch(train_examples, processes) / DEFAULT_POINTS_PER_EPOCH))

    def examples_per_step(self, processes: int = 1) -> int:
        return self.batch_size * self.gradient_accumulation * processes


SETTABLE = {f.name for f in fields(Recipe)}
ALIASES = {"lr": "learning_rate", "batch": "batch_size", "warmup": "warmup_ratio", "wd": "weight_decay"}


def check_recipe(recipe: Recipe, where: str = "") -> Recipe:
    """Refuse values no training can use (exit 2), naming the option."""

    def bad(name: str, rule: str) -> None:
        raise usage_error(
            f"{where}{name} must be {rule}, not {getattr(recipe, name)}.",
            "See `gbcli finetune --help` for each option's default.",
        )

    if not recipe.learning_rate > 0:
        bad("learning_rate", "above 0")
    if not recipe.epochs > 0:
        bad("epochs", "above 0")
    if recipe.batch_size < 1:
        bad("batch_size", "at least 1")
    if not 0 <= recipe.warmup_ratio < 1:
        bad("warmup_ratio", "from 0 up to (not including) 1")
    if recipe.weight_decay < 0:
        bad("weight_decay", "0 or more")
    if recipe.max_length < 2:
        bad("max_length", "at least 2")
    if recipe.gradient_accumulation < 1:
        bad("gradient_accumulation", "at least 1")
    if recipe.freeze_below is not None and recipe.freeze_below < 0:
        bad("freeze_below", "0 or more")
    for name in ("eval_every", "save_every"):
        value = getattr(recipe, name)
        if value is not None and value < 1:
            bad(name, "at least 1")
    return recipe


def with_overrides(recipe: Recipe, family: str, overrides: list[str]) -> Recipe:
    """`recipe` with the `--set FAMILY.NAME=VALUE` overrides that name `family` applied."""
    changes: dict[str, Any] = {}
    for family_name, name, value in parse_overrides(overrides):
        if family_name == family:
            changes[name] = value
    return check_recipe(replace(recipe, **changes), f"{family}.") if changes else recipe


def parse_overrides(overrides: list[str]) -> list[tuple[str, str, Any]]:
    """`gpt.lr=5e-5` → ("gpt", "learning_rate", 5e-05), each checked for its name and type."""
    parsed = []
    for raw in overrides:
        target, equals, text = raw.partition("=")
        family, dot, name = target.strip().partition(".")
        name = ALIASES.get(name.strip(), name.strip())
        if not equals or not dot or family not in {"gpt", "bert", "bart"}:
            raise usage_error(f"--set '{raw}' is not FAMILY.NAME=VALUE.", "e.g. --set gpt.learning_rate=5e-5")
        if name not in SETTABLE:
            raise usage_error(
                f"--set '{raw}': no recipe value is called '{name}'.", f"Choose from: {', '.join(sorted(SETTABLE))}."
            )
        kind = {f.name: f.type for f in fields(Recipe)}[name]
        try:
            value: Any = float(text) if str(kind).startswith("float") else int(text)
        except ValueError:
            raise usage_error(
                f"--set '{raw}': '{text}' is not a number.", "e.g. --set gpt.learning_rate=5e-5"
            ) from None
        parsed.append((family, name, value))
    return parsed
