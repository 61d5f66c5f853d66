"""The rows of `gbcli probe` (issue 30), imported by run.py on first use.

- `probe-extract`: every layer's mean-pooled states of `--probe-sentences` sentences (default 2,000), GPT-2 and
  BERT, as `gbcli probe` computes them (batched by length, streamed into its cache in a fresh folder), against a
  plain loop calling `model(..., output_hidden_states=True)` one sentence at a time, and the same loop batched 32
  with padding (in the given order), both pooling the same way; the states are checked equal (1e-4).
- `probe-rerun`: `gbcli probe FILE` as a whole process on states already cached (2 models, 13 layers each, the
  random-init controls cached too), with other probe options than the run that filled the cache.
- `probe-memory`: the peak RSS of a process that extracts (and caches) both models' states, for a quarter of the
  sentences and for all of them: streamed to disk, the peak should not grow with the number of sentences.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from run import Context, Row, interleaved, median, run_process, sentences

EXTRACT_SCRIPT = r"""
import json, os, resource, sys, time
from gbcli.jobs.state_cache import cached_states
from gbcli.lm.hidden import TextItem, encode_inputs, stack_names
from gbcli.loading.models import LoadOptions, load_model
from benchmarks_sentences import texts
count = int(sys.argv[3])
started = time.perf_counter()
for family, path in (("gpt", sys.argv[1]), ("bert", sys.argv[2])):
    lm = load_model(family, path, LoadOptions(device="cpu", dtype="float32"), need_head=False)
    inputs = encode_inputs(lm, [TextItem(t) for t in texts(count)], "mean")
    cached_states(lm, inputs, stack_names(lm), None)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def _models(ctx: Context) -> list:
    from gbcli.loading.models import LoadOptions, load_model

    options = LoadOptions(device="cpu", dtype="float32")
    return [
        load_model("gpt", str(ctx.gpt_path), options, need_head=False),
        load_model("bert", str(ctx.bert_path), options, need_head=False),
    ]


def extract_rows(ctx: Context) -> list[Row]:
    import numpy as np
    import torch

    from gbcli.jobs.state_cache import cached_states
    from gbcli.lm.hidden import TextItem, encode_inputs, stack_names

    texts = sentences(ctx.args.probe_sentences, seed=30)
    models = _models(ctx)
    outputs: dict[str, list[np.ndarray]] = {}

    def gbcli_side() -> None:
        with tempfile.TemporaryDirectory() as folder:
            os.environ["GBCLI_CACHE_DIR"] = folder
            got = []
            for lm in models:
                inputs = encode_inputs(lm, [TextItem(t) for t in texts], "mean")
                stacks, _ = cached_states(lm, inputs, stack_names(lm), None)
                got.append(np.stack([np.asarray(layer) for layer in stacks[0]]))
            outputs["gbcli"] = got

    def own_pieces(lm, encoded) -> torch.Tensor:
        return torch.tensor(encoded["special_tokens_mask"]) == 0

    def loop_side() -> None:
        got = []
        for lm in models:
            body = lm.model.base_model
            rows = []
            with torch.inference_mode():
                for text in texts:
                    encoded = lm.tokenizer(text, return_special_tokens_mask=True)
                    keep = own_pieces(lm, encoded)
                    hidden = body(input_ids=torch.tensor([encoded["input_ids"]]), output_hidden_states=True)
                    rows.append(torch.stack([h[0, keep].mean(0) for h in hidden.hidden_states]).numpy())
            got.append(np.stack(rows, axis=1))
        outputs["loop"] = got

    def batched_side() -> None:
        got = []
        for lm in models:
            body = lm.model.base_model
            tokenizer = lm.tokenizer
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            rows = []
            with torch.inference_mode():
                for start in range(0, len(texts), 32):
                    encoded = tokenizer(
                        texts[start : start + 32], padding=True, return_tensors="pt", return_special_tokens_mask=True
                    )
                    keep = ((encoded.pop("special_tokens_mask") == 0) & (encoded["attention_mask"] == 1)).float()
                    hidden = body(**encoded, output_hidden_states=True).hidden_states
                    weights = keep / keep.sum(1, keepdim=True)
                    rows.append(torch.stack([torch.einsum("bt,bth->bh", weights, h) for h in hidden]).numpy())
            got.append(np.concatenate(rows, axis=1))
        outputs["batched"] = got

    times = interleaved(
        {"gbcli": gbcli_side, "loop": loop_side, "batched": batched_side}, repeats=ctx.args.heavy_repeats, warmup=False
    )
    agree = all(
        np.allclose(outputs["gbcli"][m], outputs[other][m], atol=1e-4, rtol=1e-4)
        for other in ("loop", "batched")
        for m in range(2)
    )
    g, loop, batched = median(times["gbcli"]), median(times["loop"]), median(times["batched"])
    count = len(texts)
    return [
        Row(
            f"hidden-state extraction, {count} sentences, every layer, GPT-2 + BERT (into the cache)",
            f"{g:.1f} s",
            f"loop, one sentence a call: {loop:.1f} s",
            loop / g,
            "≥ 3",
            loop / g >= 3,
            note=f"states equal to the loop's and the batched loop's (1e-4): {agree}",
            data={"seconds": times},
        ),
        Row(
            f"hidden-state extraction, {count} sentences (against batches of 32)",
            f"{g:.1f} s",
            f"the loop batched 32 with padding: {batched:.1f} s",
            batched / g,
            "≥ 1.2",
            batched / g >= 1.2,
        ),
    ]


