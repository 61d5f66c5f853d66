"""`gbcli tour`: the differences between GPT-2 and BERT, one claim per step, each shown on the loaded models.

Every step runs the task of the command it names (attention, generate, fill-mask, context, probe, score,
similarity, finetune), never a second implementation, keeps that task's result as the command's `--json` would
print it, picks out the few figures the claim is about, and reads them in two or three sentences. The sentences are
computed from the figures: a model that does not bear the claim out is said not to (`verdict` "contradicts"), so a
random-init model or a pair of models in the wrong roles shows the contradiction instead of a canned text.

- `results`: what a step is (`TourStep`), what a step's runner hands back, the tour's settings;
- `claims`: the steps about what each family is (attention, generation, objectives, context, scores, BART);
- `learning`: the steps about what each family learns (the probes, similarity, fine-tuning);
- `steps`: the steps in order, and the tour that runs them;
- `choice`: the steps and the budget a user chooses, checked before anything heavy is imported.

This package imports only `results` and `choice`, which import nothing heavy: a mistake in the options is refused
before torch is imported. The steps (`steps`, `claims`, `learning`) import every task the tour runs.

Models are loaded when the first step that needs them runs (so the first step shows while the rest load), through a
callback the command gives; a model that cannot be had skips the steps that need it, with the reason, and a step
that fails says so while the tour goes on.
"""

from gbcli.tasks.tour.choice import (
    FINETUNE_TASK,
    LABELLED_TASKS,
    RIGHT_CONTEXT_TASK,
    STEP_NUMBERS,
    check_budget,
    parse_steps,
)
from gbcli.tasks.tour.results import (
    DEFAULT_BUDGET,
    ModelFlags,
    Outcome,
    StepContext,
    StepSpec,
    StepUnavailable,
    TourSettings,
    TourStep,
)

__all__ = [
    "DEFAULT_BUDGET",
    "FINETUNE_TASK",
    "LABELLED_TASKS",
    "RIGHT_CONTEXT_TASK",
    "STEP_NUMBERS",
    "ModelFlags",
    "Outcome",
    "StepContext",
    "StepSpec",
    "StepUnavailable",
    "TourSettings",
    "TourStep",
    "check_budget",
    "parse_steps",
]
