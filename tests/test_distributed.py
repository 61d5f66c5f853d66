"""File jobs under torchrun (Gloo, CPU, 2 processes): `pairs`, `score` and `fill-mask` write the single-process
file byte for byte, a killed worker is named with its lines, --resume after a kill or a torn line completes the file,
and no torch.distributed without torchrun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gbcli.jobs.distributed import split_by_cost
from tests.cli_helpers import run
from tests.test_pairs import corpus_pairs

TIMEOUT_S = 30  # GBCLI_DIST_TIMEOUT for the jobs here: a failed job must end well within the test's wait


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GBCLI_THREADS": "1", "GBCLI_DIST_TIMEOUT": str(TIMEOUT_S), **extra}


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gbcli",
        *args,
    ]


BATCH = ("--batch-size", "2")
# Each command's job: the file it reads, made by `lines(count)`, and its options. Chunks: 2 pairs (--batch-size),
# 32 texts (score's), 128 lines (fill-mask's), so that the two ranks share several chunks (fill-mask: two).
JOBS = {
    "pairs": (40, lambda n: "".join(json.dumps(p) + "\n" for p in corpus_pairs(n)), BATCH),
    "score": (70, lambda n: "".join(f"{p['sentence_good']}\n" for p in corpus_pairs(n)), ()),
    "fill-mask": (
        140,
        lambda n: "".join(p["sentence_good"].replace(" in ", " [MASK] ") + "\n" for p in corpus_pairs(n)),
        ("--top-k", "2"),
    ),
}


CHUNK = {"pairs": 2}  # the records a rank writes at once
HELD = {  # what the error says of an unfinished rank: 40 pairs of one cost split in halves
    "pairs": r"rank [01] held lines (1–20|21–40) \(\d+ of 20 done\)",
}


def _job_args(command: str, file: str, models: list[str], out) -> tuple[str, ...]:
    return (command, "--file", file, *models, *JOBS[command][2], "--output", str(out), "--json")


@pytest.fixture(scope="module", params=list(JOBS))
def job(request, tmp_path_factory, models) -> tuple[str, str, bytes]:
    """A command, its input file, and the reference --output file: one process, one thread."""
    command = request.param
    count, lines, _ = JOBS[command]
    folder = tmp_path_factory.mktemp(command)
    file = folder / ("pairs.jsonl" if command == "pairs" else "texts.txt")
    file.write_text(lines(count), encoding="utf-8")
    out = folder / "single.jsonl"
    # In-process on one thread, as each torchrun rank runs (a process of its own would cost ~10 s of start-up).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        done = run(*_job_args(command, str(file), models, out), env={"GBCLI_THREADS": "1"})
    finally:
        torch.set_num_threads(threads)
    assert done.exit_code == 0, done.stderr
    return command, str(file), out.read_bytes()


def test_cost_split_keeps_order_and_evens_the_cost():
    assert split_by_cost([1, 1, 1, 1], 2) == [range(0, 2), range(2, 4)]
    # One long item (BERT's cost grows with the square of its tokens) is worth many short ones.
    assert split_by_cost([16, 1, 1, 1, 1, 4, 4, 4, 4], 2) == [range(0, 3), range(3, 9)]  # 18 and 18
    assert [len(r) for r in split_by_cost([5], 3)] == [0, 1, 0]
    assert [len(r) for r in split_by_cost([], 2)] == [0, 0]


@pytest.mark.parametrize("command", list(JOBS))
def test_without_torchrun_the_distributed_path_is_never_taken(command, tmp_path, models, monkeypatch):
    """`import torch` (2.13) loads torch.distributed itself, so what is checked is gbcli's side: without torchrun's
    environment no process group is made and the job module is not even imported."""
    import torch.distributed

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "gbcli.jobs.torchrun_job", raising=False)
    file = tmp_path / "in.txt"
    file.write_text(JOBS[command][1](2), encoding="utf-8")
    result = run(command, "--file", str(file), *models, "--output", str(tmp_path / "out.jsonl"), "--json")
    assert result.exit_code == 0, result.stderr
    assert "gbcli.jobs.torchrun_job" not in sys.modules and not torch.distributed.is_initialized()
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


def test_two_processes_write_the_single_process_file(tmp_path, models, job):
    command, file, expected = job
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        _torchrun(*_job_args(command, file, models, out)), capture_output=True, timeout=300, env=_env()
    )
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes() == expected
    summary = json.loads(done.stdout)  # rank 0 alone prints: one summary
    count = len(expected.splitlines())
    assert summary["kind"] == "summary" and summary.get("pairs", summary.get("lines")) == count == JOBS[command][0]
    assert not list(tmp_path.glob("out.jsonl.part*"))


@pytest.mark.parametrize(
    "command", [["score", "--file", "x.txt"], ["fill-mask", "--file", "x.txt"], ["pairs", "--file", "x.txt"]]
)
def test_under_torchrun_a_file_job_needs_output(command, monkeypatch):
    """Several processes cannot share stdout: each file command under torchrun writes one --output."""
    from tests.cli_helpers import assert_user_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert_user_error(run(*command), 2, "needs --output")


@pytest.mark.parametrize("command", ["score", "fill-mask", "pairs"])
def test_under_torchrun_a_file_job_cannot_read_standard_input(command, monkeypatch, tmp_path):
    """Each process would read a different part of one stdin and take it for the whole file: refused, before
    anything is read (the input below would otherwise be a valid job)."""
    from tests.cli_helpers import assert_user_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    text = "the duck quacks .\tthe duck quack .\n" if command == "pairs" else "the [MASK] quacks .\n"
    result = run(command, "--file", "-", "--output", str(tmp_path / "out.jsonl"), input=text)
    assert_user_error(result, 2, "cannot be standard input")
    assert not (tmp_path / "out.jsonl").exists()


def _rank_pid(marker: str, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"GBCLI_TEST_JOB={marker}".encode() in environ and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


# One command is enough: pairs, score and fill-mask share one runner (torchrun_job.run_distributed) and one resume
# (jobs/jsonl_output); pairs' even cost split lets the error's line ranges be checked exactly.
@pytest.mark.parametrize("job", ["pairs"], indirect=True)
def test_a_killed_worker_ends_the_job_naming_its_lines_and_resume_completes_the_file(tmp_path, models, job):
    command, file, expected = job
    out = tmp_path / "out.jsonl"
    args = _job_args(command, file, models, out)
    job = subprocess.Popen(
        _torchrun(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(GBCLI_TEST_JOB=str(tmp_path))
    )
    deadline = time.monotonic() + 120
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = _rank_pid(str(tmp_path), 1)
    assert pid is not None, "rank 1 was not found"
    part = tmp_path / "out.jsonl.part1"
    parts = [tmp_path / "out.jsonl.part0", part]  # both ranks under way: rank 0 has shared the lines out too
    while time.monotonic() < deadline and not all(p.exists() and p.stat().st_size for p in parts):
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)  # mid-job: its first chunk is written, more to go
    started = time.monotonic()
    _, stderr = job.communicate(timeout=TIMEOUT_S + 60)
    assert job.returncode != 0
    assert time.monotonic() - started < TIMEOUT_S + 30  # torchrun stops the others at once; the rest is teardown
    text = stderr.decode()
    # Which ranks were unfinished when torchrun stopped the job depends on timing (on a fast machine rank 1 may
    # have written its last line before the kill landed): the error names each unfinished rank's lines, or says
    # that rank 0 had not yet shared them out.
    assert "--resume" in text, text
    assert re.search(HELD[command], text) or "had not been shared out yet" in text, text
    # torchrun adds its own traceback (ChildFailedError); none comes from gbcli's code.
    assert not [line for line in text.splitlines() if line.lstrip().startswith("File") and "/gbcli/" in line]
    kept = part.read_bytes()
    assert kept.endswith(b"\n") and CHUNK[command] <= len(kept.splitlines()) < JOBS[command][0]

    # Torn lines as a crash mid-write leaves them: in a part file, and in an --output that also holds records of a
    # part (as when a crash falls between rank 0's merge and its removal of the parts).
    in_part0 = (tmp_path / "out.jsonl.part0").read_bytes().splitlines(keepends=True)
    whole_in_part0 = sum(line.endswith(b"\n") for line in in_part0)  # SIGTERM may tear rank 0's last line too
    first_two = in_part0[:2]
    out.write_bytes(first_two[0] + first_two[1][:30])
    with open(part, "ab") as stream:
        stream.write(expected.splitlines(keepends=True)[-1][:25])
    resumed = subprocess.run(_torchrun(*args, "--resume"), capture_output=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert out.read_bytes() == expected
    # Only the chunks held whole count: a chunk a rank was cut in (rank 0's, when SIGTERM tore its line) is redone.
    whole_chunks = whole_in_part0 // CHUNK[command] + len(kept.splitlines()) // CHUNK[command]
    assert json.loads(resumed.stdout)["resumed"] == whole_chunks * CHUNK[command]


def test_two_processes_resuming_a_cut_one_process_file_write_it_byte_for_byte(tmp_path, models):
    """Texts of many lengths (a record's last bits depend on its batch-mates): the chunk the cut fell in is done
    again whole, by whichever rank holds it, and the merge keeps its new records; with one thread per process on
    both sides the file is the one-process file."""
    import torch

    texts = [p["sentence_good"][:-2] + " and it rests" * (k % 6) + " ." for k, p in enumerate(corpus_pairs(70))]
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = _job_args("score", str(file), models, out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(*args, env={"GBCLI_THREADS": "1"}).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    expected = out.read_bytes()
    ends = [k + 1 for k, byte in enumerate(expected) if byte == ord("\n")]
    out.write_bytes(expected[: ends[40] + 50])  # inside record 42: in the second chunk, a torn line at its end
    resumed = subprocess.run(_torchrun(*args, "--resume"), capture_output=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert out.read_bytes() == expected
    assert json.loads(resumed.stdout)["resumed"] == 32  # the first chunk; the second is redone whole