def _labelled_file(folder: Path, count: int) -> Path:
    """The benchmark sentences labelled by whether they join clauses (a sentence-level task to probe)."""
    path = folder / "probe.jsonl"
    joins = (" and ", " because ", " while ", " but ", " so ", " although ")
    with path.open("w", encoding="utf-8") as stream:
        for text in sentences(count, seed=30):
            label = "compound" if any(j in text for j in joins) else "simple"
            stream.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def rerun_rows(ctx: Context) -> list[Row]:
    with tempfile.TemporaryDirectory() as folder:
        data = _labelled_file(Path(folder), ctx.args.probe_sentences)
        common = [
            sys.executable,
            "-m",
            "gbcli",
            "probe",
            str(data),
            "--gpt",
            str(ctx.gpt_path),
            "--bert",
            str(ctx.bert_path),
            "--json",
        ]
        os.environ["GBCLI_CACHE_DIR"] = str(Path(folder) / "cache")
        first, _, code, out = run_process([*common, "--seeds", "3"])
        if code != 0:
            return [
                Row("`gbcli probe` on cached states", "could not run", "", None, "≤ 5 s", None, note=out.strip()[-300:])
            ]
        reruns = []
        for _ in range(ctx.args.repeats):
            seconds, _, code, out = run_process([*common, "--seeds", "2", "--test-size", "0.2"])
            reruns.append(seconds)
        cache = json.loads(out)["cache"] if code == 0 else {}
    g = median(reruns)
    return [
        Row(
            f"`gbcli probe` again on cached states ({ctx.args.probe_sentences} sentences, 13 layers, 2 models "
            "+ random-init controls, 2 splits), whole process",
            f"{g:.1f} s",
            f"the first run, extracting and caching: {first:.1f} s",
            None,
            "≤ 5 s",
            g <= 5,
            note=f"cache on the re-run: {cache}",
            data={"reruns": reruns, "first": first},
        )
    ]


def memory_rows(ctx: Context) -> list[Row]:
    count = ctx.args.probe_sentences
    peaks = {}
    script_dir = tempfile.mkdtemp()
    Path(script_dir, "benchmarks_sentences.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\nfrom run import sentences\n"
        "def texts(count):\n    return sentences(count, seed=30)\n"
    )
    for size in (count // 4, count):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["GBCLI_CACHE_DIR"] = cache
            env_path = os.environ.get("PYTHONPATH", "")
            os.environ["PYTHONPATH"] = f"{script_dir}:{env_path}" if env_path else script_dir
            started = time.perf_counter()
            _, peak, code, out = run_process(
                [sys.executable, "-c", EXTRACT_SCRIPT, str(ctx.gpt_path), str(ctx.bert_path), str(size)]
            )
            os.environ["PYTHONPATH"] = env_path
            if code != 0:
                return [
                    Row("peak memory of extraction", "could not run", "", None, "flat", None, note=out.strip()[-300:])
                ]
            peaks[size] = (peak, time.perf_counter() - started)
    small, large = peaks[count // 4][0], peaks[count][0]
    return [
        Row(
            f"peak RSS of extracting both models' states: {count // 4} then {count} sentences",
            f"{large / 2**20:.0f} MiB for {count}",
            f"{small / 2**20:.0f} MiB for {count // 4}",
            large / small,
            "≈ 1 (independent of the count)",
            large / small <= 1.1,
            data={"peaks": peaks},
        )
    ]
