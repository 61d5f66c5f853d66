"""The probing tasks gbcli ships, generated from its own word lists and templates (no data downloaded, nothing to
license), as the same `LabelledData` a file gives.

- `right-context` (word-level): is *sheep* singular or plural? Every text begins "the sheep", and only the verb
  after it says (`the sheep is grazing` / `the sheep are grazing`). A causal model's state at *sheep* is computed
  from "the sheep" alone, the same in every example, so its probe can only predict the most frequent label: GPT
  sits exactly at the majority baseline at every layer, and a bidirectional encoder above it. The labels are
  60/40 so that "most frequent" is one label, never a tie.
- `agreement` (word-level, Linzen et al. 2016 style): the number of the subject, probed at its verb across an
  attractor of either number (`the keys near the cabinet fell`). The verbs are past-tense forms that do not show
  number, so the verb itself gives nothing away: the number must be carried from the subject, past the attractor.
- `sentiment` (sentence-level): is a short review positive or negative, with negation (`the film was not bad`)
  so that the adjective alone does not decide it.

    data = builtin_task("agreement")   # LabelledData, each example numbered as a line of `write_task`'s file
    write_task("agreement", "agreement.jsonl")

Every task is the same on every machine (a fixed seed).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gbcli.errors import GbcliError, usage_error
from gbcli.jobs.labelled import LabelledData, LabelledExample

Row = dict[str, str]  # one example as written out: text, label, word (word-level), and notes for the reader


@dataclass(frozen=True)
class BuiltinTask:
    name: str
    level: str  # word or sentence
    summary: str
    rows: Callable[[], list[Row]]


def _right_context_rows() -> list[Row]:
    rng = random.Random(30)
    verbs = {
        "singular": ["is", "was", "has been", "seems to be", "keeps"],
        "plural": ["are", "were", "have been", "seem to be", "keep"],
    }
    doings = [
        "grazing",
        "sleeping",
        "eating grass",
        "resting",
        "wandering off",
        "standing still",
        "bleating",
        "hiding",
        "lying down",
        "running",
    ]
    places = [
        "in the field",
        "by the river",
        "on the hill",
        "near the barn",
        "under the tree",
        "in the rain",
        "behind the fence",
        "at the gate",
    ]
    rows: list[Row] = []
    for label, count in (("singular", 150), ("plural", 100)):
        combos = list(itertools.product(verbs[label], doings, places))
        for verb, doing, place in rng.sample(combos, count):
            rows.append(
                {"text": f"the sheep {verb} {doing} {place} .", "label": label, "word": "sheep", "decided_by": verb}
            )
    rng.shuffle(rows)
    return rows


def _agreement_rows() -> list[Row]:
    rng = random.Random(31)
    subjects = [
        "key",
        "author",
        "teacher",
        "painting",
        "friend",
        "doctor",
        "letter",
        "bird",
        "window",
        "farmer",
        "student",
        "picture",
    ]
    links = ["near the", "behind the", "next to the", "beside the", "above the", "with the"]
    attractors = ["cabinet", "house", "tree", "boy", "garden", "table", "lamp", "hill", "car", "girl"]
    verbs = ["fell", "stayed", "vanished", "appeared", "remained", "waited", "moved", "shook", "returned", "changed"]
    endings = ["yesterday", "again", "for a while", "at night", "in the end", "last week"]
    rows: list[Row] = []
    combos = list(itertools.product(subjects, links, attractors, verbs, endings))
    for subject, link, attractor, verb, ending in rng.sample(combos, 600):
        number = rng.choice(["singular", "plural"])
        attractor_number = rng.choice(["singular", "plural"])
        noun = subject + ("s" if number == "plural" else "")
        other = attractor + ("s" if attractor_number == "plural" else "")
        rows.append(
            {
                "text": f"the {noun} {link} {other} {verb} {ending} .",
                "label": number,
                "word": verb,
                "attractor": attractor_number,
            }
        )
    return rows


def _sentiment_rows() -> list[Row]:
    rng = random.Random(32)
    things = ["film", "meal", "hotel", "book", "concert", "service", "trip", "game"]
    frames = ["the {} was", "i thought the {} was", "everyone said the {} was"]
    degrees = ["", "really ", "quite "]
    adjectives = {
        "positive": ["good", "great", "wonderful", "lovely"],
        "negative": ["bad", "awful", "terrible", "boring"],
    }
    rows: list[Row] = []
    for polarity, words in adjectives.items():
        for negated in (False, True):
            label = ("negative" if polarity == "positive" else "positive") if negated else polarity
            combos = list(itertools.product(things, frames, degrees, words))
            for thing, frame, degree, adjective in rng.sample(combos, 100):
                text = f"{frame.format(thing)} {'not ' if negated else ''}{degree}{adjective} ."
                rows.append({"text": text, "label": label, "negated": "yes" if negated else "no"})
    rng.shuffle(rows)
    return rows


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    task.name: task
    for task in [
        BuiltinTask(
            "right-context",
            "word",
            "is 'sheep' singular or plural? only the verb after it says (GPT: exactly the majority baseline)",
            _right_context_rows,
        ),
        BuiltinTask(
            "agreement",
            "word",
            "the subject's number, at a past-tense verb after an attractor (Linzen et al. 2016)",
            _agreement_rows,
        ),
        BuiltinTask("sentiment", "sentence", "a short review, positive or negative, with negation", _sentiment_rows),
    ]
}


def task_listing() -> str:
    return "; ".join(f"{task.name} ({task.level}: {task.summary})" for task in BUILTIN_TASKS.values())


def _task(name: str) -> BuiltinTask:
    task = BUILTIN_TASKS.get(name.strip().lower())
    if task is None:
        raise usage_error(f"Unknown built-in task '{name}'.", f"Choose from: {task_listing()}.")
    return task


def builtin_task(name: str) -> LabelledData:
    """The task's examples, numbered as the lines of the file `write_task` writes."""
    task = _task(name)
    examples = [
        LabelledExample(row["text"], row["label"], number, row.get("word"))
        for number, row in enumerate(task.rows(), start=1)
    ]
    return LabelledData(f"built-in task '{task.name}'", examples)


def write_task(name: str, path: str, *, force: bool = False) -> int:
    """Write the task as JSONL (text, label, word, and notes that `read_labelled` ignores); the number of lines.

    The file is written whole or not at all (a temporary file renamed into place)."""
    task = _task(name)
    target = Path(path)
    if target.is_dir():
        raise usage_error(f"'{path}' is a folder.", "Give a file name, e.g. --write-task agreement agreement.jsonl")
    if target.exists() and not force:
        raise usage_error(f"'{path}' exists already.", "Choose another name, or add --force to replace it.")
    rows = task.rows()
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise GbcliError(f"Cannot write '{path}': {exc.strerror}.", "Check the folder and its permissions.") from exc
    return len(rows)
