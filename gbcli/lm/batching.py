"""Right-padded batches of token-id sequences, under a budget of padded tokens or of rows.

Right padding keeps every real token at the position it has unbatched, and the attention mask hides the padding
from it (a causal model would not look right anyway), so a batched number equals the unbatched one, whatever
id fills the padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Order = Literal["longest", "shortest", "given"]


@dataclass
class PaddedBatch:
    """Some of the sequences, as one right-padded tensor; `indices` says which, row by row."""

    indices: list[int]
    ids: torch.Tensor  # [rows, width], padded with the pad id
    attention_mask: torch.Tensor  # [rows, width], 1 on real tokens, 0 on padding

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])


def batch_order(lengths: Sequence[int], order: Order) -> list[int]:
    """The indices in the order batches are cut from: longest first (each batch then as wide as its first row,
    so a token budget packs it exactly), shortest first, or as given. Ties keep the given order."""
    indices = list(range(len(lengths)))
    if order == "longest":
        return sorted(indices, key=lambda i: -lengths[i])
    if order == "shortest":
        return sorted(indices, key=lambda i: lengths[i])
    return indices


def cut_batches(
    lengths: Sequence[int], *, max_tokens: int | None = None, max_rows: int | None = None, order: Order = "longest"
) -> list[list[int]]:
    """Groups of indices, in `order`, each as many rows as fit in `max_tokens` padded tokens (rows × the
    longest row) and `max_rows` rows; at least one row each, and one group of everything without limits."""
    ordered = batch_order(lengths, order)
    groups: list[list[int]] = []
    start = 0
    while start < len(ordered):
        group = [ordered[start]]
        width = lengths[ordered[start]]
        for i in ordered[start + 1 :]:
            if max_rows is not None and len(group) >= max_rows:
                break
            wider = max(width, lengths[i])
            if max_tokens is not None and (len(group) + 1) * wider > max_tokens:
                break
            group.append(i)
            width = wider
        groups.append(group)
        start += len(group)
    return groups


def padded_batches(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device | str = "cpu",
    *,
    max_tokens: int | None = None,
    max_rows: int | None = None,
    order: Order = "longest",
) -> Iterator[PaddedBatch]:
    """The sequences in right-padded batches (see `cut_batches`), on `device`."""
    import torch

    lengths = [len(s) for s in sequences]
    for group in cut_batches(lengths, max_tokens=max_tokens, max_rows=max_rows, order=order):
        width = max(lengths[i] for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, : lengths[i]] = torch.tensor(list(sequences[i]), dtype=torch.long)
            mask[row, : lengths[i]] = 1
        yield PaddedBatch(group, ids.to(device), mask.to(device))
