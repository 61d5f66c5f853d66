"""One labelled example and a set of them: what `probe` (and `finetune`) learn from, however they were read.

`gbcli.jobs.labelled` reads them from JSONL, CSV or TSV files, `gbcli.jobs.builtin_tasks` generates them; both
return these dataclasses, which the tasks compute on (tasks never read files).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Level = Literal["sentence", "word", "pair"]


@dataclass(frozen=True)
class LabelledExample:
    """One example: its text, its label, and where it came from (1-based line of the file; a built-in task counts
    its examples as lines of the file `--write-task` writes)."""

    text: str  # the text, or a pair's first text
    label: str
    line_number: int
    word: str | None = None  # word-level: the word probed at its first whole-word occurrence in `text`
    text_b: str | None = None  # a pair's second text

    @property
    def word_span(self) -> tuple[int, int] | None:
        """The characters of the word's first whole-word occurrence in the text (None for a sentence example)."""
        if self.word is None:
            return None
        match = word_pattern(self.word).search(self.text)
        return (match.start(), match.end()) if match is not None else None


@dataclass
class LabelledData:
    """The examples of one file (or built-in task), with their labels in sorted order."""

    source: str  # how messages name it: 'data.csv', or "built-in task 'agreement'"
    examples: list[LabelledExample]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.labels:
            self.labels = sorted({example.label for example in self.examples})

    @property
    def level(self) -> Level:
        """word, pair or sentence: what every example of the data is (a reader never mixes them)."""
        return example_level(self.examples[0])

    @property
    def label_counts(self) -> dict[str, int]:
        counts = Counter(example.label for example in self.examples)
        return {label: counts[label] for label in self.labels}

    def __len__(self) -> int:
        return len(self.examples)


def example_level(example: LabelledExample) -> Level:
    return "word" if example.word is not None else "pair" if example.text_b is not None else "sentence"


def word_pattern(word: str) -> re.Pattern[str]:
    """The word standing alone, not inside a longer one (`bank` is not in `banks`, nor `cat` in `concat`)."""
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")
