"""gbcli against the `transformers` pipelines: the same models, the same inputs, side by side in one run (issue 6).

    python benchmarks/run.py                      # every row, full size
    python benchmarks/run.py --quick              # fewer tokens, lines and repeats: a smoke run of a few minutes
    python benchmarks/run.py --rows generate      # some rows only (generate, fill-mask, pll, compare, memory, warm)

The models are full-size GPT-2-small and BERT-base architectures with random weights and the real published
vocabularies (from ../shared/tokenizers, or --tokenizers DIR), built once into benchmarks/.models/. The table is
printed as Markdown (paste it into benchmarks/HISTORY.md, with the machine) and saved as JSON in benchmarks/results/.

Every row interleaves gbcli's runs with its peer's, so that a change in the machine's load hits both sides alike;
the median of --repeats runs is reported. Start-up and loading are outside the timed region of the in-process
rows (the peer gets the same treatment); the `compare` rows time whole processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a clean clone without installing
    sys.path.insert(0, str(REPO))

from build_models import DEFAULT_CACHE, DEFAULT_TOKENIZERS, build_bert, build_gpt2  # noqa: E402

ALL_ROWS = (
    "generate",
    "fill-mask",
    "pll",
    "compare",
    "memory",
    "pairs",
    "warm",
    "startup",
    "cold",
    "fresh-generate",
    "busy",
    "probe-extract",
    "probe-rerun",
    "probe-memory",
    "autoserve",
    "finetune",
)
PROMPT = "Once upon a time there was a little fox who lived at the edge of a quiet forest."
COMPARE_TEXT = "The capital of France is Paris."
SUBPROCESS_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"}


@dataclass
class Row:
    """One line of the table: gbcli's figure, its peer's, and how the ratio stands against the target."""

    row: str
    gbcli: str
    peer: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""
    data: dict = field(default_factory=dict)
    fresh: bool | None = None  # measured in fresh processes (None: the default of its row name, FRESH_ROWS)
    machine: dict = field(default_factory=dict)  # CPU, BLAS, threads: filled in by main() for every row


@dataclass
class Context:
    args: argparse.Namespace
    gpt_path: Path
    bert_path: Path
    bandwidth: float  # bytes per second, the best read rate measured
    rows: list[Row] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


@contextmanager
def torch_threads(count: int | None):
    import torch

    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved(sides: dict[str, Callable[[], object]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each side's call, `repeats` times, taking turns; one untimed warm-up call each first."""
    if warmup:
        for run in sides.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def memory_bandwidth() -> dict[str, float]:
    """Best read and copy rates over a 1 GiB float32 tensor (far larger than any cache), 1 thread and default."""
    import torch

    rates: dict[str, float] = {}
    a = torch.ones(256 * 1024 * 1024)
    b = torch.empty_like(a)
    for threads in sorted({1, torch.get_num_threads()}):
        with torch_threads(threads):
            read = copy = 0.0
            for _ in range(5):
                started = time.perf_counter()
                a.sum()
                read = max(read, a.nbytes / (time.perf_counter() - started))
                started = time.perf_counter()
                b.copy_(a)
                copy = max(copy, 2 * a.nbytes / (time.perf_counter() - started))
        rates[f"read_{threads}_threads"] = read
        rates[f"copy_{threads}_threads"] = copy
    rates["read"] = max(v for k, v in rates.items() if k.startswith("read_"))
    return rates


# Runs one command and reports its wall time and peak RSS. It is a small fresh process on purpose: Linux carries a
# process's memory high-water mark across fork and exec, so a command started straight from this benchmark (which
# holds models) would report this benchmark's RSS as its own peak.
LAUNCHER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "peak": peak, "code": code}, f)
"""


def run_process(command: list[str]) -> tuple[float, int, int, str]:
    """Wall seconds, peak resident memory (bytes), exit code, and stdout (stderr on failure) of one process."""
    env = {**os.environ, **SUBPROCESS_ENV}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        out, err = Path(folder) / "out", Path(folder) / "err"
        with out.open("w") as stdout, err.open("w") as stderr:
            subprocess.run(
                [sys.executable, "-c", LAUNCHER, str(report), *command],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                check=False,
                timeout=1800,
            )
        measured = json.loads(report.read_text())
        text = out.read_text() if measured["code"] == 0 else err.read_text()
    return measured["seconds"], measured["peak"], measured["code"], text


def weights_bytes(folder: Path) -> int:
    """Bytes of the tensors stored in a checkpoint (tied weights are stored, and counted, once)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            piece = f.get_slice(name)
            count = 1
            for size in piece.get_shape():
                count *= size
            total += count * {"F32": 4, "BF16": 2, "F16": 2}.get(piece.get_dtype(), 4)
    return total


# ---------------------------------------------------------------------------------------------------------------
# Inputs: deterministic English-like sentences of varied length
# ---------------------------------------------------------------------------------------------------------------

DETERMINERS = ["the", "a", "every", "one", "that", "this", "some", "my", "our", "her"]
ADJECTIVES = [
    "small",
    "old",
    "bright",
    "quiet",
    "heavy",
    "young",
    "green",
    "strange",
    "happy",
    "cold",
    "tired",
    "famous",
    "careful",
    "wooden",
    "distant",
    "little",
    "clever",
    "empty",
    "warm",
    "broken",
]
NOUNS = [
    "dog",
    "teacher",
    "river",
    "city",
    "farmer",
    "book",
    "garden",
    "child",
    "train",
    "village",
    "doctor",
    "window",
    "bird",
    "student",
    "mountain",
    "kitchen",
    "letter",
    "market",
    "horse",
    "engine",
    "song",
    "painter",
    "island",
    "bridge",
    "question",
    "table",
    "storm",
    "friend",
    "forest",
    "museum",
]
VERBS = [
    "saw",
    "found",
    "carried",
    "painted",
    "followed",
    "visited",
    "opened",
    "watched",
    "built",
    "heard",
    "cleaned",
    "described",
    "remembered",
    "crossed",
    "answered",
    "borrowed",
    "moved",
    "chose",
]
PLACES = [
    "near the station",
    "in the morning",
    "after the rain",
    "behind the school",
    "at the end of the road",
    "during the long winter",
    "by the old harbour",
    "before dinner",
    "across the valley",
    "on a sunday",
]
JOINS = ["and", "because", "while", "but", "so", "although"]


