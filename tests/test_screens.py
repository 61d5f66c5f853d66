"""What the screens say, beyond fitting: no escape codes under NO_COLOR, probabilities in text where colour
cannot show, one name per family, one number format, and warnings for the shell's word splitting."""

from __future__ import annotations

import json
import math

from gbcli.render.common import format_nats, format_perplexity, format_prob
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import DUCK_SENTENCE, GPT_CAPITAL_PROMPT

ESCAPE = "\x1b["


def test_no_color_in_a_terminal_sends_no_escape_codes_at_all(models):
    # FORCE_COLOR makes Rich treat the output as a terminal; NO_COLOR must still keep bold, dim and reverse out.
    terminal = {"FORCE_COLOR": "1", "COLUMNS": "80"}
    coloured = run("score", DUCK_SENTENCE, "--tokens", *models, env={**terminal, "NO_COLOR": None})
    assert ESCAPE in coloured.stdout  # the same screen in colour does use them
    for args in (
        ["score", DUCK_SENTENCE, "--tokens"],
        ["generate", GPT_CAPITAL_PROMPT, "--max-new-tokens", "4", "--show-probs", "--seed", "1"],
    ):
        result = run(*args, *models, env={**terminal, "NO_COLOR": "1"})
        assert result.exit_code == 0, result.stderr
        assert ESCAPE not in result.stdout and ESCAPE not in result.stderr, args


def test_without_colour_each_token_carries_its_probability_and_the_legend_says_so(models):
    doc = run_json("generate", GPT_CAPITAL_PROMPT, "--max-new-tokens", "4", "--seed", "1", "--models", "gpt", *models)
    screen = run(
        "generate",
        GPT_CAPITAL_PROMPT,
        "--max-new-tokens",
        "4",
        "--seed",
        "1",
        "--models",
        "gpt",
        "--show-probs",
        *models,
        env={"COLUMNS": "120"},
    ).stdout
    for token in doc["columns"][0]["continuations"][0]["tokens"]:
        prob = math.exp(token["logprob"])
        mark = f"[{prob:.2f}]" if prob >= 0.01 else "[<.01]"
        assert token["text"].strip() + mark in screen
    assert "[p] after each token is its probability" in " ".join(screen.split())
    scored = run("score", DUCK_SENTENCE, "--tokens", *models, env={"COLUMNS": "120"}).stdout
    assert "duck[" in scored and "[p] after each token is its probability" in " ".join(scored.split())


def test_one_name_per_family_on_every_screen(models):
    for args in (
        ["compare", "the [MASK] quacks in the park .", "--full"],
        ["fill-mask", "the [MASK] quacks ."],
        ["score", DUCK_SENTENCE],
    ):
        screen = run(*args, *models, env={"COLUMNS": "120"}).stdout
        assert "GPT-2" not in screen, args
        assert "GPT" in screen


def test_numbers_share_one_format_and_perplexity_hides_float_noise():
    assert format_prob(0.5) == "0.5000" and format_prob(2.5e-05) == "2.5e-05" and format_prob(0.0) == "0.0000"
    assert format_nats(-0.00002) == "-2.0e-05"  # never a bare -0.000
    assert format_nats(-113.5712) == "-113.571"
    # The same text scored in batches of different sizes differs in the last float digits; five significant
    # digits do not show it.
    assert format_perplexity(100063.032) == format_perplexity(100062.251) == "100060"
    assert format_perplexity(12.34567) == "12.346" and format_perplexity(1.92174) == "1.9217"


def test_fill_mask_file_skips_empty_lines_as_score_does(models, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("the [MASK] quacks in the park .\n\n   \nthe [MASK] barks in the park .\n")
    result = run("fill-mask", "--file", str(path), "--json", *models)
    assert result.exit_code == 0, result.stderr
    records = [line for line in result.stdout.splitlines() if line.strip()]
    lines = [json.loads(record)["line"] for record in records]
    assert lines == [1, 4]  # the empty lines are skipped, the others keep their numbers
    scored = run("score", "--file", str(path), "--json", *models)
    assert [json.loads(r)["index"] for r in scored.stdout.splitlines()] == [1, 4]


def test_unquoted_generate_prompt_suggests_quotes(models):
    assert_user_error(
        run("generate", "the", "capital", "of", *models), 2, "3 separate words", 'gbcli generate "the capital of"'
    )


def test_score_warns_when_every_text_is_one_word(models):
    result = run("score", "rome", "is", "the", "capital", "--models", "gpt", *models)
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and 'gbcli score "rome is the capital"' in result.stderr
    quiet = run("score", "rome is the capital", "the duck", "--models", "gpt", *models)
    assert "warning:" not in quiet.stderr


def test_attention_legend_shows_every_colour_the_cells_use():
    from rich.console import Console

    from gbcli.render.attention import legend, weight_style

    console = Console(color_system="truecolor", width=200, file=__import__("io").StringIO())
    shown = {segment.style for segment in console.render(legend()) if segment.style is not None}
    used = {weight_style(step / 1000) for step in range(1, 1001)}  # 1.0 included: the ramp's brightest colour
    assert used <= shown
    plain = Console(color_system=None, width=200, file=__import__("io").StringIO(), record=True)
    plain.print(legend())
    assert "colour:" not in plain.export_text()  # no colour ramp where no colour shows


def test_revision_for_a_local_folder_says_it_does_not_apply(models):
    result = run("tokenize", "the duck", "--revision", "main", *models)
    assert result.exit_code == 0, result.stderr
    assert "warning: --revision main does not apply to the local folders" in result.stderr
