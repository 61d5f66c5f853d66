"""torchrun against one process: `gbcli pairs --file --output` as 2 processes × 1 thread and as 1 process × 2 threads.

Both sides are whole fresh processes (what a user runs, start-up and model loading included), taken in turns so that
a change in the machine's load hits both; the median of --repeats is reported, and the two output files must be the
same bytes. Also measured: one process × 1 thread (the per-line cost the scaling estimate in README.md starts from)
and rank 0's merge of the part files (the only step whose cost grows with the output beyond the scoring).

    python benchmarks/distributed.py --gpt DIR --bert DIR [--pairs 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_pairs(path: Path, count: int) -> None:
    from tests.test_pairs import corpus_pairs

    path.write_text("".join(json.dumps(p) + "\n" for p in corpus_pairs(count)), encoding="utf-8")


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env={**os.environ, **env}, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode()[-2000:])
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt", required=True)
    parser.add_argument("--bert", required=True)
    parser.add_argument("--pairs", type=int, default=250, help="pairs in the file (two sentences each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gbcli-dist-"))
    file = folder / "pairs.jsonl"
    write_pairs(file, args.pairs)
    common = ["pairs", "--file", str(file), "--gpt", args.gpt, "--bert", args.bert, "--force", "--json"]
    single = [sys.executable, "-m", "gbcli", *common]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "gbcli", *common]
    sides = {
        "1 process × 2 threads": (single + ["-o", str(folder / "a.jsonl")], {"OMP_NUM_THREADS": "2"}),
        "2 processes × 1 thread": (torchrun + ["-o", str(folder / "b.jsonl")],
                                   {"OMP_NUM_THREADS": "1", "GBCLI_THREADS": "1"}),
        "1 process × 1 thread": (single + ["-o", str(folder / "c.jsonl")], {"OMP_NUM_THREADS": "1"}),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (command, env) in sides.items():
            times[name].append(timed(command, env))
    same = (folder / "a.jsonl").read_bytes() == (folder / "b.jsonl").read_bytes()
    same_one_thread = (folder / "c.jsonl").read_bytes() == (folder / "b.jsonl").read_bytes()
    from gbcli.distributed import merge_in_order

    lines = (folder / "b.jsonl").read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    (folder / "m.jsonl.part0").write_bytes(b"".join(lines[:half]))
    (folder / "m.jsonl.part1").write_bytes(b"".join(lines[half:]))
    began = time.perf_counter()
    merge_in_order(str(folder / "m.jsonl"), [folder / "m.jsonl.part0", folder / "m.jsonl.part1"])
    merge_s = time.perf_counter() - began
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["2 processes × 1 thread"] / medians["1 process × 2 threads"]
    print(f"{args.pairs} pairs ({2 * args.pairs} sentences), GPT + BERT, load average {os.getloadavg()[0]:.1f}")
    for name, value in medians.items():
        print(f"  {name}: {value:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  ratio 2×1 / 1×2: {ratio:.3f} (target ≤ 1.15: {'met' if ratio <= 1.15 else 'not met'})")
    print(f"  same output 2×1 as 1×2: {same}; as 1×1: {same_one_thread}")
    print(f"  merge of {len(lines)} records ({sum(map(len, lines)) / 1e6:.1f} MB): {merge_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
