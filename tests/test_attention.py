"""`gbcli attention`: GPT-2's lower-triangular attention beside BERT's full square, summaries, and exports."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.cells import cell_len
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from gbcli.loading.models import load_model
from gbcli.tasks.attention import compute_attention, summarize
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import DUCK_SENTENCE, MAX_POSITIONS, MULTI_PIECE_SENTENCE

LONG_TEXT = " ".join([DUCK_SENTENCE] * 4)  # ~30 tokens: wider than a narrow terminal at any cell width
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _model(doc: dict, family: str) -> dict:
    (entry,) = [m for m in doc["models"] if m["family"] == family]
    return entry


def reference_attention(path: Path, family: str, text: str, loader=None) -> tuple[np.ndarray, list[int]]:
    """An independent read: a fresh eager model's `output_attentions`, stacked as [layer, head, query, key]."""
    loader = loader or (AutoModelForCausalLM if family == "gpt" else AutoModelForMaskedLM)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = loader.from_pretrained(path, attn_implementation="eager").eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        attentions = model(input_ids=ids, output_attentions=True).attentions
    return torch.stack([a[0] for a in attentions]).numpy(), ids[0].tolist()


@pytest.fixture(scope="module")
def reference(gpt_path, bert_path):
    return {
        "gpt": reference_attention(gpt_path, "gpt", DUCK_SENTENCE),
        "bert": reference_attention(bert_path, "bert", DUCK_SENTENCE),
    }


@pytest.fixture(scope="module")
def results(gpt_path, bert_path):
    return {
        "gpt": compute_attention(load_model("gpt", str(gpt_path), need_head=False), DUCK_SENTENCE),
        "bert": compute_attention(load_model("bert", str(bert_path), need_head=False), DUCK_SENTENCE),
    }


# --- faithfulness ---------------------------------------------------------------------------------------------


def test_gpt2_matrices_are_exactly_zero_above_the_diagonal(results):
    weights = results["gpt"].main.weights
    above = np.triu(np.ones(weights.shape[-2:], dtype=bool), k=1)
    assert weights.shape[0] >= 2 and weights.shape[1] >= 2
    assert np.all(weights[..., above] == 0.0)
    assert np.all(weights[..., ~above] > 0.0)  # and every key on or left of the diagonal gets some weight


