"""One family fine-tuned with one seed, by transformers' `Trainer`, its dev curve recorded by evaluation steps.

Trainer gives the loop, the optimizer and schedule (AdamW, linear warm-up and decay), checkpoints and their resume,
gradient accumulation, bf16, and data parallelism under torchrun or `accelerate launch`. What gbcli adds: an
evaluation at step 0 and every `eval_every` steps (the learning curve, read back from Trainer's own log history, so
that a resumed run has the points of the part before the interruption too), the output folder's curves.json, and
the listener through which the screen shows each step.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from gbcli.errors import GbcliError
from gbcli.loading.models import resolve_device
from gbcli.tasks.finetune.data import FinetuneData, encode
from gbcli.tasks.finetune.recipe import Recipe
from gbcli.tasks.finetune.results import CurvePoint, Run

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CURVES_FILE = "curves.json"
METRICS = ("accuracy", "macro_f1", "matthews")


class Listener(Protocol):
    """What the screen is told while a run trains (every call comes from the main process only)."""

    def started(self, family: str, seed: int, total_steps: int, done_steps: int) -> None: ...
    def stepped(self, step: int, loss: float | None) -> None: ...
    def evaluated(self, point: CurvePoint) -> None: ...
    def finished(self, run: Run) -> None: ...


class Silent:
    def started(self, family: str, seed: int, total_steps: int, done_steps: int) -> None:
        pass

    def stepped(self, step: int, loss: float | None) -> None:
        pass

    def evaluated(self, point: CurvePoint) -> None:
        pass

    def finished(self, run: Run) -> None:
        pass


def scores(labels: Any, predictions: Any) -> dict[str, float]:
    """Accuracy, macro-F1 and Matthews correlation of predicted class ids (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef  # late: extra

    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "matthews": float(matthews_corrcoef(labels, predictions)),
    }


def compute_metrics(prediction: Any) -> dict[str, float]:
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return scores(prediction.label_ids, logits.argmax(-1))


def examples_seen(step: int, recipe: Recipe, train_examples: int, processes: int = 1) -> int:
    """Training examples read after `step` optimizer steps (an epoch's last batch may be short)."""
    per_epoch = recipe.steps_per_epoch(train_examples, processes)
    epochs, rest = divmod(step, per_epoch)
    return epochs * train_examples + min(rest * recipe.examples_per_step(processes), train_examples)


def training_arguments(
    folder: Path, recipe: Recipe, seed: int, data: FinetuneData, *, device: str, dtype: str, resuming: bool
) -> Any:
    on_cpu = resolve_device(device).type == "cpu"
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    interval = recipe.evaluation_interval(len(data.train), processes)
    save_every = recipe.save_every or recipe.steps_per_epoch(len(data.train), processes)
    return TrainingArguments(
        output_dir=str(folder),
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=max(recipe.batch_size, 32),
        gradient_accumulation_steps=recipe.gradient_accumulation,
        warmup_steps=recipe.warmup_ratio,  # below 1: a fraction of all steps (transformers 5)
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=interval,
        eval_on_start=not resuming,  # a resumed run has its step-0 point in the checkpoint's log history
        logging_strategy="steps",
        logging_steps=interval,
        save_strategy="steps",
        save_steps=save_every,
        save_total_limit=1,
        seed=seed,
        data_seed=seed,
        use_cpu=on_cpu,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        report_to="none",
        disable_tqdm=True,
        log_level="error",
        dataloader_num_workers=0,
        dataloader_pin_memory=not on_cpu,  # pinned memory serves copies to a GPU only
        ddp_backend="gloo" if on_cpu and processes > 1 else None,
        ddp_find_unused_parameters=False,  # every parameter that trains reaches the loss
    )


class CurveListener:
    """A Trainer callback that forwards steps, losses and evaluations to a Listener."""

    def __init__(self, listener: Listener, recipe: Recipe, train_examples: int) -> None:
        self.listener = listener
        self.recipe = recipe
        self.train_examples = train_examples
        self.last_loss: float | None = None
        self.epoch_memory_mb: list[float | None] = []  # memory in use at the end of each epoch (of this process)
        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.is_world_process_zero:
                    outer.listener.stepped(state.global_step, outer.last_loss)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    outer.last_loss = float(logs["loss"])

            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
                if state.is_world_process_zero and metrics:
                    outer.listener.evaluated(outer.point(state.global_step, metrics, outer.last_loss))

            def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                outer.epoch_memory_mb.append(_round(memory_now_mb(args.device)))

        self.callback = Callback()

    def point(self, step: int, metrics: dict[str, Any], loss: float | None) -> CurvePoint:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        per_epoch = self.recipe.steps_per_epoch(self.train_examples, processes)
        return CurvePoint(
            step,
            examples_seen(step, self.recipe, self.train_examples, processes),
            round(step / per_epoch, 4),
            float(metrics["eval_accuracy"]),
            _maybe(metrics.get("eval_macro_f1")),
            _maybe(metrics.get("eval_matthews")),
            loss,
        )


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)


