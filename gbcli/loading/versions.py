"""Which transformers gbcli runs on: an unsupported one is refused at start-up in one sentence, not met later as an
AttributeError deep inside a command.

Read from the installed package's metadata (importlib.metadata), so the check imports neither transformers nor
torch, and runs only for a command answered in this process (never for --help, nor for a warm server's client).
The range is pyproject.toml's, which tests/test_versions.py holds it to.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

from gbcli.errors import GbcliError

TRANSFORMERS_RANGE = ">=5.0,<6"
SUPPORTED_MAJOR = 5


def installed_transformers() -> str | None:
    """The installed transformers' version, or None when it is not installed."""
    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def unsupported_transformers(installed: str | None) -> GbcliError | None:
    """The error for a transformers gbcli does not run on (4.x, a future 6.x, none at all), else None."""
    hint = f'Install a supported one: pip install "transformers{TRANSFORMERS_RANGE}"'
    if installed is None:
        return GbcliError(f"transformers is not installed; gbcli needs transformers {TRANSFORMERS_RANGE}.", hint)
    major = re.match(r"\d+", installed)
    if major is None or int(major.group()) != SUPPORTED_MAJOR:
        return GbcliError(
            f"transformers {installed} is installed, but gbcli supports transformers "
            f"{TRANSFORMERS_RANGE} (5.0 to the latest 5.x).",
            hint,
        )
    return None
