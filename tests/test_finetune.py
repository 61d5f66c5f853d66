"""`gbcli finetune` on the tiny GPT-2 and BERT: a bird-or-mammal task in the words the tiny models were trained on
(the generated probe tasks use words their small tokenizers only spell out letter by letter, which a few seconds
of training cannot learn), one recipe for both, every printed number checked against an independent computation:
`pipeline("text-classification")` on the saved models, scikit-learn's metrics, the language models' own
log-probabilities for the zero-shot point, Trainer's own state files."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import TRACEBACK, assert_user_error, gbcli_executable, run, run_json
from tests.fixtures.tiny_models import ANIMAL_SOUNDS

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat_extras]

BIRDS = {"duck", "owl"}
TRAIN_PLACES = ("park", "garden", "field", "yard")
DEV_PLACES = ("forest",)
PROMPT = "{text} it was a {label} ."
VERBALIZER = "bird=duck,mammal=dog"
# A recipe the tiny models learn the task with in a few seconds (the default, 2e-5 for 3 epochs of batch 32, is
# for full-size pre-trained models and 1,000s of examples).
RECIPE = ("--lr", "3e-3", "--epochs", "4", "--batch-size", "8", "--eval-every", "4", "--no-estimate")


def rows(places: tuple[str, ...]) -> list[dict[str, str]]:
    animals = [(animal, sound) for animal, sound in ANIMAL_SOUNDS if animal != "wasp"]
    return [
        {
            "text": template.format(animal=animal, sound=sound, place=place),
            "label": "bird" if animal in BIRDS else "mammal",
        }
        for animal, sound in animals
        for place in places
        for template in ("the {animal} {sound} in the {place} .", "a {animal} {sound} in the {place} .")
    ]


def write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def task_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("finetune-data")
    return write_jsonl(folder / "train.jsonl", rows(TRAIN_PLACES)), write_jsonl(folder / "dev.jsonl", rows(DEV_PLACES))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, task_files, models) -> tuple[dict, Path]:
    """Both families fine-tuned once, through the CLI, with the zero-shot point."""
    train, dev = task_files
    out = tmp_path_factory.mktemp("finetune-run") / "out"
    doc = run_json(
        "finetune",
        str(train),
        "--dev",
        str(dev),
        *models,
        *RECIPE,
        "--device",
        "cpu",
        "--prompt",
        PROMPT,
        "--verbalizer",
        VERBALIZER,
        "-o",
        str(out),
    )
    return doc, out


def family(doc: dict, name: str) -> dict:
    (found,) = [f for f in doc["families"] if f["family"] == name]
    return found


def dev_records(task_files) -> list[dict[str, str]]:
    return [json.loads(line) for line in task_files[1].read_text().splitlines()]


def test_both_families_end_above_the_majority_baseline(trained, task_files):
    doc, _ = trained
    labels = [r["label"] for r in dev_records(task_files)]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)  # train and dev are both 3:1
    assert doc["majority_baseline"] == pytest.approx(majority)
    for name in ("gpt", "bert"):
        result = family(doc, name)
        assert result["final_accuracy"] > majority, name
        assert result["curve"][0]["step"] == 0 and result["curve"][0]["examples"] == 0
        assert result["curve"][-1]["accuracy"] == result["final_accuracy"]


def test_saved_model_in_a_pipeline_gives_the_reported_dev_accuracy(trained, task_files):
    from transformers import pipeline

    doc, out = trained
    records = dev_records(task_files)
    for name in ("gpt", "bert"):
        classify = pipeline("text-classification", model=str(out / name), device="cpu")
        predicted = [p["label"] for p in classify([r["text"] for r in records], batch_size=4)]
        accuracy = sum(p == r["label"] for p, r in zip(predicted, records, strict=True)) / len(records)
        assert accuracy == pytest.approx(family(doc, name)["final_accuracy"], abs=1e-12), name


def test_curves_are_trainers_own_evaluations_and_scikit_learn_agrees(trained, task_files):
    from sklearn.metrics import f1_score, matthews_corrcoef
    from transformers import pipeline

    doc, out = trained
    records = dev_records(task_files)
    for name in ("gpt", "bert"):
        run_doc = family(doc, name)["runs"][0]
        state = json.loads((out / name / "trainer_state.json").read_text())
        evaluated = {e["step"]: e["eval_accuracy"] for e in state["log_history"] if "eval_accuracy" in e}
        assert {p["step"]: p["accuracy"] for p in run_doc["points"]} == evaluated
        assert sorted(evaluated)[:3] == [0, 4, 8]  # step 0, then every --eval-every 4
        results = json.loads((out / name / "all_results.json").read_text())
        assert results["eval_accuracy"] == run_doc["final_accuracy"]
        assert json.loads((out / name / "curves.json").read_text())["points"] == run_doc["points"]
        classify = pipeline("text-classification", model=str(out / name), device="cpu")
        predicted = [p["label"] for p in classify([r["text"] for r in records])]
        truth = [r["label"] for r in records]
        last = run_doc["points"][-1]
        assert last["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-9)
        assert last["matthews"] == pytest.approx(matthews_corrcoef(truth, predicted), abs=1e-9)


def test_zero_shot_point_equals_the_language_models_own_choice(trained, task_files, gpt, bert):
    import torch

    doc, _ = trained
    records = dev_records(task_files)
    words = {"bird": "duck", "mammal": "dog"}
    gpt_tokenizer, gpt_model = gpt
    bert_tokenizer, bert_model = bert
    expected = {"gpt": [], "bert": []}
    for record in records:
        # GPT-2: log p(" duck" | <|endoftext|> text it was a), each word one token for this tokenizer
        ids = [gpt_tokenizer.eos_token_id, *gpt_tokenizer.encode(f"{record['text']} it was a")]
        with torch.no_grad():
            logprobs = torch.log_softmax(gpt_model(torch.tensor([ids])).logits[0, -1], -1)
        score = {label: logprobs[gpt_tokenizer.encode(f" {word}")[0]].item() for label, word in words.items()}
        expected["gpt"].append(max(score, key=score.get))
        # BERT: the [MASK] in the label's place, read with the whole template around it
        encoded = bert_tokenizer(f"{record['text']} it was a [MASK] .", return_tensors="pt")
        mask = encoded["input_ids"][0].tolist().index(bert_tokenizer.mask_token_id)
        with torch.no_grad():
            logprobs = torch.log_softmax(bert_model(**encoded).logits[0, mask], -1)
        score = {label: logprobs[bert_tokenizer.convert_tokens_to_ids(word)].item() for label, word in words.items()}
        expected["bert"].append(max(score, key=score.get))
    for name in ("gpt", "bert"):
        zero = family(doc, name)["zero_shot"]
        assert zero["predictions"] == expected[name], name
        truth = [r["label"] for r in records]
        assert zero["accuracy"] == sum(p == t for p, t in zip(expected[name], truth, strict=True)) / len(truth)


def test_gpt2_padding_changes_no_logit_of_an_unpadded_example(trained):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, out = trained
    tokenizer = AutoTokenizer.from_pretrained(out / "gpt")
    model = AutoModelForSequenceClassification.from_pretrained(out / "gpt").eval()
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    short, long = "the duck quacks .", "a cow moos in the garden and the dog barks in the park ."
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        batch = tokenizer([short, long], return_tensors="pt", padding=True)
        assert batch["attention_mask"][0].tolist()[-1] == 0  # the short text was padded, on the right
        padded = model(**batch).logits[0]
        long_alone = model(**tokenizer([long], return_tensors="pt")).logits[0]
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(model(**batch).logits[1], long_alone, rtol=0, atol=1e-5)
    # The head reads the last real token: the logits differ from those at the last (pad) position.
    with torch.no_grad():
        hidden = model.transformer(**batch).last_hidden_state
    assert torch.allclose(model.score(hidden[0, (batch["attention_mask"][0].sum() - 1)]), padded, atol=1e-5)


@pytest.mark.parametrize("width", [80, 120])
def test_view_is_whole_and_reads_back_a_finished_run(trained, task_files, models, width):
    doc, out = trained
    train, dev = task_files
    shown = run(
        "finetune",
        str(train),
        "--dev",
        str(dev),
        *models,
        *RECIPE,
        "--device",
        "cpu",
        "--prompt",
        PROMPT,
        "--verbalizer",
        VERBALIZER,
        "-o",
        str(out),
        "--resume",
        env={"COLUMNS": str(width)},
    )
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    for name in ("gpt", "bert"):
        result = family(doc, name)
        title = result["title"]
        assert any(
            line.lstrip().startswith(f"{title} ") and f"{result['final_accuracy']:.3f}" in line for line in lines
        ), name
        assert f"{result['zero_shot']['accuracy']:.3f}" in shown.stdout
        assert f"{title}: dev accuracy by examples" in shown.stdout
    assert "majority baseline 0.750" in shown.stdout
    assert "already finished" in shown.stderr  # nothing was trained again


def _whole_checkpoint(folder: Path) -> bool:
    """A checkpoint whose trainer_state.json (Trainer's last file of one) is written whole."""
    for state in folder.glob("checkpoint-*/trainer_state.json"):
        try:
            json.loads(state.read_text())
            return True
        except ValueError:  # being written
            continue
    return False


def test_resume_after_a_kill_ends_as_the_uninterrupted_run(tmp_path, task_files, gpt_path):
    """Killed (SIGKILL) after its first checkpoint, then resumed: the same dev curve and the same weights, bit for
    bit, as a run never interrupted (Trainer restores weights, optimizer, schedule, RNG states and data order)."""
    from safetensors.torch import load_file

    train, dev = task_files
    args = [
        "finetune",
        str(train),
        "--dev",
        str(dev),
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        *RECIPE,
        "--epochs",
        "5",
        "--save-every",
        "4",
        "--device",
        "cpu",
    ]
    whole = run_json(*args, "-o", str(tmp_path / "whole"))
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [gbcli_executable(), *args, "-o", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not _whole_checkpoint(killed / "gpt") and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "gpt" / "curves.json").exists(), "the run ended before it could be killed"
    resumed = run_json(*args, "-o", str(killed), "--resume")
    (before,), (after,) = family(whole, "gpt")["runs"], family(resumed, "gpt")["runs"]
    assert after["resumed_from"] is not None and after["resumed_from"].startswith("checkpoint-")
    assert [(p["step"], p["accuracy"], p["train_loss"]) for p in after["points"]] == [
        (p["step"], p["accuracy"], p["train_loss"]) for p in before["points"]
    ]
    first, second = load_file(tmp_path / "whole/gpt/model.safetensors"), load_file(killed / "gpt/model.safetensors")
    assert all(first[name].equal(second[name]) for name in first)
    assert not list(killed.glob("gpt/checkpoint-*"))  # a finished run keeps no checkpoint


def test_resume_with_other_options_is_refused_and_says_what_differs(trained, task_files, models):
    _, out = trained
    train, dev = task_files
    changed = [*RECIPE[:1], "5e-3", *RECIPE[2:]]
    result = run("finetune", str(train), "--dev", str(dev), *models, *changed, "-o", str(out), "--resume")
    assert_user_error(result, 2, "learning_rate", "0.003", "0.005")
    other = write_jsonl(out.parent / "other.jsonl", rows(("park",)))
    result = run("finetune", str(other), "--dev", str(dev), *models, *RECIPE, "-o", str(out), "--resume")
    assert_user_error(result, 2, "data was")


def test_an_output_folder_with_another_run_is_refused_without_force(trained, task_files, models, tmp_path):
    _, out = trained
    train, dev = task_files
    result = run("finetune", str(train), "--dev", str(dev), *models, *RECIPE, "-o", str(out))
    assert_user_error(result, 2, "holds another fine-tuning run", "--force")
    (tmp_path / "notes.txt").write_text("mine")
    result = run("finetune", str(train), "--dev", str(dev), *models, *RECIPE, "-o", str(tmp_path), "--force")
    assert_user_error(result, 2, "holds no gbcli fine-tuning run")
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("case", "train_rows", "dev_rows", "fragment"),
    [
        ("one class", [{"text": "the duck quacks .", "label": "bird"}] * 4, None, "'bird'"),
        (
            "dev labels unseen",
            [{"text": "the duck quacks .", "label": "bird"}, {"text": "a dog barks .", "label": "mammal"}] * 3,
            [{"text": "the owl hoots .", "label": "fish"}],
            "labels the training data lacks: fish",
        ),
    ],
)
def test_bad_data_is_refused(tmp_path, models, case, train_rows, dev_rows, fragment):
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    dev = ["--dev", str(write_jsonl(tmp_path / "dev.jsonl", dev_rows))] if dev_rows else []
    result = run("finetune", str(train), *dev, *models, *RECIPE, "-o", str(tmp_path / "out"))
    assert_user_error(result, 2, fragment)
    assert not (tmp_path / "out").exists()


