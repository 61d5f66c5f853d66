"""The claims about what each family learns: what its layers know (4 and 6, a probe that needs the right context;
sentence similarity against the anisotropy baseline) and fine-tuning (7), each with its command's own task."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gbcli.loading.models import LoadedModel
from gbcli.tasks.finetune.data import prepare
from gbcli.tasks.finetune.head_to_head import Plan, compare_finetuning
from gbcli.tasks.finetune.recipe import Recipe, check_recipe
from gbcli.tasks.probe import ProbeOptions, probe
from gbcli.tasks.similarity import similarity
from gbcli.tasks.tour.choice import FINETUNE_TASK, RIGHT_CONTEXT_TASK
from gbcli.tasks.tour.results import Figures, Outcome, StepContext, StepUnavailable, agreement

# ---------------------------------------------------------------------------------------------------------------
# The right-context probe: step 4 shows it, step 6 reads it layer by layer
# ---------------------------------------------------------------------------------------------------------------


PROBE_OPTIONS = ("--seeds", "1", "--control", "none")  # one split and no random-weight rows: the tour's setting


def right_context_probe(models: dict[str, LoadedModel], context: StepContext) -> Any:
    """The right-context probe of GPT-2 and BERT, once per tour (steps 4 and 6 read the same result)."""
    if RIGHT_CONTEXT_TASK not in context.memo:
        data = context.settings.labelled[RIGHT_CONTEXT_TASK]
        context.memo[RIGHT_CONTEXT_TASK] = probe(
            [models["gpt"], models["bert"]],
            data,
            ProbeOptions(seeds=1, control="none"),
            states=context.settings.probe_states,
        )
    return context.memo[RIGHT_CONTEXT_TASK]


def probe_figures(result: Any) -> Figures:
    """Each model's best layer and accuracy, whether it sits exactly on the majority baseline at every layer
    (the same predictions, split by split), and its accuracy by layer."""
    figures: Figures = {"majority": result.majority.accuracy}
    for row in result.rows:
        if row.random_init:
            continue
        figures[row.family] = {
            "best_layer": row.best_layer.layer,
            "best_accuracy": row.best_layer.accuracy,
            "at_majority": all(score.runs == result.majority.runs for score in row.layers),
            "accuracy_by_layer": [score.accuracy for score in row.layers],
            "layer_names": [score.layer for score in row.layers],
            # The first layer whose accuracy is above the whole majority interval: what that layer knows.
            "first_layer_above": next((score.layer for score in row.layers if score.low > result.majority.high), None),
        }
    return figures


# ---------------------------------------------------------------------------------------------------------------
# 6. Understanding: which layers know what
# ---------------------------------------------------------------------------------------------------------------


SIMILAR_TEXTS = ("the duck quacks in the park .", "the dog barks in the park .", "the capital of france is paris .")


def layers_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    probed = right_context_probe(models, context)
    compared = similarity([models["gpt"], models["bert"]], list(SIMILAR_TEXTS))
    figures: Figures = {"probe": probe_figures(probed)}
    majority = figures["probe"]["majority"]
    held = []
    reading = []
    scores = []
    for family, name in (("gpt", "GPT-2"), ("bert", "BERT")):
        row = figures["probe"][family]
        by_layer = ", ".join(
            f"{layer} {accuracy:.2f}"
            for layer, accuracy in zip(row["layer_names"], row["accuracy_by_layer"], strict=True)
        )
        first = row["first_layer_above"]
        if family == "gpt":
            held.append(first is None)
            where = (
                "no layer knows it"
                if first is None
                else f"it appears from layer {first} on, although no state at 'sheep' has read the verb"
            )
        else:
            held.append(first is not None)
            where = (
                "no layer knows it"
                if first is None
                else "it is in the embeddings already, which read one token each"
                if first == "emb"
                else f"the embeddings do not know it; it appears at layer {first}"
            )
        scores.append(f"{name} {by_layer}: {where}")
    reading.append(
        f"Layer by layer, the probe of step 4 (majority baseline {majority:.2f}) scores " + "; ".join(scores) + "."
    )
    for model in compared.models:
        related, unrelated = model.pairs[0], model.pairs[1]  # texts 1–2 (animals in the park), 1–3 (a capital)
        figures[model.family] = {
            "baseline": model.baseline,
            "layer": model.layer,
            "related_cosine": related.cosine,
            "related_adjusted": related.adjusted,
            "unrelated_cosine": unrelated.cosine,
            "unrelated_adjusted": unrelated.adjusted,
        }
        name = "GPT-2" if model.family == "gpt" else "BERT"
        apart = related.adjusted > unrelated.adjusted
        held.append(apart)
        reading.append(
            f"At {name}'s last layer two unrelated reference sentences already have a mean cosine of "
            f"{model.baseline:.2f} (anisotropy): the duck and dog sentences have {related.cosine:.2f} "
            f"({related.adjusted:+.2f} against that baseline), the duck and the capital {unrelated.cosine:.2f} "
            f"({unrelated.adjusted:+.2f})"
            + ("." if apart else ": this model does not tell the related pair from the unrelated one.")
        )
    return Outcome({"probe": probed, "similarity": compared}, figures, reading, agreement(held))


# ---------------------------------------------------------------------------------------------------------------
# 7. Fine-tuning
# ---------------------------------------------------------------------------------------------------------------


FINETUNE_SAMPLES = 128
FINETUNE_EPOCHS = 2
FINETUNE_BATCH = 16
FINETUNE_EVAL_EVERY = 2
FINETUNE_LR = 1e-4  # above BERT's 2e-5: sixteen steps must show a curve
FINETUNE_SEED = 42


def _finetune_recipe() -> Any:
    return check_recipe(
        Recipe(
            learning_rate=FINETUNE_LR, epochs=FINETUNE_EPOCHS, batch_size=FINETUNE_BATCH, eval_every=FINETUNE_EVAL_EVERY
        )
    )


def finetune_words() -> list[str]:
    """The options of `gbcli finetune` that give the tour's small, fast setting (also its deeper command)."""
    return [
        "finetune",
        "--task",
        FINETUNE_TASK,
        "--max-train-samples",
        str(FINETUNE_SAMPLES),
        "--epochs",
        str(FINETUNE_EPOCHS),
        "--batch-size",
        str(FINETUNE_BATCH),
        "--lr",
        f"{FINETUNE_LR:g}",
        "--eval-every",
        str(FINETUNE_EVAL_EVERY),
        "--seed",
        str(FINETUNE_SEED),
        "--output-dir",
        "gbcli-tour-finetune",
    ]


