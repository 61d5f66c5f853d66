"""What a user waits for in one fresh command (issues 13 and 19), each beside its floor, side by side in one run.

    python benchmarks/run.py --rows startup,cold,fresh-generate,busy

Every process here is fresh: Python starts, imports, loads, runs and exits, as when a user types the command. The
peers are the minimum scripts a user could write with `transformers` for the same answer (import torch and
transformers, load the model and tokenizer, one forward pass or one `generate` call): gbcli should cost little
more than they do. Runs take turns (gbcli, peer, gbcli, peer ...) so that a change in the machine's load hits both,
and medians are reported.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import PROMPT, Context, Row, run_process

FILL_TEXT = "The capital of France is [MASK]."

# The minimum scripts: what a user who knows transformers would write for the same answer.
MIN_FILL_MASK = """
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1]).eval()
inputs = tokenizer(sys.argv[2], return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
position = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
print([tokenizer.decode(i) for i in logits[0, position].topk(5).indices])
"""

MIN_FIRST_TOKEN = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
inputs = tokenizer(sys.argv[2], return_tensors="pt")
with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.eos_token_id)
print(tokenizer.decode(out[0, -1:]), flush=True)
"""

PIPELINE_RATE = """
import json, sys, time
from transformers import pipeline
generator = pipeline("text-generation", model=sys.argv[1], device="cpu")
new = int(sys.argv[3])
started = time.perf_counter()
generator(sys.argv[2], max_new_tokens=new, min_new_tokens=new, do_sample=False)
print(json.dumps({"tokens_per_second": new / (time.perf_counter() - started)}))
"""

LOAD_VS_FLOOR = """
import json, sys, time
started = time.perf_counter()
import torch, transformers  # noqa: F401
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.initialization import no_init_weights
from safetensors.torch import load_file
imported = time.perf_counter()
path, way, family = sys.argv[1], sys.argv[2], sys.argv[3]
auto = AutoModelForCausalLM if family == "gpt" else AutoModelForMaskedLM
config = AutoConfig.from_pretrained(path)
auto._model_mapping[type(config)]  # the lazy modeling import, outside the timed part
ready = time.perf_counter()
if way == "gbcli":
    from gbcli.loading.models import LoadOptions, load_model
    lm = load_model(family, path, LoadOptions(device="cpu", dtype="float32"))
    model = lm.model
else:
    # The floor: build the module without initialising weights that are then overwritten, and take the
    # memory-mapped tensors as they are.
    with torch.device("meta"), no_init_weights():
        model = auto.from_config(config)
    model.load_state_dict(load_file(f"{path}/model.safetensors"), strict=False, assign=True)
    model.tie_weights()
loaded = time.perf_counter()
print(json.dumps({"load": loaded - ready}))
"""

# Peak memory of a process that loads both full-size models (the tokenizers too, on gbcli's side) and reads every
# weight once, against the same with the floor's load: what loading adds over holding the weights.
LOAD_BOTH_MEMORY = """
import json, sys
import torch, transformers  # noqa: F401
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
from transformers.initialization import no_init_weights
from safetensors.torch import load_file
way, paths = sys.argv[1], {"gpt": sys.argv[2], "bert": sys.argv[3]}
models = []
for family, path in paths.items():
    if way == "gbcli":
        from gbcli.loading.models import LoadOptions, load_model
        models.append(load_model(family, path, LoadOptions(device="cpu", dtype="float32")).model)
        continue
    auto = AutoModelForCausalLM if family == "gpt" else AutoModelForMaskedLM
    with torch.device("meta"), no_init_weights():
        model = auto.from_config(AutoConfig.from_pretrained(path))
    model.load_state_dict(load_file(f"{path}/model.safetensors"), strict=False, assign=True)
    model.tie_weights()
    AutoTokenizer.from_pretrained(path)
    models.append(model)
for model in models:  # every weight read once, as a forward pass reads it
    sum(float(t.sum()) for t in model.parameters())
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"VmHWM": int(status["VmHWM"].split()[0]) * 1024}))
"""


def _median_processes(sides: dict[str, list[str]], repeats: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Wall seconds of each side's whole process, `repeats` times in turns; the last output of each side."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, str] = {}
    for _ in range(repeats):
        for name, command in sides.items():
            wall, _, code, out = run_process(command)
            if code != 0:
                raise RuntimeError(f"{name} failed: {out.strip()[-300:]}")
            seconds[name].append(wall)
            outputs[name] = out
    return seconds, outputs


def _gbcli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gbcli", *args]


def startup_rows(ctx: Context) -> list[Row]:
    """`gbcli --help` and `gbcli score --help` against Python importing typer and rich (issue 19: under 0.3 s)."""
    repeats = max(ctx.args.repeats or 10, 10)
    sides = {
        "python": [sys.executable, "-c", "pass"],
        "typer+rich": [sys.executable, "-c", "import typer, rich"],
        "--help": [str(Path(sys.executable).with_name("gbcli")), "--help"],
        "score --help": [str(Path(sys.executable).with_name("gbcli")), "score", "--help"],
    }
    seconds, _ = _median_processes(sides, repeats)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    rows = []
    for name in ("--help", "score --help"):
        rows.append(
            Row(
                row=f"`gbcli {name}`, whole process (median of {repeats})",
                gbcli=f"{medians[name]:.3f} s",
                peer=f"{medians['typer+rich']:.3f} s (python -c 'import typer, rich')",
                ratio=None,
                target="< 0.3 s",
                met=medians[name] < 0.3,
                note=f"bare python: {medians['python']:.3f} s",
                data={"seconds": seconds[name], "peer_seconds": seconds["typer+rich"]},
            )
        )
    return rows


def cold_rows(ctx: Context) -> list[Row]:
    """Issue 13: a missing hub model fails fast; fill-mask and generate's first token cost little over the minimum."""
    repeats = ctx.args.repeats or 5
    rows = []
    # No network here: the hub id is not cached and the hub cannot be reached.
    absent = _gbcli("fill-mask", FILL_TEXT, "--models", "bert", "--bert", "gbcli-bench/not-cached")
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        completed = subprocess.run(
            absent, capture_output=True, text=True, check=False, env={**__import__("os").environ, "HF_HUB_OFFLINE": "0"}
        )
        walls.append(time.perf_counter() - started)
    wall = statistics.median(walls)
    rows.append(
        Row(
            row="an uncached hub id with no network, to its error (whole process)",
            gbcli=f"{wall:.2f} s",
            peer="",
            ratio=None,
            target="< 2 s",
            met=wall < 2 and completed.returncode == 1,
            note=completed.stderr.strip().splitlines()[0][:120] if completed.stderr else "",
            data={"seconds": walls},
        )
    )

    sides = {
        "gbcli": _gbcli("fill-mask", FILL_TEXT, "--models", "bert", "--bert", str(ctx.bert_path), "--json"),
        "minimum": [sys.executable, "-c", MIN_FILL_MASK, str(ctx.bert_path), FILL_TEXT],
    }
    seconds, _ = _median_processes(sides, repeats)
    ours, peer = statistics.median(seconds["gbcli"]), statistics.median(seconds["minimum"])
    rows.append(
        Row(
            row="`gbcli fill-mask TEXT --models bert`, whole process",
            gbcli=f"{ours:.2f} s",
            peer=f"{peer:.2f} s (minimum script)",
            ratio=ours / peer,
            target="≤ 1.2x the minimum",
            met=ours / peer <= 1.2,
            data=seconds,
        )
    )

    sides = {
        "gbcli": _gbcli(
            "generate",
            PROMPT,
            "--models",
            "gpt",
            "--gpt",
            str(ctx.gpt_path),
            "--greedy",
            "--max-new-tokens",
            "1",
            "--json",
        ),
        "minimum": [sys.executable, "-c", MIN_FIRST_TOKEN, str(ctx.gpt_path), PROMPT],
    }
    seconds, _ = _median_processes(sides, repeats)
    ours, peer = statistics.median(seconds["gbcli"]), statistics.median(seconds["minimum"])
    rows.append(
        Row(
            row="`gbcli generate --models gpt`, time to the first token (a 1-token whole process)",
            gbcli=f"{ours:.2f} s",
            peer=f"{peer:.2f} s (minimum script)",
            ratio=ours / peer,
            target="≤ 1.2x the minimum",
            met=ours / peer <= 1.2,
            data=seconds,
        )
    )

    for family, path, label in (("gpt", ctx.gpt_path, "GPT-2-small"), ("bert", ctx.bert_path, "BERT-base")):
        rows.append(_load_row(family, path, label, repeats))
    rows.append(_memory_row(ctx))
    return rows


def _load_row(family: str, path: Path, label: str, repeats: int) -> Row:
    """One model's load in a fresh process (imports excluded), gbcli against the floor, in turns."""
    loads: dict[str, list[float]] = {"gbcli": [], "floor": []}
    for _ in range(repeats):
        for way in loads:
            out = subprocess.run(
                [sys.executable, "-c", LOAD_VS_FLOOR, str(path), way, family],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            loads[way].append(json.loads(out.strip().splitlines()[-1])["load"])
    ours, floor = statistics.median(loads["gbcli"]), statistics.median(loads["floor"])
    return Row(
        row=f"loading {label} (fresh process, imports excluded)",
        gbcli=f"{ours:.2f} s",
        peer=f"{floor:.2f} s (meta-device build, no init, memory-mapped safetensors)",
        ratio=ours / floor,
        target="",
        met=None,
        note="gbcli's load keeps its checks (kind, head, missing keys, finite weights) and loads the tokenizer",
        data=loads,
    )


def _memory_row(ctx: Context) -> Row:
    """VmHWM of one process that loads GPT-2 and BERT and reads every weight, gbcli against the floor's load."""
    from run import weights_bytes

    peaks = {}
    for way in ("gbcli", "floor"):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_BOTH_MEMORY, way, str(ctx.gpt_path), str(ctx.bert_path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peaks[way] = json.loads(out.strip().splitlines()[-1])["VmHWM"]
    weights = weights_bytes(ctx.gpt_path) + weights_bytes(ctx.bert_path)
    mib = 1024 * 1024
    return Row(
        row="peak memory of a process loading GPT-2 and BERT (VmHWM)",
        gbcli=f"{peaks['gbcli'] / mib:.0f} MiB",
        peer=f"{peaks['floor'] / mib:.0f} MiB (the floor's load)",
        ratio=peaks["gbcli"] / peaks["floor"],
        target="",
        met=None,
        note=f"weights {weights / mib:.0f} MiB: gbcli {peaks['gbcli'] / weights:.2f}x, floor "
        f"{peaks['floor'] / weights:.2f}x of them",
        data={**peaks, "weights": weights},
    )


def fresh_generate_rows(ctx: Context) -> list[Row]:
    """Issue 19: the tokens/s one fresh `gbcli generate` gets, against the pipeline's in a fresh process too."""
    repeats = ctx.args.repeats or 3
    new = ctx.args.new_tokens_given or 96
    ours_rates, peer_rates = [], []
    for _ in range(repeats):
        _, _, code, out = run_process(
            _gbcli(
                "generate",
                PROMPT,
                "--models",
                "gpt",
                "--gpt",
                str(ctx.gpt_path),
                "--greedy",
                "--max-new-tokens",
                str(new),
                "--json",
            )
        )
        if code != 0:
            raise RuntimeError(out[-300:])
        ours_rates.append(json.loads(out)["columns"][0]["tokens_per_second"])
        _, _, code, out = run_process([sys.executable, "-c", PIPELINE_RATE, str(ctx.gpt_path), PROMPT, str(new)])
        if code != 0:
            raise RuntimeError(out[-300:])
        peer_rates.append(json.loads(out.strip().splitlines()[-1])["tokens_per_second"])
    ours, peer = statistics.median(ours_rates), statistics.median(peer_rates)
    return [
        Row(
            row=f"generate {new} tokens, fresh process, tokens/s as each reports it",
            gbcli=f"{ours:.1f} tokens/s",
            peer=f"{peer:.1f} tokens/s (pipeline, fresh process)",
            ratio=ours / peer,
            target="≥ 1.5x",
            met=ours / peer >= 1.5,
            data={"gbcli": ours_rates, "pipeline": peer_rates},
        )
    ]


BUSY_LOOP = "import time\nend = time.time() + float(__import__('sys').argv[1])\nwhile time.time() < end: pass\n"


def busy_rows(ctx: Context) -> list[Row]:
    """Issue 13: with one core kept busy by another process, the default threads must not lose to one thread."""
    repeats = ctx.args.repeats or 3
    new = ctx.args.new_tokens_given or 64
    rows = []
    from build_models import build_llama

    llama = build_llama(ctx.args.tokenizers, ctx.args.models_dir)
    for label, model in (("GPT-2 (written-out step)", ctx.gpt_path), ("Llama (generic path)", llama)):
        rates: dict[str, list[float]] = {"default": [], "one thread": []}
        for _ in range(repeats):
            for name in rates:
                hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, "120"])
                try:
                    time.sleep(0.5)
                    env_threads = ["env", "OMP_NUM_THREADS=1"] if name == "one thread" else []
                    command = [
                        *env_threads,
                        *_gbcli(
                            "generate",
                            PROMPT,
                            "--models",
                            "gpt",
                            "--gpt",
                            str(model),
                            "--max-new-tokens",
                            str(new),
                            "--greedy",
                            "--json",
                        ),
                    ]
                    with tempfile.TemporaryFile() as out:
                        subprocess.run(command, stdout=out, stderr=subprocess.DEVNULL, check=True)
                        out.seek(0)
                        rates[name].append(json.loads(out.read())["columns"][0]["tokens_per_second"])
                finally:
                    hog.kill()
                    hog.wait()
        ours, one = statistics.median(rates["default"]), statistics.median(rates["one thread"])
        rows.append(
            Row(
                row=f"generate with one core kept busy, {label}",
                gbcli=f"{ours:.1f} tokens/s (default threads)",
                peer=f"{one:.1f} tokens/s (OMP_NUM_THREADS=1)",
                ratio=ours / one,
                target="≥ 0.9x one thread",
                met=ours / one >= 0.9,
                data=rates,
            )
        )
    return rows
