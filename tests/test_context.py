"""`gbcli context`: a causal model's states before a change stay exactly put; a bidirectional one's all move."""

from __future__ import annotations

import re

import pytest
import torch
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from gbcli.render.context import ChunkedGrid, format_shift, format_similarity
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import DUCK_SENTENCE, MULTI_PIECE_SENTENCE

CHANGED = "the duck barks in the park ."


@pytest.fixture(scope="module")
def models(gpt_path, bert_path, bart_path):
    return ["--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path)]


@pytest.fixture(scope="module")
def shifts(models):
    doc = run_json("context", DUCK_SENTENCE, "--change", "quacks=barks", *models, "--with-bart")
    assert doc["texts"] == [DUCK_SENTENCE, CHANGED]
    return {(s["family"], s["stack"]): s for s in doc["shifts"]}


def _states(path, loader, text: str) -> torch.Tensor:
    """An independent read of every layer's states: a fresh model's output_hidden_states, [layer, position, d]."""
    tok = AutoTokenizer.from_pretrained(path)
    model = loader.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
    return torch.stack([h[0] for h in hidden])


def _assert_matches(shift: dict, a: torch.Tensor, b: torch.Tensor) -> None:
    """Every aligned (same length texts) cell against torch's own cosine and norm, in float64."""
    assert len(shift["positions"]) == a.shape[1] and len(shift["layers"]) == a.shape[0]
    for position in shift["positions"]:
        i = position["index"]
        for layer in range(a.shape[0]):
            x, y = a[layer, i].double(), b[layer, i].double()
            cosine = 1 - torch.nn.functional.cosine_similarity(x, y, dim=0)
            l2 = (x - y).norm() / x.norm()
            assert position["cosine"][layer] == pytest.approx(float(cosine), abs=1e-6)
            assert position["relative_l2"][layer] == pytest.approx(float(l2), abs=1e-6)


# --- faithfulness ---------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_gpt2_states_before_the_change_are_exactly_zero(shifts, gpt_path):
    shift = shifts[("gpt", "")]
    before = [p for p in shift["positions"] if p["region"] == "before"]
    assert [p["token"] for p in before] == ["the", "␣duck"]
    for position in before:
        assert position["cosine"] == [0.0] * len(shift["layers"])
        assert position["relative_l2"] == [0.0] * len(shift["layers"])
    assert shift["before_unchanged"] is True and shift["first_moving_layer"] is None
    a, b = _states(gpt_path, AutoModelForCausalLM, DUCK_SENTENCE), _states(gpt_path, AutoModelForCausalLM, CHANGED)
    assert torch.equal(a[:, :2], b[:, :2])  # bit-identical in an independent run too
    _assert_matches(shift, a, b)
    changed = next(p for p in shift["positions"] if p["region"] == "changed")
    assert changed["token"] == "␣quacks" and changed["other"] == "␣barks" and changed["cosine"][0] > 0.1


@pytest.mark.compat
def test_bert_states_before_the_change_move_from_the_first_layer(shifts, bert_path):
    shift = shifts[("bert", "")]
    before = [p for p in shift["positions"] if p["region"] == "before"]
    assert [p["token"] for p in before] == ["[CLS]", "the", "duck"]
    for position in before:
        assert position["cosine"][0] == 0.0  # the embeddings look at one token only
        assert all(value > 0 for value in position["cosine"][1:])
    assert shift["before_unchanged"] is False and shift["first_moving_layer"] == 1
    a, b = _states(bert_path, AutoModelForMaskedLM, DUCK_SENTENCE), _states(bert_path, AutoModelForMaskedLM, CHANGED)
    _assert_matches(shift, a, b)


def test_bart_encoder_moves_everywhere_and_its_decoder_reads_it(shifts):
    assert shifts[("bart", "encoder")]["before_unchanged"] is False
    decoder = shifts[("bart", "decoder")]
    assert decoder["causal"] is True and decoder["positions"][0]["token"] == "</s>"  # the start token
    # Causal, yet its states before the change move: cross-attention reads the whole encoded text.
    assert decoder["before_unchanged"] is False


def test_two_texts_are_the_same_as_change(models, shifts):
    doc = run_json("context", DUCK_SENTENCE, CHANGED, *models, "--models", "gpt")
    assert doc["shifts"][0]["positions"] == shifts[("gpt", "")]["positions"]


def test_a_word_of_another_length_aligns_the_rest_from_the_end(models):
    doc = run_json("context", MULTI_PIECE_SENTENCE, "--change", "wasp=dog", *models)
    for shift in doc["shifts"]:
        changed = [p for p in shift["positions"] if p["region"] == "changed"]
        assert len(changed) == 2 and changed[1]["cosine"] == [None] * len(shift["layers"])
        after = [p for p in shift["positions"] if p["region"] == "after"]
        assert after[0]["token"].endswith("buzzes") and after[0]["other"] is None
    gpt = next(s for s in doc["shifts"] if s["family"] == "gpt")
    assert gpt["before_unchanged"] is True


def test_bare_encoder_works_and_gives_the_same_states(models, tiny_models, shifts):
    doc = run_json(
        "context",
        DUCK_SENTENCE,
        "--change",
        "quacks=barks",
        "--models",
        "bert",
        "--bert",
        str(tiny_models["bert_no_head"]),
    )
    assert doc["shifts"][0]["positions"] == shifts[("bert", "")]["positions"]


# --- --word -----------------------------------------------------------------------------------------------------


@pytest.mark.compat
def test_word_similarity_equals_an_independent_computation(models, gpt_path, bert_path):
    texts = [DUCK_SENTENCE, "the dog barks in the park .", "once upon a time there was a dog who lived in the park ."]
    doc = run_json("context", "--word", "park", *texts, *models)
    for family, path, loader in (("gpt", gpt_path, AutoModelForCausalLM), ("bert", bert_path, AutoModelForMaskedLM)):
        (entry,) = [s for s in doc["similarities"] if s["family"] == family]
        tok = AutoTokenizer.from_pretrained(path)
        vectors = []
        for text in texts:
            ids = tok(text)["input_ids"]
            (position,) = [i for i, t in enumerate(tok.convert_ids_to_tokens(ids)) if t.lstrip("Ġ") == "park"]
            vectors.append(_states(path, loader, text)[:, position])
        for pair in entry["pairs"]:
            x, y = vectors[pair["a"] - 1].double(), vectors[pair["b"] - 1].double()
            expected = torch.nn.functional.cosine_similarity(x, y, dim=-1)
            assert pair["cosine"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_gpt2_word_vector_ignores_what_follows_bert_does_not(models):
    doc = run_json("context", "--word", "duck", DUCK_SENTENCE, "the duck quacks in the garden .", *models)
    by_family = {s["family"]: s for s in doc["similarities"]}
    layers = len(by_family["gpt"]["layers"])
    assert by_family["gpt"]["pairs"][0]["cosine"] == [1.0] * layers
    assert by_family["gpt"]["pairs"][0]["identical"] == [True] * layers
    bert = by_family["bert"]["pairs"][0]
    assert bert["cosine"][0] == 1.0 and all(value < 1.0 for value in bert["cosine"][1:])
    assert bert["identical"] == [True] + [False] * (layers - 1)


def test_word_of_several_pieces_is_their_mean(models):
    doc = run_json(
        "context",
        "--word",
        "wasp",
        MULTI_PIECE_SENTENCE,
        "once upon a time there was a wasp who lived in the park .",
        *models,
        "--models",
        "bert",
    )
    occurrence = doc["similarities"][0]["occurrences"][0]
    assert occurrence["pieces"] == ["was", "·p"] and occurrence["positions"] == [2, 3]


# --- the screen ------------------------------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\s→]+", text))


@pytest.mark.parametrize("measure,key", [("cosine", "cosine"), ("l2", "relative_l2")])
def test_shift_view_fits_80_columns_and_shows_every_number_whole(models, shifts, measure, key):
    out = run(
        "context",
        DUCK_SENTENCE,
        "--change",
        "quacks=barks",
        *models,
        "--with-bart",
        "--measure",
        measure,
        env={"COLUMNS": "80"},
    )
    assert out.exit_code == 0, out.stderr
    assert max(cell_len(line) for line in out.stdout.splitlines()) <= 80
    words = _words(out.stdout)
    for shift in shifts.values():
        for position in shift["positions"]:
            assert {format_shift(v) for v in position[key]} <= words
    assert "exactly 0 in float32" in out.stdout and "move from layer 1 on" in out.stdout


def test_word_view_fits_80_columns(models):
    texts = [
        "the duck quacks in the park .",
        "the dog barks in the park .",
        "the cat meows in the park .",
        "the cow moos in the park .",
        "once upon a time there was a dog who lived in the park .",
    ]
    doc = run_json("context", "--word", "park", *texts, *models)
    out = run("context", "--word", "park", *texts, *models, env={"COLUMNS": "80"})
    assert max(cell_len(line) for line in out.stdout.splitlines()) <= 80
    words = _words(out.stdout)
    for entry in doc["similarities"]:
        assert len(entry["pairs"]) == 10
        for pair in entry["pairs"]:
            assert f"{pair['a']}–{pair['b']}" in words
            shown = zip(pair["cosine"], pair["identical"], strict=True)
            assert {format_similarity(v, same) for v, same in shown} <= words


def test_a_grid_wider_than_the_terminal_is_cut_into_blocks_of_layers():
    layers = [str(i) for i in range(25)]
    values = [[(row + 1) * 0.001 * (column + 1) for column in range(25)] for row in range(3)]
    grid = ChunkedGrid(
        "token \\ layer",
        layers,
        [(Text(f"tok{r}"), [Text(format_shift(v)) for v in row]) for r, row in enumerate(values)],
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(grid)
    text = console.export_text()
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    assert text.count("token \\ layer") >= 3
    assert {format_shift(v) for row in values for v in row} <= _words(text)


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--change", "swan=dog"], "not in the text"),
        (["--change", "duck"], "not WORD=NEW"),
        (["--change", "duck=duck"], "by itself"),
        ([], "--change"),
        (["--measure", "dot", "--change", "duck=dog"], "--measure"),
        ([DUCK_SENTENCE], "the same"),
        (["--word", "swan", "the cat meows ."], "not in sentence 1"),
        (["--word", "duck"], "2 to 8"),
    ],
)
def test_bad_requests_exit_2(models, args, fragment):
    assert_user_error(run("context", DUCK_SENTENCE, *args, *models), 2, fragment, "hint:")


def test_bare_encoder_loaded_by_automodel_is_what_the_task_reads(tiny_models):
    # Guards the body read: AutoModel (no head) gives the states the bare-encoder run compares.
    states = _states(tiny_models["bert_no_head"], AutoModel, DUCK_SENTENCE)
    assert states.shape[0] == 3


def test_json_bad_input_prints_nothing_on_stdout(models):
    assert_user_error(run("context", DUCK_SENTENCE, "--change", "swan=dog", *models, "--json"), 2, "not in the text")


@pytest.mark.parametrize("text,fragment", [("  ", "empty"), ("duck " * 80, "at most 64")])
def test_empty_or_too_long_text_exits_2(models, text, fragment):
    assert_user_error(run("context", text, "--change", "duck=dog", *models), 2, fragment, "hint:")
