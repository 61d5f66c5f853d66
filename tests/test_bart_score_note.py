"""BART's score footnote says which special tokens were scored: the ones its tokenizer added, or none."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.cli_helpers import run, run_json

TEXT = "rome is the capital of italy ."


@pytest.fixture(scope="module")
def bart_without_special_tokens(tmp_path_factory, bart_path):
    """The tiny BART with a GPT-2 tokenizer over the same byte-level vocabulary, with no post-processor: it adds
    no <s> or </s>."""
    folder = tmp_path_factory.mktemp("bart-plain-tokenizer") / "bart"
    shutil.copytree(bart_path, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    config_path.write_text(json.dumps(config))
    tokenizer_path = folder / "tokenizer.json"
    tokenizer = json.loads(tokenizer_path.read_text())
    tokenizer["post_processor"] = None  # the step that would wrap every text in <s> ... </s>
    tokenizer_path.write_text(json.dumps(tokenizer))
    return folder


def _reconstruction_logprob(folder, text: str) -> float:
    """log p(x | x) by the model's own loss: teacher-forced on the tokenizer's ids after the decoder start."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return -loss.item() * ids.shape[1]


def test_footnote_names_the_special_tokens_the_tokenizer_added(bart_path):
    shown = run("score", TEXT, "--models", "bart", "--bart", str(bart_path), env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.stderr
    assert "every token scored, <s> and </s> included" in shown.stdout


def test_footnote_says_no_special_tokens_and_leaks_no_raw_piece(bart_without_special_tokens):
    folder = bart_without_special_tokens
    assert (
        AutoTokenizer.from_pretrained(folder)(TEXT)["input_ids"][0]
        not in AutoTokenizer.from_pretrained(folder).all_special_ids
    )  # the premise: the text's own first piece comes first
    shown = run("score", TEXT, "--models", "bart", "--bart", str(folder), env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.stderr
    assert "the tokenizer adds no special tokens" in shown.stdout
    assert "Ġ" not in shown.stdout and "rome and" not in shown.stdout
    assert "from <s> to </s>" not in shown.stdout
    column = run_json("score", TEXT, "--models", "bart", "--bart", str(folder))["columns"][0]
    assert column["first_token"].startswith("every token scored (the tokenizer adds no special tokens)")
    assert column["log_likelihood"] == pytest.approx(_reconstruction_logprob(folder, TEXT), abs=1e-3)
