"""Defects a demanding user met by hand, each pinned by the command line that showed it."""

from __future__ import annotations

from tests.cli_helpers import run


def test_fill_mask_verdict_agrees_when_gpt_word_carries_a_space(models):
    # "the [MASK],[MASK]": at the second blank GPT-2 brings its own space (' in'), BERT says 'in': the same word.
    result = run("fill-mask", "the [MASK],[MASK]![MASK].", "--top-k", "3", *models)
    assert result.exit_code == 0, result.stderr
    screen = " ".join(result.stdout.split())
    assert "GPT says ' in' from the left context alone and from the whole sentence. BERT's top guess 'in' agrees." \
        in screen
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
