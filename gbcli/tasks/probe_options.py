"""`gbcli probe`'s options and the checks of them that need no model, in a module that imports nothing heavy: a
mistake is refused before torch is imported (`gbcli.tasks.probe` imports numpy and torch at its top)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.lm.pooling import POOLS, Pool

Control = Literal["random-init", "none"]
CONTROLS: tuple[Control, ...] = ("random-init", "none")
PROBE_HINT = "Install the probe extra: pip install 'gbcli[probe]' (or pip install scikit-learn)."


@dataclass(frozen=True)
class ProbeOptions:
    pool: Pool = "mean"  # sentence level
    word_pool: Pool = "last"  # word level
    test_size: float = 0.25
    seeds: int = 3
    folds: int | None = None  # k-fold instead of `seeds` random splits
    inner_folds: int = 3  # cross-validation of C on each training part
    control: Control = "random-init"
    control_task: bool = False
    truncate: bool = False


def require_scikit_learn() -> None:
    """A clear refusal before any model loads when scikit-learn is missing (it is an extra)."""
    if importlib.util.find_spec("sklearn") is None:
        raise GbcliError("gbcli probe needs scikit-learn, which is not installed.", PROBE_HINT)


def check_options(options: ProbeOptions) -> None:
    if options.pool not in POOLS or options.word_pool not in POOLS:
        raise usage_error(
            f"Unknown pooling '{options.pool if options.pool not in POOLS else options.word_pool}'.",
            f"Choose from: {', '.join(POOLS)}.",
        )
    if options.folds is None and not 0.0 < options.test_size < 1.0:
        raise usage_error(
            f"--test-size {options.test_size} is not a fraction between 0 and 1.",
            "For example --test-size 0.25 holds a quarter out.",
        )
    if options.seeds < 1:
        raise usage_error("--seeds must be at least 1.", "For example --seeds 3.")
    if options.folds is not None and options.folds < 2:
        raise usage_error("--folds must be at least 2.", "For example --folds 5.")
    if options.control not in CONTROLS:
        raise usage_error(f"Unknown --control '{options.control}'.", f"Choose from: {', '.join(CONTROLS)}.")
