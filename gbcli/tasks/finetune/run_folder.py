"""The output folder of a fine-tuning comparison: one subfolder per family (per seed with --seeds N), and
gbcli-finetune.json, which says what run the folder holds, so that another run never writes over it by mistake and
`--resume` goes on only with the same options and data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gbcli.errors import usage_error

MANIFEST = "gbcli-finetune.json"


def run_folder(output: Path, family: str, seed: int, seeds: list[int]) -> Path:
    """OUT/gpt with one seed (loadable as it is by `pipeline`); OUT/gpt/seed-43 with several."""
    return output / family if len(seeds) == 1 else output / family / f"seed-{seed}"


def check_output(output: Path, manifest: dict[str, Any], *, resume: bool, force: bool) -> None:
    """Refuse a folder that holds something else (unless --force), or, with --resume, another run."""
    if resume and force:
        raise usage_error(
            "--resume and --force contradict each other.",
            "--resume goes on with the folder's run; --force replaces it.",
        )
    stored_path = output / MANIFEST
    if resume:
        if not stored_path.is_file():
            raise usage_error(
                f"{output} holds no fine-tuning run to resume.", "Run without --resume to start one there."
            )
        stored = json.loads(stored_path.read_text())
        differences = describe_differences(stored, manifest)
        if differences:
            raise usage_error(
                f"--resume with other settings than the run in {output}: {'; '.join(differences)}.",
                "Resume with the same options and data, or start anew with --force.",
            )
        return
    if output.exists() and not output.is_dir():
        raise usage_error(f"{output} is a file, not a folder.", "Give --output-dir a folder.")
    if output.is_dir() and any(output.iterdir()) and not force:
        what = (
            "holds another fine-tuning run"
            if stored_path.is_file()
            else "is not empty (it holds no gbcli fine-tuning run)"
        )
        raise usage_error(
            f"The output folder {output} {what}.",
            "Give another --output-dir, --resume to go on with its run, or --force to replace it.",
        )
    if force and output.is_dir():
        if not stored_path.is_file() and any(output.iterdir()):
            raise usage_error(
                f"--force will not empty {output}: it holds no gbcli fine-tuning run.",
                "Give another --output-dir (an empty or new folder).",
            )
        shutil.rmtree(output)


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def describe_differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """'recipe.gpt.learning_rate: 2e-05 then, 5e-05 now' for each value that differs."""
    found = []
    for key in sorted(set(stored) | set(wanted)):
        then, now = stored.get(key), wanted.get(key)
        if isinstance(then, dict) and isinstance(now, dict):
            found += describe_differences(then, now, f"{prefix}{key}.")
        elif then != now:
            found.append(f"{prefix}{key} was {json.dumps(then)}, now {json.dumps(now)}")
    return found
