"""Fetch a hub checkpoint that is not cached yet, showing the bytes as they arrive.

transformers' own download is silent in gbcli (its tqdm bars are switched off, since they leak into every
command). A first run fetches about 1 GB, so the files `from_pretrained` needs are downloaded here first, into
the ordinary Hugging Face cache, with one Rich progress display on stderr (or one plain line per file when stderr
is not a terminal); `from_pretrained` then loads them from the cache without touching the network.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
from typing import Any

from gbcli.errors import GbcliError
from gbcli.loading.availability import hub_reachable
from gbcli.terminal import no_color

# What `from_pretrained` reads for the model, its tokenizer and its generation defaults. Weights in other
# frameworks' formats (flax, tf, onnx, rust, tflite, coreml) are never read and are left on the hub.
SUPPORT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",  # sentencepiece (T5, XLM-R, ...)
    "chat_template.*",
)
SAFETENSORS, SAFETENSORS_INDEX, PICKLE = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"


def files_to_fetch(repo_files: list[str]) -> list[str]:
    """The files of a hub repo that `from_pretrained` needs, weights last (the big one comes after the quick ones)."""
    top_level = [name for name in repo_files if "/" not in name]
    support = [name for name in top_level if any(fnmatch.fnmatch(name, p) for p in SUPPORT_FILES)]
    if SAFETENSORS_INDEX in top_level:  # sharded: the index names the shards
        weights = [SAFETENSORS_INDEX, *sorted(n for n in top_level if fnmatch.fnmatch(n, "model-*.safetensors"))]
    elif SAFETENSORS in top_level:
        weights = [SAFETENSORS]
    elif PICKLE in top_level:
        weights = [PICKLE]
    else:
        weights = []  # loading then says that the repo has no weights
    return support + weights


def _cached(repo: str, filename: str, revision: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return found if isinstance(found, str) else None


def is_complete_in_cache(repo: str, revision: str | None) -> bool:
    """Are this revision's config and weights in the cache? (Local look only: a cached model costs no request.)"""
    try:
        if _cached(repo, "config.json", revision) is None:
            return False
        index = _cached(repo, SAFETENSORS_INDEX, revision)
        if index is not None:
            with open(index, encoding="utf-8") as handle:
                shards = set(json.load(handle).get("weight_map", {}).values())
            return all(_cached(repo, shard, revision) for shard in shards)
        return bool(_cached(repo, SAFETENSORS, revision) or _cached(repo, PICKLE, revision))
    except Exception:  # an id the hub client rejects, an unreadable index: let the download (or loading) explain
        return False


