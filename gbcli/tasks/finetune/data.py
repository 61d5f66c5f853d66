"""The labelled examples a fine-tuning run trains and evaluates on: checked, split, and encoded per tokenizer.

The examples come from the reader `gbcli probe` uses too (gbcli.jobs.labelled); this module only decides what
fine-tuning needs beyond reading: a dev set (given, or held out from the training file), at least two classes, no
dev label the training data lacks, and the token ids each family's tokenizer makes of a text or a pair.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gbcli.errors import usage_error

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_DEV_FRACTION = 0.2
SPLIT_SEED = 0  # the held-out split is the same for every seed and every family: only training varies


class Labelled(Protocol):
    """One example as the shared reader gives it: a text (or a pair) and its label."""

    text: str
    label: str
    text_b: str | None


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    text_b: str | None = None


@dataclass(frozen=True)
class FinetuneData:
    """The training and dev examples, and the classes in the order of the classifier's outputs."""

    train: list[Example]
    dev: list[Example]
    labels: list[str]  # label i is the classifier's output i (sorted, so that every run numbers them alike)
    dev_source: str  # "file" or "held-out"
    name: str  # what the data is called on screen: a file name or a built-in task

    @property
    def label_ids(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def majority_baseline(self) -> float:
        """Dev accuracy of always answering the training set's most frequent class."""
        most = Counter(e.label for e in self.train).most_common(1)[0][0]
        return sum(e.label == most for e in self.dev) / len(self.dev)

    def fingerprint(self) -> str:
        """A hash of every example and its split, so that --resume can tell the same data from other data."""
        digest = hashlib.sha256()
        for part, examples in (("train", self.train), ("dev", self.dev)):
            for e in examples:
                digest.update(json.dumps([part, e.text, e.text_b, e.label]).encode())
        return digest.hexdigest()[:16]


def as_examples(records: list[Any]) -> list[Example]:
    return [Example(r.text, r.label, getattr(r, "text_b", None)) for r in records]


def prepare(
    train: list[Any],
    dev: list[Any] | None,
    name: str,
    *,
    dev_fraction: float = DEFAULT_DEV_FRACTION,
    max_train_samples: int | None = None,
) -> FinetuneData:
    """Check the classes, hold out a dev set when none is given, and keep the first `max_train_samples`."""
    examples = as_examples(train)
    counts = Counter(e.label for e in examples)
    if len(counts) < 2:
        only = next(iter(counts), "")
        raise usage_error(
            f"The training data has one class only ('{only}'): there is nothing to learn.",
            "Give examples of at least two labels.",
        )
    if dev is None:
        examples, held_out = split_dev(examples, dev_fraction)
        source = "held-out"
    else:
        held_out, source = as_examples(dev), "file"
    if not held_out:
        raise usage_error("The dev set is empty.", "Give a --dev file with examples, or more training examples.")
    if max_train_samples is not None:
        if max_train_samples < 2:
            raise usage_error("--max-train-samples must be at least 2.", "e.g. --max-train-samples 200")
        examples = examples[:max_train_samples]
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        raise usage_error(
            f"The first {len(examples)} training examples hold one class only ('{labels[0]}').",
            "Raise --max-train-samples, or shuffle the file.",
        )
    unseen = sorted({e.label for e in held_out} - set(labels))
    if unseen:
        raise usage_error(
            f"The dev set has labels the training data lacks: {', '.join(unseen)}.",
            "A classifier can only answer the training labels: give training examples of these, or "
            "remove them from the dev set.",
        )
    return FinetuneData(examples, held_out, labels, source, name)


def split_dev(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    """A stratified held-out split: `fraction` of each class (at least one, when the class has two or more) goes to
    the dev set, drawn with a fixed seed; the rest keeps the file's order."""
    rng = random.Random(SPLIT_SEED)
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(e.label, []).append(i)
    chosen: set[int] = set()
    for indices in by_label.values():
        if len(indices) < 2:
            continue
        count = max(1, round(len(indices) * fraction))
        chosen.update(rng.sample(indices, count))
    dev = [examples[i] for i in sorted(chosen)]
    train = [e for i, e in enumerate(examples) if i not in chosen]
    return train, dev


def pair_text(tokenizer: PreTrainedTokenizerBase, example: Example) -> tuple[str, str | None]:
    """The text (or the two texts) a tokenizer is given. A tokenizer that knows how to join a pair (BERT's [SEP],
    BART's </s></s>) is given both; GPT-2's has no separator, so the two texts are joined by its end-of-text token,
    which it saw between documents in pre-training."""
    if example.text_b is None:
        return example.text, None
    if tokenizer.sep_token is not None:
        return example.text, example.text_b
    return f"{example.text}{tokenizer.eos_token or ' '}{example.text_b}", None


def encode(
    tokenizer: PreTrainedTokenizerBase, examples: list[Example], label_ids: dict[str, int], max_length: int
) -> list[dict[str, Any]]:
    """Token ids (unpadded, truncated to `max_length` with the special tokens) and the label id of each example."""
    encoded = []
    for example in examples:
        first, second = pair_text(tokenizer, example)
        features = dict(tokenizer(first, second, truncation=True, max_length=max_length))
        features["labels"] = label_ids[example.label]
        encoded.append(features)
    return encoded
