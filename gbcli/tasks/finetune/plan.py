"""What `gbcli finetune` is asked to train, as plain values, in a module that imports nothing heavy: the command
checks its output folder against this plan before torch and the Trainer are imported (`head_to_head` trains it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gbcli.tasks.finetune.recipe import Recipe

if TYPE_CHECKING:
    from gbcli.loading.models import LoadedModel
    from gbcli.tasks.finetune.data import FinetuneData


@dataclass
class Plan:
    """What to train: the families' checkpoints, their recipes, the seeds, and where the results go."""

    columns: list[tuple[str, str]]  # (family, spec)
    recipes: dict[str, Recipe]
    seeds: list[int]
    output: Path
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    offline: bool = False
    resume: bool = False
    threshold_fraction: float | None = 0.9  # of each family's own final accuracy ...
    threshold_value: float | None = None  # ... or one accuracy for every family
    prompt: str | None = None
    verbalizer: dict[str, str] | None = None
    language_models: dict[str, LoadedModel] = field(default_factory=dict)  # for the zero-shot point

    def manifest(self, data: FinetuneData) -> dict[str, Any]:
        """What --resume must find unchanged (the device may change: a run may go on elsewhere)."""
        return {
            "command": "gbcli finetune",
            "data": data.fingerprint(),
            "labels": data.labels,
            "models": dict(self.columns),
            "recipes": {f: asdict(r) for f, r in self.recipes.items()},
            "seeds": self.seeds,
            "dtype": self.dtype,
        }
