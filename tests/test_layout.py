"""Every view is whole at 80, 120 and 200 columns: no number, measure name or generated token is cut.

Each command's result object is rendered the way the command renders it, into a recording Rich console of the
given width (no colour, as in a pipe), and every number in the result, formatted as the view formats it, every
measure name and every generated token must appear whole in the text.
"""

from __future__ import annotations

import io
import math

import pytest
from rich.cells import cell_len
from rich.console import Console

from gbcli.loading.models import load_model
from gbcli.render.attention import attention_view
from gbcli.render.common import format_nats, format_prob, prob_mark
from gbcli.render.comparison import comparison_view
from gbcli.render.generation import generation_view
from gbcli.render.masking import fill_mask_view, prediction_label
from gbcli.render.scoring import measure_value, score_view
from gbcli.render.tokenization import piece_text, tokenization_view
from gbcli.tasks.attention import build_report, compute_attention
from gbcli.tasks.comparison import compare
from gbcli.tasks.decoding_options import settings_from_options
from gbcli.tasks.generation import GenerationResult
from gbcli.tasks.generation.causal import generate_causal
from gbcli.tasks.generation.masked import generate_masked
from gbcli.tasks.masking import fill_mask
from gbcli.tasks.scoring import ScoreSettings, score_texts
from gbcli.tasks.seq2seq import generate_seq2seq
from gbcli.tasks.tokenization import tokenize
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, DUCK_SENTENCE, GPT_CAPITAL_PROMPT

WIDTHS = (80, 120, 200)


def render(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None, highlight=False, soft_wrap=False)
    console.print(renderable)
    return console.export_text()


def assert_whole(screen: str, expected: list[str], width: int) -> None:
    # Rich wraps between words; a cut shows as a missing string (or an ellipsis in its place).
    words = " ".join(screen.replace("│", " ").replace("┃", " ").split())
    missing = [item for item in expected if " ".join(item.split()) not in words]
    assert not missing, f"cut or missing at {width} columns: {missing}\n{screen}"
    assert max(cell_len(line.rstrip()) for line in screen.splitlines()) <= width  # cells, not characters


