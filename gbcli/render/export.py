"""Exporting attention to a file: every layer and head of every model, in the format the file's suffix names.

- `.json`: the tokens, and the full `[layer][head][query][key]` array per model, as exact float32 values.
- `.npz`: the same as NumPy arrays (`<family>_attention`, `<family>_tokens`, ...), loadable without pickle.
- `.png`: a matplotlib grid, one heatmap per model and layer (mean over heads, or the chosen head).
- `.html`: one self-contained page with a layer and head selector; no script, style or font is fetched
  (the page itself is `gbcli/render/attention_page.py`).

The JSON document (and the HTML page's data) is built from `to_jsonable`, the conversion `--json` uses.

The target is checked before any model is loaded, so a typo costs nothing. Files are written to a temporary
name beside the target and renamed into place, so a reader never sees half a file, and an existing file is
only replaced with --force.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import json
import os
import signal
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gbcli.errors import GbcliError, usage_error
from gbcli.render.attention import map_title
from gbcli.render.attention_page import attention_html
from gbcli.render.common import stderr_console, to_jsonable
from gbcli.tasks.attention import AttentionResult, AttentionToken, ExportInfo

FORMATS: dict[str, str] = {".json": "json", ".npz": "npz", ".png": "png", ".html": "html", ".htm": "html"}
FORMAT_VERSION = 1
PLOT_HINT = "Install the plot extra: pip install 'gbcli[plot]' (or pip install matplotlib)."


@dataclass(frozen=True)
class ExportTarget:
    path: Path
    format: str
    force: bool


def check_export_target(path: str, force: bool) -> ExportTarget:
    """Refuse a target that cannot be written, before any work is done."""
    if not path.strip():
        raise usage_error("--export needs a file name.", "e.g. --export attention.html")
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(s for s in FORMATS if s != ".htm")
        raise usage_error(
            f"Cannot tell the export format of '{path}': "
            + (f"unknown suffix '{target.suffix}'." if suffix else "it has no suffix."),
            f"End the file name in one of: {known}.",
        )
    folder = target.parent
    if not folder.exists():
        raise usage_error(f"The folder '{folder}' for --export does not exist.", "Create it first, or choose another.")
    if not folder.is_dir():
        raise usage_error(f"'{folder}' in the --export path is not a folder.", "Choose a path inside a folder.")
    if target.is_dir():
        raise usage_error(f"'{path}' is a folder.", "Give a file name, e.g. attention.json.")
    if target.exists() and not force:
        raise usage_error(f"'{path}' already exists.", "Pass --force to overwrite it, or choose another name.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise GbcliError(f"Cannot write to the folder '{folder}': permission denied.", "Choose a folder you can write.")
    fmt = FORMATS[suffix]
    if fmt == "png" and importlib.util.find_spec("matplotlib") is None:
        raise GbcliError("Exporting PNG needs matplotlib, which is not installed.", PLOT_HINT)
    return ExportTarget(target, fmt, force)


def write_atomically(target: ExportTarget, write: Callable[[BinaryIO], None]) -> int:
    """Write to a temporary file in the target's folder, then rename it into place; returns the size in bytes."""
    path = target.path
    sweep_stale_parts(path)
    try:
        # The process id in the name tells a stale part (its writer gone) from one being written right now.
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise GbcliError(
            f"Cannot write to the folder '{path.parent}': {exc.strerror or exc}.", "Choose a folder you can write."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle, _sigterm_unwinds():
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the permissions a newly created file would get.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        size = os.path.getsize(temporary)
        if target.force:
            os.replace(temporary, path)
        else:
            _link_without_overwrite(Path(temporary), path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise GbcliError(f"Could not write '{path}': {reason}.", "Check the folder and the free disk space.") from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return size


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`, a timeout) ends the process as Ctrl-C does, through `finally`, so the .part file goes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(number: int, frame: Any) -> None:
        raise SystemExit(128 + number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep_stale_parts(path: Path) -> None:
    """Remove `.NAME.PID.xxxx.part` files next to `path` whose writing process no longer runs (killed hard)."""
    for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        pid = part.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _process_runs(int(pid)):
            continue
        with contextlib.suppress(OSError):
            part.unlink()


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def _link_without_overwrite(temporary: Path, path: Path) -> None:
    """Move into place unless a file appeared there meanwhile (a hard link never replaces an existing name)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise usage_error(f"'{path}' already exists.", "Pass --force to overwrite it.") from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise usage_error(f"'{path}' already exists.", "Pass --force to overwrite it.") from None
        os.replace(temporary, path)


def export_attention(target: ExportTarget, text: str, results: list[AttentionResult], head: int | None) -> ExportInfo:
    """Write every layer and head of every model; `head` only chooses what the PNG grid shows."""
    writers: dict[str, Callable[[BinaryIO], None]] = {
        "json": lambda handle: write_attention_json(handle, text, results),
        "npz": lambda handle: write_npz(handle, text, results),
        "png": lambda handle: write_png(handle, text, results, head),
        "html": lambda handle: handle.write(attention_page(text, results).encode("utf-8")),
    }
    if target.format == "png":
        _require_matplotlib()
    warning = json_export_warning(results) if target.format == "json" else None
    if warning is not None:
        stderr_console().print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)
    size = write_atomically(target, writers[target.format])
    return ExportInfo(path=str(target.path), format=target.format, bytes=size)


# ---------------------------------------------------------------------------------------------------------------
# JSON and NPZ: the exact numbers
# ---------------------------------------------------------------------------------------------------------------


def _model_dict(result: AttentionResult, values: Callable[[np.ndarray], list]) -> dict:
    """One model's entry, built from the dict `--json` gives the same result (`to_jsonable`), in the export's
    names: its first map's fields at the top (`tokens`, `attention`), any others under `other_maps`."""
    data = to_jsonable(result)  # the weights stay arrays: `values` chooses how exactly they are written
    main, *others = data.pop("maps")
    entry = {
        **data,
        "map": main["name"],
        "causal": main["causal"],
        "layers": result.main.layers,
        "heads": result.main.heads,
        "tokens": main["queries"],
        "attention": values(main["weights"]),  # [layer][head][query][key]
    }
    if others:
        entry["other_maps"] = [
            {
                "name": m["name"],
                "causal": m["causal"],
                "queries": m["queries"],
                "keys": m["keys"],
                "attention": values(m["weights"]),
            }
            for m in others
        ]
    return entry


def attention_document(text: str, results: list[AttentionResult], values: Callable[[np.ndarray], list]) -> dict:
    return {
        "format": "gbcli-attention",
        "version": FORMAT_VERSION,
        "text": text,
        "models": [_model_dict(r, values) for r in results],
    }


# Above this, the JSON export gets a warning with its size before it is written (12 layers × 12 heads of a 512-token
# GPT-2-small text are 38 million weights: about 800 MB of JSON, 150 MB of .npz).
JSON_WARNING_BYTES = 100 * 1024 * 1024
JSON_BYTES_PER_WEIGHT = 21  # a float32 written as its shortest repr, with ", " between


def json_export_warning(results: list[AttentionResult]) -> str | None:
    weights = sum(int(m.weights.size) for r in results for m in r.maps)
    estimate = weights * JSON_BYTES_PER_WEIGHT
    if estimate < JSON_WARNING_BYTES:
        return None
    return (
        f"the JSON export holds {weights:,} attention weights: about {estimate / 2**20:,.0f} MB "
        f"(.npz holds the same numbers in {weights * 4 / 2**20:,.0f} MB)."
    )


def write_attention_json(handle: BinaryIO, text: str, results: list[AttentionResult]) -> None:
    """The JSON document, streamed: the arrays a query row at a time, never whole as Python lists (a 1,024-token
    GPT-2-small export would be 150 million Python floats, over 10 GB). The bytes equal those of `json.dumps` of the
    whole document (tests/test_hostile_world.py)."""
    nonce = uuid.uuid4().hex  # marks where each array goes; no text can contain it by chance
    arrays: list[np.ndarray] = []

    def placeholder(weights: np.ndarray) -> str:
        arrays.append(weights)
        return f"@@gbcli-{nonce}-{len(arrays) - 1}@@"

    skeleton = json.dumps(attention_document(text, results, placeholder), ensure_ascii=False) + "\n"
    for index, weights in enumerate(arrays):
        before, skeleton = skeleton.split(f'"@@gbcli-{nonce}-{index}@@"', 1)
        handle.write(before.encode("utf-8"))
        _write_nested(handle, weights)
    handle.write(skeleton.encode("utf-8"))


def _write_nested(handle: BinaryIO, array: np.ndarray) -> None:
    """`json.dumps(array.tolist())`, written a row of the last axis at a time."""
    if array.ndim <= 1:
        handle.write(json.dumps(array.tolist()).encode("utf-8"))
        return
    handle.write(b"[")
    for index, part in enumerate(array):
        if index:
            handle.write(b", ")
        _write_nested(handle, part)
    handle.write(b"]")


def npz_arrays(text: str, results: list[AttentionResult]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "text": np.array(text),
        "models": np.array([r.family for r in results]),
        "format_version": np.array(FORMAT_VERSION),
    }
    for result in results:
        for position, amap in enumerate(result.maps):
            prefix = result.family if position == 0 else f"{result.family}_{amap.name}"
            arrays[f"{prefix}_attention"] = amap.weights.astype(np.float32)  # (layer, head, query, key)
            _token_arrays(arrays, f"{prefix}", amap.queries)
            if amap.keys != amap.queries:
                _token_arrays(arrays, f"{prefix}_key", amap.keys)
        arrays[f"{result.family}_model"] = np.array(result.model)
    return arrays


def _token_arrays(arrays: dict[str, np.ndarray], prefix: str, tokens: list[AttentionToken]) -> None:
    arrays[f"{prefix}_tokens"] = np.array([t.label for t in tokens], dtype=str)
    arrays[f"{prefix}_pieces"] = np.array([t.piece for t in tokens], dtype=str)
    arrays[f"{prefix}_token_ids"] = np.array([t.id for t in tokens], dtype=np.int64)
    arrays[f"{prefix}_special"] = np.array([t.special for t in tokens], dtype=bool)


def write_npz(handle: BinaryIO, text: str, results: list[AttentionResult]) -> None:
    np.savez_compressed(handle, **npz_arrays(text, results))


# ---------------------------------------------------------------------------------------------------------------
# PNG: a matplotlib grid
# ---------------------------------------------------------------------------------------------------------------


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401  # late: extra
    except ImportError as exc:
        raise GbcliError("Exporting PNG needs matplotlib, which is not installed.", PLOT_HINT) from exc


def write_png(handle: BinaryIO, text: str, results: list[AttentionResult], head: int | None) -> None:
    """One heatmap per model and layer, for the chosen head (default the mean), on a shared 0–1 colour scale."""
    from matplotlib import colormaps  # late: extra
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # late: extra
    from matplotlib.colors import PowerNorm  # late: extra
    from matplotlib.figure import Figure  # late: extra

    per_row = max(min(max(m.layers for r in results for m in r.maps), 6), 1)
    # One row of heatmaps per model and map (BART has three: encoder, decoder, cross), wrapped every 6 layers.
    grid_rows = [(r, m, layers) for r in results for m in r.maps for layers in _chunks(list(range(m.layers)), per_row)]
    longest = max(max(len(m.queries), len(m.keys)) for r in results for m in r.maps)
    cell = min(max(2.4, 0.16 * longest + 0.9), 9.0)
    figure = Figure(figsize=(cell * per_row + 1.2, cell * len(grid_rows) + 0.9), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(grid_rows), per_row, squeeze=False)
    # A square-root scale keeps weak links visible; the colour bar shows the true weights.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    cmap = colormaps["Blues"].with_extremes(bad="#d9d9d9")
    image = None
    for row, (result, amap, layers) in enumerate(grid_rows):
        labels = [t.label for t in amap.queries]
        key_labels = [t.label for t in amap.keys]
        font = max(4.0, min(8.0, 140.0 / max(len(labels), len(key_labels), 1)))
        for column in range(per_row):
            ax = axes[row][column]
            if column >= len(layers):
                ax.set_visible(False)
                continue
            layer = layers[column]
            chosen = None if head is None else head % amap.heads
            values = amap.matrix(layer, chosen).astype(np.float64)
            if amap.causal:  # keys right of the query are masked, not merely weak: draw them grey
                values[np.triu_indices_from(values, k=1)] = np.nan
            image = ax.imshow(values, cmap=cmap, norm=norm, interpolation="nearest")
            which = f"mean of {amap.heads} heads" if chosen is None else f"head {chosen}"
            ax.set_title(f"{map_title(result.family, result.model, amap.name)}\nlayer {layer + 1}, {which}", fontsize=8)
            show_labels = max(len(labels), len(key_labels)) <= 60
            ax.set_xticks(range(len(key_labels)), key_labels if show_labels else [], rotation=90, fontsize=font)
            ax.set_yticks(range(len(labels)), labels if show_labels else [], fontsize=font)
            ax.tick_params(length=0)
            if column == 0:
                ax.set_ylabel("query (attends)", fontsize=7)
            ax.set_xlabel("key (attended to)", fontsize=7)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    limit = max(int(figure.get_figwidth() * 10), 30)  # characters that fit the title line at this font size
    shown = " ".join(text.split())
    shown = shown if len(shown) <= limit else shown[: limit - 1] + "…"
    masked = "; grey = masked" if any(m.causal for r in results for m in r.maps) else ""
    figure.suptitle(f"gbcli attention: {shown}\nrows: query tokens, columns: key tokens{masked}", fontsize=9)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a glyph missing from the font (emoji) is drawn as a box
        figure.savefig(buffer, format="png")
    handle.write(buffer.getvalue())


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


# ---------------------------------------------------------------------------------------------------------------
# HTML: one page, no network
# ---------------------------------------------------------------------------------------------------------------


def html_data(text: str, results: list[AttentionResult]) -> dict:
    # Six decimals is far finer than any colour; the .json and .npz exports keep the exact float32 values.
    return attention_document(text, results, lambda w: np.round(w.astype(np.float64), 6).tolist())


def attention_page(text: str, results: list[AttentionResult]) -> str:
    return attention_html(text, html_data(text, results))
