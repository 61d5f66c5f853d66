"""Never a silent wrong number: a broken model or a quirk of the input is refused, or gives the right number.

Each test here would have caught one way the tool printed a wrong number with exit 0 (issue 17): a model folder
without tokenizer files, NaN weights or overflowing logits, `--file` lines split on U+2028 and form feeds, and a
byte-order mark read as text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gbcli.loading.checkpoint_checks import tokenizer_covers_embeddings
from tests.cli_helpers import assert_user_error, run
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, DUCK_SENTENCE

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)


def _copy_without_tokenizer(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*TOKENIZER_FILES))
    return target


def _with_weights(source: Path, target: Path, change) -> Path:
    """A copy of a model folder whose weights `change(weights)` edited in place."""
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    change(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def _records(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# 1. A model folder without its tokenizer
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt", "bert", "bart"])
def test_a_model_folder_without_tokenizer_files_is_refused(family, tiny_models, tmp_path):
    """transformers 5 would put an empty default tokenizer there (BERT's has 5 tokens: every word [UNK])."""
    folder = _copy_without_tokenizer(tiny_models[family], tmp_path / f"{family}-no-tokenizer")
    for command in (("score", DUCK_SENTENCE), ("tokenize", DUCK_SENTENCE)):
        result = run(*command, "--models", family, f"--{family}", str(folder))
        assert_user_error(result, 1, "no tokenizer files", "tokenizer.save_pretrained")


def test_a_tokenizer_far_smaller_than_the_embeddings_is_refused(gpt_path, tmp_path):
    """The tokenizer of another, smaller model: ids would land on the wrong embedding rows."""
    model = AutoModelForCausalLM.from_pretrained(gpt_path)
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    model.resize_token_embeddings(1000)  # 412 tokens, 1,000 rows: not padding, not a few reserved rows
    model.save_pretrained(tmp_path / "big-vocab")
    tokenizer.save_pretrained(tmp_path / "big-vocab")
    result = run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(tmp_path / "big-vocab"))
    assert_user_error(result, 1, "only 412 tokens", "1000", "do not belong together")


def test_embeddings_padded_to_a_multiple_of_64_are_accepted(gpt_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(gpt_path)
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    model.resize_token_embeddings(448)  # 412 tokens padded to 7 × 64 rows, as many real checkpoints are
    model.save_pretrained(tmp_path / "padded")
    tokenizer.save_pretrained(tmp_path / "padded")
    (record,) = _records(run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(tmp_path / "padded"), "--json"))
    assert record["columns"][0]["scored_tokens"] == len(tokenizer(DUCK_SENTENCE)["input_ids"])


@pytest.mark.parametrize(
    ("tokens", "rows", "belong"),
    [
        (50257, 50257, True),  # GPT-2
        (50265, 50272, True),  # OPT: padded to a multiple of 8
        (32100, 32128, True),  # T5: padded to a multiple of 128
        (50277, 50304, True),  # Pythia: padded to a multiple of 128
        (50295, 51200, True),  # Phi-2: 905 rows kept in reserve (1.8 %)
        (151665, 151936, True),  # Qwen2
        (5, 145, False),  # the empty default BERT tokenizer against the tiny BERT's embeddings
        (1, 412, False),  # the empty default GPT-2 tokenizer
        (5, 128, False),  # a multiple of 64, but the tokenizer covers almost none of it
        (30522, 50265, False),  # BERT's tokenizer with RoBERTa's embeddings
        (50258, 50257, False),  # more tokens than rows: an id without an embedding
    ],
)
def test_which_tokenizer_sizes_belong_to_which_embeddings(tokens, rows, belong):
    assert tokenizer_covers_embeddings(tokens, rows) is belong


# ---------------------------------------------------------------------------------------------------------------
# 2. Non-finite weights and logits
# ---------------------------------------------------------------------------------------------------------------


def _first_layer_weight(weights: dict) -> str:
    return next(name for name in sorted(weights) if ("layer" in name or ".h." in name) and name.endswith("weight"))