def test_the_shared_readers_errors_come_through(tmp_path, models):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the duck quacks ."}\n')
    assert_user_error(run("finetune", str(bad), *models, *RECIPE, "-o", str(tmp_path / "out")), 2, "label")
    assert_user_error(run("finetune", *models, *RECIPE), 2, "--task")


def test_a_model_without_a_classification_head_class_is_refused(tmp_path, gpt_path, task_files):
    from transformers import AutoTokenizer, CodeGenConfig, CodeGenForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    folder = tmp_path / "codegen"
    CodeGenForCausalLM(
        CodeGenConfig(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2, rotary_dim=8)
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    train, dev = task_files
    result = run(
        "finetune",
        str(train),
        "--dev",
        str(dev),
        "--models",
        "gpt",
        "--gpt",
        str(folder),
        *RECIPE,
        "-o",
        str(tmp_path / "out"),
    )
    assert_user_error(result, 2, "no sequence-classification head", "gpt2", "bert")


def test_out_of_memory_names_the_batch_size():
    import torch

    from gbcli.tasks.finetune.recipe import Recipe
    from gbcli.tasks.finetune.training import out_of_memory

    error = out_of_memory(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), Recipe(batch_size=32)
    )
    assert "batch size 32" in error.message and "--batch-size 16" in error.hint
    assert "batch size 8" in out_of_memory(MemoryError(), Recipe(batch_size=8)).message  # a CPU's
    other = RuntimeError("shapes do not match")
    assert out_of_memory(other, Recipe()) is other


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--set", "gpt.lr"), "FAMILY.NAME=VALUE"),
        (("--set", "gpt.speed=2"), "no recipe value"),
        (("--lr", "0"), "learning_rate must be above 0"),
        (("--threshold", "2"), "--threshold"),
        (("--prompt", "{text} {label}"), "go together"),
        (("--prompt", "{text} is", "--verbalizer", "bird=duck"), "{label} exactly once"),
        (("--seeds", "0"), "--seeds"),
    ],
)
def test_bad_options_are_refused_before_anything_loads(tmp_path, models, task_files, args, fragment):
    train, dev = task_files
    result = run("finetune", str(train), "--dev", str(dev), *models, *args, "-o", str(tmp_path / "out"))
    assert_user_error(result, 2, fragment)


