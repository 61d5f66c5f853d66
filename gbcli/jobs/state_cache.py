"""The on-disk cache of pooled hidden states, so that a probe run again with other options (or with one more
model) computes only what is new.

One file per (model, stack, data, pooling): a NumPy `.npy` array [layers, examples, hidden] of float32, under
`$GBCLI_CACHE_DIR`, else `$XDG_CACHE_HOME/gbcli/states`, else `~/.cache/gbcli/states`. Its name is a hash of what
decides every number in it: the model's identity (its spec, revision, dtype and, for a local folder, the size
and time of its files; for a random-init control, its config and seed), the ids each example is read as and the
positions pooled (so the data, the word, the pooling and any truncation), and the format's version.

States are written as they come, batch by batch, at their rows' offsets in a `.partial` file (one batch in
memory at a time, never the whole array), and the file is renamed into place only when every row is there: a
run stopped by Ctrl-C or an error leaves no half-written entry, and the models finished before it stay cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import transformers

from gbcli.errors import GbcliError
from gbcli.lm.hidden import layer_states, pooled_states, random_init_copy

if TYPE_CHECKING:
    from gbcli.lm.hidden import EncodedInput
    from gbcli.loading.models import LoadedModel

FORMAT_VERSION = 1


def cache_root() -> Path:
    """Where the states are kept (see the module's docstring)."""
    if os.environ.get("GBCLI_CACHE_DIR"):
        return Path(os.environ["GBCLI_CACHE_DIR"]) / "states"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gbcli" / "states"


def folder_identity(spec: str) -> list[Any]:
    """A local folder's files with their sizes and modification times (a changed checkpoint is a new key); a hub
    id is its own identity."""
    folder = Path(spec)
    if not folder.is_dir():
        return [spec]
    return [
        [entry.name, entry.stat().st_size, entry.stat().st_mtime_ns]
        for entry in sorted(folder.iterdir())
        if entry.is_file()
    ]


def cache_key(
    model_identity: Any,
    ids: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    token_types: Sequence[Sequence[int] | None],
    stack: str,
) -> str:
    """The hash that names one entry (see the module's docstring)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT_VERSION, model_identity, stack], sort_keys=True, default=str).encode())
    for row_ids, row_positions, row_types in zip(ids, positions, token_types, strict=True):
        digest.update(json.dumps([list(row_ids), list(row_positions), row_types]).encode())
    return digest.hexdigest()[:32]


class LayerFile(Sequence["np.ndarray"]):
    """A cached entry as a sequence of layers, each read from the file when asked for ([examples, hidden]): a
    probe holds one layer at a time, never the whole array (nor a mapping of it that grows with the data)."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as stream:
            version = np.lib.format.read_magic(stream)
            form = np.lib.format
            read_header = form.read_array_header_1_0 if version == (1, 0) else form.read_array_header_2_0
            shape, _, _ = read_header(stream)
            self.offset = stream.tell()
        self.path = path
        self.shape: tuple[int, int, int] = shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, layer: int) -> np.ndarray:  # type: ignore[override]

        _, rows, hidden = self.shape
        if not 0 <= layer < self.shape[0]:
            raise IndexError(layer)
        block = np.fromfile(self.path, dtype="<f4", count=rows * hidden, offset=self.offset + 4 * layer * rows * hidden)
        return block.reshape(rows, hidden)


class StreamedArray:
    """A [layers, rows, hidden] float32 .npy written row block by row block at the rows' offsets, renamed into
    place by `finish` (and removed by `discard`)."""

    def __init__(self, path: Path, layers: int, rows: int, hidden: int) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.shape = (layers, rows, hidden)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": self.shape}
        with self.partial.open("wb") as stream:
            np.lib.format.write_array_header_1_0(stream, header)
            self.offset = stream.tell()
            stream.truncate(self.offset + 4 * layers * rows * hidden)
        self.descriptor = os.open(self.partial, os.O_WRONLY)
        self.written = 0

    def write(self, indices: Sequence[int], block: np.ndarray) -> None:
        """Rows `indices` of every layer, from `block` [rows, layers, hidden]."""
        layers, rows, hidden = self.shape
        row_bytes = 4 * hidden
        for row, index in enumerate(indices):
            vectors = np.ascontiguousarray(block[row], dtype="<f4")  # [layers, hidden]
            for layer in range(layers):
                os.pwrite(self.descriptor, vectors[layer].tobytes(), self.offset + (layer * rows + index) * row_bytes)
        self.written += len(indices)

    def finish(self) -> None:
        os.close(self.descriptor)
        if self.written != self.shape[1]:
            self.partial.unlink(missing_ok=True)
            raise GbcliError(f"Only {self.written} of {self.shape[1]} rows of states were computed.", None)
        self.partial.replace(self.path)

    def discard(self) -> None:
        try:
            os.close(self.descriptor)
        except OSError:
            pass
        self.partial.unlink(missing_ok=True)


def stream_to_cache(
    paths: Sequence[Path],
    batches: Iterator[tuple[list[int], list[np.ndarray]]],
    rows: int,
    on_first: Callable[[], None] | None = None,
) -> None:
    """Write the batches (indices, one [rows, layers, hidden] array per stack) into one entry per stack; on any
    failure or Ctrl-C, nothing of these entries is left behind."""
    streams: list[StreamedArray] = []
    try:
        for indices, arrays in batches:
            if not streams:
                streams = [
                    StreamedArray(path, array.shape[1], rows, array.shape[2])
                    for path, array in zip(paths, arrays, strict=True)
                ]
                if on_first is not None:
                    on_first()
            for stream, array in zip(streams, arrays, strict=True):
                stream.write(indices, array)
        for stream in streams:
            stream.finish()
    except BaseException:
        for stream in streams:
            stream.discard()
        raise


def model_identity(lm: LoadedModel, random_init_seed: int | None) -> list[Any]:
    """What makes one model's states what they are (see the module's docstring)."""
    identity: list[Any] = [
        lm.spec,
        folder_identity(lm.spec),
        str(lm.dtype),
        lm.device.type,
        getattr(lm.model.config, "_commit_hash", None),
    ]
    if random_init_seed is not None:  # weights drawn afresh: the config, the seed and the libraries that drew them
        identity += [
            "random-init",
            random_init_seed,
            lm.model.config.to_json_string(),
            torch.__version__,
            transformers.__version__,
        ]
    return identity


def cached_states(
    lm: LoadedModel,
    inputs: Sequence[EncodedInput],
    stacks: Sequence[str],
    random_init_seed: int | None,
    *,
    use_cache: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Sequence[np.ndarray]], bool]:
    """Each stack's states [layers][examples, hidden] (read from the cache a layer at a time) and whether they
    were all there already; what is missing is computed and streamed to the cache first. Without `use_cache`,
    computed here and kept in memory."""

    def model() -> LoadedModel:  # the control's random weights are drawn only when its states are computed
        return lm if random_init_seed is None else random_init_copy(lm, random_init_seed)

    if not use_cache:
        return layer_states(model(), inputs, on_batch=on_batch), False
    identity = model_identity(lm, random_init_seed)
    ids = [item.ids for item in inputs]
    positions = [item.positions for item in inputs]
    types = [item.token_types for item in inputs]
    paths = [cache_root() / f"{cache_key(identity, ids, positions, types, stack)}.npy" for stack in stacks]
    hit = all(path.exists() for path in paths)
    if not hit:
        stream_to_cache(paths, pooled_states(model(), inputs, on_batch=on_batch), len(inputs))
    return [LayerFile(path) for path in paths], hit
