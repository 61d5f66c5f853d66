"""`gbcli pairs`: minimal pairs, each model's verdict checked against direct model calls, word alignment, files of
pairs with accuracy per phenomenon, bad lines, and --output with --resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time

import pytest
import torch

from gbcli.tasks.pairs import align_words
from gbcli.tasks.scoring import WordScore
from tests.cli_helpers import TRACEBACK, assert_user_error, column_of, gbcli_executable, run
from tests.fixtures.tiny_models import ANIMAL_SOUNDS, DUCK_SENTENCE, PLACES
from tests.helpers_reference import naive_pll

BAD_DUCK = "the duck barks in the park ."
LONGER_BAD = "the duck barks loudly in the park ."


def _pair(*args: str) -> dict:
    result = run("pairs", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _gpt_log_likelihood(gpt, text: str) -> float:
    tokenizer, model = gpt
    ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return math.fsum(logprobs[t - 1, ids[t]].item() for t in range(1, len(ids)))


def _bart_reconstruction(bart, text: str) -> float:
    """log p(x | x) from transformers' own loss: labels = the text, shifted right behind the decoder start."""
    tokenizer, model = bart
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return -loss.item() * ids.shape[1]


# ---------------------------------------------------------------------------------------------------------------
# One pair
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_each_model_prefers_the_true_sentence_by_its_own_score(gpt, bert, bart, models, bart_path):
    record = _pair(DUCK_SENTENCE, BAD_DUCK, *models, "--with-bart", "--bart", str(bart_path))
    expected = {
        "gpt": (_gpt_log_likelihood, "log-likelihood", gpt),
        "bert": (lambda bert, text: math.fsum(naive_pll(bert, text)), "pseudo-log-likelihood", bert),
        "bart": (_bart_reconstruction, "reconstruction log-likelihood", bart),
    }
    for family, (score, measure, model) in expected.items():
        column = column_of(record, family)
        good, bad = score(model, DUCK_SENTENCE), score(model, BAD_DUCK)
        assert column["measure"] == measure
        assert (column["good"], column["bad"]) == pytest.approx((good, bad), abs=1e-4)
        assert column["difference"] == pytest.approx(good - bad, abs=1e-4)
        assert (column["prefers"], column["correct"]) == ("good", True)
        assert column["unit"] == "nats"
    assert column_of(record, "gpt")["conventions"]["bos"] is True
    assert column_of(record, "bert")["conventions"]["pll"] == "original"


def test_bits_and_no_bos_change_the_numbers_as_score_does(gpt, models):
    record = _pair(DUCK_SENTENCE, BAD_DUCK, "--bits", "--no-bos", "--models", "gpt", *models)
    tokenizer, model = gpt
    column = column_of(record, "gpt")

    def without_bos(text: str) -> float:
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        return math.fsum(logprobs[t - 1, ids[t]].item() for t in range(1, len(ids))) / math.log(2)

    assert column["good"] == pytest.approx(without_bos(DUCK_SENTENCE), abs=1e-4)
    assert column["conventions"] == {**column["conventions"], "unit": "bits", "bos": False}
    assert column["words"][0]["good_surprisal"] is None  # the first word has no left context


def test_words_are_aligned_across_sentences_of_different_lengths(models):
    record = _pair(DUCK_SENTENCE, LONGER_BAD, *models)
    for family in ("gpt", "bert"):
        column = column_of(record, family)
        rows = column["words"]
        assert [r["op"] for r in rows] == ["equal", "equal", "replace", "insert", "equal", "equal", "equal", "equal"]
        assert [r["good"] for r in rows] == ["the", "duck", "quacks", None, "in", "the", "park", "."]
        assert [r["bad"] for r in rows] == LONGER_BAD.split()
        # Each side is that sentence's own word surprisals, as `score --words` gives them.
        for side, text in (("good", DUCK_SENTENCE), ("bad", LONGER_BAD)):
            scored = run("score", text, "--words", "--models", family, *models, "--json")
            words = json.loads(scored.stdout)["columns"][0]["words"]
            mine = [r[f"{side}_surprisal"] for r in rows if r[side] is not None]
            assert mine == pytest.approx([w["surprisal"] for w in words], abs=1e-5)
        for row in rows:
            if row["good"] is not None and row["bad"] is not None:
                assert row["difference"] == pytest.approx(row["bad_surprisal"] - row["good_surprisal"], abs=1e-9)
            else:
                assert row["difference"] is None