def sentences(count: int, seed: int = 0) -> list[str]:
    """`count` sentences of one to four clauses (about 8 to 45 words), the same for every run."""
    rng = random.Random(seed)

    def clause() -> str:
        words = [
            rng.choice(DETERMINERS),
            rng.choice(ADJECTIVES),
            rng.choice(NOUNS),
            rng.choice(VERBS),
            rng.choice(DETERMINERS),
            rng.choice(NOUNS),
        ]
        if rng.random() < 0.6:
            words.append(rng.choice(PLACES))
        return " ".join(words)

    made = []
    for _ in range(count):
        parts = [clause()]
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            parts += [rng.choice(JOINS), clause()]
        text = " ".join(parts)
        made.append(text[0].upper() + text[1:] + ".")
    return made


def masked_lines(count: int, mask: str = "[MASK]", seed: int = 1) -> list[str]:
    """Sentences with one word replaced by a mask (never the first word, never the final full stop)."""
    rng = random.Random(seed)
    lines = []
    for text in sentences(count, seed):
        words = text.rstrip(".").split()
        words[rng.randrange(1, len(words))] = mask
        lines.append(" ".join(words) + ".")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------


def generate_rows(ctx: Context) -> list[Row]:
    """gbcli generate (greedy, one stream) against pipeline("text-generation"), both forced to N new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.decoding_options import settings_from_options
    from gbcli.tasks.generation.causal import generate_causal

    args = ctx.args
    new = args.new_tokens
    lm = load_model("gpt", str(ctx.gpt_path), LoadOptions(device="cpu", dtype="float32"))
    settings = settings_from_options(max_new_tokens=new, greedy=True)
    # The peer is what a user writes: its own model instance, from the same folder, run by the pipeline.
    peer_model = AutoModelForCausalLM.from_pretrained(str(ctx.gpt_path), dtype=torch.float32).eval()
    peer = pipeline(
        "text-generation", model=peer_model, tokenizer=AutoTokenizer.from_pretrained(str(ctx.gpt_path)), device="cpu"
    )
    default_threads = torch.get_num_threads()
    outputs: dict[str, object] = {}

    def run_gbcli() -> None:
        outputs["gbcli"] = generate_causal(lm, PROMPT, settings)

    def run_peer(threads: int | None) -> Callable[[], None]:
        def run() -> None:
            with torch_threads(threads), torch.inference_mode():
                outputs["peer"] = peer(
                    PROMPT, max_new_tokens=new, min_new_tokens=new, do_sample=False, return_full_text=False
                )

        return run

    sides = {"gbcli": run_gbcli, f"pipeline, torch default ({default_threads} threads)": run_peer(None)}
    if default_threads > 1:
        # gbcli times its own steps and may decode on one thread when the cores are busy (StepThreads in
        # gbcli/lm/fast/threads.py): the pipeline on one thread is the other fair peer.
        sides["pipeline, 1 thread"] = run_peer(1)
    load_before = load_average()
    seconds = interleaved(sides, args.repeats)
    result = outputs["gbcli"]
    produced = result.new_tokens  # type: ignore[attr-defined]
    peer_text = outputs["peer"][0]["generated_text"]  # type: ignore[index]
    same_text = peer_text == result.continuations[0].text  # type: ignore[attr-defined]
    rates = {name: (produced if name == "gbcli" else new) / median(s) for name, s in seconds.items()}

    # The physical limit: every weight is read once per token (the tied embedding as the output projection; one row
    # of the position table), plus the KV cache of the context so far.
    config = lm.model.config
    params = {id(p): p for p in lm.model.parameters()}.values()
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    position_table = lm.model.transformer.wpe.weight
    weight_bytes -= position_table.numel() * position_table.element_size() - position_table[0].numel() * 4
    prompt_tokens = len(lm.tokenizer(PROMPT)["input_ids"])
    kv_bytes = 2 * config.n_layer * (prompt_tokens + new / 2) * config.n_embd * 4
    per_token = weight_bytes + kv_bytes
    limit = ctx.bandwidth / per_token

    rows = []
    gbcli_rate = rates["gbcli"]
    cli = cli_generate(ctx)
    for name, rate in rates.items():
        if name == "gbcli":
            continue
        first = not rows
        ratio = gbcli_rate / rate
        rows.append(
            Row(
                row=f"`generate`, greedy, {new} new tokens, one stream",
                gbcli=f"{gbcli_rate:.1f} tokens/s ({gbcli_rate / limit:.0%} of limit)",
                peer=f"{name}: {rate:.1f} tokens/s ({rate / limit:.0%} of limit)",
                ratio=ratio,
                target="≥ 1.5",
                met=ratio >= 1.5,
                note=(
                    f"limit {limit:.0f} tokens/s = {ctx.bandwidth / 1e9:.1f} GB/s ÷ {per_token / 1e6:.0f} MB read per "
                    f"token; same text as the pipeline: {'yes' if same_text else 'NO'}; gbcli produced {produced} "
                    f"tokens, on the thread count its steps timed fastest"
                )
                if first
                else "",
                data={
                    "seconds": seconds,
                    "rates": rates,
                    "bytes_per_token": per_token,
                    "limit_tokens_per_second": limit,
                    "same_text": same_text,
                    "default_threads": default_threads,
                    "load_before": load_before,
                    "load_after": load_average(),
                },
            )
        )
    if cli is not None:
        rows.append(cli)
    return rows


def cli_generate(ctx: Context) -> Row | None:
    """The exact command a user types, in a fresh process: gbcli's own tokens-per-second report (cold start)."""
    new = ctx.args.new_tokens
    command = [
        sys.executable,
        "-m",
        "gbcli",
        "generate",
        PROMPT,
        "--models",
        "gpt",
        "--greedy",
        "--max-new-tokens",
        str(new),
        "--gpt",
        str(ctx.gpt_path),
        "--dtype",
        "float32",
        "--json",
    ]
    seconds, _, code, out = run_process(command)
    if code != 0:
        return Row("`gbcli generate` CLI", "failed", "", None, "", None, note=out.strip()[-300:], fresh=True)
    column = json.loads(out)["columns"][0]
    return Row(
        row=f"`gbcli generate --models gpt --greedy --max-new-tokens {new}` (fresh process)",
        gbcli=f"{column['tokens_per_second']:.1f} tokens/s as reported",
        peer="",
        ratio=None,
        target="",
        met=None,
        note=f"{seconds:.1f} s wall for the whole command, start-up and loading included",
        data={"column_seconds": column["seconds"], "wall_seconds": seconds},
        fresh=True,
    )


