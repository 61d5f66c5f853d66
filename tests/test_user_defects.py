"""Defects a demanding user met by hand, each pinned by the command line that showed it."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import run, run_json


def test_fill_mask_verdict_agrees_when_gpt_word_carries_a_space(models):
    # "the [MASK],[MASK]": at the second blank GPT-2 brings its own space (' in'), BERT says 'in': the same word.
    result = run("fill-mask", "the [MASK],[MASK]![MASK].", "--top-k", "3", *models)
    assert result.exit_code == 0, result.stderr
    screen = " ".join(result.stdout.split())
    assert (
        "GPT says ' in' from the left context alone and from the whole sentence. BERT's top guess 'in' agrees."
        in screen
    )
    assert "BERT's top guess 'in' differs" not in screen


def test_score_words_alone_has_no_legend_for_token_marks(models):
    # --words draws tables with a p column, no "the[0.75]" line: a legend for [p] marks would explain nothing shown.
    words = run("score", "the duck quacks in the park .", "--words", *models)
    assert words.exit_code == 0, words.stderr
    assert "surprisal per word" in words.stdout
    assert "[p] after each token" not in words.stdout
    tokens = run("score", "the duck quacks in the park .", "--tokens", "--words", *models)
    assert "the[0.75]" in tokens.stdout and "[p] after each token" in " ".join(tokens.stdout.split())


def test_attention_help_names_the_plot_extra_without_a_stray_backslash():
    # The help is plain Click text (no Rich markup), so an escaped "\[" reached the user as "gbcli\[plot]".
    result = run("attention", "--help")
    assert result.exit_code == 0
    assert "gbcli[plot]" in result.stdout and "\\[" not in result.stdout


LONG_NAMES = {
    "gpt": "gpt2-medium-finetuned-wikitext-103",
    "bert": "bert-base-multilingual-uncased-finetuned-squad",
    "bart": "facebook-bart-large-cnn-finetuned-xsum-summarization",
}


@pytest.fixture(scope="module")
def long_named(tmp_path_factory, gpt_path, bert_path, bart_path) -> list[str]:
    """The tiny models under the long folder names local fine-tunes have, as --gpt/--bert/--bart options."""
    folder = tmp_path_factory.mktemp("long-names")
    options = []
    for family, path in (("gpt", gpt_path), ("bert", bert_path), ("bart", bart_path)):
        (folder / LONG_NAMES[family]).symlink_to(path, target_is_directory=True)
        options += [f"--{family}", str(folder / LONG_NAMES[family])]
    return options


@pytest.mark.parametrize(
    "args",
    [
        ("score", "the duck quacks in the park ."),
        ("tokenize", "the duck quacks"),
        ("pairs", "the duck quacks in the park .", "the duck quack in the park ."),
        ("compare", "the [MASK] quacks in the park .", "--full"),
    ],
    ids=lambda args: args[0],
)
def test_long_model_names_stay_whole_at_80_columns(long_named, args):
    # Three long folder names cannot sit side by side in 80 columns: Rich folded them mid-word in the score, pairs
    # and compare tables ("gpt2-medium-finet / uned-wikitext-103") and cut them ("gpt2-mediu…") in tokenize's.
    result = run(*args, "--with-bart", *long_named, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    for name in LONG_NAMES.values():
        assert any(name in line for line in lines), f"{name} is not whole on any line:\n{result.stdout}"
        assert not any(name[:12] in line and name not in line for line in lines), f"{name} cut:\n{result.stdout}"


def test_generate_several_sequences_says_the_speed_counts_them_all(models):
    # "tokens 6 · speed 20.5 tokens/s (0.88 s)" did not add up: the speed counts the tokens of all 3 sequences.
    args = ("generate", "the cat", "--seed", "3", "-n", "3", "--max-new-tokens", "4", "--models", "gpt", *models)
    doc = run_json(*args)
    column = doc["columns"][0]
    assert len(column["continuations"]) == 3
    assert column["tokens_per_second"] == pytest.approx(column["new_tokens"] * 3 / column["seconds"])
    screen = run(*args, env={"COLUMNS": "80"}).stdout
    assert f"tokens {column['new_tokens']} × 3 sequences" in screen
    single = run("generate", "the cat", "--greedy", "--max-new-tokens", "4", "--models", "gpt", *models).stdout
    assert "│ tokens 4 " in single and "sequences" not in single  # one sequence: the row as it always was


def test_pairs_tsv_under_a_good_bad_header_is_scored(tmp_path, models):
    # A `good<TAB>bad` header (what a user writes by hand, here with Windows line endings) named 4 columns
    # internally (good, bad and the default sentence_good, sentence_bad), so every 2-column line "failed".
    rows = [("the duck quacks in the park .", "the duck quack in the park ."), ("the cat meows .", "the cat meow .")]
    headed, plain = tmp_path / "headed.tsv", tmp_path / "plain.tsv"
    headed.write_bytes(("good\tbad\r\n" + "".join(f"{g}\t{b}\r\n" for g, b in rows)).encode())
    plain.write_text("".join(f"{g}\t{b}\n" for g, b in rows), encoding="utf-8")
    result = run("pairs", "--file", str(headed), "--models", "gpt", *models, "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [
        json.loads(line)
        for line in run("pairs", "--file", str(plain), "--models", "gpt", *models, "--json").stdout.splitlines()
    ]
    assert [r["line"] for r in records[:-1]] == [2, 3]
    assert [r["columns"][0]["good"] for r in records[:-1]] == [r["columns"][0]["good"] for r in expected[:-1]]
    assert records[-1]["failed"] == 0 and records[-1]["overall"][0]["total"] == 2
    short = tmp_path / "short.tsv"
    short.write_text("good\tbad\nonly one column\n", encoding="utf-8")
    failed = run("pairs", "--file", str(short), "--models", "gpt", *models)
    assert failed.exit_code == 1 and "1 tab-separated columns, the header has 2." in failed.stderr


def test_generate_panels_stack_rather_than_cut_a_long_model_name(long_named, models, bart_path):
    # At 120 columns three panels fit side by side, but their titles were cut at the border:
    # "╭─ GPT · gpt2-medium-finetuned-wikite─╮". Side by side only when every title fits whole.
    args = ("generate", "the cat", "--greedy", "--max-new-tokens", "3", "--with-bart")
    screen = run(*args, *long_named, env={"COLUMNS": "120"}).stdout
    for family, name in LONG_NAMES.items():
        assert f"{family.upper()} · {name}" in screen, screen
    short = run(*args, *models, "--bart", str(bart_path), env={"COLUMNS": "120"}).stdout
    assert short.splitlines()[0].count("╭") == 3  # short titles: still three panels side by side


def test_fill_mask_legend_explains_only_the_measures_on_screen(models, bart_path):
    # BART alone printed "Σ log p(word): …; log p(sentence): …" under a screen that shows neither, only log p(output).
    sentence = "the [MASK] quacks in the park ."
    bart = " ".join(run("fill-mask", sentence, "--models", "bart", "--bart", str(bart_path)).stdout.split())
    assert "log p(output)" in bart and "Σ log p(word)" not in bart and "log p(sentence)" not in bart
    bert = " ".join(run("fill-mask", sentence, "--models", "bert", *models).stdout.split())
    assert "Σ log p(word): the filled words' log-probabilities" in bert and "log p(sentence)" not in bert
    both = " ".join(run("fill-mask", sentence, *models).stdout.split())
    assert (
        "Σ log p(word): the filled words' log-probabilities; log p(sentence): the whole sentence's log-likelihood"
    ) in both


def test_a_masked_lm_word_in_a_blank_glued_to_a_word_stays_a_word_of_its_own(models):
    """`the [MASK][MASK] in the park .`: BERT reads two tokens, so a whole word in the second blank is a second
    word (only a `##` piece would continue the first). It printed "the catmeows in the park .", and GPT ranked
    sentences with that merged word in them."""
    doc = run_json("fill-mask", "the [MASK][MASK] in the park .", *models)
    first, second = (slot["bert"]["predictions"][0] for slot in doc["masks"])
    assert not first["word"].startswith(" ")  # after "the ": the text has the space
    assert not second["joins_previous"] and second["word"] == " " + second["pieces"][0]  # BERT's own word
    by_column = {f["column"]: f for f in doc["fillings"]}
    words = [w.strip() for w in by_column["bert"]["words"]]
    assert by_column["bert"]["text"] == f"the {words[0]} {words[1]} in the park ."
    # GPT-2 ranks the first blank's candidates with BERT's second word in place, apart from them; in the second
    # blank its candidates bring their own space (`␣meows`), BERT's now too, so the blank stays glued there.
    assert doc["masks"][0]["gpt_whole"]["context"] == f"the ___ {words[1]} in the park ."
    assert doc["masks"][1]["gpt_whole"]["context"] == f"the {words[0]}___ in the park ."
    ranked = [p["word"] for p in doc["masks"][1]["gpt_whole"]["predictions"]]
    assert ranked.count(second["word"]) == 1  # BERT's word and GPT-2's `Ġ` word are one candidate


def test_a_masked_lm_word_glued_to_punctuation_gets_no_space(models):
    doc = run_json("fill-mask", "the duck ([MASK]) quacks .", "--models", "bert", *models)
    (bert,) = doc["fillings"]
    word = bert["words"][0]
    assert not word.startswith(" ") and bert["text"] == f"the duck ({word}) quacks ."
