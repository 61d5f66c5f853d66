"""`gbcli fill-mask`: BERT reads both sides of the blank, GPT-2 only the left; every number is the model's own."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoTokenizer, pipeline

from gbcli.lm.heads import MLM_HEADS, logits_at, model_inputs
from gbcli.loading.models import LoadedModel
from gbcli.tasks.masking import MAX_MASKS
from tests.cli_helpers import assert_user_error, run, run_installed, run_json
from tests.fixtures.tiny_models import (
    BERT_MASKED_DOG,
    BERT_MASKED_DUCK,
    BERT_MASKED_MULTI,
    MAX_POSITIONS,
    MULTI_PIECE_WORD,
)

WASP_BLANK = "the [MASK] buzzes in the park ."  # the answer, wasp, is two pieces in both tokenizers
SENTENCES = [
    BERT_MASKED_DUCK,
    BERT_MASKED_DOG,
    "the capital of [MASK] is rome .",
    "once upon a time there was a [MASK] who lived in the garden .",
    "[MASK] cow moos in the field .",
]


@pytest.fixture(scope="module")
def fill_mask_pipeline(bert):
    tokenizer, model = bert
    return pipeline("fill-mask", model=model, tokenizer=tokenizer, device="cpu")


def fill(models, *args: str) -> dict:
    return run_json("fill-mask", *args, *models)


def words(column: dict) -> list[str]:
    return [p["word"] for p in column["predictions"]]


def gpt_sentence_logprob(gpt, text: str) -> float:
    """log p(text) under GPT-2 after <|endoftext|>, every token by the chain rule: a direct model call."""
    tokenizer, model = gpt
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(1, len(ids)))


def gpt_sentence_logprobs(gpt, texts: list[str]) -> list[float]:
    """`gpt_sentence_logprob` of many texts in one right-padded forward pass."""
    tokenizer, model = gpt
    rows = [[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids, attention_mask=mask).logits.float(), -1)
    return [sum(logprobs[r, i - 1, row[i]].item() for i in range(1, len(row))) for r, row in enumerate(rows)]


# ---- the central claim -----------------------------------------------------------------------------------------


def test_bert_uses_right_context_and_gpt2_needs_the_whole_sentence(models):
    doc = fill(models, BERT_MASKED_DUCK)
    (slot,) = doc["masks"]
    assert words(slot["bert"])[0] == "duck"
    # Before the blank GPT-2 has read only "the": it cannot know the animal that quacks.
    assert words(slot["gpt_left"])[0] != "duck"
    assert slot["gpt_left"]["predictions"][0]["prob"] < 0.5
    # Reading the whole sentence, it can.
    assert words(slot["gpt_whole"])[0] == "duck"
    assert doc["fillings"][0] == {**doc["fillings"][0], "column": "bert", "text": "the duck quacks in the park ."}


def test_table_shows_the_three_views_and_where_the_right_context_changes_the_answer(models):
    result = run("fill-mask", BERT_MASKED_DUCK, *models, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for heading in ("both sides", "left context only", "whole sentence"):
        assert heading in out
    assert "right-hand context changes" in out and "'duck' once it reads the whole sentence" in out
    assert "the duck quacks in the park ." in out
    assert "␣duck" in out and "Ġ" not in out  # GPT-2's pieces read with a visible space mark
    assert result.stderr == ""


# ---- exact numbers -------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_bert_probabilities_equal_the_fill_mask_pipeline(models, fill_mask_pipeline):
    for text in SENTENCES:
        expected = fill_mask_pipeline(text, top_k=7)
        (slot,) = fill(models, text, "--top-k", "7", "--models", "bert")["masks"]
        got = slot["bert"]["predictions"]
        assert [p["token_ids"] for p in got] == [[e["token"]] for e in expected]
        for prediction, reference in zip(got, expected, strict=True):
            assert prediction["prob"] == pytest.approx(reference["score"], abs=1e-5)
            assert prediction["logprob"] == pytest.approx(math.log(reference["score"]), abs=1e-4)


def test_bert_target_probabilities_equal_the_pipeline(models, fill_mask_pipeline):
    targets = ["duck", "dog", "park", "paris"]
    for text in (BERT_MASKED_DUCK, "the capital of [MASK] is rome ."):
        expected = {e["token_str"]: e["score"] for e in fill_mask_pipeline(text, targets=targets)}
        (slot,) = fill(models, text, "--targets", ",".join(targets))["masks"]
        got = slot["bert"]["targets"]
        assert [t["word"] for t in got] == targets  # in the order given
        for target in got:
            assert target["prob"] == pytest.approx(expected[target["word"]], abs=1e-5)
        # The same words are scored in GPT-2's columns too.
        assert [t["word"] for t in slot["gpt_left"]["targets"]] == targets
        assert [t["word"] for t in slot["gpt_whole"]["targets"]] == targets


def test_several_masks_get_independent_top_k_equal_to_the_pipeline(models, fill_mask_pipeline):
    text = "once upon a time there was a [MASK] who lived in the [MASK] ."
    expected = fill_mask_pipeline(text, top_k=4)
    doc = fill(models, text, "--top-k", "4")
    assert len(doc["masks"]) == 2
    for slot, reference in zip(doc["masks"], expected, strict=True):
        got = slot["bert"]["predictions"]
        assert [p["token_ids"][0] for p in got] == [e["token"] for e in reference]
        for prediction, ref in zip(got, reference, strict=True):
            assert prediction["prob"] == pytest.approx(ref["score"], abs=1e-5)
    first, second = text.find("[MASK]"), text.rfind("[MASK]")
    assert [(s["start"], s["end"]) for s in doc["masks"]] == [(first, first + 6), (second, second + 6)]


def bert_whole_word_logprob(bert, text: str, word: str) -> tuple[list[int], float]:
    """Direct computation: the word's pieces as consecutive masks, scored left to right within the word."""
    tokenizer, model = bert
    pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
    ids = tokenizer(text)["input_ids"]
    at = ids.index(tokenizer.mask_token_id)
    total = 0.0
    for j, piece in enumerate(pieces):
        sequence = ids[:at] + pieces[:j] + [tokenizer.mask_token_id] * (len(pieces) - j) + ids[at + 1 :]
        with torch.no_grad():
            logits = model(torch.tensor([sequence])).logits[0, at + j]
        total += torch.log_softmax(logits, -1)[piece].item()
    return pieces, total


