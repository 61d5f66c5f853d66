"""Can a model be had, and why not: the checks that run before (and instead of) a long load.

A model spec is a local folder or a hub id. `check_available` refuses at once, for every requested model in one
message, a missing or unreadable folder, or a hub id that is neither cached nor reachable (one TCP probe per
process, instead of huggingface_hub's retries, with waits, for every file: benchmarks/run.py, row `cold`);
`explain_load_failure` turns whatever a load raised into one sentence and a hint.

Nothing here imports torch or transformers at module level, and `gbcli.loading.models` (which imports this module)
is read only at call time.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gbcli.errors import GbcliError
from gbcli.loading.families import FAMILY_INFO, LoadOptions

if TYPE_CHECKING:
    from gbcli.loading.families import Family, FamilyInfo


def _info(family: Family) -> FamilyInfo:
    return FAMILY_INFO[family]


def looks_like_path(spec: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that names the file system is a path."""
    if os.path.lexists(spec):  # lexists: a dangling or looping symbolic link names the file system too
        return True
    return spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec)


def offline_requested(options: LoadOptions) -> bool:
    return options.offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - depends on the installed hub client
        return "~/.cache/huggingface/hub"


def _explain_local_failure(family: Family, spec: str, exc: BaseException, lowered: str) -> GbcliError:
    """What is wrong with a model folder, from the folder itself first and the loader's words second."""
    flag = _info(family).flag
    path = Path(spec).expanduser()
    unreadable = _unreadable_part(path)
    if unreadable is not None:
        return GbcliError(
            f"Permission denied: '{unreadable}' for {flag} cannot be read.",
            "Check the permissions of the model folder, its files and the folders above it.",
        )
    if path.is_symlink() and not path.exists():
        return broken_link(spec, flag, path)
    if not path.exists():
        return GbcliError(
            f"Model folder '{spec}' for {flag} does not exist.",
            "Check the path, or give a hub id such as " + _info(family).default + ".",
        )
    if path.is_file():
        return GbcliError(
            f"'{spec}' for {flag} is a file, not a model folder.",
            "Give the folder that holds config.json and the weights.",
        )
    if not (path / "config.json").exists():
        return GbcliError(
            f"'{spec}' for {flag} has no config.json, so it is not a model folder.",
            "Save the model with save_pretrained(), or point at the folder that holds config.json.",
        )
    if "does not appear to have" in lowered or "no file named" in lowered:
        return GbcliError(
            f"'{spec}' for {flag} has a config.json but no weights file (model.safetensors).",
            "Copy the weights into the folder, or save the model with save_pretrained().",
        )
    if "weights_only" in lowered or "weights only" in lowered:
        return GbcliError(
            f"The pickled weights in '{spec}' for {flag} contain more than tensors, so gbcli will not load "
            "them: unpickling could run arbitrary code.",
            "Convert the checkpoint to safetensors with a tool you trust.",
        )
    if "safetensor" in lowered or "header" in lowered or "deserializ" in lowered or "unpickl" in lowered:
        return GbcliError(
            f"The weights in '{spec}' for {flag} are corrupt or truncated ({first_line(exc)}).",
            "Re-download or re-save the checkpoint.",
        )
    if "tokenizer" in lowered or "vocab" in lowered:
        return GbcliError(
            f"'{spec}' for {flag} has no usable tokenizer files ({first_line(exc)}).",
            "Save the tokenizer into the same folder with tokenizer.save_pretrained().",
        )
    return _explain_any_failure(spec, flag, exc, lowered) or GbcliError(
        f"Could not load '{spec}' for {flag}: {first_line(exc)}.",
        "Check that the folder was saved with save_pretrained() (config.json, the weights and the tokenizer "
        "files), by a transformers no newer than this one.",
    )