def fill_mask_rows(ctx: Context) -> list[Row]:
    """gbcli fill-mask over many lines against pipeline("fill-mask") at batch size 1 and 32."""
    import torch
    from transformers import pipeline

    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.masking import fill_mask_lines

    lines = masked_lines(ctx.args.lines)
    lm = load_model("bert", str(ctx.bert_path), LoadOptions(device="cpu", dtype="float32"))
    peer = pipeline("fill-mask", model=lm.model, tokenizer=lm.tokenizer, device="cpu")
    outputs: dict[str, object] = {}

    def run_gbcli() -> None:
        outputs["gbcli"] = fill_mask_lines({"bert": lm}, lines, 5, batch_size=32)

    def run_peer(batch: int) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                outputs[f"batch {batch}"] = peer(lines, top_k=5, batch_size=batch)

        return run

    warm = lines[:8]
    fill_mask_lines({"bert": lm}, warm, 5, batch_size=32)
    peer(warm, top_k=5, batch_size=1)
    seconds = interleaved(
        {"gbcli": run_gbcli, "batch 1": run_peer(1), "batch 32": run_peer(32)}, ctx.args.heavy_repeats, warmup=False
    )
    rates = {name: len(lines) / median(s) for name, s in seconds.items()}
    agree = _fill_mask_agreement(outputs)
    rows = []
    for name, target in (("batch 1", 2.0), ("batch 32", 1.2)):
        ratio = rates["gbcli"] / rates[name]
        rows.append(
            Row(
                row=f"`fill-mask` over {len(lines)} lines (gbcli batch 32, length-sorted)",
                gbcli=f"{rates['gbcli']:.1f} lines/s",
                peer=f'pipeline("fill-mask"), {name}: {rates[name]:.1f} lines/s',
                ratio=ratio,
                target=f"≥ {target:g}",
                met=ratio >= target,
                note=agree,
                data={"seconds": seconds, "rates": rates},
            )
        )
    return rows


def _fill_mask_agreement(outputs: dict[str, object]) -> str:
    """Whether gbcli's first candidate is the pipeline's on every line: the same model must say the same thing."""
    try:
        ours = [result.masks[0].bert.predictions[0].token_ids[0] for result in outputs["gbcli"]]  # type: ignore
        theirs = [candidates[0]["token"] for candidates in outputs["batch 1"]]  # type: ignore[index]
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        return f"first candidate equal to the pipeline's on {same}/{len(theirs)} lines"
    except Exception as exc:  # the result layout belongs to masking.py; this check is a courtesy
        return f"(agreement not checked: {type(exc).__name__}: {exc})"


def pll_rows(ctx: Context) -> list[Row]:
    """gbcli's batched pseudo-log-likelihood against the naive loop: one masked copy per forward pass.

    Two rows: float32 (gbcli's default, every number the model's own) and `--dtype bfloat16`, which the issue names
    as a speed source on CPUs with native support, with its distance from float32 measured on the same sentences.
    The naive loop runs in float32, as a user would write it; its bfloat16 rate is reported beside it.
    """
    import torch

    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.scoring import ScoreSettings, score_texts

    texts = sentences(ctx.args.sentences, seed=2)
    models = {
        dtype: load_model("bert", str(ctx.bert_path), LoadOptions(device="cpu", dtype=dtype))
        for dtype in ("float32", "bfloat16")
    }
    tok = models["float32"].tokenizer
    outputs: dict[str, list[float]] = {}

    def gbcli_side(dtype: str) -> Callable[[], None]:
        def run() -> None:
            records = score_texts([models[dtype]], texts, ScoreSettings())
            outputs[f"gbcli {dtype}"] = [r.columns[0].log_likelihood for r in records]

        return run

    def naive_side(dtype: str) -> Callable[[], None]:
        model = models[dtype].model

        def run() -> None:
            totals = []
            with torch.inference_mode():
                for text in texts:
                    ids = tok(text, return_tensors="pt")["input_ids"]
                    total = 0.0
                    for position in range(1, ids.shape[1] - 1):  # every token but [CLS] and [SEP]
                        masked = ids.clone()
                        masked[0, position] = tok.mask_token_id
                        logits = model(input_ids=masked).logits[0, position]
                        total += torch.log_softmax(logits.float(), -1)[ids[0, position]].item()
                    totals.append(total)
            outputs[f"naive {dtype}"] = totals

        return run

    for dtype in models:
        score_texts([models[dtype]], texts[:2], ScoreSettings())  # warm-up
    sides = {
        f"{who} {dtype}": (gbcli_side if who == "gbcli" else naive_side)(dtype)
        for dtype in models
        for who in ("gbcli", "naive")
    }
    seconds = interleaved(sides, ctx.args.heavy_repeats, warmup=False)
    rates = {name: len(texts) / median(s) for name, s in seconds.items()}

    def largest_gap(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(outputs[a], outputs[b], strict=True))

    exact = largest_gap("gbcli float32", "naive float32")
    bf16_gap = largest_gap("gbcli bfloat16", "gbcli float32")
    bf16_relative = max(
        abs(x - y) / abs(y) for x, y in zip(outputs["gbcli bfloat16"], outputs["gbcli float32"], strict=True)
    )
    tokens = sum(len(tok(text)["input_ids"]) - 2 for text in texts)
    mean_gap = (
        sum(abs(x - y) for x, y in zip(outputs["gbcli bfloat16"], outputs["gbcli float32"], strict=True)) / tokens
    )
    label = f"pseudo-perplexity of {len(texts)} sentences (`gbcli score --models bert`)"
    rows = []
    for dtype in models:
        ratio = rates[f"gbcli {dtype}"] / rates["naive float32"]
        if dtype == "float32":
            note = f"largest difference from the naive loop in a sentence's log-likelihood: {exact:.1e} nats"
        else:
            note = (
                f"naive loop in bfloat16: {rates['naive bfloat16']:.2f} sentences/s "
                f"({rates['gbcli bfloat16'] / rates['naive bfloat16']:.2f}x); distance from float32: at most "
                f"{bf16_gap:.3f} nats in a sentence's log-likelihood ({bf16_relative:.1e} of it), "
                f"{mean_gap:.1e} nats per token on average"
            )
        rows.append(
            Row(
                row=label if dtype == "float32" else f"{label}, `--dtype bfloat16`",
                gbcli=f"{rates[f'gbcli {dtype}']:.2f} sentences/s",
                peer=f"naive loop (float32): {rates['naive float32']:.2f} sentences/s",
                ratio=ratio,
                target="≥ 5",
                met=ratio >= 5,
                note=note,
                data={
                    "seconds": seconds,
                    "rates": rates,
                    "max_abs_difference": exact if dtype == "float32" else bf16_gap,
                },
            )
        )
    return rows


# Present-tense verbs with their plural form: a pair is one agreement error, as in BLiMP's regular_plural rows.
AGREEMENT_VERBS = [
    ("sees", "see"),
    ("finds", "find"),
    ("carries", "carry"),
    ("paints", "paint"),
    ("follows", "follow"),
    ("visits", "visit"),
    ("opens", "open"),
    ("watches", "watch"),
    ("builds", "build"),
    ("hears", "hear"),
    ("cleans", "clean"),
    ("describes", "describe"),
]


