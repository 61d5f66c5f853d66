"""The head-to-head: every chosen family fine-tuned on the same data with the same recipe and seeds, their curves
averaged over seeds, and the reading of who reached the threshold first.

    data = prepare(read_labelled("train.jsonl").examples, None, "train.jsonl")
    plan = Plan(columns=[("gpt", "gpt2"), ("bert", "bert-base-uncased")], recipes={...}, seeds=[42],
                output=Path("runs"))
    result = compare_finetuning(data, plan)

No parsing of files or options and no drawing here: the CLI reads, this trains, gbcli.render.finetune draws.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoTokenizer, DataCollatorWithPadding, set_seed

from gbcli.loading.families import family_title
from gbcli.loading.models import FAMILY_INFO, release_model, resolve_device
from gbcli.tasks.finetune.classifier import freeze_below, load_classifier, prepare_tokenizer
from gbcli.tasks.finetune.data import FinetuneData, encode
from gbcli.tasks.finetune.plan import Plan as Plan  # re-exported: what compare_finetuning takes
from gbcli.tasks.finetune.recipe import Recipe
from gbcli.tasks.finetune.results import (
    FamilyResult,
    FinetuneResult,
    Run,
    ZeroShot,
    first_reaching,
    mean_curve,
    mean_interval,
    reading,
)
from gbcli.tasks.finetune.run_folder import MANIFEST, run_folder, write_manifest
from gbcli.tasks.finetune.training import Listener, Silent, finished_run, train_run
from gbcli.tasks.finetune.zero_shot import zero_shot

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

TIMED_STEPS = 3  # training steps timed before the run (after one untimed step that warms the kernels up)


@dataclass
class Estimate:
    family: str
    seconds_per_step: float
    seconds_per_evaluation: float
    steps: int
    evaluations: int
    runs: int

    @property
    def seconds(self) -> float:
        return self.runs * (self.steps * self.seconds_per_step + self.evaluations * self.seconds_per_evaluation)


def new_classifier(
    family: str, spec: str, data: FinetuneData, recipe: Recipe, seed: int, plan: Plan
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The checkpoint with a classification head seeded by `seed`, its tokenizer ready to pad."""
    tokenizer = prepare_tokenizer(
        AutoTokenizer.from_pretrained(spec, revision=plan.revision, local_files_only=plan.offline)
    )
    set_seed(seed)  # the new head's initial weights
    model = load_classifier(
        spec,
        data.labels,
        tokenizer,
        FAMILY_INFO[family].flag,  # type: ignore[index]
        revision=plan.revision,
        offline=plan.offline,
    )
    if recipe.freeze_below is not None:
        freeze_below(model, recipe.freeze_below)
    return model, tokenizer