def _explain_any_failure(spec: str, flag: str, exc: BaseException, lowered: str) -> GbcliError | None:
    """What a checkpoint's config asks that gbcli will not or cannot do, in a folder or on the hub."""
    if "custom code" in lowered or "trust_remote_code" in lowered:
        return GbcliError(
            f"'{spec}' for {flag} needs its own Python code to load (custom code): gbcli never runs code that comes "
            "with a checkpoint.",
            "Use a checkpoint of an architecture transformers has built in (GPT-2, BERT, BART and their kin).",
        )
    if "not a valid json" in lowered or "jsondecodeerror" in lowered:
        return GbcliError(
            f"The config.json of '{spec}' for {flag} is not valid JSON.",
            "Restore the file (or save the model again with save_pretrained()).",
        )
    if "does not recognize this architecture" in lowered or "unrecognized model" in lowered:
        named = re.search(r"model type [`'\"]?([\w.-]+)", str(exc))
        kind = f"the model type '{named.group(1)}', which" if named else "a model type that"
        return GbcliError(
            f"The config.json of '{spec}' for {flag} names {kind} this transformers does not know.",
            'Check its "model_type"; a newer transformers may know it (pip install -U transformers).',
        )
    return None


def explain_load_failure(family: Family, spec: str, exc: BaseException, offline: bool) -> GbcliError:
    """Turn whatever transformers, huggingface_hub or safetensors raised into one sentence and a hint."""
    flag = _info(family).flag
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if looks_like_path(spec):
        return _explain_local_failure(family, spec, exc, lowered)
    if offline:
        return GbcliError(
            f"Model '{spec}' for {flag} is not in the local cache, and offline mode forbids downloading it.",
            f"Download it once while online (cache: {_hub_cache()}), or pass a local folder to {flag}.",
        )
    if "couldn't connect" in lowered or "connection" in lowered or "resolve" in lowered or "offline" in lowered:
        return GbcliError(
            f"Model '{spec}' for {flag} is not cached and the Hugging Face hub cannot be reached.",
            f"Connect to the network once (cache: {_hub_cache()}), or pass a local folder to {flag}.",
        )
    if "not a valid model identifier" in lowered or "repository not found" in lowered or "404" in lowered:
        return GbcliError(
            f"Model '{spec}' for {flag} does not exist on the Hugging Face hub.",
            f"Check the spelling, e.g. {_info(family).examples}.",
        )
    if "revision" in lowered:
        return GbcliError(f"Revision not found for model '{spec}' ({first_line(exc)}).", "Check --revision.")
    return _explain_any_failure(spec, flag, exc, lowered) or GbcliError(
        f"Could not load model '{spec}' for {flag}: {first_line(exc)}.",
        f"Check the model id, and that it is a {flag.removeprefix('--').upper()}-style checkpoint of the "
        "transformers library.",
    )


def check_local_path(family: Family, spec: str) -> None:
    """Refuse a model path that is missing, a broken link or unreadable before torch loads: no hub lookup, no wait."""
    if not looks_like_path(spec):
        return
    path = Path(spec).expanduser()
    try:
        usable = path.exists() and _unreadable_part(path) is None
    except OSError:
        usable = False
    if not usable:
        raise explain_load_failure(family, spec, FileNotFoundError(str(path)), offline=False)


def _unreadable_part(path: Path) -> Path | None:
    """The model folder, or the first file in it, that this user may not read (None if all can be read)."""
    try:
        if not path.is_dir():
            return path if path.exists() and not os.access(path, os.R_OK) else None
        files = list(path.iterdir())
    except PermissionError:
        return path
    return next((f for f in files if f.is_file() and not os.access(f, os.R_OK)), None)


def broken_link(spec: str, flag: str, path: Path) -> GbcliError:
    """A model path that is a symbolic link to nowhere, or one of a loop of links."""
    try:
        path.resolve(strict=True)
        where = "a missing target"
    except RuntimeError:  # Python < 3.13 reports a loop so
        where = "itself, in a loop of links"
    except OSError as exc:
        loop = exc.errno == errno.ELOOP
        where = "itself, in a loop of links" if loop else f"'{os.readlink(path)}', which does not exist"
    return GbcliError(
        f"'{spec}' for {flag} is a symbolic link to {where}.",
        "Point the link at the model folder, or give the folder itself.",
    )


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")[:200]


# Whether the hub answered this process's one probe (None: not asked yet). When it did not, nothing goes to the
# network again: huggingface_hub would retry each file, with waits, before giving up (benchmarks/run.py, row
# `cold`: an uncached hub id with no network).
_HUB_REACHABLE: bool | None = None


