"""Print `name==minimum` (a requirements file, environment markers kept) for every dependency pyproject.toml
declares with a lower bound: the versions the compatibility job installs, so that the declared minimums are the
tested ones by construction. `python .ci/minimums.py probe,train,plot`: those extras' minimums instead."""

from __future__ import annotations

import re
import sys
from pathlib import Path

# What scikit-learn 1.8.0 (the probe and train extras' minimum) itself needs at least, above the core's minimums: the
# oldest numpy and SciPy its metadata allows, so that the extras run on the oldest versions they can.
EXTRA_FLOORS = ["numpy==1.24.1", "scipy==1.10.0"]


def minimums(pyproject: str, extras: list[str] | None = None) -> list[str]:
    """The core dependencies' minimums, or with `extras`, those extras' minimums and EXTRA_FLOORS."""
    if extras:
        return sorted({pin for extra in extras for pin in _pins(_extra_block(pyproject, extra))} | set(EXTRA_FLOORS))
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL)
    if block is None:
        raise SystemExit("pyproject.toml: no dependencies list")
    return _pins(block.group(1))


def _extra_block(pyproject: str, extra: str) -> str:
    found = re.search(rf"^{re.escape(extra)} = \[(.*?)\]", pyproject, re.MULTILINE | re.DOTALL)
    if found is None:
        raise SystemExit(f"pyproject.toml: no extra {extra!r}")
    return "\n".join(f" {item.strip()}" for item in found.group(1).split(",") if item.strip())


def _pins(block: str) -> list[str]:
    pins = []
    for requirement in re.findall(r'^\s*"([^"]+)"', block, re.MULTILINE):
        specifier, _, marker = requirement.partition(";")
        name, lower = re.match(r"([A-Za-z0-9_.-]+)\s*(?:.*?>=\s*([^,\s]+))?", specifier).groups()
        if lower is None:
            raise SystemExit(f"pyproject.toml: {requirement!r} declares no minimum")
        pins.append(f"{name}=={lower}" + (f"; {marker.strip()}" if marker.strip() else ""))
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    extras = sys.argv[1].split(",") if len(sys.argv) > 1 else None  # e.g. probe,train,plot
    sys.stdout.write("\n".join(minimums((root / "pyproject.toml").read_text(), extras)) + "\n")