def forward_seconds(lm: LoadedModel, texts: list[str]) -> float:
    """Seconds of one forward pass of the model's body over `texts` as one padded batch (no head: a classifier's
    head is small), the second of two so that the first pays for the kernels' warm-up."""
    tokenizer = lm.tokenizer
    ids = [tokenizer(text)["input_ids"] for text in texts]
    width = max(len(row) for row in ids)
    batch = torch.tensor([row + [lm.pad_id] * (width - len(row)) for row in ids], device=lm.device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=lm.device)
    body = lm.model.base_model
    seconds = 0.0
    with torch.inference_mode():
        for _ in range(2):
            began = time.perf_counter()
            if getattr(lm.model.config, "is_encoder_decoder", False):
                body(input_ids=batch, attention_mask=mask, decoder_input_ids=batch)
            else:
                body(input_ids=batch, attention_mask=mask)
            seconds = time.perf_counter() - began
    return seconds


def finetune_estimate(models: dict[str, LoadedModel], data: Any, recipe: Any) -> float:
    """Seconds the run would take, before any classifier is built: a training step costs about three forward
    passes (forward, and a backward pass of about twice that), an evaluation a forward pass per batch of dev."""
    texts = [example.text for example in data.train[: recipe.batch_size]]
    steps = recipe.total_steps(len(data.train))
    evaluations = 1 + -(-steps // recipe.evaluation_interval(len(data.train)))
    dev_batches = -(-len(data.dev) // max(recipe.batch_size, 32))
    total = 0.0
    for family in ("gpt", "bert"):
        forward = forward_seconds(models[family], texts)
        total += steps * 3 * forward + evaluations * dev_batches * forward * max(recipe.batch_size, 32) / len(texts)
    return total


def finetune_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    settings = context.settings
    data = prepare(
        settings.labelled[FINETUNE_TASK].examples, None, f"task {FINETUNE_TASK}", max_train_samples=FINETUNE_SAMPLES
    )
    recipe = _finetune_recipe()
    budget = f"more than --budget {settings.budget:g} s; raise --budget to see it, or run the command below"
    first = finetune_estimate(models, data, recipe)
    if first > settings.budget:
        raise StepUnavailable(
            f"fine-tuning would take about {first:.0f} s on these models (from one timed forward "
            f"pass of each), {budget}"
        )
    estimated: list[float] = []

    def within_budget(estimates: list[Any]) -> None:
        """`gbcli finetune`'s own estimate, from a few timed training steps: a run over the budget is not started."""
        estimated.append(sum(e.seconds for e in estimates))
        if estimated[0] > settings.budget:
            raise StepUnavailable(
                f"fine-tuning would take about {estimated[0]:.0f} s on these models (timed on a "
                f"few training steps), {budget}"
            )

    started = time.perf_counter()
    # The run's folder (models, Trainer state) is the tour's scratch: the deeper command keeps its own.
    with tempfile.TemporaryDirectory(prefix="gbcli-tour-") as folder:
        plan = Plan(
            [(family, models[family].spec) for family in ("gpt", "bert")],
            {family: recipe for family in ("gpt", "bert")},
            [FINETUNE_SEED],
            Path(folder),
            device=settings.load.device,
            dtype=settings.load.dtype,
            revision=settings.load.revision,
            offline=settings.load.offline,
        )
        try:
            result = compare_finetuning(data, plan, None, within_budget)
        except ImportError as error:
            raise StepUnavailable(
                f"fine-tuning needs accelerate and scikit-learn ({error}): pip install 'gbcli[train]'"
            ) from None
    seconds = time.perf_counter() - started
    majority = result.majority_baseline
    figures: Figures = {
        "task": FINETUNE_TASK,
        "train_examples": result.train_examples,
        "dev_examples": result.dev_examples,
        "majority_baseline": majority,
        "estimated_seconds": estimated[0] if estimated else first,
        "seconds": seconds,
    }
    learned = []
    for family in result.families:
        figures[family.family] = {
            "final_accuracy": family.final_accuracy,
            "accuracy_by_step": [point.accuracy for point in family.curve],
            "reached_examples": family.reached_examples,
        }
        learned.append(family.final_accuracy > majority)
    reading = [
        f"Both were given a classification head and trained on the same {result.train_examples} "
        f"{FINETUNE_TASK} examples with the same recipe (learning rate {FINETUNE_LR:g}, batch "
        f"{FINETUNE_BATCH}, {FINETUNE_EPOCHS} epochs), scored on {result.dev_examples} held-out ones."
    ]
    reading += result.reading
    if not any(learned):
        reading.append("In this small setting neither learned the task: the claim is not shown by these models.")
    elif not all(learned):
        reading.append("In this small setting only one of them learned the task; the deeper command trains longer.")
    reading.append(f"It took {seconds:.0f} s here (estimated {figures['estimated_seconds']:.0f} s before training).")
    return Outcome({"finetune": result}, figures, reading, agreement(learned))