def test_gpt2_is_untouched_before_the_difference_while_bert_reads_it_from_the_right(models):
    columns = _pair(DUCK_SENTENCE, BAD_DUCK, *models)["columns"]
    gpt, bert = (column_of({"columns": columns}, f) for f in ("gpt", "bert"))
    # "duck" comes before "quacks"/"barks": GPT-2 sees only the left context, so nothing changes there ...
    assert [r["difference"] for r in gpt["words"][:2]] == [0.0, 0.0]
    # ... BERT reads "barks" when it predicts "duck", and is surprised already.
    assert bert["words"][1]["difference"] > 1.0
    assert gpt["words"][2]["difference"] > 1.0 and gpt["words"][2]["op"] == "replace"


def test_align_words_deletion_and_unequal_replacement():
    def words(text: str) -> list[WordScore]:
        return [WordScore(i, w, 0, 0, [i], -float(i + 1), float(i + 1)) for i, w in enumerate(text.split())]

    rows = align_words(words("a b c d"), words("a x y d e"))
    assert [(r.op, r.good, r.bad) for r in rows] == [
        ("equal", "a", "a"),
        ("replace", "b", "x"),
        ("replace", "c", "y"),
        ("equal", "d", "d"),
        ("insert", None, "e"),
    ]
    rows = align_words(words("a b c"), words("a c"))
    assert [(r.op, r.good, r.bad, r.difference) for r in rows] == [
        ("equal", "a", "a", 0.0),
        ("delete", "b", None, None),
        ("equal", "c", "c", 2.0 - 3.0),
    ]


def test_the_view_fits_80_columns_and_names_its_conventions(models):
    result = run("pairs", DUCK_SENTENCE, LONGER_BAD, *models, "--bits", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    out = " ".join(result.stdout.split())
    for fragment in (
        "pseudo-log-likelihood",
        "good ✓",
        "surprisal per word (bits)",
        "unit bits",
        "GPT --bos",
        "BERT --pll original",
        "loudly",
        "Δ = bad − good",
        "different quantities",
    ):
        assert fragment in out, fragment


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        ([DUCK_SENTENCE, DUCK_SENTENCE], 2, "identical"),
        ([DUCK_SENTENCE, " "], 2, "empty"),
        ([DUCK_SENTENCE], 2, "two sentences"),
        ([DUCK_SENTENCE, BAD_DUCK, "--file", "x.tsv"], 2, "not both"),
        ([DUCK_SENTENCE, BAD_DUCK, "--pll", "sideways"], 2, "Unknown --pll"),
        (["--file", "x.tsv", "--resume"], 2, "--resume needs --output"),
        (["--file", "does-not-exist.tsv"], 2, "does not exist"),
    ],
)
def test_usage_errors(models, args, code, fragment):
    assert_user_error(run("pairs", *args, *models, "--json"), code, fragment)


# ---------------------------------------------------------------------------------------------------------------
# Files of pairs
# ---------------------------------------------------------------------------------------------------------------

SOUNDS = [s for _, s in ANIMAL_SOUNDS]