@pytest.fixture(scope="module")
def models(gpt_path, bert_path, bart_path):
    return {
        family: load_model(family, str(path))
        for family, path in (("gpt", gpt_path), ("bert", bert_path), ("bart", bart_path))
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_score_view_shows_every_number_and_measure_whole(models, width):
    records = score_texts(list(models.values()), [DUCK_SENTENCE, "the dog barks ."], ScoreSettings(with_tokens=True))
    for shown in ([records[0]], records):
        screen = render(score_view(shown), width)
        expected = []
        for record in shown:
            for column in record.columns:
                expected += [column.measure, measure_value(column), column.model]
                if len(shown) == 1:
                    expected += [format_nats(column.log_likelihood), format_nats(column.mean_nll)]
                for token in column.tokens or []:
                    if token.logprob is not None:
                        expected += [
                            format_nats(token.surprisal),
                            format_prob(math.exp(token.logprob)),
                            prob_mark(math.exp(token.logprob)),
                        ]
        assert_whole(screen, expected, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_view_shows_every_number_whole(models, width):
    result = compare(list(models.values()), BERT_MASKED_DUCK, 5)
    for full in (False, True):
        screen = render(comparison_view(result, full=full), width)
        expected = [c.measure for c in result.scores.columns] + [measure_value(c) for c in result.scores.columns]
        for slot in result.predictions.masks:
            for column in slot.columns():
                expected += [format_prob(p.prob) for p in column.predictions[:5]]
        expected += [format_nats(f.logprob) for f in result.predictions.fillings]
        if full:
            expected += [f"{f.parameters:,}" for f in result.facts]
            expected += [f"{line.to_first:.1%}" for line in result.attention]
            expected += [f"{t.load_seconds:.2f} s" for t in result.time] + ["predictions", "attention"]
        assert_whole(screen, expected, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_fill_mask_view_shows_every_candidate_and_probability_whole(models, width):
    result = fill_mask(models, "the [MASK] quacks in the [MASK] .", 5, ["wasp"])
    screen = render(fill_mask_view(result), width)
    expected = ["p(sent.)", "Σ log p(word)", "log p(sentence)"]
    for slot in result.masks:
        for column in slot.columns():
            for prediction in column.predictions[:5] + column.targets:
                expected.append(format_prob(prediction.prob))
                if column.column != "bart":
                    expected.append(prediction_label(prediction))
    expected += [format_nats(f.logprob) for f in result.fillings] + [f.text for f in result.fillings]
    assert_whole(screen, expected, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_fill_mask_view_keeps_long_model_names_whole(models, width):
    """Local folders have long names; the views' columns are narrow. Each name is shown whole, beside its family,
    and the table is laid out as with short names (the names are not in its header)."""
    import copy

    result = fill_mask(models, BERT_MASKED_DUCK, 5)
    short = render(fill_mask_view(result), width)
    named = copy.deepcopy(result)
    names = {
        "bert": "bert-base-multilingual-uncased-finetuned",
        "gpt": "gpt2-medium-finetuned-wikitext-103",
        "bart": "facebook/bart-large-xsum-distilled",
    }
    named.models = {family: names[family] for family in result.models}
    for slot in named.masks:
        for column in slot.columns():
            column.model = names[column.column.split("_")[0]]
    screen = render(fill_mask_view(named), width)
    assert_whole(screen, [f"BERT {names['bert']}", f"GPT {names['gpt']}", f"BART {names['bart']}"], width)
    assert [line for line in screen.splitlines() if line.startswith("#")] == [
        line for line in short.splitlines() if line.startswith("#")
    ]


@pytest.mark.parametrize("width", WIDTHS)
def test_attention_token_view_shows_every_weight_and_layer_whole(models, width):
    results = [compute_attention(lm, "the capital of italy is rome .") for lm in models.values()]
    report = build_report(
        "the capital of italy is rome .", results, layer=None, head=None, summary=False, stat=None, token="rome", top=5
    )
    screen = render(attention_view(report), width)
    expected = []
    for view in report.models:
        assert view.focus is not None
        for item in view.focus.layers:
            for attended in item.top:
                expected.append(f"{view.key_tokens[attended.index].label} {attended.weight:.3f}")
    assert_whole(screen, expected, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_tokenize_view_shows_every_piece_and_id_whole(models, width):
    result = tokenize(list(models.values()), "the wasp buzzes in the park .")
    screen = render(tokenization_view(result), width)
    expected = [piece_text(p, column.family).plain for column in result.columns for p in column.pieces]
    expected += [column.algorithm for column in result.columns]
    assert_whole(screen, expected, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_generate_view_shows_every_generated_token_whole(models, width):
    settings = settings_from_options(
        max_new_tokens=12,
        greedy=True,
        temperature=None,
        top_k=None,
        top_p=None,
        repetition_penalty=None,
        num_beams=1,
        num_return_sequences=1,
        seed=None,
    )
    result = GenerationResult(prompt=GPT_CAPITAL_PROMPT, decoding=settings.describe(), settings=settings)
    for run, family in ((generate_causal, "gpt"), (generate_masked, "bert"), (generate_seq2seq, "bart")):
        result.columns.append(run(models[family], GPT_CAPITAL_PROMPT, settings))
    for show_probs in (False, True):
        screen = render(generation_view(result, show_probs), width)
        expected = []
        for column in result.columns:
            expected += [f"{column.tokens_per_second:.1f} tokens/s", format_nats(column.continuations[0].mean_logprob)]
            for token in column.continuations[0].tokens:
                word = token.text.strip()
                if word:
                    expected.append(word + prob_mark(math.exp(token.logprob)) if show_probs else word)
        assert_whole(screen, expected, width)


def test_generated_wide_characters_keep_their_text_side_by_side(models, gpt_path):
    from transformers import AutoTokenizer

    from gbcli.tasks.generation import continuation, model_generation

    # A continuation with a wide character, through GPT-2's byte-level tokenizer: き is three bytes, split over
    # tokens that each hold part of it.
    lm = models["gpt"]
    text = " breached ifixき830 rooted feel regulates the market"
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    context = tokenizer("the prompt", add_special_tokens=False)["input_ids"]
    new_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    made = continuation(lm, context, new_ids, [-0.5] * len(new_ids))
    assert made.text == text
    assert "".join(token.text for token in made.tokens) == text  # no � from a half character
    settings = settings_from_options(
        max_new_tokens=len(new_ids),
        greedy=True,
        temperature=None,
        top_k=None,
        top_p=None,
        repetition_penalty=None,
        num_beams=1,
        num_return_sequences=1,
        seed=None,
    )
    result = GenerationResult(prompt="the prompt", decoding=settings.describe(), settings=settings)
    result.columns = [
        model_generation(lm, "m", [made], len(new_ids), 1.0),
        model_generation(lm, "m", [made], len(new_ids), 1.0),
    ]
    result.columns[1].family = "bert"
    for width in WIDTHS:
        for show_probs in (False, True):
            screen = render(generation_view(result, show_probs), width)
            assert max(cell_len(line.rstrip()) for line in screen.splitlines()) <= width
            words = " ".join(screen.replace("│", " ").split())
            for word in text.split():
                shown = word if not show_probs else None
                assert shown is None or shown in words, (word, screen)
            assert "�" not in screen and "…" not in screen