def minimal_pairs(count: int, seed: int = 3) -> list[tuple[str, str]]:
    """`count` BLiMP-sized pairs (7 to 11 words): subject-verb agreement, right and wrong."""
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        right, wrong = rng.choice(AGREEMENT_VERBS)
        start = f"{rng.choice(DETERMINERS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        end = f"{rng.choice(DETERMINERS)} {rng.choice(NOUNS)}" + (
            f" {rng.choice(PLACES)}" if rng.random() < 0.5 else ""
        )
        made.append((f"{start[0].upper()}{start[1:]} {right} {end}.", f"{start[0].upper()}{start[1:]} {wrong} {end}."))
    return made


def pairs_rows(ctx: Context) -> list[Row]:
    """`gbcli pairs --file` (both sentences of each pair in shared batches) against the straightforward loop: one
    sentence at a time, GPT-2 one forward pass per sentence, BERT one masked copy per forward pass."""
    import torch

    from gbcli.loading.models import LoadOptions, load_model
    from gbcli.tasks.pairs import PairInput, iter_pair_chunks, score_pairs
    from gbcli.tasks.scoring import ScoreSettings

    pairs = minimal_pairs(ctx.args.pairs)
    inputs = [PairInput(line=k + 1, good=g, bad=b) for k, (g, b) in enumerate(pairs)]
    options = LoadOptions(device="cpu", dtype="float32")
    models = {
        "gpt": load_model("gpt", str(ctx.gpt_path), options),
        "bert": load_model("bert", str(ctx.bert_path), options),
    }
    outputs: dict[str, list[tuple[float, float]]] = {}

    def gbcli_side(family: str) -> Callable[[], None]:
        def run() -> None:
            scores = []
            for chunk in iter_pair_chunks(inputs, set(), 32):  # what `gbcli pairs --file` runs, batch size 32
                for result in score_pairs([models[family]], chunk, ScoreSettings()):
                    scores.append((result.columns[0].good, result.columns[0].bad))
            outputs[f"gbcli {family}"] = scores

        return run

    def naive_gpt(text: str) -> float:
        lm = models["gpt"]
        ids = torch.tensor([[lm.tokenizer.bos_token_id, *lm.tokenizer(text)["input_ids"]]])
        logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
        return sum(logprobs[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1]))

    def naive_bert(text: str) -> float:
        lm = models["bert"]
        ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
        total = 0.0
        for position in range(1, ids.shape[1] - 1):
            masked = ids.clone()
            masked[0, position] = lm.tokenizer.mask_token_id
            logits = lm.model(input_ids=masked).logits[0, position]
            total += torch.log_softmax(logits.float(), -1)[ids[0, position]].item()
        return total

    def naive_side(family: str) -> Callable[[], None]:
        score = naive_gpt if family == "gpt" else naive_bert

        def run() -> None:
            with torch.inference_mode():
                outputs[f"naive {family}"] = [(score(good), score(bad)) for good, bad in pairs]

        return run

    for family in models:  # warm-up, untimed
        score_pairs([models[family]], inputs[:2], ScoreSettings())
    sides = {
        f"{who} {family}": (gbcli_side if who == "gbcli" else naive_side)(family)
        for family in models
        for who in ("gbcli", "naive")
    }
    seconds = interleaved(sides, ctx.args.heavy_repeats, warmup=False)
    spent = {name: median(s) for name, s in seconds.items()}

    def gaps(family: str) -> tuple[float, float, bool]:
        mine, theirs = outputs[f"gbcli {family}"], outputs[f"naive {family}"]
        absolute = max(abs(a - b) for x, y in zip(mine, theirs, strict=True) for a, b in zip(x, y, strict=True))
        relative = max(
            abs(a - b) / abs(b) for x, y in zip(mine, theirs, strict=True) for a, b in zip(x, y, strict=True)
        )
        same_verdicts = all((x[0] > x[1]) == (y[0] > y[1]) for x, y in zip(mine, theirs, strict=True))
        return absolute, relative, same_verdicts

    rows = []
    count = len(pairs)
    for family, title in (("gpt", "GPT-2"), ("bert", "BERT"), ("both", "GPT-2 and BERT")):
        names = ["gpt", "bert"] if family == "both" else [family]
        mine = sum(spent[f"gbcli {f}"] for f in names)
        theirs = sum(spent[f"naive {f}"] for f in names)
        ratio = theirs / mine
        notes = []
        for f in names:
            absolute, relative, same = gaps(f)
            notes.append(
                f"{f}: largest difference from the loop {absolute:.1e} nats in a sentence's log-likelihood "
                f"({relative:.1e} of it), verdicts {'all the same' if same else '**differ**'}"
            )
        rows.append(
            Row(
                row=f"{count} minimal pairs through {title} (`gbcli pairs --file`)",
                gbcli=f"{count / mine:.2f} pairs/s",
                peer=f"loop, one sentence at a time: {count / theirs:.2f} pairs/s",
                ratio=ratio,
                target="≥ 3" if family == "both" else "",
                met=ratio >= 3 if family == "both" else None,
                note="; ".join(notes),
                data={"seconds": seconds},
            )
        )
    return rows


MINIMUM_SCRIPT = """
import sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
gpt, bert, text = sys.argv[1], sys.argv[2], sys.argv[3]
with torch.inference_mode():
    for path, cls in ((gpt, AutoModelForCausalLM), (bert, AutoModelForMaskedLM)):
        tok = AutoTokenizer.from_pretrained(path)
        model = cls.from_pretrained(path).eval()
        model(**tok(text, return_tensors="pt"))
"""


# The least memory any process needs that holds both models ready at once, as `compare` does: the libraries
# (torch, transformers, tokenizers: ~430 MiB resident before any weight), both tokenizers, and every weight read.
FLOOR_SCRIPT = """
import sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
gpt, bert, text = sys.argv[1], sys.argv[2], sys.argv[3]
held = []
with torch.inference_mode():
    for path, cls in ((gpt, AutoModelForCausalLM), (bert, AutoModelForMaskedLM)):
        tok = AutoTokenizer.from_pretrained(path)
        model = cls.from_pretrained(path).eval()
        model(**tok(text, return_tensors="pt"))
        held.append((tok, model))
    for tok, model in held:
        model(**tok(text, return_tensors="pt"))
"""