def gpt_chain_logprobs(gpt, left: str, word: str) -> tuple[list[int], list[float]]:
    """Direct computation: log p of each of the word's pieces after `left` (and after the pieces before it)."""
    tokenizer, model = gpt
    context = [tokenizer.bos_token_id] + tokenizer(left, add_special_tokens=False)["input_ids"]
    pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([context + pieces])).logits[0], -1)
    return pieces, [logprobs[len(context) + j - 1, t].item() for j, t in enumerate(pieces)]


@pytest.mark.parametrize(
    ("text", "word", "bert_pieces", "gpt_pieces"),
    [
        (WASP_BLANK, MULTI_PIECE_WORD, ["was", "##p"], ["Ġwas", "p"]),
        (BERT_MASKED_DUCK, "ducks", ["duck", "##s"], ["Ġduck", "s"]),  # "duck" alone fits; "ducks" does not
    ],
)
def test_multi_piece_target_is_scored_as_the_whole_word(
    models, bert, gpt, fill_mask_pipeline, text, word, bert_pieces, gpt_pieces
):
    (slot,) = fill(models, text, "--targets", word)["masks"]

    (target,) = slot["bert"]["targets"]
    pieces, expected = bert_whole_word_logprob(bert, text, word)
    assert target["pieces"] == bert_pieces and target["token_ids"] == pieces
    assert target["logprob"] == pytest.approx(expected, abs=1e-5)
    assert target["prob"] == pytest.approx(math.exp(expected), abs=1e-5)
    # The pipeline silently scores the first piece alone: a very different number.
    first_piece_only = fill_mask_pipeline(text, targets=[word])[0]["score"]
    assert abs(target["prob"] - first_piece_only) > 0.05

    # GPT-2, left context only: the chain rule over all the pieces.
    (left_target,) = slot["gpt_left"]["targets"]
    pieces, logprobs = gpt_chain_logprobs(gpt, text[: text.index("[MASK]")].rstrip(), word)
    assert left_target["pieces"] == gpt_pieces and left_target["token_ids"] == pieces
    assert left_target["logprob"] == pytest.approx(sum(logprobs), abs=1e-5)
    if word == "ducks":
        assert abs(sum(logprobs) - logprobs[0]) > 0.5  # the second piece weighs: it cannot have been dropped

    # GPT-2, whole sentence: the complete sentence's log-likelihood.
    (whole_target,) = slot["gpt_whole"]["targets"]
    sentence = text.replace("[MASK]", word)
    assert whole_target["sentence_logprob"] == pytest.approx(gpt_sentence_logprob(gpt, sentence), abs=1e-4)