def test_every_row_sums_to_one_in_every_layer_and_head(results):
    for result in results.values():
        np.testing.assert_allclose(result.main.weights.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_weights_equal_the_models_own_eager_output_attentions(family, results, reference):
    expected, ids = reference[family]
    assert [t.id for t in results[family].tokens] == ids
    np.testing.assert_array_equal(results[family].main.weights, expected)


@pytest.mark.parametrize("family", ["gpt", "bert"])
def test_json_matrix_is_the_models_weights_for_the_chosen_layer_and_head(family, models, reference):
    expected, _ = reference[family]
    # Layers are numbered 1..L in every command (0 is the embeddings): layer 1 is the first block, index 0.
    doc = run_json("attention", DUCK_SENTENCE, *models, "--layer", "1", "--head", "1")
    entry = _model(doc, family)
    assert (entry["layer"], entry["head"]) == (1, 1)
    np.testing.assert_array_equal(np.array(entry["matrix"], dtype=np.float32), expected[0, 1])


def test_default_is_the_last_layer_and_the_mean_over_heads(models, reference):
    doc = run_json("attention", DUCK_SENTENCE, *models)
    for family in ("gpt", "bert"):
        expected, _ = reference[family]
        entry = _model(doc, family)
        assert entry["layer"] == expected.shape[0] and entry["head"] == "mean"
        np.testing.assert_allclose(entry["matrix"], expected[-1].mean(axis=0), atol=1e-6)


def test_negative_layer_and_head_count_from_the_end(models):
    doc = run_json("attention", DUCK_SENTENCE, *models, "--layer", "-2", "--head", "-1")
    for entry in doc["models"]:
        assert entry["layer"] == entry["layers"] - 1 and entry["head"] == entry["heads"] - 1


def test_bert_rows_carry_weight_right_of_the_diagonal(results):
    weights = results["bert"].main.weights
    n = weights.shape[-1]
    right = np.triu(np.ones((n, n), dtype=bool), k=1)
    per_row = (weights * right).sum(axis=-1)  # [layer, head, query]
    assert np.all(per_row[..., : n - 1] > 1e-3)


def test_eager_is_used_for_the_pass_and_the_previous_implementation_restored(gpt_path):
    lm = load_model("gpt", str(gpt_path), need_head=False)
    before = lm.model.config._attn_implementation
    result = compute_attention(lm, DUCK_SENTENCE)
    assert result.implementation == "eager"
    assert lm.model.config._attn_implementation == before


def test_special_tokens_are_labelled(models):
    doc = run_json("attention", DUCK_SENTENCE, *models)
    tokens = _model(doc, "bert")["tokens"]
    assert (tokens[0]["label"], tokens[0]["special"], tokens[0]["role"]) == ("[CLS]", True, "cls")
    assert (tokens[-1]["label"], tokens[-1]["special"], tokens[-1]["role"]) == ("[SEP]", True, "sep")
    assert not any(t["special"] for t in tokens[1:-1])
    assert [t["label"] for t in _model(doc, "gpt")["tokens"]][:2] == ["the", "␣duck"]


def test_text_longer_than_the_maximum_positions_names_the_limit(models):
    text = " ".join(["the dog barks ."] * 40)
    assert_user_error(run("attention", text, *models), 2, f"at most {MAX_POSITIONS} tokens")


def test_bare_encoder_checkpoint_without_lm_head_works(tiny_models):
    path = tiny_models["bert_no_head"]
    doc = run_json("attention", DUCK_SENTENCE, "--models", "bert", "--bert", str(path))
    (entry,) = doc["models"]
    assert entry["kind"] == "encoder" and entry["causal"] is False
    expected, _ = reference_attention(path, "bert", DUCK_SENTENCE, loader=AutoModel)
    np.testing.assert_allclose(entry["matrix"], expected[-1].mean(axis=0), atol=1e-6)


# --- the terminal view ----------------------------------------------------------------------------------------


def _heatmap_rows(stdout: str) -> list[str]:
    """The body of every heatmap row: what follows `│ <index> <label> `."""
    return [line for line in stdout.splitlines() if re.match(r"^│\s*\d+ ", line)]


def _prose(stdout: str) -> str:
    """The words of the output without panel borders, so a notice that wraps inside its panel reads as one."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", stdout).split())


def test_heatmaps_stand_side_by_side_with_token_labels_and_a_legend(models):
    result = run("attention", DUCK_SENTENCE, *models, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    title_line = next(line for line in out.splitlines() if "GPT" in line and "BERT" in line)
    assert title_line.index("GPT") < title_line.index("BERT")
    assert "␣quacks" in out and "[CLS]" in out and "[SEP]" in out
    assert "layer 2 (last) · mean of 2 heads" in out
    assert "≥ 0.5" in out and "< 0.1" in out and "query" in out and "key" in out


def test_gpt_heatmap_is_drawn_lower_triangular_and_bert_full(models, results):
    for family in ("gpt", "bert"):
        out = run("attention", DUCK_SENTENCE, *models, "--models", family, env={"COLUMNS": "120"}).stdout
        rows = _heatmap_rows(out)
        n = len(results[family].tokens)
        assert len(rows) == n
        for query, line in enumerate(rows):
            cells = line.rstrip("│ ")[-2 * (query + 1) :] if family == "gpt" else line.rstrip("│ ")[-2 * n :]
            assert " " not in cells, line  # every visible key has some weight
        # A GPT row is exactly as long as its query index allows: blank cells to the right were stripped.
        if family == "gpt":
            lengths = [len(line.rstrip("│ ")) for line in rows]
            assert all(b - a == 2 for a, b in itertools.pairwise(lengths))
        else:
            assert len({len(line) for line in rows}) == 1


@pytest.mark.parametrize("width", [12, 30, 40])
def test_wide_heatmap_is_windowed_with_a_notice_and_never_wraps(models, width):
    result = run("attention", LONG_TEXT, *models, env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    prose = _prose(result.stdout)
    assert "Window: key columns 0–" in prose
    assert "--window" in prose
    if width >= 30:  # every row is drawn once, each on one line
        doc = run_json("attention", LONG_TEXT, *models)
        assert len(_heatmap_rows(result.stdout)) == sum(len(m["tokens"]) for m in doc["models"])


def test_window_option_moves_the_key_columns_shown(models):
    result = run("attention", LONG_TEXT, *models, "--models", "bert", "--window", "10", env={"COLUMNS": "30"})
    assert result.exit_code == 0, result.stderr
    prose = _prose(result.stdout)
    assert "Window: key columns 10–" in prose
    assert "--window 0 the previous ones" in prose


# --- --summary and --token ------------------------------------------------------------------------------------


def test_summary_covers_every_head_with_statistics_from_the_weights(models, reference):
    doc = run_json("attention", DUCK_SENTENCE, *models, "--summary")
    for family in ("gpt", "bert"):
        weights, _ = reference[family]
        summary = _model(doc, family)["summary"]
        assert len(summary["per_head"]) == weights.shape[0] * weights.shape[1]
        head = next(h for h in summary["per_head"] if (h["layer"], h["head"]) == (2, 0))
        w = weights[1, 0].astype(np.float64)
        entropy = -(np.where(w > 0, w * np.log2(np.where(w > 0, w, 1)), 0)).sum(axis=1).mean()
        n = w.shape[0]
        distance = (w * np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])).sum(axis=1).mean()
        assert head["entropy"] == pytest.approx(entropy, abs=1e-6)
        assert head["distance"] == pytest.approx(distance, abs=1e-6)
        assert head["to_first"] == pytest.approx(w[:, 0].mean(), abs=1e-6)
        assert head["previous"] == pytest.approx(np.mean([w[q, q - 1] for q in range(1, n)]), abs=1e-6)
        assert head["to_punct"] == pytest.approx(w[:, n - 2 if family == "bert" else n - 1].mean(), abs=1e-6)
        if family == "bert":
            assert head["to_cls"] == pytest.approx(w[:, 0].mean(), abs=1e-6)
            assert head["to_sep"] == pytest.approx(w[:, -1].mean(), abs=1e-6)
        else:
            assert head["to_cls"] is None and head["to_sep"] is None  # GPT-2 has neither token
    assert doc["stat"] == "entropy"


def test_summary_view_shows_the_table_and_the_grid_of_the_chosen_stat(models):
    result = run("attention", DUCK_SENTENCE, *models, "--summary", "--stat", "previous", env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for header in ("entropy", "dist", "first", "[CLS]", "[SEP]", "punct", "prev"):
        assert header in out
    assert "prev by layer (rows) × head (columns)" in out
    assert out.count("h0") >= 2 and out.count("h1") >= 2


def test_summary_of_one_pass_is_reusable_by_other_commands(results):
    summary = summarize(results["bert"])
    assert set(summary.mean) >= {"entropy", "to_first", "to_special"}
    assert 0.0 < summary.mean["to_special"] < 1.0
    assert summary.grid("entropy")[1][0] == summary.per_head[2].entropy


def test_token_focus_lists_what_one_query_attends_to_most_in_each_layer(models, reference):
    doc = run_json("attention", DUCK_SENTENCE, *models, "--token", "quacks", "--top", "3")
    for family in ("gpt", "bert"):
        weights, _ = reference[family]
        focus = _model(doc, family)["focus"]
        query = focus["query"]["index"]
        assert focus["query"]["label"].lstrip("␣") == "quacks"
        assert len(focus["layers"]) == weights.shape[0]
        for item in focus["layers"]:
            row = weights[item["layer"] - 1].mean(axis=0)[query]
            top = [t["index"] for t in item["top"]]
            assert top == list(np.argsort(-row, kind="stable")[:3])
            if family == "gpt":
                assert max(top) <= query  # GPT-2 cannot attend to the right


def test_token_by_index_and_by_multi_piece_word(models):
    doc = run_json("attention", MULTI_PIECE_SENTENCE, *models, "--token", "wasp", "--head", "0")
    for entry in doc["models"]:
        assert "2 pieces" in entry["focus"]["note"] and entry["focus"]["head"] == 0
    doc = run_json("attention", DUCK_SENTENCE, *models, "--token", "-1")
    assert _model(doc, "bert")["focus"]["query"]["label"] == "[SEP]"
    assert _model(doc, "gpt")["focus"]["query"]["label"] == "␣."
    text = run("attention", DUCK_SENTENCE, *models, "--token", "duck", env={"COLUMNS": "160"}).stdout
    assert "query token #" in text and "layer" in text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--layer", "7"], "numbered 1 to 2"),
        (["--layer", "0"], "embeddings"),
        (["--head", "5"], "numbered 0 to 1"),
        (["--head", "all"], "--head"),
        (["--stat", "loudness"], "--stat"),
        (["--token", "zebra"], "not a token"),
        (["--token", "99"], "out of range"),
        (["--top", "0"], "--top"),
        (["--window", "-3"], "--window"),
        (["--models", "t5"], "t5"),
    ],
)
def test_bad_usage_exits_2_with_a_message(models, args, fragment):
    assert_user_error(run("attention", DUCK_SENTENCE, *models, *args), 2, fragment)


def test_empty_text_is_a_usage_error(models):
    assert_user_error(run("attention", "   ", *models), 2, "empty")


# --- exports --------------------------------------------------------------------------------------------------


def _export(path: Path, models: list[str], *extra: str):
    result = run("attention", DUCK_SENTENCE, *models, "--export", str(path), *extra)
    assert result.exit_code == 0, result.stderr
    return result


def test_json_export_round_trips_to_the_model_tensors(tmp_path, models, reference):
    path = tmp_path / "attention.json"
    _export(path, models)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["text"] == DUCK_SENTENCE
    for family in ("gpt", "bert"):
        expected, ids = reference[family]
        entry = _model(doc, family)
        assert [t["id"] for t in entry["tokens"]] == ids
        np.testing.assert_array_equal(np.array(entry["attention"], dtype=np.float32), expected)


def test_npz_export_round_trips_to_the_model_tensors(tmp_path, models, reference):
    path = tmp_path / "attention.npz"
    _export(path, models)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["text"]) == DUCK_SENTENCE
        for family in ("gpt", "bert"):
            expected, ids = reference[family]
            np.testing.assert_array_equal(data[f"{family}_attention"], expected)
            assert data[f"{family}_token_ids"].tolist() == ids
        assert data["bert_tokens"][0] == "[CLS]" and bool(data["bert_special"][0])


def test_html_export_is_one_page_with_the_tokens_and_data_and_no_remote_resource(tmp_path, models, reference):
    path = tmp_path / "attention.html"
    _export(path, models)
    page = path.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page and "//cdn" not in page.lower()
    assert not re.search(r"""\b(src|href)\s*=""", page, re.IGNORECASE)
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page
    assert "<select" in page or 'createElement("select")' in page
    data = re.search(r'<script type="application/json" id="gbcli-attention-data">(.*?)</script>', page, re.S)
    assert data is not None
    doc = json.loads(data.group(1))
    for family in ("gpt", "bert"):
        expected, _ = reference[family]
        entry = _model(doc, family)
        assert "␣quacks" in [t["label"] for t in entry["tokens"]] or "quacks" in [t["label"] for t in entry["tokens"]]
        np.testing.assert_allclose(np.array(entry["attention"]), expected, atol=1e-6)


def test_png_export_is_a_valid_image(tmp_path, models):
    import matplotlib.image

    path = tmp_path / "attention.png"
    _export(path, models)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_existing_export_is_kept_without_force_and_replaced_with_it(tmp_path, models):
    path = tmp_path / "attention.json"
    path.write_text("keep me", encoding="utf-8")
    assert_user_error(run("attention", DUCK_SENTENCE, *models, "--export", str(path)), 2, "already exists", "--force")
    assert path.read_text(encoding="utf-8") == "keep me"
    _export(path, models, "--force")
    assert json.loads(path.read_text(encoding="utf-8"))["text"] == DUCK_SENTENCE
    assert [p.name for p in tmp_path.iterdir()] == ["attention.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("missing/attention.json", ["does not exist"]),
        ("attention.txt", ["unknown suffix '.txt'", ".json, .npz, .png, .html"]),
        ("attention", ["no suffix"]),
    ],
)
def test_bad_export_target_is_a_usage_error_before_any_model_loads(tmp_path, name, fragments):
    result = run("attention", DUCK_SENTENCE, "--gpt", str(tmp_path / "no-such-model"), "--export", str(tmp_path / name))
    assert_user_error(result, 2, *fragments)


def test_export_to_a_folder_path_is_a_usage_error(tmp_path, models):
    assert_user_error(run("attention", DUCK_SENTENCE, *models, "--export", str(tmp_path)), 2)


def test_unwritable_folder_is_a_clear_error(tmp_path, models):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; /sys refuses even root
        if not os.path.isdir("/sys") or os.access("/sys", os.W_OK) is False:
            pytest.skip("no folder that refuses root")
        folder = Path("/sys")
    else:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
    result = run("attention", DUCK_SENTENCE, *models, "--export", str(folder / "attention.json"))
    assert_user_error(result, 1, "cannot write", str(folder))


def test_png_without_matplotlib_says_how_to_install_it(tmp_path, models, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    result = run("attention", DUCK_SENTENCE, *models, "--export", str(tmp_path / "attention.png"))
    assert_user_error(result, 1, "matplotlib", "pip install 'gbcli[plot]'")
    assert not (tmp_path / "attention.png").exists()


def test_json_output_reports_the_export(tmp_path, models):
    path = tmp_path / "a.npz"
    doc = run_json("attention", DUCK_SENTENCE, *models, "--export", str(path))
    assert doc["export"]["format"] == "npz" and doc["export"]["bytes"] == path.stat().st_size


# --- the installed executable ---------------------------------------------------------------------------------


def test_the_cli_writes_json_and_the_export(tmp_path, gpt_path, bert_path):
    path = tmp_path / "attention.html"
    process = run(
        "attention", DUCK_SENTENCE, "--gpt", str(gpt_path), "--bert", str(bert_path), "--export", str(path), "--json"
    )
    assert process.exit_code == 0, process.stderr
    doc = json.loads(process.stdout)
    assert [m["family"] for m in doc["models"]] == ["gpt", "bert"]
    assert path.exists() and "wrote" not in process.stdout