def compare_processes(ctx: Context) -> tuple[dict[str, list[float]], dict[str, list[int]]] | str:
    """Run `gbcli compare` and the minimum script in fresh processes, taking turns: wall seconds and peak RSS."""
    help_check = run_process([sys.executable, "-m", "gbcli", "compare", "--help"])
    if help_check[2] != 0:
        return "`gbcli compare` does not exist yet"
    commands = {
        "gbcli": [
            sys.executable,
            "-m",
            "gbcli",
            "compare",
            COMPARE_TEXT,
            "--gpt",
            str(ctx.gpt_path),
            "--bert",
            str(ctx.bert_path),
            "--json",
        ],
        "minimum": [sys.executable, "-c", MINIMUM_SCRIPT, str(ctx.gpt_path), str(ctx.bert_path), COMPARE_TEXT],
        "floor": [sys.executable, "-c", FLOOR_SCRIPT, str(ctx.gpt_path), str(ctx.bert_path), COMPARE_TEXT],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[int]] = {name: [] for name in commands}
    for command in commands.values():  # warm the page cache: both read the same files
        run_process(command)
    for _ in range(ctx.args.repeats):
        for name, command in commands.items():
            wall, peak, code, out = run_process(command)
            if code != 0:
                return f"{name} failed: {out.strip()[-300:]}"
            seconds[name].append(wall)
            peaks[name].append(peak)
    return seconds, peaks


_COMPARE_CACHE: dict[str, object] = {}


def compare_rows(ctx: Context) -> list[Row]:
    measured = _COMPARE_CACHE.setdefault("result", compare_processes(ctx))
    if isinstance(measured, str):
        return [Row("`compare` end to end", "not run", "", None, "≤ 1.3", None, note=measured)]
    seconds, _ = measured  # type: ignore[misc]
    ratio = median(seconds["gbcli"]) / median(seconds["minimum"])
    return [
        Row(
            row=f'`gbcli compare "{COMPARE_TEXT}"` end to end (fresh process)',
            gbcli=f"{median(seconds['gbcli']):.2f} s",
            peer="minimum (import torch + transformers, load both, one forward each): "
            f"{median(seconds['minimum']):.2f} s",
            ratio=ratio,
            target="≤ 1.3",
            met=ratio <= 1.3,
            data={"seconds": seconds},
        )
    ]


def memory_rows(ctx: Context) -> list[Row]:
    measured = _COMPARE_CACHE.setdefault("result", compare_processes(ctx))
    if isinstance(measured, str):
        return [Row("peak resident memory of `compare`", "not run", "", None, "≤ 1.3", None, note=measured)]
    _, peaks = measured  # type: ignore[misc]
    weights = weights_bytes(ctx.gpt_path) + weights_bytes(ctx.bert_path)
    peak = max(peaks["gbcli"])
    ratio = peak / weights
    return [
        Row(
            row="peak resident memory of `compare`",
            gbcli=f"{peak / 2**20:.0f} MiB",
            peer=f"the two models' weights: {weights / 2**20:.0f} MiB",
            ratio=ratio,
            target="≤ 1.3",
            met=ratio <= 1.3,
            note=f"gbcli runs the models one after the other and lets each go when its sections are done; a process "
            f"that holds both with every weight read peaks at {max(peaks['floor']) / 2**20:.0f} MiB "
            f"({max(peaks['floor']) / weights:.2f}x the weights: torch, transformers and the tokenizers alone are "
            f"~430 MiB), the minimum script, which lets GPT-2 go before BERT runs, at "
            f"{max(peaks['minimum']) / 2**20:.0f} MiB ({max(peaks['minimum']) / weights:.2f}x)",
            data={"peaks": peaks, "weights_bytes": weights},
        )
    ]


def _cold(name: str) -> Callable[[Context], list[Row]]:
    def rows(ctx: Context) -> list[Row]:
        import cold  # imports this module: loaded on first use

        return getattr(cold, name)(ctx)

    return rows


def _probe(name: str) -> Callable[[Context], list[Row]]:
    def rows(ctx: Context) -> list[Row]:
        import probe_rows  # imports this module: loaded on first use

        return getattr(probe_rows, name)(ctx)

    return rows


# ---------------------------------------------------------------------------------------------------------------
# Warm models (issue 12): `gbcli serve` and `gbcli shell` against the cold command
# ---------------------------------------------------------------------------------------------------------------

WARM_TEXT = "The capital of France is [MASK]."


def gbcli_command() -> list[str]:
    """The console script a user types (its start-up is part of what is measured), else `python -m gbcli`."""
    script = Path(sys.executable).with_name("gbcli")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gbcli"]


@contextmanager
def warm_server(ctx: Context):
    """A `gbcli serve` holding both models in a private runtime folder; yields (its pid, the client env)."""
    folder = Path(tempfile.mkdtemp(prefix="gbcli-bench-"))
    env = {**os.environ, **SUBPROCESS_ENV, "GBCLI_RUNTIME_DIR": str(folder / "run"), "GBCLI_NO_SERVER": ""}
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [*gbcli_command(), "serve", "--keep-alive", "never", "--gpt", str(ctx.gpt_path), "--bert", str(ctx.bert_path)],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ps = subprocess.run([*gbcli_command(), "ps", "--json"], capture_output=True, env=env, check=False)
            if ps.returncode == 0 and json.loads(ps.stdout or b"null") and json.loads(ps.stdout).get("ready"):
                break
            if server.poll() is not None:
                raise RuntimeError(f"gbcli serve exited: {(folder / 'server.log').read_text()[-300:]}")
            time.sleep(0.5)
        yield server.pid, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def timed_processes(commands: dict[str, list[str]], env: dict[str, str], repeats: int) -> dict[str, list[float]]:
    """Whole-process wall seconds of each command, taking turns, after one untimed run each."""
    saved = dict(os.environ)
    os.environ.update(env)  # run_process passes os.environ on
    try:
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():
            run_process(command)
        for _ in range(repeats):
            for name, command in commands.items():
                wall, _, code, out = run_process(command)
                if code != 0:
                    raise RuntimeError(f"{name} failed: {out.strip()[-300:]}")
                seconds[name].append(wall)
        return seconds
    finally:
        os.environ.clear()
        os.environ.update(saved)