def corpus_pairs(count: int) -> list[dict]:
    """True sentences of the corpus, each against the same sentence with another animal's sound."""
    pairs = []
    for k in range(count):
        animal, sound = ANIMAL_SOUNDS[k % len(ANIMAL_SOUNDS)]
        wrong = SOUNDS[(k + 1 + k // len(ANIMAL_SOUNDS)) % len(SOUNDS)]
        wrong = wrong if wrong != sound else SOUNDS[(k + 2) % len(SOUNDS)]
        place = PLACES[k % len(PLACES)]
        pairs.append(
            {
                "sentence_good": f"the {animal} {sound} in the {place} .",
                "sentence_bad": f"the {animal} {wrong} in the {place} .",
                "UID": "sound_agreement" if k % 2 == 0 else "sound_agreement_b",
                "field": "semantics",
                "pair_id": k,
            }
        )
    return pairs


def _write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.compat
def test_accuracy_per_model_and_per_uid_from_a_blimp_style_file(tmp_path, models):
    file = _write_jsonl(tmp_path / "pairs.jsonl", corpus_pairs(8))
    result = run("pairs", "--file", file, *models, "--json", "--batch-size", "3")
    assert result.exit_code == 0, result.stderr
    *records, summary = _lines(result.stdout)
    assert [r["kind"] for r in records] == ["pair"] * 8 and summary["kind"] == "summary"
    assert [r["line"] for r in records] == list(range(1, 9))
    assert all(c["correct"] for r in records for c in r["columns"])  # the trained models prefer the true sentence
    assert [(a["family"], a["correct"], a["total"], a["accuracy"]) for a in summary["overall"]] == [
        ("gpt", 8, 8, 1.0),
        ("bert", 8, 8, 1.0),
    ]
    assert summary["group_field"] == "UID"
    assert [(g["group"], [a["total"] for a in g["models"]]) for g in summary["groups"]] == [
        ("sound_agreement", [4, 4]),
        ("sound_agreement_b", [4, 4]),
    ]
    assert (records[0]["uid"], records[0]["field"], records[0]["pair_id"]) == ("sound_agreement", "semantics", 0)
    # Batched with other pairs, each pair gets the numbers it gets alone.
    alone = _pair(records[4]["good"], records[4]["bad"], *models, "--no-words")
    for mine, single in zip(records[4]["columns"], alone["columns"], strict=True):
        assert (mine["good"], mine["bad"]) == pytest.approx((single["good"], single["bad"]), abs=1e-5)


def test_accuracy_counts_a_wrong_preference(tmp_path, models):
    pairs = corpus_pairs(3)
    pairs[1]["sentence_good"], pairs[1]["sentence_bad"] = pairs[1]["sentence_bad"], pairs[1]["sentence_good"]
    result = run("pairs", "--file", _write_jsonl(tmp_path / "p.jsonl", pairs), *models, "--json")
    *records, summary = _lines(result.stdout)
    assert [c["prefers"] for c in records[1]["columns"]] == ["bad", "bad"]
    assert [(a["correct"], a["total"]) for a in summary["overall"]] == [(2, 3), (2, 3)]
    view = run("pairs", "--file", _write_jsonl(tmp_path / "p.jsonl", pairs), *models, env={"COLUMNS": "80"})
    assert "66.7% (2/3)" in view.stdout and max(len(x) for x in view.stdout.splitlines()) <= 80


def test_tsv_with_and_without_header_and_chosen_field_names(tmp_path, models):
    pairs = corpus_pairs(2)
    plain = tmp_path / "plain.tsv"
    plain.write_text("".join(f"{p['sentence_good']}\t{p['sentence_bad']}\n" for p in pairs), encoding="utf-8")
    headed = tmp_path / "headed.txt"
    headed.write_text(
        "phenomenon\tgood\tbad\n" + "".join(f"animals\t{p['sentence_good']}\t{p['sentence_bad']}\n" for p in pairs),
        encoding="utf-8",
    )
    custom = _write_jsonl(
        tmp_path / "custom.jsonl", [{"ok": p["sentence_good"], "ko": p["sentence_bad"], "kind": "x"} for p in pairs]
    )
    first = _lines(run("pairs", "--file", str(plain), *models, "--json").stdout)
    second = _lines(
        run("pairs", "--file", str(headed), "--good-field", "good", "--bad-field", "bad", *models, "--json").stdout
    )
    third = _lines(
        run(
            "pairs",
            "--file",
            custom,
            "--good-field",
            "ok",
            "--bad-field",
            "ko",
            "--group-field",
            "kind",
            *models,
            "--json",
        ).stdout
    )
    assert [r["line"] for r in first[:-1]] == [1, 2] and [r["line"] for r in second[:-1]] == [2, 3]
    for a, b, c in zip(first[:-1], second[:-1], third[:-1], strict=True):
        assert a["good"] == b["good"] == c["good"]
        scores = [[x["good"] for x in record["columns"]] for record in (a, b, c)]
        assert scores[0] == scores[1] == scores[2]
    assert second[-1]["group_field"] == "phenomenon" and second[-1]["groups"][0]["group"] == "animals"
    assert third[-1]["group_field"] == "kind"


def test_bad_lines_are_named_the_run_goes_on_and_exits_non_zero(tmp_path, models):
    good = corpus_pairs(2)
    file = tmp_path / "mixed.jsonl"
    file.write_text(
        "\n".join(
            [
                json.dumps(good[0]),
                json.dumps({"sentence_good": "", "sentence_bad": BAD_DUCK}),
                json.dumps({"sentence_good": DUCK_SENTENCE, "sentence_bad": DUCK_SENTENCE}),
                '{"sentence_good": "the duck quacks", ',
                json.dumps({"sentence_good": DUCK_SENTENCE}),
                json.dumps(good[1]),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = run("pairs", "--file", str(file), *models, "--json")
    assert result.exit_code == 1
    assert TRACEBACK not in result.stderr
    *records, summary = _lines(result.stdout)
    assert [r["line"] for r in records] == [1, 6]
    assert summary["failed"] == 4 and [f["line"] for f in summary["failures"]] == [2, 3, 4, 5]
    err = " ".join(result.stderr.split())
    for fragment in (
        "line 2: The good sentence is empty",
        "line 3: The two sentences are identical",
        "line 4: not valid JSON",
        "line 5: the field 'sentence_bad' is missing",
        "4 lines of",
        "failed (lines 2, 3, 4, 5); the other 2 pairs were scored",
    ):
        assert fragment in err, fragment
    tsv = tmp_path / "bad.tsv"
    tsv.write_text(f"{DUCK_SENTENCE}\t{BAD_DUCK}\nonly one column\n", encoding="utf-8")
    result = run("pairs", "--file", str(tsv), *models)
    assert result.exit_code == 1 and "line 2: 1 tab-separated columns, not 2" in " ".join(result.stderr.split())
    assert "100.0% (1/1)" in result.stdout


def test_resume_after_a_torn_last_line_gives_the_same_file(tmp_path, models):
    file = _write_jsonl(tmp_path / "pairs.jsonl", corpus_pairs(6))
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    args = ("pairs", "--file", file, *models, "--batch-size", "2", "--json")
    done = run(*args, "--output", str(whole))
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["pairs"] == 6 and summary["resumed"] == 0
    lines = whole.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    part.write_bytes(b"".join(lines[:4]) + lines[4][:25])  # killed while writing the fifth line
    again = run(*args, "--output", str(part), "--resume")
    assert again.exit_code == 0, again.stderr
    assert part.read_bytes() == whole.read_bytes()
    resumed = json.loads(again.stdout)
    assert resumed["resumed"] == 4 and resumed["overall"] == summary["overall"]
    # Nothing left to do: the file stays as it is.
    assert run(*args, "--output", str(part), "--resume").exit_code == 0
    assert part.read_bytes() == whole.read_bytes()


def test_output_is_not_overwritten_and_resume_checks_the_settings(tmp_path, models):
    file = _write_jsonl(tmp_path / "pairs.jsonl", corpus_pairs(2))
    out = tmp_path / "out.jsonl"
    assert run("pairs", "--file", file, *models, "--output", str(out)).exit_code == 0
    assert_user_error(run("pairs", "--file", file, *models, "--output", str(out)), 2, "already exists")
    assert_user_error(
        run("pairs", "--file", file, *models, "--output", str(out), "--resume", "--pll", "within-word"),
        2,
        "other models or conventions",
    )
    other = _write_jsonl(tmp_path / "other.jsonl", corpus_pairs(3)[1:])
    assert_user_error(run("pairs", "--file", other, *models, "--output", str(out), "--resume"), 2, "another input")
    assert run("pairs", "--file", file, *models, "--output", str(out), "--force").exit_code == 0
    assert len(out.read_text().splitlines()) == 2


def test_ctrl_c_keeps_every_line_whole_and_resume_finishes_the_file(tmp_path, models):
    """Through the installed command: SIGINT mid-run leaves whole lines; --resume completes them."""
    file = _write_jsonl(tmp_path / "many.jsonl", corpus_pairs(200))
    out = tmp_path / "out.jsonl"
    command = [
        gbcli_executable(),
        "pairs",
        "--file",
        file,
        *models,
        "--batch-size",
        "4",
        "--output",
        str(out),
        "--json",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert TRACEBACK.encode() not in stderr and b"--resume" in stderr
    written = out.read_text()
    assert written.endswith("\n")
    first = _lines(written)
    assert 3 <= len(first) < 200 and [r["line"] for r in first] == list(range(1, len(first) + 1))
    # The resumed run needs no signal: in-process, where the models are already loaded.
    resumed = run(*command[1:], "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    records = _lines(out.read_text())
    assert [r["line"] for r in records] == list(range(1, 201))
    assert json.loads(resumed.stdout)["resumed"] == len(first)
