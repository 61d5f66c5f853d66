"""Where the blanks are: the mask spellings, a text split around its masks, and the text with words put back."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gbcli.errors import usage_error

MASK_PATTERN = re.compile(r"\[MASK\]|<mask>")
MASK_SPELLINGS = "[MASK] or <mask>"
MAX_MASKS = 32  # each mask costs a forward pass for the joint filling: more is a mistake, not a sentence

Fill = tuple[str, bool]  # what goes into one blank: (word, joins_previous)


def target_words(targets: Sequence[str]) -> list[str]:
    """The --targets a run scores: stripped, each once, in the order given (what its results record)."""
    return list(dict.fromkeys(t.strip() for t in targets if t.strip()))


def parse_targets(raw: str | None) -> list[str]:
    """`--targets duck,dog` → ["duck", "dog"]."""
    if raw is None:
        return []
    words = target_words(raw.split(","))
    if not words:
        raise usage_error("--targets names no word.", "For example --targets duck,dog.")
    return words


def split_masks(text: str) -> list[str]:
    """The text around its masks: `the [MASK] quacks` → ["the ", " quacks"]. Raises for none or too many."""
    segments = MASK_PATTERN.split(text)
    masks = len(segments) - 1
    if masks == 0:
        lowered = text.lower()
        nearly = "[mask]" in lowered or "<mask>" in lowered
        raise usage_error(
            "The text has no mask to fill.",
            ("Masks are case-sensitive: write " if nearly else "Write ")
            + f'{MASK_SPELLINGS} where a word is missing, e.g. "the [MASK] quacks in the park ."',
        )
    if masks > MAX_MASKS:
        raise usage_error(
            f"The text has {masks} masks; fill-mask takes at most {MAX_MASKS}.",
            "Mask only the words you want predicted.",
        )
    return segments


def fill_text(segments: Sequence[str], fills: Sequence[Fill]) -> str:
    """The text with each mask replaced by (word, joins_previous); a joining piece sticks to the word before."""
    out = segments[0]
    for (word, joins), segment in zip(fills, segments[1:], strict=True):
        if joins:
            out = out.rstrip()
        out += word + segment
    return out
