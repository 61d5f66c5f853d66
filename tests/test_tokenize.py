"""`gbcli tokenize`: both tokenizers side by side, aligned by the characters each piece covers."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tests.cli_helpers import assert_user_error, column_of, run, run_json
from tests.fixtures.tiny_models import MULTI_PIECE_SENTENCE

TEXT = "the wasp buzzes in the park ."


@pytest.mark.compat
def test_ids_are_the_tokenizers_own(gpt_path, bert_path, models):
    doc = run_json("tokenize", TEXT, *models)
    for family, path in (("gpt", gpt_path), ("bert", bert_path)):
        expected = AutoTokenizer.from_pretrained(path)(TEXT)["input_ids"]
        column = column_of(doc, family)
        assert [p["id"] for p in column["pieces"]] == expected
        assert column["text_tokens"] + column["added_tokens"] == len(expected)
    assert column_of(doc, "bert")["added_tokens"] == 2  # [CLS] and [SEP]
    assert column_of(doc, "gpt")["added_tokens"] == 0


@pytest.mark.compat
def test_offsets_point_at_the_characters_of_each_piece(gpt_path, models):
    text = "the  wasp buzzes, in the park ."  # a double space and a comma the corpus never had
    doc = run_json("tokenize", text, *models)
    gpt_tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    for piece in column_of(doc, "gpt")["pieces"]:
        assert piece["text"] == text[piece["start"] : piece["end"]]
        assert gpt_tokenizer.convert_tokens_to_string([piece["piece"]]) == piece["text"]
    for piece in column_of(doc, "bert")["pieces"]:
        if piece["added"]:
            assert piece["start"] == piece["end"]
            continue
        assert piece["text"] == text[piece["start"] : piece["end"]]
        assert piece["piece"].removeprefix("##") == piece["text"]  # lower-case text: WordPiece keeps it as is


def test_multi_piece_word_shows_space_mark_and_continuation_mark(models):
    doc = run_json("tokenize", MULTI_PIECE_SENTENCE, *models)
    assert [p["shown"] for p in column_of(doc, "gpt")["pieces"]][1:3] == ["␣was", "p"]
    assert [p["shown"] for p in column_of(doc, "bert")["pieces"]][2:4] == ["was", "·p"]


def test_alignment_rows_hold_the_pieces_that_cover_the_same_characters(models):
    doc = run_json("tokenize", TEXT, *models)
    columns = {c["family"]: c for c in doc["columns"]}
    seen = {family: [] for family in columns}
    for span in doc["spans"]:
        assert span["text"] == TEXT[span["start"] : span["end"]]
        for family, positions in span["pieces"].items():
            seen[family] += positions
            for position in positions:
                piece = columns[family]["pieces"][position]
                if not piece["added"]:
                    assert span["start"] <= piece["start"] and piece["end"] <= span["end"]
    # every piece appears in exactly one row, in order
    for family, column in columns.items():
        assert seen[family] == list(range(len(column["pieces"])))
    rows = {span["text"]: span["pieces"] for span in doc["spans"]}
    gpt, bert = columns["gpt"]["pieces"], columns["bert"]["pieces"]
    assert [gpt[i]["piece"] for i in rows[" was"]["gpt"]] == ["Ġwas"]
    assert [bert[i]["piece"] for i in rows[" was"]["bert"]] == ["was"]
    assert [bert[i]["piece"] for i in rows["p"]["bert"]] == ["##p"]
    # [CLS] and [SEP] sit in rows of their own, before and after the text
    assert doc["spans"][0]["text"] == "" and doc["spans"][0]["pieces"] == {"bert": [0]}
    assert doc["spans"][-1]["pieces"] == {"bert": [len(bert) - 1]}


def test_pieces_of_different_lengths_are_grouped_until_both_models_agree_on_a_boundary(models):
    text = "the duck 日本 ."
    doc = run_json("tokenize", text, *models)
    rows = {span["text"]: span["pieces"] for span in doc["spans"]}
    # GPT-2 spends three byte pieces on each CJK character, BERT one [UNK]; the row is one character wide.
    assert len(rows["日"]["gpt"]) == 3 and len(rows["日"]["bert"]) == 1
    shown = [column_of(doc, "gpt")["pieces"][i]["shown"] for i in rows["日"]["gpt"]]
    assert all(s.startswith("\\x") for s in shown)


def test_unknown_characters_are_marked_for_wordpiece_only(models):
    doc = run_json("tokenize", "the duck 日 .", *models)
    bert, gpt = column_of(doc, "bert"), column_of(doc, "gpt")
    assert bert["unknown_tokens"] == 1
    (unknown,) = [p for p in bert["pieces"] if p["unknown"]]
    assert unknown["piece"] == "[UNK]" and unknown["text"] == "日"
    assert gpt["unknown_tokens"] == 0  # byte-level BPE can spell any character


def test_special_tokens_are_labelled_and_a_literal_one_is_not_added(models):
    doc = run_json("tokenize", "the [MASK] quacks <|endoftext|>", *models)
    bert, gpt = column_of(doc, "bert")["pieces"], column_of(doc, "gpt")["pieces"]
    assert [(p["piece"], p["added"]) for p in bert if p["special"]] == [
        ("[CLS]", True),
        ("[MASK]", False),
        ("[SEP]", True),
    ]
    # GPT-2's <|endoftext|> doubles as its unknown token: written literally it is special, not unknown.
    (eot,) = [p for p in gpt if p["special"]]
    assert eot["piece"] == "<|endoftext|>" and not eot["unknown"] and not eot["added"]


def test_human_view_shows_pieces_ids_counts_and_labels(models):
    result = run("tokenize", "the wasp 日", *models, env={"COLUMNS": "140"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for fragment in (
        "byte-level BPE",
        "WordPiece",
        "␣was",
        "·p",
        "[CLS] added",
        "[UNK] unknown",
        "GPT ids:",
        "BERT ids:",
    ):
        assert fragment in out, fragment


def test_one_model_only_and_stdin(models):
    doc = run_json("tokenize", "-", "--models", "bert", *models, input="the duck\n")
    assert [c["family"] for c in doc["columns"]] == ["bert"]
    assert doc["text"] == "the duck"


def test_empty_text_is_a_usage_error(models):
    assert_user_error(run("tokenize", "   ", *models), 2, "empty")
    assert_user_error(run("tokenize", "the", "--models", "t5", *models), 2, "t5")


def test_the_command_prints_json(models):
    # In-process (Typer's app itself): the console script's own path is held by test_startup and test_signals.
    completed = run("tokenize", "the duck", "--json", *models)
    assert completed.exit_code == 0, completed.stderr
    doc = json.loads(completed.stdout)
    assert [c["family"] for c in doc["columns"]] == ["gpt", "bert"]
