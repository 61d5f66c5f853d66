"""What `gbcli shell` and `gbcli serve` share: run a command line in a process that keeps its models loaded.

A command line is run by the very Typer app the console script runs, so a warm command prints exactly what a cold
one prints; only the models are already in memory (`gbcli.loading.models` caches them per process).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gbcli import settings
from gbcli.errors import usage_error
from gbcli.loading import models
from gbcli.loading.download import human_size  # one way to write a size: the hub's (548 MB, 12 kB)
from gbcli.loading.families import family_title


@dataclass(frozen=True)
class Host:
    """What a shell or a server takes from the CLI whose command lines it runs. The command that starts it
    (`gbcli shell`, `gbcli serve`: gbcli.cli.serve) gives it: the CLI starts the shell and the server, so an import
    of the CLI here would make the two rooms import each other."""

    commands: Any  # the click group behind the Typer app: commands, options and help
    parse_models: Callable[[str], list[str]]  # a --models list, checked (a usage error for an unknown column)
    # Load these models (families, --gpt/--bert/--bart, --device, --dtype) as a command loads them; with no family,
    # only the device and dtype are checked.
    load_models: Callable[[list[str], dict[str, str | None], str, str], object]


_HOSTED: list[Host] = []


def host(given: Host) -> None:
    """From now on this process's shell or server runs command lines through `given`."""
    _HOSTED[:] = [given]


def hosted() -> Host:
    return _HOSTED[0]


def command_tree() -> Any:
    """The click group behind the Typer app (Typer's own copy of click): commands, options and help."""
    return hosted().commands


def options_of(command: Any) -> list[Any]:
    """A command's options (not its arguments), as click describes them: .opts, .secondary_opts, .is_flag."""
    return [param for param in command.params if param.param_type_name == "option"]


def run_command_line(args: list[str]) -> int:
    """Run `gbcli ARGS` in this process, as the console script would, and return its exit code."""
    try:
        command_tree().main(args=args, prog_name="gbcli", standalone_mode=True)
    except SystemExit as exit:
        return exit_code_of(exit.code)
    return 0


def exit_code_of(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # sys.exit("message") prints the message and exits 1


@contextlib.contextmanager
def models_kept_loaded() -> Iterator[None]:
    """While it lasts, no command lets go of its models after use (`compare` would): the next command needs them."""
    before, models.KEEP_LOADED = models.KEEP_LOADED, True
    try:
        yield
    finally:
        models.KEEP_LOADED = before


@dataclass
class LoadedEntry:
    """One model held in memory, as `models` (shell) and `gbcli ps` list it."""

    family: str
    model: str
    kind: str
    device: str
    dtype: str
    parameters: int
    bytes: int
    idle_seconds: float
    release_seconds: float | None = None  # until the server lets it go (None: never, or not a server)


def loaded_models(in_use_since: float | None = None, keep_alive: float | None = None) -> list[LoadedEntry]:
    """The models this process holds, once each (a model cached under two keys is one model in memory).

    in_use_since: when the request now running began (time.monotonic); the models it asked for are in use, not idle.
    keep_alive: the server's; each entry then says how long until it is let go.
    """
    now = time.monotonic()
    entries: dict[int, LoadedEntry] = {}
    for key, lm in list(models._CACHE.items()):
        used = models.LAST_USED.get(key, now)
        idle = 0.0 if in_use_since is not None and used >= in_use_since else now - used
        known = entries.get(id(lm))
        if known is not None:
            known.idle_seconds = min(known.idle_seconds, idle)
            continue
        parameters, size = weight_size(lm.model)
        entries[id(lm)] = LoadedEntry(
            family=lm.family,
            model=lm.name,
            kind=lm.kind,
            device=str(lm.device),
            dtype=str(lm.dtype).removeprefix("torch."),
            parameters=parameters,
            bytes=size,
            idle_seconds=idle,
        )
    if keep_alive is not None:
        for entry in entries.values():
            entry.release_seconds = max(0.0, keep_alive - entry.idle_seconds)
    return list(entries.values())


def weight_size(model: Any) -> tuple[int, int]:
    """Parameters and bytes of a model's weights and buffers (a tied matrix counted once)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    parameters = sum(t.numel() for t in model.parameters())
    return parameters, sum(t.numel() * t.element_size() for t in tensors.values())


def used_until_now(since: float) -> None:
    """The models a request asked for after `since` were in use until it ended: their idle time starts now, so a
    request longer than the keep-alive does not unload its models the moment it ends."""
    now = time.monotonic()
    for key, used in list(models.LAST_USED.items()):
        if used >= since:
            models.LAST_USED[key] = now


def unload_idle(keep_alive: float) -> list[str]:
    """Let go of every model nobody asked for in the last `keep_alive` seconds; returns their names."""
    now = time.monotonic()
    idle_keys = [key for key in list(models._CACHE) if now - models.LAST_USED.get(key, now) >= keep_alive]
    names = []
    for key in idle_keys:
        lm = models._CACHE.pop(key, None)
        models.LAST_USED.pop(key, None)
        if lm is not None and lm not in models._CACHE.values():
            names.append(f"{lm.family} {lm.name}")
    if names:
        gc.collect()  # the weights go now, not at some later collection
        _empty_accelerator_cache()
    return names


def _empty_accelerator_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def format_duration(seconds: float) -> str:
    seconds = round(seconds)  # 599.6 s is 10m00s, not 9m60s
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def parse_duration(text: str) -> float | None:
    """`30m`, `90s`, `2h`, `45` (seconds), or `never`/`-1` for no limit (None); a usage error otherwise."""
    try:
        return settings.parse_duration(text)
    except ValueError:
        raise usage_error(f"Cannot read the duration '{text}'.", "For example 30m, 90s, 2h, or never.") from None


def model_table(entries: list[LoadedEntry], server: bool = False) -> Any:
    """A Rich table of the loaded models (the shell's `models`; with `server`, `gbcli ps`: when each is let go)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    columns = [
        ("column", "left"),
        ("model", "left"),
        ("device", "left"),
        ("dtype", "left"),
        ("params", "right"),
        ("memory", "right"),
        ("idle", "right"),
    ]
    if server:
        columns.append(("let go in", "right"))
    for title, justify in columns:
        table.add_column(title, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for entry in entries:
        row = [
            family_title(entry.family),
            entry.model,
            entry.device,
            entry.dtype,
            f"{entry.parameters / 1e6:.1f}M",
            human_size(entry.bytes),
            format_duration(entry.idle_seconds),
        ]
        if server:
            release = "never" if entry.release_seconds is None else format_duration(entry.release_seconds)
            row.append(release)
        table.add_row(*row)
    return table