def shell_line_seconds(ctx: Context, repeats: int) -> list[float]:
    """From writing a fill-mask line into `gbcli shell` to the last line of its table."""
    env = {**os.environ, **SUBPROCESS_ENV, "COLUMNS": "200"}
    models = ["--gpt", str(ctx.gpt_path), "--bert", str(ctx.bert_path)]
    # The shell prints what the command prints: its last line, taken from a plain run, marks the end of an answer
    # (a phrase written into this script would go stale with the next change of the table's wording).
    plain = subprocess.run(
        [*gbcli_command(), "fill-mask", WARM_TEXT, *models, "--no-server"],
        capture_output=True,
        env=env,
        check=True,
        timeout=600,
    )
    last_line = plain.stdout.rstrip().splitlines()[-1].rstrip()
    shell = subprocess.Popen(
        [*gbcli_command(), "shell", *models],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert shell.stdin is not None and shell.stdout is not None
    seconds = []
    try:
        for attempt in range(repeats + 1):  # the first line waits for the models to load: not timed
            started = time.perf_counter()
            shell.stdin.write(f'fill-mask "{WARM_TEXT}"\n'.encode())
            shell.stdin.flush()
            _read_until_line(shell, last_line, timeout=600)
            if attempt:
                seconds.append(time.perf_counter() - started)
    finally:
        shell.stdin.close()
        shell.wait(timeout=60)
    return seconds


def _read_until_line(process: subprocess.Popen, wanted: bytes, timeout: float) -> None:
    """Read the process's stdout up to a line equal to `wanted`; an error, never a hang, if it does not come."""
    assert process.stdout is not None
    fd = process.stdout.fileno()  # read the pipe itself: a buffered reader would hide lines from select()
    pending = getattr(process, "pending_output", b"")
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.rstrip() == wanted:
                process.pending_output = pending  # type: ignore[attr-defined]  # the next answer's first lines
                return
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RuntimeError(f"gbcli shell did not print {wanted[:60]!r} within {timeout:.0f} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("gbcli shell ended early")
        pending += chunk


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def warm_rows(ctx: Context) -> list[Row]:
    repeats = ctx.args.repeats
    models = ["--gpt", str(ctx.gpt_path), "--bert", str(ctx.bert_path)]
    fill = [*gbcli_command(), "fill-mask", WARM_TEXT, *models]
    compare = [*gbcli_command(), "compare", COMPARE_TEXT.replace("Paris", "[MASK]"), *models]
    with warm_server(ctx) as (pid, env):
        fill_s = timed_processes({"warm": fill, "cold": [*fill, "--no-server"]}, env, repeats)
        compare_s = timed_processes({"warm": compare, "cold": [*compare, "--no-server"]}, env, ctx.args.repeats)
        peak = peak_rss(pid)
        served = json.loads(
            subprocess.run([*gbcli_command(), "ps", "--json"], capture_output=True, env=env, check=False).stdout
            or b"null"
        )
    # Every warm run must have been answered by the server (a client of another build runs in-process instead).
    if not served or served.get("served") != 2 * (repeats + 1):
        raise RuntimeError(
            f"the server answered {served and served.get('served')} of {2 * (repeats + 1)} warm "
            "runs: was gbcli's source edited while the benchmark ran?"
        )
    line_s = shell_line_seconds(ctx, repeats)
    weights = weights_bytes(ctx.gpt_path) + weights_bytes(ctx.bert_path)
    warm_fill, cold_fill = median(fill_s["warm"]), median(fill_s["cold"])
    warm_compare, cold_compare = median(compare_s["warm"]), median(compare_s["cold"])
    return [
        Row(
            row="`gbcli fill-mask TEXT`, warm server, whole process",
            gbcli=f"{warm_fill:.3f} s",
            peer=f"the cold command (`--no-server`): {cold_fill:.2f} s",
            ratio=cold_fill / warm_fill,
            target="≤ 0.5 s and ≥ 10",
            met=warm_fill <= 0.5 and cold_fill / warm_fill >= 10,
            data={"seconds": fill_s},
        ),
        Row(
            row="a `fill-mask` line in `gbcli shell`, to its last output line",
            gbcli=f"{median(line_s):.3f} s",
            peer="",
            ratio=None,
            target="≤ 0.25 s",
            met=median(line_s) <= 0.25,
            data={"seconds": line_s},
        ),
        Row(
            row="`gbcli compare TEXT`, warm server, whole process",
            gbcli=f"{warm_compare:.3f} s",
            peer=f"the cold command (`--no-server`): {cold_compare:.2f} s",
            ratio=cold_compare / warm_compare,
            target="≥ 5",
            met=cold_compare / warm_compare >= 5,
            data={"seconds": compare_s},
        ),
        Row(
            row="peak memory of the server holding GPT-2 and BERT",
            gbcli=f"{peak / 2**20:.0f} MiB",
            peer=f"the two models' weights: {weights / 2**20:.0f} MiB",
            ratio=peak / weights,
            target="≤ 1.3",
            met=peak / weights <= 1.3,
            data={"peak": peak, "weights_bytes": weights},
            note="the server's VmHWM after the fill-mask and compare requests above; before any weight, Python, "
            "torch and transformers' GPT-2 and BERT code are ~331 MiB of it and GPT-2's tokenizer ~47 MiB",
        ),
    ]


# Ten different commands a user might type in a row at a terminal (issue 33): each a fresh process.
TYPED_COMMANDS: list[list[str]] = [
    ["fill-mask", WARM_TEXT],
    ["tokenize", COMPARE_TEXT],
    ["score", COMPARE_TEXT],
    ["pairs", "The cats sleep on the mat.", "The cats sleeps on the mat."],
    ["compare", COMPARE_TEXT.replace("Paris", "[MASK]")],
    ["lens", WARM_TEXT],
    ["context", "The cat sat on the mat.", "--change", "cat=dog"],
    ["attention", COMPARE_TEXT, "--layer", "0", "--head", "0"],
    ["generate", "Once upon a time", "--models", "gpt", "--greedy", "--max-new-tokens", "16"],
    ["saliency", WARM_TEXT],
]


def on_terminal(command: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, int, bytes]:
    """Run a command on a pseudo-terminal of its own, as a user types it: (wall seconds, exit code, what it showed)."""
    import pty

    leader, follower = pty.openpty()
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True
    )
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    code = process.wait(timeout=60)
    wall = time.perf_counter() - started
    os.close(leader)
    return wall, code, shown


@contextmanager
def terminal_user():
    """A user's terminal session in private folders (runtime, settings, state), CI unset: auto-serve is on."""
    folder = Path(tempfile.mkdtemp(prefix="gbcli-auto-"))
    env = {
        **os.environ,
        **SUBPROCESS_ENV,
        "GBCLI_NO_SERVER": "",
        "GBCLI_RUNTIME_DIR": str(folder / "run"),
        "GBCLI_CONFIG": str(folder / "config.toml"),
        "XDG_STATE_HOME": str(folder / "state"),
        "COLUMNS": "120",
    }
    for name in ("CI", "WORLD_SIZE", "LOCAL_RANK", "GBCLI_SERVER", "GBCLI_AUTO_SERVE", "GBCLI_KEEP_ALIVE"):
        env.pop(name, None)
    try:
        yield env
    finally:
        subprocess.run([*gbcli_command(), "stop"], env=env, capture_output=True, check=False, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def server_pid(env: dict[str, str]) -> int | None:
    ps = subprocess.run([*gbcli_command(), "ps", "--json"], capture_output=True, env=env, check=False)
    answer = json.loads(ps.stdout or b"null")
    return answer.get("pid") if answer else None


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def autoserve_rows(ctx: Context) -> list[Row]:
    """Issue 33: the warm server that starts by itself on a terminal, against today's cold commands.

    Wall times on a busy machine move with its load; the CPU seconds (the command's own, plus the server's for the
    command that started it) say what each side costs whatever the load.
    """
    repeats = ctx.args.repeats
    models = ["--gpt", str(ctx.gpt_path), "--bert", str(ctx.bert_path)]
    first = [*gbcli_command(), *TYPED_COMMANDS[0], *models]
    seconds: dict[str, list[float]] = {"cold": [], "first": [], "cold_cpu": [], "first_cpu": []}
    for _ in range(repeats):  # taking turns: the cold command, then the first command of a fresh session
        with terminal_user() as env:
            before = children_cpu_seconds()
            wall, code, shown = on_terminal([*first, "--no-server"], env)
            if code != 0 or server_pid(env) is not None:
                raise RuntimeError(f"the cold command failed or started a server: {shown[-300:]!r}")
            seconds["cold"].append(wall)
            seconds["cold_cpu"].append(children_cpu_seconds() - before)
        with terminal_user() as env:
            before = children_cpu_seconds()
            wall, code, shown = on_terminal(first, env)
            pid = server_pid(env)
            if code != 0 or pid is None:
                raise RuntimeError(f"the first command was not answered by a server it started: {shown[-300:]!r}")
            seconds["first"].append(wall)
            seconds["first_cpu"].append(children_cpu_seconds() - before + process_cpu_seconds(pid))
    with terminal_user() as env:
        typed_cold = [
            on_terminal([*gbcli_command(), *command, *models, "--no-server"], env)[0] for command in TYPED_COMMANDS
        ]
    with terminal_user() as env:
        typed_s = []
        for command in TYPED_COMMANDS:
            wall, code, shown = on_terminal([*gbcli_command(), *command, *models], env)
            if code != 0:
                raise RuntimeError(f"gbcli {' '.join(command)} failed: {shown[-300:]!r}")
            typed_s.append(wall)
        pid = server_pid(env)
        warm_s = [on_terminal(first, env)[0] for _ in range(repeats)]
        answer = json.loads(
            subprocess.run([*gbcli_command(), "ps", "--json"], capture_output=True, env=env, check=False).stdout
            or b"null"
        )
        peak = peak_rss(pid) if pid else 0
        held = resident_bytes(pid) if pid else 0
    if not answer or answer.get("pid") != pid or answer.get("served") != len(TYPED_COMMANDS) + repeats:
        raise RuntimeError(f"one server should have answered every command: {answer}")
    line_s = shell_line_seconds(ctx, repeats)
    weights = weights_bytes(ctx.gpt_path) + weights_bytes(ctx.bert_path)
    cold, started_first, warm, total = median(seconds["cold"]), median(seconds["first"]), median(warm_s), sum(typed_s)
    cold_cpu, first_cpu = median(seconds["cold_cpu"]), median(seconds["first_cpu"])
    allowed_total = cold + 10 * 0.6
    each = ", ".join(
        f"{command[0]} {wall:.2f} s (cold {cold_wall:.2f} s)"
        for command, wall, cold_wall in zip(TYPED_COMMANDS, typed_s, typed_cold, strict=True)
    )
    return [
        Row(
            row="10 different commands typed one after another on a terminal, total wall time",
            gbcli=f"{total:.2f} s",
            peer=f"one cold command + 10 × 0.6 s: {allowed_total:.2f} s (today, 10 cold "
            f"commands: {sum(typed_cold):.2f} s)",
            ratio=total / allowed_total,
            target="≤ 1 (of one cold command + 10 × 0.6 s)",
            met=total <= allowed_total,
            data={"seconds": typed_s, "cold_seconds": typed_cold, "commands": TYPED_COMMANDS},
            note=f"each a fresh process on a pseudo-terminal, the first starting the server: {each}",
        ),
        Row(
            row="the first of those commands (`fill-mask TEXT`, starting the server)",
            gbcli=f"{started_first:.2f} s",
            peer=f"today's cold command (`--no-server`): {cold:.2f} s",
            ratio=started_first / cold,
            target="≤ 1.05",
            met=started_first <= 1.05 * cold,
            data=seconds,
            note=f"CPU seconds, client and server together: {first_cpu:.2f} against the cold command's "
            f"{cold_cpu:.2f} ({first_cpu / cold_cpu:.2f}x)",
        ),
        Row(
            row="a warm `fill-mask TEXT` (three columns), whole process",
            gbcli=f"{warm:.3f} s",
            peer="",
            ratio=None,
            target="≤ 0.35 s",
            met=warm <= 0.35,
            data={"seconds": warm_s},
        ),
        Row(
            row="a `fill-mask` line in `gbcli shell`, to its last output line",
            gbcli=f"{median(line_s):.3f} s",
            peer="",
            ratio=None,
            target="≤ 0.25 s",
            met=median(line_s) <= 0.25,
            data={"seconds": line_s},
        ),
        Row(
            row="memory of the server holding both models (VmHWM)",
            gbcli=f"{peak / 2**20:.0f} MiB",
            peer=f"the weights + 500 MiB: {(weights + 500 * 2**20) / 2**20:.0f} MiB",
            ratio=peak / (weights + 500 * 2**20),
            target="≤ 1",
            met=peak <= weights + 500 * 2**20,
            data={"peak": peak, "resident": held, "weights_bytes": weights},
            note=f"the peak after the ten commands (saliency's gradients among them); resident once they were done: "
            f"{held / 2**20:.0f} MiB (no prepared fast form is kept: see benchmarks/README.md)",
        ),
    ]


ROW_FUNCTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "generate": generate_rows,
    "fill-mask": fill_mask_rows,
    "pll": pll_rows,
    "compare": compare_rows,
    "memory": memory_rows,
    # What one fresh command costs (issues 13 and 19): benchmarks/cold.py.
    "startup": _cold("startup_rows"),
    "cold": _cold("cold_rows"),
    "fresh-generate": _cold("fresh_generate_rows"),
    "busy": _cold("busy_rows"),
    "warm": warm_rows,
    "pairs": pairs_rows,
    "autoserve": autoserve_rows,
    # What `gbcli probe` costs (issue 30): benchmarks/probe_rows.py.
    "probe-extract": _probe("extract_rows"),
    "probe-rerun": _probe("rerun_rows"),
    "probe-memory": _probe("memory_rows"),
    "finetune": lambda ctx: __import__("finetune").finetune_rows(ctx),  # benchmarks/finetune.py (issue 31)
}
# The rows whose figures come from fresh processes (Python started for each run, as a user's command); the
# others are measured inside this benchmark's one warm process, unless a row says otherwise (Row.fresh).
FRESH_ROWS = {
    "startup",
    "cold",
    "fresh-generate",
    "busy",
    "compare",
    "memory",
    "warm",
    "probe-rerun",
    "probe-memory",
    "autoserve",
}


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def markdown(rows: list[Row], header: bool = True, notes: bool = True) -> str:
    lines = ["| row | gbcli | peer | ratio | target | met |", "|---|---|---|---|---|---|"] if header else []
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.row} | {row.gbcli} | {row.peer} | {ratio} | {row.target} | {met} |")
    remarks = list(dict.fromkeys(f"- {row.row}: {row.note}" for row in rows if row.note)) if notes else []
    return "\n".join(lines + ([""] + remarks if remarks else []))


