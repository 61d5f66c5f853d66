"""The rows of `gbcli finetune` (issue 31), on full-size GPT-2-small and BERT-base with random weights:

- training throughput, N examples of 64 tokens (default 512), one epoch, per family: gbcli's run (Trainer with the
  dev curve: an evaluation at step 0 and ~10 per epoch, on 64 dev examples) against a plain `Trainer` script with
  the same model, data, recipe and seed and no evaluation until the end; target >= 0.95x the examples per second,
  and the same dev accuracy with the same seed (the weights are the same: evaluations draw no random numbers);
- `--freeze-below 10` against full fine-tuning: examples per second, target >= 2.5x;
- peak memory per family (the peak resident set of a fresh process per family), and no growth across epochs:
  the memory in use after the third epoch against after the first.

    python benchmarks/run.py --rows finetune                       # 512 examples, as the issue's table
    python benchmarks/run.py --rows finetune --finetune-examples 64  # the same rows, smaller (a busy machine)

Minutes per epoch of a full-size model on this machine follow from the measured examples per second.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from run import Context, Row, gbcli_command, run_process

DEV_EXAMPLES = 64
TOKENS = 64
WORDS = [
    "the",
    "film",
    "was",
    "good",
    "bad",
    "and",
    "a",
    "story",
    "of",
    "people",
    "who",
    "lived",
    "in",
    "town",
    "with",
    "great",
    "music",
    "but",
    "slow",
    "plot",
    "very",
    "long",
    "night",
    "we",
    "saw",
    "it",
    "again",
]


def examples(count: int, seed: int) -> list[dict[str, str]]:
    """`count` texts of at least TOKENS tokens (cut to TOKENS by --max-length), labelled by a word count rule."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(TOKENS + 8)]
        label = "pos" if words.count("good") + words.count("great") > words.count("bad") else "neg"
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gbcli_side(path: Path, data: Any, recipe: Any, folder: Path, family: str) -> tuple[float, float, float]:
    """Examples per second of `trainer.train()` in gbcli's run (the curve's evaluations included; the final save
    not, as in the plain script), the same without the seconds of those evaluations (Trainer's `eval_runtime` of
    each, from trainer_state.json: the training loop alone), and the final dev accuracy."""
    import torch

    from gbcli.tasks.finetune.head_to_head import Plan, new_classifier
    from gbcli.tasks.finetune.training import train_run

    plan = Plan([(family, str(path))], {family: recipe}, [42], folder, device="cpu")
    with torch.enable_grad():
        model, tokenizer = new_classifier(family, str(path), data, recipe, 42, plan)
        run = train_run(model, tokenizer, data, recipe, 42, folder / family, family=family, device="cpu")
    state = json.loads((folder / family / "trainer_state.json").read_text())
    evaluating = sum(entry["eval_runtime"] for entry in state["log_history"] if "eval_runtime" in entry)
    training = len(data.train) * recipe.epochs / run.examples_per_second
    return run.examples_per_second, len(data.train) * recipe.epochs / (training - evaluating), run.final_accuracy


def plain_side(path: Path, data: Any, recipe: Any, folder: Path) -> tuple[float, float]:
    """The plain Trainer script: the same model, data, recipe and seed, evaluated once at the end."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from gbcli.tasks.finetune.data import encode

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    set_seed(42)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(data.labels), pad_token_id=tokenizer.pad_token_id
    )
    arguments = TrainingArguments(
        output_dir=str(folder),
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=32,
        warmup_steps=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="no",
        save_strategy="no",
        seed=42,
        data_seed=42,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=encode(tokenizer, data.train, data.label_ids, recipe.max_length),
        eval_dataset=encode(tokenizer, data.dev, data.label_ids, recipe.max_length),
        compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
    )
    output = trainer.train()
    return output.metrics["train_samples_per_second"], trainer.evaluate()["eval_accuracy"]


def memory_run(train: Path, dev: Path, family: str, path: Path, count: int) -> tuple[float, list[float]]:
    """A fresh `gbcli finetune` of one family, 3 epochs: its peak resident memory (MiB, as the process's
    getrusage says) and the memory in use at each epoch's end, as gbcli reports them."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            *gbcli_command(),
            "finetune",
            str(train),
            "--dev",
            str(dev),
            "--models",
            family,
            f"--{family}",
            str(path),
            "--epochs",
            "3",
            "--max-length",
            str(TOKENS),
            "--max-train-samples",
            str(count),
            "--no-estimate",
            "--device",
            "cpu",
            "-o",
            f"{out}/run",
            "--json",
        ]
        _, rss, code, text = run_process(command)
        if code != 0:
            raise RuntimeError(f"gbcli finetune failed: {text[-300:]}")
        (run,) = next(f for f in json.loads(text)["families"] if f["family"] == family)["runs"]
        return rss / 2**20, run["epoch_memory_mb"]