def curve_from_history(history: list[dict[str, Any]], recipe: Recipe, train_examples: int) -> list[CurvePoint]:
    """The dev curve in Trainer's log history: one point per evaluated step (a step evaluated twice keeps its
    last), each with the training loss logged at that step."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = recipe.steps_per_epoch(train_examples, processes)
    losses = {entry["step"]: float(entry["loss"]) for entry in history if "loss" in entry}
    points: dict[int, CurvePoint] = {}
    for entry in history:
        if "eval_accuracy" not in entry:
            continue
        step = int(entry["step"])
        points[step] = CurvePoint(
            step,
            examples_seen(step, recipe, train_examples, processes),
            round(step / per_epoch, 4),
            float(entry["eval_accuracy"]),
            _maybe(entry.get("eval_macro_f1")),
            _maybe(entry.get("eval_matthews")),
            losses.get(step),
        )
    return [points[step] for step in sorted(points)]


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that was written whole: Trainer writes trainer_state.json after the weights, the
    optimizer, the schedule and the random states, so a checkpoint whose state file reads whole is complete (a
    process killed while writing one leaves it without, or with a torn one, and the one before it still there)."""
    if not folder.is_dir():
        return None
    found = []
    for entry in folder.iterdir():
        number = entry.name.removeprefix("checkpoint-")
        if entry.is_dir() and entry.name.startswith("checkpoint-") and number.isdigit() and _whole_state(entry):
            found.append((int(number), entry))
    return max(found)[1] if found else None


def _whole_state(checkpoint: Path) -> bool:
    try:
        return "global_step" in json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False


def finished_run(folder: Path) -> Run | None:
    """A run this folder holds whole (its curves.json is written last), read back."""
    path = folder / CURVES_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    points = [CurvePoint(**p) for p in stored.pop("points")]
    return Run(points=points, **{**stored, "reused": True})


def memory_now_mb(device: Any) -> float | None:
    """Memory in use now: CUDA's allocated tensors, else the process's resident set (Linux)."""
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_mb(device: Any) -> float | None:
    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sys.platform.startswith("linux"):  # ru_maxrss is in KiB on Linux (bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


def train_run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: FinetuneData,
    recipe: Recipe,
    seed: int,
    folder: Path,
    *,
    family: str,
    device: str = "auto",
    dtype: str = "auto",
    resume: bool = False,
    listener: Listener | None = None,
) -> Run:
    """Fine-tune `model` (its head already made for data.labels) and save it, its tokenizer, Trainer's state and
    results, and curves.json in `folder`. With `resume`, go on from the folder's last whole checkpoint."""
    listener = listener or Silent()
    checkpoint = last_checkpoint(folder) if resume else None
    arguments = training_arguments(
        folder, recipe, seed, data, device=device, dtype=dtype, resuming=checkpoint is not None
    )
    label_ids = data.label_ids
    curve = CurveListener(listener, recipe, len(data.train))
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=encode(tokenizer, data.train, label_ids, recipe.max_length),
        eval_dataset=encode(tokenizer, data.dev, label_ids, recipe.max_length),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[curve.callback],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log to stdout, which carries only the result
    processes = arguments.world_size
    total = recipe.total_steps(len(data.train), processes)
    done = 0
    if checkpoint is not None:
        done = json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step", 0)
    if trainer.is_world_process_zero():
        listener.started(family, seed, total, done)
    began = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    except (RuntimeError, MemoryError) as error:  # torch.OutOfMemoryError is a RuntimeError; a CPU's is MemoryError
        raise out_of_memory(error, recipe) from error
    seconds = time.perf_counter() - began
    if trainer.state.log_history and "eval_accuracy" not in _last_eval_at(
        trainer.state.log_history, trainer.state.global_step
    ):
        trainer.evaluate()  # the curve always ends at the last step
    points = curve_from_history(trainer.state.log_history, recipe, len(data.train))
    run = Run(
        seed=seed,
        folder=str(folder),
        points=points,
        final_accuracy=points[-1].accuracy,
        train_seconds=round(seconds, 3),
        examples_per_second=round(output.metrics.get("train_samples_per_second", 0.0), 3),
        peak_memory_mb=_round(peak_memory_mb(arguments.device)),
        epoch_memory_mb=curve.epoch_memory_mb,
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        resumed_from=checkpoint.name if checkpoint is not None else None,
    )
    trainer.save_model(str(folder))  # the model, its config (with the labels) and the tokenizer
    if trainer.is_world_process_zero():
        trainer.save_metrics("train", output.metrics)
        trainer.save_metrics("eval", {f"eval_{k}": getattr(points[-1], k) for k in METRICS})
        trainer.save_state()
        for old in folder.glob("checkpoint-*"):  # the run is whole: its checkpoints are no longer needed
            shutil.rmtree(old, ignore_errors=True)
        stored = asdict(run)
        stored.pop("reused")
        write_atomically(folder / CURVES_FILE, json.dumps(stored, indent=2))
        listener.finished(run)
    return run


def _last_eval_at(history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    return next((e for e in reversed(history) if e.get("step") == step and "eval_accuracy" in e), {})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def out_of_memory(error: Exception, recipe: Recipe) -> Exception:
    """An out-of-memory failure as a sentence that names the batch size; any other error as it was."""
    if (
        not isinstance(error, MemoryError)
        and "out of memory" not in str(error).lower()
        and type(error).__name__ != "OutOfMemoryError"
    ):
        return error
    smaller = max(1, recipe.batch_size // 2)
    return GbcliError(
        f"Out of memory while training with batch size {recipe.batch_size} (maximum length {recipe.max_length}).",
        f"Try --batch-size {smaller} --gradient-accumulation {recipe.gradient_accumulation * 2} (the same "
        "effective batch), a smaller --max-length, --freeze-below, or --dtype bfloat16.",
    )