@pytest.mark.compat
def test_whole_sentence_column_ranks_the_candidate_union_by_sentence_likelihood(models, gpt):
    doc = fill(models, BERT_MASKED_DOG, "--top-k", "3", "--targets", "cow,wasp")
    (slot,) = doc["masks"]
    shown = words(slot["bert"]) + [p["word"] for p in slot["gpt_left"]["predictions"] if not p["special"]]
    whole = slot["gpt_whole"]["predictions"]
    assert set(shown + ["cow", "wasp"]) <= {p["word"] for p in whole}  # every candidate of every column, at least
    assert sum(p["prob"] for p in whole) == pytest.approx(1.0, abs=1e-6)
    assert [p["prob"] for p in whole] == sorted((p["prob"] for p in whole), reverse=True)
    for prediction in whole:
        # A continuation piece (WordPiece ##s, GPT-2's space-less piece) joins the word before the blank.
        blank = " [MASK]" if prediction["joins_previous"] else "[MASK]"
        sentence = BERT_MASKED_DOG.replace(blank, prediction["word"])
        assert prediction["sentence_logprob"] == pytest.approx(gpt_sentence_logprob(gpt, sentence), abs=1e-4)
    totals = [p["sentence_logprob"] for p in whole]
    norm = math.log(sum(math.exp(t) for t in totals))
    for prediction in whole:
        assert prediction["prob"] == pytest.approx(math.exp(prediction["sentence_logprob"] - norm), abs=1e-6)
    assert whole[0]["word"] == "dog"


