"""Whether a speed path may run on the installed transformers and torch: decided once per process, said once.

gbcli's speed paths (the short checkpoint load, GPT-2's written-out decoding step, the own decoding loop, the
shared-prefix cache, the eager-attention switch) use names transformers and torch keep private, and those move
between minor releases. Each path declares one `FastPath`: its name, the public path that replaces it, and a probe
that looks at every private name the path uses and returns why the path cannot run here (None: it can). The probe
runs on first use only, and its answer holds for the process. A path that is off is never an error: the public
path (`from_pretrained`, `model(...)`, `generate`) gives the same numbers, only slower, and with `GBCLI_DEBUG=1`
one line on stderr says which path is off and why.

tests/test_private_names.py fails when a module of gbcli uses a private name of transformers or torch that is not
listed there for a module whose probe checks it. This module sits in `loading`, the bottom layer, because both
`loading.fast_load` and the speed paths of `lm` declare their FastPath with it.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

Probe = Callable[[], "str | None"]


@dataclass
class FastPath:
    """One speed path: `on` is whether it runs in this process (the probe's answer, kept after the first look)."""

    name: str
    public: str  # what runs instead, as the debug line names it
    probe: Probe
    _reason: str | None = field(default=None, init=False, repr=False)
    _decided: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        REGISTRY[self.name] = self

    @property
    def on(self) -> bool:
        return self.reason is None

    @property
    def reason(self) -> str | None:
        """Why the path is off here (None when it runs), decided on the first look."""
        if not self._decided:
            try:
                self._reason = self.probe()
            except Exception as error:  # a probe that trips over a moved name: that is its answer
                self._reason = f"{type(error).__name__}: {error}"
            self._decided = True
            if self._reason is not None:
                say_off(self)
        return self._reason

    def say_skipped(self, what: str, error: BaseException) -> None:
        """One debug line when the path, though on, stepped aside for one input on an exception (GBCLI_DEBUG=1)."""
        if os.environ.get("GBCLI_DEBUG"):
            first = (str(error).strip().splitlines() or [""])[0]
            sys.stderr.write(
                f"gbcli: fast path '{self.name}' skipped for {what}, using {self.public}: "
                f"{type(error).__name__}: {first}\n"
            )


# name → FastPath, for `gbcli`'s debug output and the tests that walk every path.
REGISTRY: dict[str, FastPath] = {}


def say_off(path: FastPath) -> None:
    """The one debug line for a path that is off (GBCLI_DEBUG=1 only)."""
    if os.environ.get("GBCLI_DEBUG"):
        sys.stderr.write(f"gbcli: fast path '{path.name}' off, using {path.public}: {path.reason}\n")


def installed_version(package: str) -> str:
    """A package's installed version, for probe messages (without importing it)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def missing(owner: object, *names: str) -> str | None:
    """'transformers X has no Owner.name' for the first of `names` that `owner` lacks, else None."""
    for name in names:
        if not hasattr(owner, name):
            label = getattr(owner, "__name__", type(owner).__name__)
            return f"transformers {installed_version('transformers')} has no {label}.{name}"
    return None


def lacks_parameters(function: Callable, *names: str) -> str | None:
    """'transformers X: f() takes no `name`' for the first of `names` the function does not take, else None."""
    parameters = inspect.signature(function).parameters
    for name in names:
        if name not in parameters:
            return (
                f"transformers {installed_version('transformers')}: {function.__qualname__}() takes no "
                f"'{name}' argument"
            )
    return None
