"""Where a command over many texts puts each batch of results as it is finished: out on stdout at once, or kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Records:
    """Each batch written at once by `write` (JSON Lines, CSV: memory stays flat on long files, a pipe sees every
    record as it comes), or, with no `write`, kept for the table drawn at the end."""

    def __init__(self, write: Callable[[list[Any]], None] | None = None) -> None:
        self.write = write
        self.kept: list[Any] = []

    def __call__(self, batch: list[Any]) -> None:
        if self.write is None:
            self.kept.extend(batch)
        else:
            self.write(batch)


def json_lines(batch: list[Any]) -> None:
    """One JSON Lines record per result on stdout."""
    from gbcli.render.common import print_json

    for record in batch:
        print_json(record, lines=True)