@pytest.mark.compat
def test_gpt2_left_context_is_its_next_token_distribution(models, gpt):
    (slot,) = fill(models, "the capital of [MASK] is rome .", "--top-k", "6")["masks"]
    tokenizer, model = gpt
    ids = [tokenizer.bos_token_id] + tokenizer("the capital of", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    top = probs.topk(6)
    got = slot["gpt_left"]["predictions"]
    assert [p["token_ids"][0] for p in got] == top.indices.tolist()
    for prediction, expected in zip(got, top.values.tolist(), strict=True):
        assert prediction["prob"] == pytest.approx(expected, abs=1e-5)
        assert prediction["pieces"][0].startswith("Ġ")  # the raw piece stays in the JSON


def test_joint_filling_fills_the_most_confident_mask_first(models, bert):
    doc = fill(models, BERT_MASKED_MULTI)
    bert_filling = doc["fillings"][0]
    assert bert_filling["column"] == "bert"
    assert bert_filling["text"] == "the wasp buzzes in the park ."  # "was" + "##p" join into one word
    # Independent computation: greedy over masks by confidence, re-predicting after each choice.
    tokenizer, model = bert
    ids = tokenizer(BERT_MASKED_MULTI)["input_ids"]
    open_positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    all_positions = list(open_positions)
    specials = set(tokenizer.all_special_ids)
    score, order = 0.0, []
    while open_positions:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        logprobs[:, sorted(specials)] = -math.inf
        best = max(open_positions, key=lambda p: logprobs[p].max().item())
        token = int(logprobs[best].argmax())
        score += logprobs[best, token].item()
        ids[best] = token
        order.append(all_positions.index(best))
        open_positions.remove(best)
    assert bert_filling["order"] == order
    assert bert_filling["logprob"] == pytest.approx(score, abs=1e-5)
    assert bert_filling["words"] == [tokenizer.decode([ids[p]]).removeprefix("##") for p in all_positions]
    # Each mask still has its own independent top-k.
    assert [words(s["bert"])[0] for s in doc["masks"]] == ["was", "p"]
    assert doc["masks"][1]["bert"]["predictions"][0]["joins_previous"] is True


@pytest.mark.parametrize("text", ["the [MASK] barks in the [MASK] .", "the capital of [MASK] is [MASK] ."])
def test_whole_sentence_filling_is_the_most_likely_sentence_of_the_blanks_candidates(models, gpt, text):
    """Every blank filled at once, searched as whole sentences: no combination of the blanks' candidates makes a
    sentence GPT-2 finds more likely (each blank ranked with the others held by BERT's words found "spain ...
    rome" where "peru ... lima" is likelier)."""
    doc = fill(models, text)
    by_column = {f["column"]: f for f in doc["fillings"]}
    assert set(by_column) == {"bert", "gpt_left", "gpt_whole"}
    whole = by_column["gpt_whole"]
    assert whole["logprob"] == pytest.approx(gpt_sentence_logprob(gpt, whole["text"]), abs=1e-4)
    assert "beam search" in whole["method"]
    segments = text.split("[MASK]")
    pools = [[p["text"] for p in slot["gpt_whole"]["predictions"]] for slot in doc["masks"]]
    sentences = [
        (segments[0].rstrip() + first + segments[1]).rstrip() + second + segments[2]
        for first in pools[0]
        for second in pools[1]
    ]
    assert whole["logprob"] == pytest.approx(max(gpt_sentence_logprobs(gpt, sentences)), abs=1e-4)
    assert whole["text"].split()[1] in {"dog", "peru", "capital"}
    left = by_column["gpt_left"]
    assert left["words"][0] == doc["masks"][0]["gpt_left"]["predictions"][0]["word"]


def test_angle_mask_is_mapped_to_berts_own_mask_token(models):
    square = fill(models, BERT_MASKED_DUCK, "--models", "bert")
    angle = fill(models, BERT_MASKED_DUCK.replace("[MASK]", "<mask>"), "--models", "bert")
    assert square["masks"][0]["bert"] == angle["masks"][0]["bert"]


def test_square_mask_is_mapped_to_a_roberta_models_mask_token(bart_path, tmp_path):
    """RoBERTa spells its mask <mask>; [MASK] in the text must still reach it as its own mask token."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(bart_path)  # byte-level BPE with <mask>, like roberta-base
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS + 2,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = RobertaForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    doc = run_json("fill-mask", BERT_MASKED_DUCK, "--bert", str(tmp_path), "--models", "bert")
    expected = pipeline("fill-mask", model=model, tokenizer=tokenizer)(BERT_MASKED_DUCK.replace("[MASK]", "<mask>"))
    got = doc["masks"][0]["bert"]["predictions"]
    assert [p["token_ids"][0] for p in got] == [e["token"] for e in expected]
    for prediction, reference in zip(got, expected, strict=True):
        assert prediction["prob"] == pytest.approx(reference["score"], abs=1e-5)


# ---- the vocabulary projection at the mask positions only -------------------------------------------------------


def _tiny_masked_lm(class_name: str):
    import transformers

    vocab = 50
    small = {"vocab_size": vocab, "max_position_embeddings": 32, "pad_token_id": 0}
    configs = {
        "BertForMaskedLM": (
            "BertConfig",
            {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
        ),
        "RobertaForMaskedLM": (
            "RobertaConfig",
            {
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "pad_token_id": 1,
            },
        ),
        "XLMRobertaForMaskedLM": (
            "XLMRobertaConfig",
            {
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "pad_token_id": 1,
            },
        ),
        "CamembertForMaskedLM": (
            "CamembertConfig",
            {
                "hidden_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "pad_token_id": 1,
            },
        ),
        "AlbertForMaskedLM": (
            "AlbertConfig",
            {
                "hidden_size": 16,
                "embedding_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        ),
        "DistilBertForMaskedLM": ("DistilBertConfig", {"dim": 16, "n_layers": 1, "n_heads": 2, "hidden_dim": 32}),
        "ElectraForMaskedLM": (
            "ElectraConfig",
            {
                "hidden_size": 16,
                "embedding_size": 8,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 32,
            },
        ),
        "DebertaV2ForMaskedLM": (
            "DebertaV2Config",
            {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
        ),
    }
    config_name, extra = configs[class_name]
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**{**small, **extra})
    return getattr(transformers, class_name)(config).eval()


@pytest.mark.parametrize("class_name", [*MLM_HEADS, "DebertaV2ForMaskedLM"])
def test_mask_position_logits_equal_the_full_model(class_name, bert_path):
    """The head applied at the masks only (and the generic fallback, DeBERTa) gives the model's own logits."""
    model = _tiny_masked_lm(class_name)
    tokenizer = AutoTokenizer.from_pretrained(bert_path)  # only its model_input_names matter here
    lm = LoadedModel("bert", class_name, model, tokenizer, "masked", True, torch.device("cpu"), torch.float32, 0.0)
    ids = torch.tensor([[2, 7, 9, 11, 13, 3], [2, 8, 10, 3, 1, 1]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([2, 4, 1])
    with torch.no_grad():
        got = logits_at(lm, model_inputs(lm, ids, attention), rows, cols)
        inputs = {"input_ids": ids, "attention_mask": attention}
        if class_name not in {"DistilBertForMaskedLM"}:
            inputs["token_type_ids"] = torch.zeros_like(ids)
        expected = model(**inputs).logits[rows, cols]
    assert got.shape == (3, 50)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---- files, batching --------------------------------------------------------------------------------------------


def test_file_gives_one_result_per_line_in_input_order(models, tmp_path):
    lines = [
        SENTENCES[3],  # long
        "no blank on this line",
        BERT_MASKED_DUCK,
        "",
        "the duck " * 40 + "[MASK] .",  # too long for the 64-position fixtures
        "the [MASK] [MASK] buzzes in the park .",
        BERT_MASKED_DOG,
    ]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run("fill-mask", "--file", str(path), "--json", "--batch-size", "2", *models)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    # The empty line 4 is skipped (as `score --file` skips it); the others keep their line numbers.
    assert [r["line"] for r in records] == [1, 2, 3, 5, 6, 7]
    assert [r["text"] for r in records] == [line for line in lines if line]
    errors = {r["line"]: r["error"] for r in records if r["error"]}
    assert set(errors) == {2, 5}
    assert "no mask" in errors[2] and f"at most {MAX_POSITIONS}" in errors[5]
    assert words(records[2]["masks"][0]["bert"])[0] == "duck"
    assert words(records[5]["masks"][0]["bert"])[0] == "dog"
    assert "2 of 6 lines" in result.stderr


def test_batched_results_equal_unbatched(models, tmp_path):
    lines = SENTENCES + ["the [MASK] [MASK] buzzes in the [MASK] .", "[MASK] [MASK] quacks in the yard ."]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    targets = ["--targets", "wasp,duck"]
    batched = run("fill-mask", "--file", str(path), "--json", "--batch-size", "4", *targets, *models)
    assert batched.exit_code == 0, batched.stderr
    records = [json.loads(line) for line in batched.stdout.splitlines()]
    for line, record in zip(lines, records, strict=True):
        alone = fill(models, line, *targets)
        record["line"] = None
        assert_same(record, alone)


def assert_same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{index}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-5), path
    else:
        assert a == b, path


def test_file_where_every_line_fails_is_a_usage_error_after_reporting_each(models, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("[MASK] " * 40 + "\n" + "the [MASK] " + "duck " * 80 + "\n", encoding="utf-8")
    result = run("fill-mask", "--file", str(path), "--json", *models)
    assert result.exit_code == 2
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == [1, 2]
    assert result.stderr.startswith("error: None of the 2 lines could be filled") and "hint: Line 1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_file_where_no_line_has_a_mask_is_refused_before_loading(models, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("no mask\nnor here\n", encoding="utf-8")
    assert_user_error(run("fill-mask", "--file", str(path), "--json", *models), 2, "no line of", "has a mask")


def test_file_table_has_a_row_per_line(models, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text(f"{BERT_MASKED_DUCK}\nno mask\n", encoding="utf-8")
    result = run("fill-mask", "--file", str(path), *models, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "duck" in result.stdout and "error: The text has no mask" in result.stdout


def test_stdin_text_and_stdin_file(models):
    single = run("fill-mask", "-", "--json", "--models", "bert", *models, input=BERT_MASKED_DUCK + "\n")
    assert json.loads(single.stdout)["text"] == BERT_MASKED_DUCK
    many = run(
        "fill-mask",
        "--file",
        "-",
        "--json",
        "--models",
        "bert",
        *models,
        input=f"{BERT_MASKED_DUCK}\n{BERT_MASKED_DOG}\n",
    )
    assert [json.loads(line)["line"] for line in many.stdout.splitlines()] == [1, 2]


def test_one_model_alone(models):
    bert_only = fill(models, BERT_MASKED_DUCK, "--models", "bert")
    assert bert_only["models"] == {"bert": "bert"}
    slot = bert_only["masks"][0]
    assert slot["gpt_left"] is None and slot["gpt_whole"] is None
    gpt_only = fill(models, BERT_MASKED_DUCK, "--models", "gpt", "--targets", "duck")
    slot = gpt_only["masks"][0]
    assert slot["bert"] is None
    # Without BERT the candidates are GPT-2's left-context guesses and the targets; duck still wins.
    assert words(slot["gpt_whole"])[0] == "duck"
    assert [f["column"] for f in gpt_only["fillings"]] == ["gpt_left", "gpt_whole"]


# ---- readability ------------------------------------------------------------------------------------------------


def test_pieces_are_readable_in_the_table_and_raw_in_json(models):
    args = [BERT_MASKED_MULTI, "--targets", MULTI_PIECE_WORD]
    table = run("fill-mask", *args, *models, env={"COLUMNS": "200"}).stdout
    assert "was·p (2 pieces)" in table  # WordPiece ## joined
    assert "␣wasp (2 pieces)" in table  # GPT-2's Ġ as a visible space
    assert "##" not in table and "Ġ" not in table
    doc = fill(models, *args)
    target = doc["masks"][0]["bert"]["targets"][0]
    assert target["pieces"] == ["was", "##p"]
    assert doc["masks"][0]["gpt_left"]["targets"][0]["pieces"] == ["Ġwas", "p"]


# ---- errors ---------------------------------------------------------------------------------------------------


def test_text_without_mask_is_a_usage_error(models):
    assert_user_error(run("fill-mask", "the duck quacks .", *models), 2, "no mask", "[MASK]")
    assert_user_error(run("fill-mask", "the [mask] quacks .", *models), 2, "no mask", "case-sensitive")


def test_absurd_number_of_masks_is_refused(models):
    text = " ".join(["[MASK]"] * (MAX_MASKS + 1))
    assert_user_error(run("fill-mask", text, *models), 2, f"{MAX_MASKS + 1} masks", f"at most {MAX_MASKS}")


def test_text_longer_than_the_model_names_the_limit(models):
    text = "the duck " * 40 + "[MASK] ."
    assert_user_error(run("fill-mask", text, *models), 2, f"at most {MAX_POSITIONS} tokens")
    assert_user_error(run("fill-mask", text, *models, "--models", "gpt"), 2, f"at most {MAX_POSITIONS} tokens")


def test_unknown_target_word_warns_and_is_not_scored(models):
    result = run("fill-mask", BERT_MASKED_DUCK, "--targets", "🦆,duck", "--json", *models)
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "🦆" in result.stderr and "unknown" in result.stderr
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    duck_emoji, duck = doc["masks"][0]["bert"]["targets"]
    assert duck_emoji["prob"] is None and duck["prob"] > 0.5
    (warning,) = doc["warnings"]
    assert "🦆" in warning and "bert" in warning
    # GPT-2's byte-level BPE spells any word, so it still scores the emoji, as a whole word of several pieces.
    assert doc["masks"][0]["gpt_left"]["targets"][0]["prob"] is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "no text"),
        ((BERT_MASKED_DUCK, "--file", "x.txt"), "not both"),
        ((BERT_MASKED_DUCK, "--top-k", "0"), "--top-k"),
        ((BERT_MASKED_DUCK, "--targets", " , "), "--targets"),
        ((BERT_MASKED_DUCK, "--models", "t5"), "t5"),
        (("--file", "/nonexistent/lines.txt"), "does not exist"),
    ],
)
def test_bad_usage_exits_2_with_one_message(models, args, fragment):
    assert_user_error(run("fill-mask", *args, *models), 2, fragment)


# ---- the installed command --------------------------------------------------------------------------------------


def test_installed_command_reads_stdin_lines_and_prints_json_lines(models):
    completed = run_installed(
        "fill-mask", "--file", "-", "--json", *models, input=f"{BERT_MASKED_DUCK}\nno mask\n".encode()
    )
    assert completed.returncode == 0, completed.stderr.decode()
    first, second = (json.loads(line) for line in completed.stdout.decode().splitlines())
    assert words(first["masks"][0]["bert"])[0] == "duck"
    assert words(first["masks"][0]["gpt_whole"])[0] == "duck"
    assert second["error"] and b"Traceback" not in completed.stderr


def test_footnote_states_the_multi_piece_rule_the_numbers_follow(models, bert):
    """The footnote says how a word of several pieces is scored, and the number is that rule: the chain of
    conditionals with the later pieces still masked, not the pieces masked and scored independently."""
    text = "the [MASK] buzzes in the park ."
    doc = fill(models, text, "--targets", "wasp")
    (target,) = doc["masks"][0]["bert"]["targets"]
    pieces, chained = bert_whole_word_logprob(bert, text, "wasp")
    assert len(pieces) == 2 and target["logprob"] == pytest.approx(chained, abs=1e-5)
    tokenizer, model = bert
    ids = tokenizer(text)["input_ids"]
    at = ids.index(tokenizer.mask_token_id)
    both_masked = ids[:at] + [tokenizer.mask_token_id] * 2 + ids[at + 1 :]
    with torch.no_grad():
        table = torch.log_softmax(model(torch.tensor([both_masked])).logits[0], -1)
    independent = sum(table[at + j, piece].item() for j, piece in enumerate(pieces))
    # Far enough apart for the check above (1e-5) to tell the two rules apart.
    assert abs(chained - independent) > 1e-4

    table_view = " ".join(run("fill-mask", text, "--targets", "wasp", *models, env={"COLUMNS": "200"}).stdout.split())
    assert "p(piece 1 | k masks) × p(piece 2 | piece 1 shown, the rest masked)" in table_view
    assert "p(piece 1 | left) × p(piece 2 | left, piece 1)" in table_view
    plain = run("fill-mask", BERT_MASKED_DUCK, *models, env={"COLUMNS": "200"}).stdout
    assert "piece" not in plain.split("filled in")[-1]  # no multi-piece word, no rule to state


# ---- what each number and sentence on the screen claims ---------------------------------------------------------


def test_whole_sentence_pool_is_every_columns_sixteen_most_likely(models):
    (slot,) = fill(models, "the [MASK] is the capital of italy .", "--top-k", "16")["masks"]
    (small,) = fill(models, "the [MASK] is the capital of italy .")["masks"]  # the default top-k of 5
    expected = {
        p["word"]
        for column in ("bert", "gpt_left")
        for p in slot[column]["predictions"]
        if not p["special"] and p["word"].strip()
    }
    # The ranking does not depend on how many candidates the table shows.
    assert {p["word"] for p in small["gpt_whole"]["predictions"]} == expected
    assert small["gpt_whole"]["predictions"][0]["word"] == slot["gpt_whole"]["predictions"][0]["word"]
    screen = run("fill-mask", "the [MASK] is the capital of italy .", *models, env={"COLUMNS": "80"}).stdout
    assert f"ranks among {len(small['gpt_whole']['predictions'])} candidates" in " ".join(screen.split())


def test_filled_in_scores_say_word_log_prob_or_sentence_log_likelihood(models):
    screen = run("fill-mask", BERT_MASKED_DUCK, *models, env={"COLUMNS": "80"}).stdout
    doc = fill(models, BERT_MASKED_DUCK)
    flat = " ".join(screen.split())
    by_column = {f["column"]: f["logprob"] for f in doc["fillings"]}
    assert f"Σ log p(word) {by_column['bert']:.3f}" in flat
    assert f"Σ log p(word) {by_column['gpt_left']:.3f}" in flat
    assert f"log p(sentence) {by_column['gpt_whole']:.3f}" in flat
    assert "p(sent.)" in screen


def test_two_masks_show_the_context_each_column_read(models):
    text = "the [MASK] quacks in the [MASK] ."
    doc = fill(models, text)
    first, second = doc["masks"]
    gpt_first = first["gpt_left"]["predictions"][0]["word"]
    bert_first = doc["fillings"][0]["words"][0]
    assert second["gpt_left"]["context"] == f"the {gpt_first} quacks in the ___"
    assert second["gpt_whole"]["context"] == f"the {bert_first} quacks in the ___ ."
    assert second["bert"]["context"] == text
    screen = " ".join(run("fill-mask", text, *models, env={"COLUMNS": "80"}).stdout.split())
    assert f"GPT left context only read: the {gpt_first} quacks in the ___" in screen


def test_nothing_after_the_blank_claims_no_right_hand_context_and_names_end_of_text(models):
    text = "the duck quacks in the park . [MASK]"
    (slot,) = fill(models, text)["masks"]
    top = slot["gpt_left"]["predictions"][0]
    assert top["special"] and top["word"] == "<|endoftext|>"  # the tiny GPT ends the text here
    screen = " ".join(run("fill-mask", text, *models, env={"COLUMNS": "80"}).stdout.split())
    assert "right-hand context changes" not in screen
    assert "Nothing follows the blank" in screen
    assert f"<|endoftext|> (p {top['prob']:.4f}): it would end the text here" in screen