def finetune_rows(ctx: Context) -> list[Row]:
    from gbcli.loading.models import quiet_transformers
    from gbcli.tasks.finetune.data import prepare
    from gbcli.tasks.finetune.recipe import Recipe

    quiet_transformers()
    count = getattr(ctx.args, "finetune_examples", None) or 512
    data = prepare(
        [_Example(**r) for r in examples(count, 0)], [_Example(**r) for r in examples(DEV_EXAMPLES, 1)], "benchmark"
    )
    recipe = Recipe(epochs=1, max_length=TOKENS)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="gbcli-finetune-bench-"))
    speeds: dict[str, float] = {}
    for family, path in (("gpt", ctx.gpt_path), ("bert", ctx.bert_path)):
        ours, loop, ours_accuracy = gbcli_side(path, data, recipe, work / f"gbcli-{family}", family)
        theirs, their_accuracy = plain_side(path, data, recipe, work / f"plain-{family}")
        speeds[family] = loop
        ratio = ours / theirs
        minutes = count / ours / 60
        rows.append(
            Row(
                f"finetune throughput, {family}",
                f"{ours:.2f} ex/s",
                f"{theirs:.2f} ex/s",
                ratio,
                ">= 0.95x plain Trainer, same dev accuracy",
                ratio >= 0.95 and ours_accuracy == their_accuracy,
                note=f"{count} examples of {TOKENS} tokens, one epoch, batch 32; gbcli evaluates "
                f"{DEV_EXAMPLES} dev examples at step 0 and ~10 times an epoch, the plain script once; "
                f"without the curve's evaluations gbcli's loop ran {loop:.2f} ex/s "
                f"({loop / theirs:.2f}x); "
                f"dev accuracy gbcli {ours_accuracy:.4f}, plain {their_accuracy:.4f}; "
                f"{minutes:.1f} min per epoch of {count} examples (SST-2's 67,349: "
                f"{67349 / ours / 3600:.1f} h)",
                fresh=False,
            )
        )
    _, frozen, _ = gbcli_side(
        ctx.bert_path, data, Recipe(epochs=1, max_length=TOKENS, freeze_below=10), work / "frozen-bert", "bert"
    )
    ratio = frozen / speeds["bert"]
    rows.append(
        Row(
            "finetune --freeze-below 10, bert",
            f"{frozen:.2f} ex/s",
            f"{speeds['bert']:.2f} ex/s (full)",
            ratio,
            ">= 2.5x full fine-tuning",
            ratio >= 2.5,
            note="the same run with layers 0-9 and the embeddings frozen (no gradients, no optimizer state); "
            "both without the curve's evaluations, which cost the same forward passes either way",
            fresh=False,
        )
    )
    train = write(work / "train.jsonl", examples(count, 0))
    dev = write(work / "dev.jsonl", examples(DEV_EXAMPLES, 1))
    small = min(count, 32)
    for family, path in (("gpt", ctx.gpt_path), ("bert", ctx.bert_path)):
        peak, by_epoch = memory_run(train, dev, family, path, small)
        growth = by_epoch[-1] / by_epoch[0]
        rows.append(
            Row(
                f"finetune peak memory, {family}",
                f"{peak:.0f} MiB peak",
                "in use after epochs 1-3: " + ", ".join(f"{m:.0f}" for m in by_epoch) + " MiB",
                growth,
                "stated; no growth across epochs",
                growth <= 1.02,
                note=f"a fresh `gbcli finetune` process, {small} examples of {TOKENS} tokens, batch 32, 3 "
                "epochs; ratio: memory in use after the last epoch over after the first",
                fresh=True,
            )
        )
    return rows


class _Example:
    def __init__(self, text: str, label: str) -> None:
        self.text, self.label, self.text_b = text, label, None