def wants_rich_display(stream: Any = None) -> bool:
    """A progress display moves the cursor: only on a terminal, and not with NO_COLOR (as gbcli's spinners)."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and not no_color()


def _live_console() -> Any:
    """The console of the live display already on screen (the command's "Loading ..." spinner), if any.

    Rich nests a second live display inside the first only on the same Console; on another one both would redraw
    the same lines. Rich keeps no public registry of live displays, but each runs a refresh thread holding it.
    """
    from rich.live import Live

    for thread in threading.enumerate():
        live = getattr(thread, "live", None)
        if isinstance(live, Live) and live.is_started:
            return live.console
    return None


def human_size(size: int | None) -> str:
    """548 MB, 1.4 GB, 12 kB: decimal units, as the hub's web pages show file sizes."""
    if size is None:
        return "size unknown"
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit in ("B", "kB", "MB") or value >= 10 else f"{value:.1f} {unit}"


def make_progress(console: Any = None) -> Any:
    """The one Rich display all files of a download share: file name, bar, bytes done / total, speed, time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.table import Column

    # Sized for 80 columns: a long repo or shard name is shortened with an ellipsis, never the figures.
    return Progress(
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", max_width=32)),
        BarColumn(bar_width=12),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


def progress_bar_class(progress: Any | None, label: str, stream: Any = None) -> type:
    """A tqdm-compatible class that huggingface_hub's downloader drives (`tqdm_class=`), for one file.

    With `progress` (a Rich Progress) each bar is one task of that display; without, creating the bar writes one
    plain line ("downloading gpt2: model.safetensors (548 MB)") and its updates write nothing.
    """

    class RichTqdm:
        def __init__(self, *_args: Any, total: int | None = None, initial: int = 0, **_kwargs: Any) -> None:
            self.n = initial
            self._total = total
            if progress is None:
                print(f"downloading {label} ({human_size(total)})", file=stream or sys.stderr, flush=True)
                self._task = None
            else:
                self._task = progress.add_task(label, total=total, completed=initial)

        @property
        def total(self) -> int | None:
            return self._total

        @total.setter
        def total(self, value: int | None) -> None:  # the xet downloader learns a file's size as it goes
            self._total = value
            if self._task is not None:
                progress.update(self._task, total=value)

        def update(self, n: float = 1) -> None:
            self.n += int(n)
            if self._task is not None:
                progress.update(self._task, completed=self.n)

        def update_transfer(self, n: float = 1) -> None:
            """Network bytes (xet, http): already counted by update(), which counts the bytes written."""

        def set_postfix_str(self, *_args: Any, **_kwargs: Any) -> None:
            """The speed is Rich's own column."""

        set_transfer_postfix_str = set_postfix_str
        set_description = set_postfix_str
        refresh = set_postfix_str

        def close(self) -> None:
            if self._task is not None and self._total is not None:
                progress.update(self._task, completed=self.n)

        def __enter__(self) -> RichTqdm:
            return self

        def __exit__(self, *_exc: Any) -> None:
            self.close()

    return RichTqdm


def download_missing(repo: str, revision: str | None, flag: str) -> None:
    """Download what `from_pretrained` needs of an uncached hub id, showing progress; raise GbcliError on failure.

    Does nothing when the model is already cached, or when the hub cannot be reached (the load that follows
    explains that, in gbcli's words).
    """
    if is_complete_in_cache(repo, revision) or not hub_reachable():
        return
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi().model_info(repo, revision=revision)
        files = files_to_fetch([sibling.rfilename for sibling in info.siblings or []])
        display = make_progress(_live_console()) if wants_rich_display() else None
        if display is not None:
            display.console.print(f"downloading {repo}")  # once; each row then names its file
            display.start()
        try:
            for filename in files:
                bar = progress_bar_class(display, filename if display else f"{repo}: {filename}")
                # By the revision's name, not its commit: the cache then maps that name to the commit, so that
                # from_pretrained(revision=...) and the next run find the files without asking the hub.
                hf_hub_download(repo, filename, revision=revision, tqdm_class=bar)
        finally:
            if display is not None:
                display.stop()
    except GbcliError:
        raise
    except Exception as exc:
        raise explain_download_failure(repo, revision, flag, exc) from exc


def explain_download_failure(repo: str, revision: str | None, flag: str, exc: BaseException) -> GbcliError:
    """One sentence for what the hub or the network did, and what to try next."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):  # a subclass of RepositoryNotFoundError: test it first
        return GbcliError(
            f"Model '{repo}' for {flag} is gated on the Hugging Face hub: its owners must grant access first.",
            "Request access on the model's hub page, then log in with `hf auth login` (or set HF_TOKEN).",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return GbcliError(
            f"Model '{repo}' for {flag} does not exist on the Hugging Face hub (or it is private).",
            "Check the spelling of the hub id, or log in with `hf auth login` for a private model.",
        )
    if isinstance(exc, RevisionNotFoundError):
        return GbcliError(
            f"Revision '{revision}' of model '{repo}' for {flag} does not exist on the hub.",
            "Check --revision: a branch, a tag or a commit hash of that model.",
        )
    if isinstance(exc, EntryNotFoundError):
        return GbcliError(
            f"A file of model '{repo}' for {flag} is listed on the hub but cannot be downloaded.", "Try again later."
        )
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return GbcliError(
        f"Downloading model '{repo}' for {flag} failed: {reason.rstrip('.')}.",
        "Check the network connection and run the command again; files already complete are kept, "
        "the interrupted one is fetched anew.",
    )