def time_steps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: FinetuneData, recipe: Recipe, device: str
) -> tuple[float, float]:
    """Seconds of one training step (forward and backward of a full batch, as long as the data's longest texts)
    and of one evaluation over the dev set, measured on the model; its weights are left as they were."""
    target = resolve_device(device)
    model.to(target)
    collate = DataCollatorWithPadding(tokenizer)
    longest = sorted(data.train, key=lambda e: len(e.text) + len(e.text_b or ""), reverse=True)
    batch = collate(
        encode(tokenizer, (longest * recipe.batch_size)[: recipe.batch_size], data.label_ids, recipe.max_length)
    )
    batch = {k: v.to(target) for k, v in batch.items()}
    model.train()
    times = []
    for _ in range(TIMED_STEPS + 1):
        began = time.perf_counter()
        model(**batch).loss.backward()
        times.append(time.perf_counter() - began)
    model.zero_grad(set_to_none=True)
    model.eval()
    eval_batch = max(recipe.batch_size, 32)
    began = time.perf_counter()
    with torch.inference_mode():
        model(**{k: v[: min(eval_batch, len(data.dev))] for k, v in batch.items() if k != "labels"})
    per_batch = time.perf_counter() - began
    step = statistics.median(times[1:]) * recipe.gradient_accumulation  # the median: other work may stall one
    evaluation = per_batch * -(-len(data.dev) // eval_batch)
    return step, evaluation


def estimate(
    family: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: FinetuneData,
    recipe: Recipe,
    plan: Plan,
) -> Estimate:
    step, evaluation = time_steps(model, tokenizer, data, recipe, plan.device)
    steps = recipe.total_steps(len(data.train))
    evaluations = 1 + -(-steps // recipe.evaluation_interval(len(data.train)))
    return Estimate(family, step, evaluation, steps, evaluations, len(plan.seeds))


def threshold_for(plan: Plan, final: float) -> float:
    return plan.threshold_value if plan.threshold_value is not None else (plan.threshold_fraction or 0.9) * final


def family_result(
    family: str, spec: str, runs: list[Run], plan: Plan, zero: ZeroShot | None, estimated: Estimate | None
) -> FamilyResult:
    curve = mean_curve(runs)
    first = runs[0]
    final, low, high = mean_interval([run.final_accuracy for run in runs])
    threshold = threshold_for(plan, final)
    reached = first_reaching(curve, threshold)
    return FamilyResult(
        family,
        family_title(family),
        spec,
        first.architecture,
        first.parameters,
        first.trained_parameters,
        runs,
        curve,
        final,
        low,
        high,
        threshold,
        reached.step if reached else None,
        reached.examples if reached else None,
        reached.epoch if reached else None,
        round(estimated.seconds, 3) if estimated else None,
        zero,
    )


def compare_finetuning(
    data: FinetuneData, plan: Plan, listener: Listener | None = None, on_estimate: Any = None
) -> FinetuneResult:
    """Fine-tune every family of the plan with every seed (a finished run found by --resume is read back, an
    interrupted one goes on from its last checkpoint), and compare their curves."""
    # gbcli's model loader turns gradients off for the whole process (every other command only reads models).
    with torch.enable_grad():
        return _compare(data, plan, listener, on_estimate)


def _compare(data: FinetuneData, plan: Plan, listener: Listener | None, on_estimate: Any) -> FinetuneResult:
    listener = listener or Silent()
    if not plan.resume and int(os.environ.get("RANK", "0")) == 0:
        write_manifest(plan.output, plan.manifest(data))
    zero_shots: dict[str, ZeroShot] = {}
    if plan.prompt is not None and plan.verbalizer is not None:
        for family, lm in plan.language_models.items():
            zero_shots[family] = zero_shot(lm, plan.prompt, plan.verbalizer, data.dev)
            release_model(lm)  # before training: the classifier's weights take its place
    first_models: dict[str, tuple[Any, Any]] = {}
    estimates: dict[str, Estimate] = {}
    unfinished = [
        (family, spec)
        for family, spec in plan.columns
        if not plan.resume
        or any(finished_run(run_folder(plan.output, family, seed, plan.seeds)) is None for seed in plan.seeds)
    ]
    if on_estimate is not None and unfinished:  # a few steps of each family first, then the time of the whole run
        for family, spec in unfinished:
            model, tokenizer = new_classifier(family, spec, data, plan.recipes[family], plan.seeds[0], plan)
            estimates[family] = estimate(family, model, tokenizer, data, plan.recipes[family], plan)
            first_models[family] = (model, tokenizer)
        on_estimate(list(estimates.values()))
    families = []
    for family, spec in plan.columns:
        recipe = plan.recipes[family]
        runs = []
        for seed in plan.seeds:
            folder = run_folder(plan.output, family, seed, plan.seeds)
            done = finished_run(folder) if plan.resume else None
            if done is not None:
                runs.append(done)
                listener.finished(done)
                continue
            if seed == plan.seeds[0] and family in first_models:
                model, tokenizer = first_models.pop(family)
            else:
                model, tokenizer = new_classifier(family, spec, data, recipe, seed, plan)
            runs.append(
                train_run(
                    model,
                    tokenizer,
                    data,
                    recipe,
                    seed,
                    folder,
                    family=family,
                    device=plan.device,
                    dtype=plan.dtype,
                    resume=plan.resume,
                    listener=listener,
                )
            )
            del model
        families.append(family_result(family, spec, runs, plan, zero_shots.get(family), estimates.get(family)))
    result = FinetuneResult(
        data.name,
        len(data.train),
        len(data.dev),
        data.dev_source,
        data.labels,
        data.majority_baseline,
        {f: asdict(r) for f, r in plan.recipes.items()},
        plan.seeds,
        plan.threshold_fraction if plan.threshold_value is None else None,
        plan.threshold_value,
        ["accuracy", "macro_f1", "matthews"],
        str(plan.output),
        families,
    )
    result.reading = reading(result)
    return result


__all__ = ["MANIFEST", "Estimate", "Plan", "compare_finetuning", "new_classifier"]