@pytest.fixture(scope="module")
def nan_models(tmp_path_factory, tiny_models) -> dict[str, tuple[Path, str]]:
    """Each tiny model with one NaN in a weight of its first layer: (folder, the tensor's name)."""
    root = tmp_path_factory.mktemp("nan-models")
    made = {}
    for family in ("gpt", "bert", "bart"):
        names: list[str] = []

        def poison(weights, names=names):
            names.append(_first_layer_weight(weights))
            weights[names[0]].view(-1)[3] = float("nan")

        made[family] = (_with_weights(tiny_models[family], root / family, poison), names[0])
    return made


@pytest.mark.parametrize("family", ["gpt", "bert", "bart"])
def test_nan_weights_are_refused_naming_the_tensor(family, nan_models):
    folder, tensor = nan_models[family]
    for command in (("score", DUCK_SENTENCE), ("fill-mask", BERT_MASKED_DUCK), ("attention", DUCK_SENTENCE)):
        result = run(*command, "--models", family, f"--{family}", str(folder), "--json")
        assert_user_error(result, 1, "hold NaN", tensor)


@pytest.fixture(scope="module")
def overflowing_gpt(tmp_path_factory, gpt_path) -> Path:
    """Finite weights whose arithmetic overflows float32 (3.4e38).

    The final layer norm's gain and bias are 3e38, so its outputs and the logits are infinite; the first layer
    norm's gain is 1e30, so that q·k overflows and the eager attention weights (what `attention` reads) are NaN.
    """

    def blow_up(weights):
        weights["transformer.h.0.ln_1.weight"] *= 1e30
        weights["transformer.ln_f.weight"].fill_(3e38)
        weights["transformer.ln_f.bias"].fill_(3e38)

    return _with_weights(gpt_path, tmp_path_factory.mktemp("overflow") / "gpt", blow_up)


@pytest.mark.parametrize(
    "command",
    [
        ("score", DUCK_SENTENCE),
        ("score", DUCK_SENTENCE, "--csv"),
        ("fill-mask", BERT_MASKED_DUCK),
        ("generate", "the duck", "--greedy", "--max-new-tokens", "2"),
        ("generate", "the duck", "--num-beams", "2", "--max-new-tokens", "2"),
        ("attention", DUCK_SENTENCE),
        ("compare", DUCK_SENTENCE),
        ("lens", "the duck"),
        ("saliency", "the [MASK] quacks"),
        ("pairs", DUCK_SENTENCE, "the dog quacks in the park ."),
    ],
)
def test_non_finite_numbers_are_an_error_never_printed(command, overflowing_gpt):
    # The model itself does produce NaN: what the tool must not do is print it.
    model = AutoModelForCausalLM.from_pretrained(overflowing_gpt)
    tokenizer = AutoTokenizer.from_pretrained(overflowing_gpt)
    with torch.no_grad():
        logits = model(**tokenizer(DUCK_SENTENCE, return_tensors="pt")).logits
    assert not torch.isfinite(logits).all()
    for output in ((), ("--json",)):
        if "--csv" in command and output:
            continue
        result = run(*command, *output, "--models", "gpt", "--gpt", str(overflowing_gpt))
        assert_user_error(result, 1, "GPT model", str(overflowing_gpt), "NaN")
        assert "nan" not in result.stdout.lower()


# ---------------------------------------------------------------------------------------------------------------
# 3 and 4. Lines as `wc -l` counts them, and the byte-order mark
# ---------------------------------------------------------------------------------------------------------------

# Characters str.splitlines() would split on, inside sentences: each must stay in its line.
INSIDE_LINE = [
    "the duck\u2028 quacks .",
    "the duck\x0c quacks .",
    "the duck\x85 quacks .",
    "the duck\x1c quacks .",
    "the duck\x0b quacks .",
    "the duck\r quacks .",
]


