"""How a text's token states become one vector: the pools `similarity` and `probe` offer, as plain names (no torch:
a command checks its --pool before torch is imported)."""

from __future__ import annotations

from typing import Literal

Pool = Literal["mean", "first", "last"]
POOLS: tuple[Pool, ...] = ("mean", "first", "last")