def machine_facts() -> dict:
    """The CPU model, torch's BLAS and kernel level, its thread count and the cores: what every row is from."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    config = torch.__config__.show()
    blas = next(
        (part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")), "unknown"
    )
    capability = next(
        (line.split(":", 1)[1].strip() for line in config.splitlines() if "CPU capability" in line), "unknown"
    )
    return {
        "cpu": cpu,
        "blas": blas,
        "kernels": capability,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def machine_note(facts: dict, fresh: bool) -> str:
    """One row's machine, as its note says it: CPU, BLAS, threads, and whether the process was fresh."""
    where = "fresh process" if fresh else "one warm benchmark process"
    return (
        f"{facts['cpu']}, BLAS {facts['blas']} ({facts['kernels']}), {facts['torch_threads']} torch threads on "
        f"{facts['cores']} cores, {where}"
    )


def machine_line(bandwidth: dict[str, float]) -> str:
    import torch
    import transformers

    facts = machine_facts()
    reads = ", ".join(
        f"{k.split('_')[1]} thread(s) {v / 1e9:.1f}" for k, v in bandwidth.items() if k.startswith("read_")
    )
    cpu = f"{facts['cpu']} (BLAS {facts['blas']}, kernels {facts['kernels']})"
    return (
        f"{cpu}, {facts['cores']} cores, torch {torch.__version__} on {facts['torch_threads']} thread(s), "
        f"transformers {transformers.__version__}, Python {platform.python_version()}; memory read "
        f"bandwidth (GB/s) {reads}; load average {load_average():.1f}"
    )