def hub_reachable(timeout: float = 1.5) -> bool:
    """Can the hub's host be reached at all? One TCP connection, once per process, bounded by `timeout`.

    Name resolution runs in a daemon thread, since a resolver with no network may block far longer than any
    socket timeout.
    """
    global _HUB_REACHABLE
    if _HUB_REACHABLE is not None:
        return _HUB_REACHABLE

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (80 if parts.scheme == "http" else 443)
    addresses: list[Any] = []

    def resolve() -> None:
        try:
            addresses.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError:
            pass

    started = time.monotonic()
    resolver = threading.Thread(target=resolve, daemon=True)
    resolver.start()
    resolver.join(timeout)
    reachable = False
    for family_, type_, proto, _, address in list(addresses)[:2]:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            break
        try:
            with socket.socket(family_, type_, proto) as probe:
                probe.settimeout(left)
                probe.connect(address)
            reachable = True
            break
        except OSError:
            continue
    _HUB_REACHABLE = reachable
    return reachable


def _is_cached(spec: str, revision: str | None) -> bool:
    """Is this hub id's config in the local Hugging Face cache? (A cheap look at the cache folder.)"""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json", revision=revision)
    except Exception:  # an id the hub client rejects is not cached; loading explains it
        return False
    return isinstance(found, str)


def _unavailable(family: Family, spec: str, options: LoadOptions) -> GbcliError | None:
    """Why this model cannot be loaded, found without loading anything; None when it may load."""
    offline = offline_requested(options)
    if looks_like_path(spec):
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "config.json").exists():
            return None
        return explain_load_failure(family, spec, FileNotFoundError(spec), offline)
    if _is_cached(spec, options.revision):
        return None
    if offline:
        return explain_load_failure(family, spec, FileNotFoundError(spec), offline=True)
    if hub_reachable():
        return None
    return _NotCachedNoNetwork(family, spec)


class _NotCachedNoNetwork(GbcliError):
    """A hub id that is not cached while the hub cannot be reached (several of them are reported as one)."""

    def __init__(self, family: Family, spec: str) -> None:
        self.family, self.spec = family, spec
        super().__init__(
            f"Model {self.described()} is not cached, and the Hugging Face hub cannot be reached.",
            _no_network_hint([family]),
        )

    def described(self) -> str:
        # `models/bert-tiny` is a valid hub id and a relative path alike: say that it is neither.
        typed = "/" in self.spec and self.spec != _info(self.family).default
        folder = " (no local folder of that name either)" if typed else ""
        return f"'{self.spec}' for {_info(self.family).flag}{folder}"


def _no_network_hint(families: list[Family]) -> str:
    flags = [_info(family).flag for family in families]
    flags = ", ".join(flags[:-1]) + " and " + flags[-1] if len(flags) > 1 else flags[0]
    folder = "a local folder" if len(families) == 1 else "local folders"
    return f"Connect to the network once (cache: {_hub_cache()}), or pass {folder} to {flags}."


def check_available(requests: list[tuple[Family, str]], options: LoadOptions | None = None) -> None:
    """Refuse at once, before any model loads, when a requested model cannot be had: all of them in one message.

    A missing folder or an uncached hub id without network would otherwise surface only after the models before
    it had loaded, one per run, each after huggingface_hub's retries.
    """
    options = options or LoadOptions()
    problems = [problem for family, spec in requests if (problem := _unavailable(family, spec, options))]
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    uncached = [problem for problem in problems if isinstance(problem, _NotCachedNoNetwork)]
    others = [problem for problem in problems if not isinstance(problem, _NotCachedNoNetwork)]
    messages = [problem.message for problem in others]
    hints = [problem.hint for problem in others if problem.hint]
    if uncached:
        names = ", ".join(problem.described() for problem in uncached)
        verb = "is" if len(uncached) == 1 else "are"
        messages.append(f"{names} {verb} not cached, and the Hugging Face hub cannot be reached.")
        hints.append(_no_network_hint([problem.family for problem in uncached]))
    raise GbcliError(
        f"{len(problems)} models cannot be loaded. " + " ".join(messages),
        " ".join(dict.fromkeys(hints)) or None,
        exit_code=max(problem.exit_code for problem in problems),
    )


def from_cache_first(loader: Any, source: str, kwargs: dict[str, Any]) -> Any:
    """Look in the local cache before the network: a cached model then loads with no hub round trip."""
    if kwargs.get("local_files_only") or os.path.isdir(source):
        return loader(source, **kwargs)
    try:
        return loader(source, **{**kwargs, "local_files_only": True})
    except OSError:
        if _HUB_REACHABLE is False:  # the probe found no network: the hub's retries would only add their waits
            raise
        return loader(source, **kwargs)
