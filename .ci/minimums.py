"""Print `name==minimum` (a requirements file, environment markers kept) for every dependency pyproject.toml
declares with a lower bound: the versions the compatibility job installs, so that the declared minimums are the
tested ones by construction."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def minimums(pyproject: str) -> list[str]:
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL)
    if block is None:
        raise SystemExit("pyproject.toml: no dependencies list")
    pins = []
    for requirement in re.findall(r'^\s*"([^"]+)"', block.group(1), re.MULTILINE):
        specifier, _, marker = requirement.partition(";")
        name, lower = re.match(r"([A-Za-z0-9_.-]+)\s*(?:.*?>=\s*([^,\s]+))?", specifier).groups()
        if lower is None:
            raise SystemExit(f"pyproject.toml: {requirement!r} declares no minimum")
        pins.append(f"{name}=={lower}" + (f"; {marker.strip()}" if marker.strip() else ""))
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    sys.stdout.write("\n".join(minimums((root / "pyproject.toml").read_text())) + "\n")