def stamp(rows: list[Row], name: str, facts: dict, load: float) -> None:
    """Give each row of `name` its machine: in its saved JSON, and at the end of its printed note."""
    for row in rows:
        if row.fresh is None:
            row.fresh = name in FRESH_ROWS
        row.machine = {**facts, "fresh_process": row.fresh, "load_average_before": round(load, 2)}
        row.note = "; ".join(part for part in (row.note, machine_note(facts, row.fresh)) if part)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows",
        default=",".join(ALL_ROWS),
        help=f"comma-separated rows to run, from: {', '.join(ALL_ROWS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 32 new tokens, 100 lines, 20 sentences, 1 repeat (sizes stay full)",
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 128)")
    parser.add_argument("--lines", type=int, default=None, help="fill-mask lines (default 1000)")
    parser.add_argument("--sentences", type=int, default=None, help="pseudo-perplexity sentences (default 100)")
    parser.add_argument("--pairs", type=int, default=None, help="minimal pairs of the pairs row (default 1000)")
    parser.add_argument("--probe-sentences", type=int, default=None, help="sentences of the probe rows (default 2000)")
    parser.add_argument(
        "--finetune-examples",
        type=int,
        default=None,
        help="training examples of the finetune rows (default 512, as issue 31's table)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs per side, median reported (default 3 for generate and compare, 1 for the "
        "fill-mask and pll rows, whose 1,000 lines and 100 sentences already average)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for both sides of every row (default: torch's own choice); on a machine "
        "that other work keeps busy, 1 keeps thread teams from stalling each other",
    )
    parser.add_argument(
        "--tokenizers",
        type=Path,
        default=DEFAULT_TOKENIZERS,
        help=f"folder holding gpt2/ and bert-base-uncased/ (default {DEFAULT_TOKENIZERS})",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the random-weight models are built once (default {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results" / "latest.json",
        help="where to save the JSON results (default benchmarks/results/latest.json)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.new_tokens_given = args.new_tokens or (32 if quick else None)  # fresh rows: their own default otherwise
    args.new_tokens = args.new_tokens or (32 if quick else 128)
    args.lines = args.lines or (100 if quick else 1000)
    args.sentences = args.sentences or (20 if quick else 100)
    args.pairs = args.pairs or (50 if quick else 1000)
    args.probe_sentences = args.probe_sentences or (200 if quick else 2000)
    args.heavy_repeats = args.repeats or 1
    args.repeats = args.repeats or (1 if quick else 3)
    chosen = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in chosen if r not in ALL_ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ALL_ROWS)}")
    args.rows = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name, value in SUBPROCESS_ENV.items():
        os.environ.setdefault(name, value)
    from gbcli.loading.models import quiet_transformers

    quiet_transformers()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
        SUBPROCESS_ENV["OMP_NUM_THREADS"] = str(args.threads)  # the same for the `compare` processes
    print(f"building or finding the models in {args.models_dir} ...", file=sys.stderr)
    gpt_path = build_gpt2(args.tokenizers, args.models_dir)
    bert_path = build_bert(args.tokenizers, args.models_dir)
    bandwidth = memory_bandwidth()
    ctx = Context(args, gpt_path, bert_path, bandwidth["read"])
    machine = machine_line(bandwidth)
    print(machine, file=sys.stderr)
    facts = machine_facts()
    for name in args.rows:
        load = load_average()
        print(f"running {name} (load average {load:.1f}) ...", file=sys.stderr)
        started = time.perf_counter()
        try:
            rows = ROW_FUNCTIONS[name](ctx)
        except Exception as exc:  # one row failing (a command not written yet) must not lose the others
            rows = [Row(name, "could not run", "", None, "", None, note=f"{type(exc).__name__}: {exc}"[:300])]
        stamp(rows, name, facts, load)
        ctx.rows.extend(rows)
        print(f"  {name} took {time.perf_counter() - started:.0f} s", file=sys.stderr)
        print(markdown(rows, header=False, notes=False), file=sys.stderr)
        save(args.output, machine, bandwidth, args, ctx.rows)  # after every row: a long run keeps what it measured
    print(f"Machine: {machine}\n")
    print(markdown(ctx.rows))
    print(f"\n(saved to {args.output})", file=sys.stderr)
    return 0


def save(path: Path, machine: str, bandwidth: dict[str, float], args: argparse.Namespace, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "machine": machine,
                "bandwidth": bandwidth,
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
