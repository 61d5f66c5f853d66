"""What `gbcli similarity` checks of its inputs before any model loads, in a module that imports nothing heavy: a
mistake is refused before torch is imported (`gbcli.tasks.similarity` imports numpy and torch at its top)."""

from __future__ import annotations

from collections.abc import Sequence

from gbcli.errors import usage_error
from gbcli.lm.pooling import POOLS

MAX_TEXTS = 12


def check_inputs(texts: Sequence[str], pool: str, by_layer: bool) -> None:
    if pool not in POOLS:
        raise usage_error(f"Unknown --pool '{pool}'.", f"Choose from: {', '.join(POOLS)}.")
    if any(not text.strip() for text in texts):
        raise usage_error("A text is empty.", 'For example: gbcli similarity "a cat sat ." "a dog sat ."')
    if by_layer and len(texts) != 2:
        raise usage_error(f"--by-layer compares two texts; {len(texts)} given.", "Give exactly two texts.")
    if not 2 <= len(texts) <= MAX_TEXTS:
        raise usage_error(
            f"similarity compares 2 to {MAX_TEXTS} texts; {len(texts)} given.",
            'For example: gbcli similarity "a cat sat on the mat ." "a dog lay on the rug ."',
        )