def test_file_lines_are_what_wc_counts(tmp_path, gpt_path):
    lines = [*INSIDE_LINE, DUCK_SENTENCE]
    data = ("\n".join(lines[:3]) + "\r\n" + "\n".join(lines[3:]) + "\n").encode()
    (tmp_path / "lines.txt").write_bytes(data)
    records = _records(
        run("score", "--file", str(tmp_path / "lines.txt"), "--models", "gpt", "--gpt", str(gpt_path), "--json")
    )
    assert len(records) == data.count(b"\n") == len(lines)  # `wc -l`
    assert [r["index"] for r in records] == list(range(1, len(lines) + 1))
    assert [r["text"] for r in records] == lines
    # The last line is scored as itself, not shifted: the same number as the sentence given as an argument.
    (alone,) = _records(run("score", DUCK_SENTENCE, "--models", "gpt", "--gpt", str(gpt_path), "--json"))
    assert records[-1]["columns"][0]["value"] == pytest.approx(alone["columns"][0]["value"], rel=1e-6)


def test_fill_mask_file_lines_keep_their_numbers(tmp_path, bert_path):
    (tmp_path / "lines.txt").write_text(f"the duck\u2028 quacks [MASK] .\n{BERT_MASKED_DUCK}\n", encoding="utf-8")
    records = _records(
        run("fill-mask", "--file", str(tmp_path / "lines.txt"), "--models", "bert", "--bert", str(bert_path), "--json")
    )
    assert [(r["line"], r["text"]) for r in records] == [(1, "the duck\u2028 quacks [MASK] ."), (2, BERT_MASKED_DUCK)]


def test_a_byte_order_mark_is_not_text(tmp_path, gpt_path, bert_path):
    """The same sentence on lines 1 (after the BOM) and 2 gets the same score and the same tokens."""
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + f"{DUCK_SENTENCE}\n{DUCK_SENTENCE}\n".encode())
    models = ("--gpt", str(gpt_path), "--bert", str(bert_path))
    first, second = _records(run("score", "--file", str(tmp_path / "bom.txt"), *models, "--json"))
    (plain,) = _records(run("score", DUCK_SENTENCE, *models, "--json"))
    (stdin,) = _records(run("score", "-", *models, "--json", input=b"\xef\xbb\xbf" + DUCK_SENTENCE.encode()))
    assert first["text"] == second["text"] == stdin["text"] == DUCK_SENTENCE
    for record in (first, second, stdin):
        for column, expected in zip(record["columns"], plain["columns"], strict=True):
            assert column["scored_tokens"] == expected["scored_tokens"]
            assert column["value"] == pytest.approx(expected["value"], rel=1e-6)
    tokens = json.loads(run("tokenize", "-", *models, "--json", input=b"\xef\xbb\xbfduck").stdout)
    plain = json.loads(run("tokenize", "duck", *models, "--json").stdout)
    assert tokens == plain


def test_an_input_byte_order_mark_in_the_middle_is_kept(tmp_path, gpt_path):
    """Only a leading BOM is an encoding marker; U+FEFF later in the text is a character the user wrote."""
    (tmp_path / "mid.txt").write_bytes(f"{DUCK_SENTENCE}\n\ufeff{DUCK_SENTENCE}\n".encode())
    _, second = _records(
        run("score", "--file", str(tmp_path / "mid.txt"), "--models", "gpt", "--gpt", str(gpt_path), "--json")
    )
    assert second["text"] == "\ufeff" + DUCK_SENTENCE


# ---------------------------------------------------------------------------------------------------------------
# [UNK]: a number about a token the user did not write
# ---------------------------------------------------------------------------------------------------------------


def test_bert_scoring_an_unknown_token_is_warned_about(tiny_models):
    models = ("--gpt", str(tiny_models["gpt"]), "--bert", str(tiny_models["bert"]))
    result = run("score", DUCK_SENTENCE, "the duck 🦆 quacks .", *models, "--json")
    records = _records(result)
    bert = [next(c for c in r["columns"] if c["family"] == "bert") for r in records]
    assert [c["unknown_tokens"] for c in bert] == [0, 1]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "BERT" in warnings[0] and "[UNK]" in warnings[0] and "text 2 " in warnings[0]
    clean = run("score", DUCK_SENTENCE, *models)
    assert clean.exit_code == 0 and "warning" not in clean.stderr