def test_verbalizer_must_name_every_label(tmp_path, models, task_files):
    train, dev = task_files
    result = run(
        "finetune",
        str(train),
        "--dev",
        str(dev),
        *models,
        "--prompt",
        PROMPT,
        "--verbalizer",
        "bird=duck",
        "-o",
        str(tmp_path / "out"),
    )
    assert_user_error(result, 2, "no word for the label(s) mammal")


def test_seeds_give_an_interval_and_freeze_below_trains_only_the_top(tmp_path, task_files, bert_path):
    train, dev = task_files
    doc = run_json(
        "finetune",
        str(train),
        "--dev",
        str(dev),
        "--models",
        "bert",
        "--bert",
        str(bert_path),
        *RECIPE,
        "--epochs",
        "1",
        "--seeds",
        "2",
        "--freeze-below",
        "1",
        "-o",
        str(tmp_path / "out"),
        "--png",
        str(tmp_path / "curves.png"),
        "--set",
        "bert.eval_every=3",
    )
    result = family(doc, "bert")
    assert doc["recipe"]["bert"]["eval_every"] == 3  # --set: this family's own value
    assert [p["step"] for p in result["runs"][0]["points"]] == [0, 3, 6, 8]  # 8 steps; the last always evaluated
    finals = [r["final_accuracy"] for r in result["runs"]]
    assert [r["seed"] for r in result["runs"]] == [42, 43]
    assert result["final_accuracy"] == pytest.approx(sum(finals) / 2)
    half = 12.706 * math.sqrt(sum((f - sum(finals) / 2) ** 2 for f in finals)) / math.sqrt(2)
    assert result["final_low"] == pytest.approx(max(0.0, result["final_accuracy"] - half))
    assert (tmp_path / "out/bert/seed-43/model.safetensors").is_file()
    assert 0 < result["trained_parameters"] < result["parameters"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_processes_under_torchrun_end_with_a_valid_model_and_curves(tmp_path, task_files, bert_path):
    from transformers import pipeline

    train, dev = task_files
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gbcli",
        "finetune",
        str(train),
        "--dev",
        str(dev),
        "--models",
        "bert",
        "--bert",
        str(bert_path),
        *RECIPE,
        "--epochs",
        "2",
        "--device",
        "cpu",
        "-o",
        str(out),
        "--json",
    ]
    done = subprocess.run(
        command, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    doc = json.loads(done.stdout)  # rank 0 alone prints
    (run_doc,) = family(doc, "bert")["runs"]
    state = json.loads((out / "bert" / "trainer_state.json").read_text())
    # 64 examples, batch 8 per process and 2 processes: 4 steps an epoch
    assert state["global_step"] == 8 and run_doc["points"][-1]["step"] == 8
    assert run_doc["points"][-1]["examples"] == 128
    records = [json.loads(line) for line in dev.read_text().splitlines()]
    classify = pipeline("text-classification", model=str(out / "bert"), device="cpu")
    predicted = [p["label"] for p in classify([r["text"] for r in records])]
    accuracy = sum(p == r["label"] for p, r in zip(predicted, records, strict=True)) / len(records)
    assert accuracy == pytest.approx(run_doc["final_accuracy"])


def test_a_built_in_task_in_bfloat16_with_the_time_estimate_first(tmp_path, bert_path):
    result = run(
        "finetune",
        "--task",
        "agreement",
        "--max-train-samples",
        "32",
        "--models",
        "bert",
        "--bert",
        str(bert_path),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--dtype",
        "bfloat16",
        "--device",
        "cpu",
        "--estimate",
        "-o",
        str(tmp_path / "out"),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["data"] == "task agreement" and doc["train_examples"] == 32 and doc["dev_source"] == "held-out"
    assert "Estimated time: BERT" in result.stderr and "3 timed steps" in result.stderr
    assert family(doc, "bert")["estimated_seconds"] > 0
    config = json.loads((tmp_path / "out/bert/config.json").read_text())
    assert config["dtype"] == "float32"  # mixed precision: the weights stay float32


def test_pairs_are_encoded_as_each_family_joins_two_texts(gpt, bert):
    from gbcli.tasks.finetune.classifier import prepare_tokenizer
    from gbcli.tasks.finetune.data import Example, encode

    pair = Example("the duck quacks .", "yes", "a bird .")
    bert_tokenizer, _ = bert
    (encoded,) = encode(bert_tokenizer, [pair], {"yes": 0}, 64)
    tokens = bert_tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens.count("[SEP]") == 2 and encoded["token_type_ids"][-2] == 1  # BERT's own pair encoding
    gpt_tokenizer = prepare_tokenizer(type(gpt[0]).from_pretrained(gpt[0].name_or_path))
    (encoded,) = encode(gpt_tokenizer, [pair], {"yes": 0}, 64)
    ids = encoded["input_ids"]
    eos = gpt_tokenizer.eos_token_id
    assert ids.count(eos) == 1 and ids[-1] != eos  # joined by <|endoftext|>; the head reads the last real token
    assert gpt_tokenizer.decode(ids) == "the duck quacks .<|endoftext|>a bird ."


def test_finetune_is_never_sent_to_a_warm_server():
    from gbcli.warm.client import wants_server

    assert not wants_server(["finetune", "--task", "agreement"])
    assert wants_server(["tokenize", "hello"])  # the rule that finetune is an exception to


def _on_a_terminal(args: list[str], *, interrupt_when: Path | None = None) -> tuple[int, list[str]]:
    """Run gbcli on an 80-column pseudo-terminal; with `interrupt_when`, type Ctrl-C once that run folder holds a
    whole checkpoint.
    The exit code and every line the user can scroll back to."""
    import pty

    import pyte

    from tests.cli_helpers import read_terminal_until

    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(COLUMNS="80", LINES="24", GBCLI_NO_SERVER="1", TERM="xterm-256color", OMP_NUM_THREADS="1")
        os.environ.pop("NO_COLOR", None)
        os.execv(gbcli_executable(), ["gbcli", *args])
    output, deadline = b"", time.monotonic() + 180
    while time.monotonic() < deadline:
        output += read_terminal_until(fd, b"\x00", 0.1)
        if interrupt_when is not None and _whole_checkpoint(interrupt_when):
            os.write(fd, b"\x03")
            interrupt_when = None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            output += read_terminal_until(fd, b"\x00", 0.5)
            break
    screen = pyte.HistoryScreen(80, 24, history=10_000)
    pyte.ByteStream(screen).feed(output)
    lines = ["".join(line[i].data for i in sorted(line)).rstrip() for line in screen.history.top]
    return os.waitstatus_to_exitcode(status), lines + [line.rstrip() for line in screen.display]


def test_live_progress_then_ctrl_c_then_resume(tmp_path, task_files, gpt_path):
    """On a terminal: one bar per run with step, loss, dev accuracy and time left. Ctrl-C after a checkpoint ends
    with exit 130 and says how to go on; --resume then finishes from that checkpoint."""
    train, dev = task_files
    args = [
        "finetune",
        str(train),
        "--dev",
        str(dev),
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        *RECIPE,
        "--epochs",
        "2",
        "--device",
        "cpu",
    ]
    code, lines = _on_a_terminal([*args, "-o", str(tmp_path / "whole")])
    assert code == 0
    (bar,) = {line for line in lines if line.startswith("GPT seed 42") and "16/16" in line}
    (row,) = [line for line in lines if line.lstrip().startswith("GPT gpt")]
    final = row.split()[2]
    assert re.search(rf"16/16 loss \d\.\d{{3}} dev {re.escape(final)} 0:00:00", bar), bar
    code, lines = _on_a_terminal(
        [*args, "--save-every", "2", "-o", str(tmp_path / "cut")], interrupt_when=tmp_path / "cut/gpt"
    )
    shown = "\n".join(lines)
    assert code == 130 and TRACEBACK not in shown and "interrupted" in shown and "--resume" in shown
    resumed = run_json(*args, "--save-every", "2", "-o", str(tmp_path / "cut"), "--resume")
    (after,) = family(resumed, "gpt")["runs"]
    assert after["resumed_from"] is not None and after["points"][-1]["step"] == 16
