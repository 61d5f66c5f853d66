"""What a fine-tuning comparison produces: per family, the dev curve of every seed, their mean with a 95% interval,
the final accuracy, and when the threshold was first reached. The Rich view, `--json`, `--png` and `curves.json`
all come from these objects."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CurvePoint:
    """The dev scores after `step` optimizer steps (`examples` training examples, `epoch` epochs)."""

    step: int
    examples: int
    epoch: float
    accuracy: float
    macro_f1: float | None = None
    matthews: float | None = None
    train_loss: float | None = None  # the mean training loss of the steps since the previous point


@dataclass
class Run:
    """One family trained with one seed."""

    seed: int
    folder: str
    points: list[CurvePoint]
    final_accuracy: float
    train_seconds: float
    examples_per_second: float
    peak_memory_mb: float | None  # CUDA: the allocator's peak; CPU: the process's peak resident memory
    epoch_memory_mb: list[float | None] = field(default_factory=list)  # in use at each epoch's end (this session)
    architecture: str = ""  # the classification class trained, e.g. GPT2ForSequenceClassification
    parameters: int = 0
    trained_parameters: int = 0  # those left to train by --freeze-below (all of them without it)
    resumed_from: str | None = None  # the checkpoint this run went on from, if --resume found one
    reused: bool = False  # --resume found this run finished and read it back


@dataclass
class MeanPoint:
    step: int
    examples: int
    epoch: float
    accuracy: float
    low: float
    high: float


@dataclass
class ZeroShot:
    """Dev accuracy before any training: the label word each model's pre-training makes most likely."""

    template: str
    verbalizer: dict[str, str]  # label → word
    method: str
    accuracy: float
    predictions: list[str]


@dataclass
class FamilyResult:
    family: str
    title: str
    model: str
    architecture: str  # the classification class fine-tuned, e.g. GPT2ForSequenceClassification
    parameters: int
    trained_parameters: int
    runs: list[Run]
    curve: list[MeanPoint]
    final_accuracy: float
    final_low: float
    final_high: float
    threshold: float
    reached_step: int | None
    reached_examples: int | None
    reached_epoch: float | None
    estimated_seconds: float | None = None
    zero_shot: ZeroShot | None = None


@dataclass
class FinetuneResult:
    data: str
    train_examples: int
    dev_examples: int
    dev_source: str
    labels: list[str]
    majority_baseline: float
    recipe: dict[str, dict[str, Any]]  # per family, the recipe it was trained with
    seeds: list[int]
    threshold_fraction: float | None
    threshold_value: float | None
    metrics: list[str]
    output_dir: str
    families: list[FamilyResult]
    reading: list[str] = field(default_factory=list)


# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
T_95 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """The mean and its 95% t-interval over seeds, within [0, 1] where accuracies lie; one seed gives a point."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (T_95[n - 2] if n - 1 <= len(T_95) else 1.96) * sd / math.sqrt(n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def mean_curve(runs: list[Run]) -> list[MeanPoint]:
    """The seeds' curves averaged step by step (every seed evaluates at the same steps)."""
    by_step: dict[int, list[CurvePoint]] = {}
    for run in runs:
        for point in run.points:
            by_step.setdefault(point.step, []).append(point)
    curve = []
    for step in sorted(by_step):
        points = by_step[step]
        if len(points) != len(runs):
            continue
        mean, low, high = mean_interval([p.accuracy for p in points])
        curve.append(MeanPoint(step, points[0].examples, points[0].epoch, mean, low, high))
    return curve


def first_reaching(curve: list[MeanPoint], threshold: float) -> MeanPoint | None:
    return next((point for point in curve if point.accuracy >= threshold - 1e-12), None)


def reading(result: FinetuneResult) -> list[str]:
    """The plain sentences under the chart: each family's final accuracy and when it reached its threshold, then
    who reached it first. A family that ends at or below the majority baseline learned nothing a constant answer
    would not give, so it takes no part in the race."""
    lines = []
    majority = result.majority_baseline
    racing = []
    for family in result.families:
        interval = f" [{family.final_low:.3f}, {family.final_high:.3f}]" if len(family.runs) > 1 else ""
        line = f"{family.title}: final dev accuracy {family.final_accuracy:.3f}{interval}"
        if family.final_accuracy <= majority + 1e-12:
            line += f", no better than the majority baseline ({majority:.3f}): it learned nothing measurable."
        elif family.reached_step == 0:
            line += f"; it was at {family.threshold:.3f} before any training."
        elif family.reached_examples is not None:
            line += (
                f"; it reached {family.threshold:.3f} after {family.reached_examples:,} examples "
                f"({family.reached_epoch:.2f} epochs)."
            )
            racing.append(family)
        else:
            line += f"; its mean curve never reached {family.threshold:.3f}."
        lines.append(line)
    if len(racing) >= 2:
        ordered = sorted(racing, key=lambda f: (f.reached_examples, f.family))
        first, second = ordered[0], ordered[1]
        if first.reached_examples == second.reached_examples:
            lines.append(f"{first.title} and {second.title} reached their thresholds after as many examples.")
        else:
            lines.append(
                f"{first.title} reached its threshold first: after {first.reached_examples:,} examples, "
                f"{second.title} after {second.reached_examples:,}."
            )
    elif len(racing) == 1 and len(result.families) > 1:
        lines.append(f"Only {racing[0].title} learned the task and reached its threshold.")
    if result.threshold_fraction is not None:
        lines.append(
            f"Threshold: {result.threshold_fraction:.0%} of each family's own final accuracy; majority "
            f"baseline {majority:.3f}."
        )
    else:
        lines.append(f"Threshold: {result.threshold_value:.3f} for every family; majority baseline {majority:.3f}.")
    return lines
