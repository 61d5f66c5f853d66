"""What a tour step is: its claim and commands, the results of the command it names, the figures read off them,
the sentences that read them, and whether the models bear the claim out; the settings a tour runs with."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gbcli.loading.models import LoadedModel, LoadOptions
from gbcli.tasks.labelled_data import LabelledData

StepStatus = Literal["shown", "skipped", "failed"]
# mixed: some of the claim's parts hold and some do not; unsettled: the numbers cannot decide (each of two judges
# prefers its own text, say).
Verdict = Literal["agrees", "contradicts", "mixed", "unsettled"]
Figures = dict[str, Any]
DEFAULT_BUDGET = 60.0


@dataclass
class TourStep:
    """One step as shown: the claim, the command's own results, the figures read off them, and the reading."""

    number: int
    key: str
    title: str
    claim: str
    commands: list[str]  # the commands that go deeper, exactly as a user reruns them (the first is the main one)
    status: StepStatus = "shown"
    verdict: Verdict | None = None  # whether these models bear the claim out
    reading: list[str] = field(default_factory=list)  # sentences computed from `figures`
    figures: Figures = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # each command's result, as its --json prints it
    note: str | None = None  # why a step was skipped or failed, or what it leaves out
    seconds: float = 0.0


@dataclass
class Outcome:
    """What a step's runner hands back: the results, the figures, and the reading of them."""

    results: dict[str, Any]
    figures: Figures
    reading: list[str]
    verdict: Verdict
    note: str | None = None
    # Commands that depend on what the step found (step 2 scores the texts the models wrote), after the named ones.
    then: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class StepSpec:
    number: int
    key: str
    title: str
    claim: str
    needs: tuple[str, ...]  # model families
    commands: Callable[[ModelFlags], list[str]]
    run: Callable[[dict[str, LoadedModel], StepContext], Outcome]


@dataclass(frozen=True)
class ModelFlags:
    """The model options as the user gave them, to repeat in each command a step names (--gpt PATH ...)."""

    by_family: dict[str, list[str]] = field(default_factory=dict)  # e.g. {"gpt": ["--gpt", "models/gpt2"]}
    common: list[str] = field(default_factory=list)  # --device, --dtype, --revision, --offline

    def command(self, *words: str, families: tuple[str, ...] = ("gpt", "bert")) -> str:
        flags = [flag for family in families for flag in self.by_family.get(family, [])]
        return shlex.join(["gbcli", *words, *flags, *self.common])


@dataclass(frozen=True)
class TourSettings:
    steps: tuple[int, ...]
    budget: float = DEFAULT_BUDGET  # seconds the slow step (fine-tuning) may take, by its own estimate
    model_flags: ModelFlags = field(default_factory=ModelFlags)
    load: LoadOptions = field(default_factory=LoadOptions)  # device and dtype, for the models fine-tuning builds
    # The built-in labelled tasks the probe and fine-tuning steps learn from, by name (the command reads them:
    # `gbcli.jobs.builtin_tasks`, which a task does not import).
    labelled: dict[str, LabelledData] = field(default_factory=dict)
    # The probe's states(lm, inputs, random_init), as `gbcli probe` reads them (its on-disk cache, a bar while they
    # are computed); None: computed in memory.
    probe_states: Callable[..., Any] | None = None


def say_p(value: float | None) -> str:
    """A probability or a small positive number in a sentence: three decimals, or two significant digits."""
    if value is None:
        return "none"
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}"


def agreement(held: list[bool]) -> Verdict:
    return "agrees" if all(held) else "contradicts" if not any(held) else "mixed"


def lower(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def say_ppl(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


@dataclass
class StepContext:
    """What a step runs with besides its models: the settings, and results an earlier step left for a later one
    (step 6 reads the probe step 4 ran, rather than running it twice)."""

    settings: TourSettings
    memo: dict[str, Any] = field(default_factory=dict)


class StepUnavailable(Exception):
    """A step that this build or these models cannot show: skipped with the reason, not failed."""
