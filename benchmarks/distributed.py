"""torchrun against one process: `gbcli pairs --file --output` and `gbcli score --file --output` (GPT-2 and BERT's
pseudo-log-likelihood) as 2 processes × 1 thread and as 1 process × 2 threads, on the same lines.

Both sides are whole fresh processes (what a user runs, start-up and model loading included), taken in turns so that
a change in the machine's load hits both; the median of --repeats is reported, and the two output files must be the
same bytes. Also measured: one process × 1 thread (the per-line cost the scaling estimate in benchmarks/README.md
starts from) and rank 0's merge of the part files (the only step whose cost grows with the output beyond the
scoring).

    python benchmarks/distributed.py --gpt DIR --bert DIR [--lines 500] [--repeats 3] [--jobs pairs,score]
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


def write_texts(path: Path, count: int) -> None:
    """Sentences of 2 to 4 clauses: lengths that differ, so the split by cost (tokens squared) has work to do."""
    from tests.test_pairs import corpus_pairs

    pairs = corpus_pairs(count + 3)
    path.write_text(
        "".join(
            " and ".join(p["sentence_good"].rstrip(" .") for p in pairs[k : k + 2 + k % 3]) + " .\n"
            for k in range(count)
        ),
        encoding="utf-8",
    )


WRITERS = {"pairs": write_pairs, "score": write_texts}


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env={**os.environ, "GBCLI_NO_SERVER": "1", **env}, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode()[-2000:])
    return time.perf_counter() - began


def measure(job: str, args: argparse.Namespace, folder: Path) -> None:
    """One command's row: the three sides in turns, then rank 0's merge of two part files of its output."""
    file = folder / f"{job}.in"
    WRITERS[job](file, args.lines)
    common = [job, "--file", str(file), "--gpt", args.gpt, "--bert", args.bert, "--force", "--json"]
    single = [sys.executable, "-m", "gbcli", *common]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gbcli",
        *common,
    ]
    outputs = {name: folder / f"{job}-{name}.jsonl" for name in ("a", "b", "c")}
    sides = {
        "1 process × 2 threads": (single + ["-o", str(outputs["a"])], {"OMP_NUM_THREADS": "2"}),
        "2 processes × 1 thread": (
            torchrun + ["-o", str(outputs["b"])],
            {"OMP_NUM_THREADS": "1", "GBCLI_THREADS": "1"},
        ),
        "1 process × 1 thread": (single + ["-o", str(outputs["c"])], {"OMP_NUM_THREADS": "1"}),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (command, env) in sides.items():
            times[name].append(timed(command, env))
    same = outputs["a"].read_bytes() == outputs["b"].read_bytes()
    same_one_thread = outputs["c"].read_bytes() == outputs["b"].read_bytes()
    from gbcli.jobs.distributed import merge_in_order

    lines = outputs["b"].read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    merged = folder / f"{job}-m.jsonl"
    parts = [Path(f"{merged}.part0"), Path(f"{merged}.part1")]
    parts[0].write_bytes(b"".join(lines[:half]))
    parts[1].write_bytes(b"".join(lines[half:]))
    began = time.perf_counter()
    merge_in_order(str(merged), parts, "index" if job == "score" else "line")
    merge_s = time.perf_counter() - began
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["2 processes × 1 thread"] / medians["1 process × 2 threads"]
    what = f"{args.lines} pairs ({2 * args.lines} sentences)" if job == "pairs" else f"{args.lines} lines"
    print(f"{job}: {what}, GPT + BERT, load average {os.getloadavg()[0]:.1f}")
    for name, value in medians.items():
        print(f"  {name}: {value:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  ratio 2×1 / 1×2: {ratio:.3f} (target ≤ 1.15: {'met' if ratio <= 1.15 else 'not met'})")
    print(f"  same output 2×1 as 1×2: {same}; as 1×1: {same_one_thread}")
    print(f"  merge of {len(lines)} records ({sum(map(len, lines)) / 1e6:.1f} MB): {merge_s * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt", required=True)
    parser.add_argument("--bert", required=True)
    parser.add_argument("--lines", type=int, default=500, help="lines in the file (a pair, or a text, each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", default="pairs,score", help="the commands measured, comma-separated")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gbcli-dist-"))
    for job in args.jobs.split(","):
        if job not in WRITERS:
            raise SystemExit(f"unknown job {job!r}: choose from {', '.join(WRITERS)}")
        measure(job, args, folder)


if __name__ == "__main__":
    main()
