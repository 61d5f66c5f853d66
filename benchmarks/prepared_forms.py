"""Can a warm server make its models' passes faster while it idles? (issue 33: "the warm request, faster")

    python benchmarks/prepared_forms.py                 # eager against oneDNN-prepacked Linear layers (BERT-base)
    python benchmarks/prepared_forms.py --inductor      # and torch.compile's CPU backend with weight freezing (slow)

One process loads full-size BERT-base (random weights, the real vocabulary: benchmarks/build_models.py), runs
`gbcli fill-mask TEXT --models bert --json` in-process as a warm server does (the first run untimed), then prepares
the model in place and runs the same command again. It prints, for each form: the median wall time of the command,
the time the preparation took and the first prepared request, the process's anonymous and file-backed resident
memory, and the largest difference of any number the command prints from the eager run's (every form must stay
within 1e-5 of the eager path to be usable at all).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from build_models import DEFAULT_CACHE, DEFAULT_TOKENIZERS, build_bert  # noqa: E402

TEXT = "The capital of France is [MASK]."


def resident() -> dict[str, int]:
    """RssAnon and RssFile in MiB: weights read from a safetensors file are file-backed pages until copied."""
    with open("/proc/self/status") as status:
        return {
            line.split(":")[0]: int(line.split()[1]) // 1024
            for line in status
            if line.startswith(("RssAnon", "RssFile"))
        }


def numbers(value: object, found: list[float]) -> list[float]:
    """Every float the --json document holds, but timings."""
    if isinstance(value, float):
        found.append(value)
    elif isinstance(value, dict):
        for key, item in sorted(value.items()):
            if "seconds" not in key:
                numbers(item, found)
    elif isinstance(value, list):
        for item in value:
            numbers(item, found)
    return found


def run_once(args: list[str]) -> dict:
    from gbcli.warm.runner import run_command_line

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        if run_command_line(args) != 0:
            raise RuntimeError("the command failed")
    return json.loads(out.getvalue())


def median_seconds(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_once(args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def prepack_linear_layers(model: object) -> None:
    """Every Linear layer but the vocabulary projection (which gbcli narrows to the read positions through a hook)
    replaced by oneDNN's prepacked MkldnnLinear, in place."""
    import torch
    from torch.utils.mkldnn import MkldnnLinear

    head = model.get_output_embeddings()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not head:
                setattr(module, name, MkldnnLinear(child, torch.float32))


def compile_with_freezing(model: object) -> None:
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = True
    model.forward = torch.compile(model.forward, dynamic=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inductor", action="store_true", help="also torch.compile with freezing (minutes)")
    options = parser.parse_args()
    bert = build_bert(DEFAULT_TOKENIZERS, DEFAULT_CACHE)
    args = ["fill-mask", TEXT, "--models", "bert", "--bert", str(bert), "--json"]
    import torch

    from gbcli.loading import models
    from gbcli.warm.runner import models_kept_loaded

    forms = {"oneDNN prepacked Linear": prepack_linear_layers}
    if options.inductor:
        forms["torch.compile, inductor, freezing"] = compile_with_freezing
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of {options.repeats}")
    with models_kept_loaded():
        eager = run_once(args)
        eager_numbers = numbers(eager, [])
        print(f"eager: {median_seconds(args, options.repeats) * 1000:.0f} ms, memory {resident()}")
        for name, prepare in forms.items():
            models.clear_cache()
            gc.collect()
            run_once(args)  # loaded afresh, eager
            (lm,) = {id(lm): lm for lm in models._CACHE.values()}.values()
            before = resident()
            started = time.perf_counter()
            prepare(lm.model)
            gc.collect()
            prepared_seconds = time.perf_counter() - started
            started = time.perf_counter()
            document = run_once(args)
            first = time.perf_counter() - started
            difference = max(abs(a - b) for a, b in zip(eager_numbers, numbers(document, []), strict=True))
            print(
                f"{name}: {median_seconds(args, options.repeats) * 1000:.0f} ms; preparing {prepared_seconds:.1f} s,"
                f" first request {first * 1000:.0f} ms; memory {before} -> {resident()}; largest difference "
                f"{difference:.2e}"
            )


if __name__ == "__main__":
    main()
