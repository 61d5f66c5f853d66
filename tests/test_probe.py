"""`gbcli probe` and `gbcli similarity` on the tiny models: what each layer knows, checked against independent
computations (states straight from `model(..., output_hidden_states=True)`, a scikit-learn fit of our own)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gbcli.jobs.builtin_tasks import BUILTIN_TASKS, builtin_task
from gbcli.jobs.labelled import read_labelled
from gbcli.loading.models import load_model
from gbcli.render.probe import probe_view
from gbcli.render.similarity import similarity_view
from gbcli.tasks.probe import CS, MAX_ITER, TOL, ProbeOptions, probe
from gbcli.tasks.similarity import REFERENCE_SENTENCES, similarity
from tests.cli_helpers import assert_user_error, run, run_installed, run_json
from tests.fixtures.tiny_models import ANIMAL_SOUNDS, PLACES
from tests.test_layout import assert_whole, render

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat_extras]

FLYING = {"duck", "owl", "wasp"}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def animal_rows(word_level: bool) -> list[dict]:
    """the {animal} {sound} in the {place} . — labelled by whether the animal flies (a fact of the word)."""
    rows = []
    for animal, sound in ANIMAL_SOUNDS:
        for place in PLACES:
            row = {"text": f"the {animal} {sound} in the {place} .", "label": "flies" if animal in FLYING else "walks"}
            if word_level:
                row["word"] = animal
            rows.append(row)
    return rows


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GBCLI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def model_args(gpt_path, bert_path, *extra: str) -> list[str]:
    return ["--gpt", str(gpt_path), "--bert", str(bert_path), *extra]


# --------------------------------------------------------------------------------------------------------------
# What the probe measures
# --------------------------------------------------------------------------------------------------------------


def test_gpt2_sits_exactly_at_the_majority_baseline_on_the_right_context_task(gpt_path, bert_path):
    """Through the installed entry point: GPT's state at 'sheep' cannot see the verb after it; BERT's can."""
    done = run_installed(
        "probe", "--task", "right-context", "--seeds", "1", "--json", "--no-cache", *model_args(gpt_path, bert_path)
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    majority = result["majority"]["runs"]
    rows = {row["title"]: row for row in result["rows"]}
    assert all(score["runs"] == majority for score in rows["GPT"]["layers"])
    assert all(score["runs"] == majority for score in rows["GPT (random init)"]["layers"])
    assert max(score["accuracy"] for score in rows["BERT"]["layers"][1:]) > result["majority"]["accuracy"] + 0.1
    assert rows["BERT"]["layers"][0]["runs"] == majority  # the embeddings of 'sheep' alone know nothing either
    assert any("GPT is exactly at the majority baseline" in line for line in result["reading"])


def test_a_lexical_task_is_solved_from_layer_0_by_both(tmp_path, gpt_path, bert_path):
    data = write_jsonl(tmp_path / "fly.jsonl", animal_rows(word_level=True))
    result = run_json("probe", data, "--seeds", "1", "--control", "none", *model_args(gpt_path, bert_path))
    for row in result["rows"]:
        assert row["layers"][0]["accuracy"] == 1.0, row["title"]
    assert result["majority"]["accuracy"] < 0.7


def _independent_states(path: Path, family: str, texts: list[str]) -> np.ndarray:
    """[layers, texts, hidden]: each text alone through the model, the mean of its non-special pieces."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        keep = encoded.pop("special_tokens_mask")[0] == 0
        with torch.no_grad():
            hidden = model(**encoded, output_hidden_states=True).hidden_states
        out.append(torch.stack([h[0, keep].mean(dim=0) for h in hidden]).numpy())
    return np.stack(out, axis=1)


def test_probe_accuracies_equal_an_independent_scikit_learn_fit(tmp_path, gpt_path, bert_path):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.preprocessing import StandardScaler

    rows = animal_rows(word_level=False)
    data = write_jsonl(tmp_path / "fly.jsonl", rows)
    result = run_json("probe", data, "--seeds", "1", "--control", "none", *model_args(gpt_path, bert_path))
    labels = np.array([row["label"] for row in rows])
    for family, path in (("gpt", gpt_path), ("bert", bert_path)):
        states = _independent_states(path, family, [row["text"] for row in rows])
        probed = next(row for row in result["rows"] if row["family"] == family)
        for layer, score in enumerate(probed["layers"]):
            runs = []
            for seed in range(1):
                train, test = train_test_split(np.arange(len(rows)), test_size=0.25, stratify=labels, random_state=seed)
                scaler = StandardScaler().fit(states[layer, train].astype(np.float64))
                fit = LogisticRegressionCV(
                    Cs=list(CS),
                    l1_ratios=(0.0,),
                    scoring="accuracy",
                    max_iter=MAX_ITER,
                    tol=TOL,
                    cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                    use_legacy_attributes=False,
                )
                fit.fit(scaler.transform(states[layer, train].astype(np.float64)), labels[train])
                predicted = fit.predict(scaler.transform(states[layer, test].astype(np.float64)))
                runs.append(float(np.mean(predicted == labels[test])))
            assert score["runs"] == pytest.approx(runs), (family, layer)


def test_majority_baseline_and_random_init_and_control_task_are_reported(tmp_path, gpt_path, bert_path):
    data = write_jsonl(tmp_path / "fly.jsonl", animal_rows(word_level=True))
    result = run_json("probe", data, "--folds", "2", "--control-task", *model_args(gpt_path, bert_path))
    labels = [row["label"] for row in animal_rows(True)]
    assert result["splits"] == 2
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(2, shuffle=True, random_state=0).split(labels, labels)
    expected = [sum(labels[i] == "walks" for i in test) / len(test) for _, test in folds]  # walks: the majority
    assert result["majority"]["runs"] == pytest.approx(expected)
    titles = [row["title"] for row in result["rows"]]
    assert titles == ["GPT", "BERT", "GPT (random init)", "BERT (random init)"]
    for row in result["rows"]:
        for score in row["layers"]:
            assert score["selectivity"] == pytest.approx(score["accuracy"] - score["control_task"])
            assert score["low"] <= score["accuracy"] <= score["high"]
    assert len(result["comparisons"]) == 1


def test_bart_rows_are_its_encoder_and_decoder(tmp_path, bart_path):
    data = write_jsonl(tmp_path / "fly.jsonl", animal_rows(word_level=True))
    result = run_json("probe", data, "--models", "bart", "--bart", str(bart_path), "--seeds", "1")
    assert [row["title"] for row in result["rows"]] == [
        "BART enc",
        "BART dec",
        "BART enc (random init)",
        "BART dec (random init)",
    ]


def test_pairs_are_read_as_each_family_reads_a_pair(tmp_path, gpt_path, bert_path):
    rows = [
        {
            "text_a": f"the {a} {s} in the {p} .",
            "text_b": f"the {b} {t} in the {p} .",
            "label": "same" if a == b else "different",
        }
        for (a, s) in ANIMAL_SOUNDS[:4]
        for (b, t) in ANIMAL_SOUNDS[:4]
        for p in PLACES[:3]
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    result = run_json("probe", data, "--seeds", "1", "--control", "none", *model_args(gpt_path, bert_path))
    assert result["level"] == "pair" and len(result["rows"]) == 2


# --------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------


def test_cached_states_give_identical_numbers(tmp_path, own_cache, gpt_path, bert_path):
    data = write_jsonl(tmp_path / "fly.jsonl", animal_rows(word_level=True))
    args = ["probe", data, "--seeds", "2", "--control", "none", *model_args(gpt_path, bert_path)]
    first = run_json(*args)
    files = sorted(own_cache.rglob("*"))
    assert [f.suffix for f in files if f.is_file()] == [".npy", ".npy"]
    second = run_json(*args)
    assert first["cache"] == {"GPT": "stored", "BERT": "stored"}
    assert second["cache"] == {"GPT": "hit", "BERT": "hit"}
    assert second["rows"] == first["rows"]
    uncached = run_json(*args, "--no-cache")
    assert uncached["cache"] == {"GPT": "off", "BERT": "off"} and uncached["rows"] == first["rows"]


def test_an_interrupted_extraction_leaves_no_half_written_entry(tmp_path):
    from gbcli.jobs.state_cache import stream_to_cache

    def batches():
        yield [0], [np.ones((1, 3, 4), dtype=np.float32)]
        raise KeyboardInterrupt

    done = tmp_path / "done.npy"
    stream_to_cache([done], iter([([0, 1], [np.arange(24, dtype=np.float32).reshape(2, 3, 4)])]), 2)
    with pytest.raises(KeyboardInterrupt):
        stream_to_cache([tmp_path / "cut.npy"], batches(), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.npy"]
    assert np.array_equal(np.load(done), np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------------------------
# Built-in tasks and the reader
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_TASKS))
def test_write_task_writes_what_probe_reads(tmp_path, name):
    target = tmp_path / f"{name}.jsonl"
    done = run("probe", "--write-task", name, str(target))
    assert done.exit_code == 0, done.stderr
    written, built = read_labelled(str(target)), builtin_task(name)
    assert [(e.text, e.label, e.word) for e in written.examples] == [(e.text, e.label, e.word) for e in built.examples]
    assert written.level == BUILTIN_TASKS[name].level


def test_the_agreement_verbs_do_not_show_number():
    data = builtin_task("agreement")
    by_verb: dict[str, set[str]] = {}
    for example in data.examples:
        by_verb.setdefault(example.word or "", set()).add(example.label)
    assert all(labels == {"singular", "plural"} for labels in by_verb.values())


def test_csv_and_tsv_with_renamed_columns(tmp_path, gpt_path, bert_path):
    lines = [f"{row['label']}\t{row['text']}" for row in animal_rows(False)]
    data = tmp_path / "fly.tsv"
    data.write_text("kind\tsentence\n" + "\n".join(lines) + "\n", encoding="utf-8")
    loaded = read_labelled(str(data), text_field="sentence", label_field="kind")
    assert len(loaded) == 45 and loaded.examples[0].line_number == 2
    result = run_json(
        "probe",
        str(data),
        "--text-field",
        "sentence",
        "--label-field",
        "kind",
        "--seeds",
        "1",
        "--control",
        "none",
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
    )
    assert result["examples"] == 45


# --------------------------------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------------------------------

TEXTS = ["the duck quacks in the park .", "the dog barks in the garden .", "the capital of france is paris ."]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similarity_equals_the_cosine_of_independently_pooled_states(gpt_path, bert_path, tiny_models):
    result = run_json("similarity", *TEXTS, "--gpt", str(gpt_path), "--bert", str(tiny_models["bert_no_head"]))
    for model, path in zip(result["models"], (gpt_path, tiny_models["bert_no_head"]), strict=True):
        states = _independent_states(path, model["family"], TEXTS + list(REFERENCE_SENTENCES))
        last = states.shape[0] - 1
        assert model["layer_index"] == last
        for pair in model["pairs"]:
            expected = _cosine(states[last, pair["a"] - 1], states[last, pair["b"] - 1])
            assert pair["cosine"] == pytest.approx(expected, abs=1e-6)
        reference = states[last, len(TEXTS) :]
        baseline = np.mean(
            [_cosine(reference[i], reference[j]) for i in range(len(reference)) for j in range(i + 1, len(reference))]
        )
        assert model["baseline"] == pytest.approx(baseline, abs=1e-6)
        assert model["pairs"][0]["adjusted"] == pytest.approx(
            model["pairs"][0]["cosine"] - model["baseline"], abs=1e-12
        )


def test_similarity_by_layer_gives_every_layer(gpt_path, bert_path):
    result = run_json("similarity", *TEXTS[:2], "--by-layer", *model_args(gpt_path, bert_path))
    states = _independent_states(gpt_path, "gpt", TEXTS[:2])
    gpt = result["curves"][0]
    assert gpt["layers"] == ["emb", "1", "2"]
    for layer in range(3):
        assert gpt["cosine"][layer] == pytest.approx(_cosine(states[layer, 0], states[layer, 1]), abs=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


def _bad_files(tmp_path: Path) -> dict[str, str]:
    files = {
        "missing.jsonl": '{"text": "the duck quacks ."}\n',
        "empty_label.csv": "text,label\nthe duck quacks .,a\nthe dog barks .,\n",
        "one_label.jsonl": '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n',
        "few.jsonl": '{"text": "the duck", "label": "x"}\n{"text": "the dog", "label": "y"}\n' * 2,
        "word.jsonl": '{"text": "the duck quacks .", "label": "x", "word": "dog"}\n',
        "long.jsonl": "".join(
            json.dumps({"text": "the duck quacks " * 40, "label": str(i % 2)}) + "\n" for i in range(12)
        ),
        "bad.jsonl": '{"text": "a", "label": "x"}\n{"text": \n',
        "empty.csv": "",
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,x\n")
    return {name: str(tmp_path / name) for name in [*files, "latin1.csv"]}


@pytest.mark.parametrize(
    ("name", "extra", "fragments"),
    [
        ("missing.jsonl", [], ["line 1", "'label'"]),
        ("empty_label.csv", [], ["line 3", "empty label"]),
        ("one_label.jsonl", [], ["the label 'x'"]),
        ("few.jsonl", ["--folds", "5"], ["fewer than the 5 folds"]),
        ("word.jsonl", [], ["'dog'", "line 1"]),
        ("long.jsonl", [], ["line 1", "--truncate"]),
        ("bad.jsonl", [], ["line 2", "not valid json"]),
        ("empty.csv", [], ["empty"]),
        ("latin1.csv", [], ["utf-8", "line 2"]),
    ],
)
def test_bad_probe_input_is_a_usage_error_naming_the_line(
    tmp_path, own_cache, gpt_path, bert_path, name, extra, fragments
):
    files = _bad_files(tmp_path)
    result = run("probe", files[name], *extra, *model_args(gpt_path, bert_path))
    assert_user_error(result, 2, *fragments)
    assert not any(p.suffix == ".partial" for p in own_cache.rglob("*"))


def test_truncate_lets_long_texts_through(tmp_path, gpt_path, bert_path):
    files = _bad_files(tmp_path)
    result = run_json(
        "probe",
        files["long.jsonl"],
        "--truncate",
        "--seeds",
        "1",
        "--control",
        "none",
        "--test-size",
        "0.5",
        *model_args(gpt_path, bert_path),
    )
    assert result["examples"] == 12


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([], ["data file or --task"]),
        (["--task", "nope"], ["unknown built-in task", "right-context"]),
        (["--task", "sentiment", "--control-task"], ["word-level"]),
        (["--task", "sentiment", "--pool", "max"], ["unknown pooling"]),
        (["--task", "sentiment", "--test-size", "1.5"], ["--test-size"]),
        (["--task", "sentiment", "--png", "out.svg"], [".png"]),
    ],
)
def test_bad_probe_options(gpt_path, bert_path, args, fragments):
    assert_user_error(run("probe", *args, *model_args(gpt_path, bert_path)), 2, *fragments)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["one text ."], ["2 to 12 texts"]),
        (["a cat .", "a dog .", "a cow .", "--by-layer"], ["--by-layer compares two texts"]),
        (["a cat .", "a dog .", "--layer", "7"], ["--layer 7"]),
        (["a cat .", "a dog .", "--pool", "max"], ["unknown --pool"]),
    ],
)
def test_bad_similarity_input(gpt_path, bert_path, args, fragments):
    assert_user_error(run("similarity", *args, *model_args(gpt_path, bert_path)), 2, *fragments)


# --------------------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(gpt_path, bert_path):
    return [load_model("gpt", str(gpt_path), need_head=False), load_model("bert", str(bert_path), need_head=False)]


def test_probe_view_is_whole_at_80_columns_and_png_is_drawn(tmp_path, loaded, gpt_path, bert_path):
    result = probe(loaded, builtin_task("right-context"), ProbeOptions(seeds=1))
    screen = render(probe_view(result), 80)
    expected = [f"{score.accuracy:.3f}" for row in result.rows for score in row.layers]
    expected += [f"{score.low:.2f}–{score.high:.2f}" for row in result.rows for score in row.layers]
    expected += [row.title for row in result.rows] + ["majority class", *result.reading]
    assert_whole(screen, expected, 80)
    png = tmp_path / "probe.png"
    done = run(
        "probe",
        "--task",
        "right-context",
        "--seeds",
        "1",
        "--control",
        "none",
        "--png",
        str(png),
        *model_args(gpt_path, bert_path),
    )
    assert done.exit_code == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_similarity_views_are_whole_at_80_columns(loaded):
    result = similarity(loaded, TEXTS)
    screen = render(similarity_view(result), 80)
    expected = [f"{pair.cosine:.3f}" for model in result.models for pair in model.pairs]
    expected += [f"{pair.adjusted:+.3f}" for model in result.models for pair in model.pairs] + TEXTS
    assert_whole(screen, expected, 80)
    curves = similarity(loaded, TEXTS[:2], by_layer=True)
    screen = render(similarity_view(curves), 80)
    assert_whole(screen, [f"{value:.3f}" for curve in curves.curves for value in curve.cosine + curve.baseline], 80)


def test_a_given_test_file_and_word_for_every_line(tmp_path, gpt_path, tiny_models):
    rows = [{"text": row["text"], "label": row["label"]} for row in animal_rows(False)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[::2])
    test = write_jsonl(tmp_path / "test.jsonl", rows[1::2])
    result = run_json(
        "probe",
        train,
        "--test",
        test,
        "--word",
        "the",
        "--control",
        "none",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(tiny_models["bert_no_head"]),
    )
    assert result["level"] == "word" and result["splits"] == 1
    assert (result["train_size"], result["test_size"]) == (23, 22)
    assert "Wilson" in result["protocol"]
    # 'the' is the first word: GPT's state there is the same in every sentence.
    gpt = result["rows"][0]
    assert all(score["runs"] == result["majority"]["runs"] for score in gpt["layers"])


def test_similarity_reads_texts_from_a_file_and_labels_bart_stacks(tmp_path, bart_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    result = run_json("similarity", "--file", str(texts), "--models", "bart", "--bart", str(bart_path), "--layer", "0")
    assert result["texts"] == TEXTS
    assert [(m["title"], m["layer"]) for m in result["models"]] == [("BART enc", "emb"), ("BART dec", "emb")]
    assert len(result["models"][0]["pairs"]) == 3


def test_write_task_refuses_to_replace_a_file_without_force(tmp_path):
    target = tmp_path / "task.jsonl"
    target.write_text("mine\n", encoding="utf-8")
    assert_user_error(run("probe", "--write-task", "agreement", str(target)), 2, "exists already", "--force")
    assert target.read_text(encoding="utf-8") == "mine\n"
    assert run("probe", "--write-task", "agreement", str(target), "--force").exit_code == 0
    assert len(read_labelled(str(target))) == 600
    assert_user_error(run("probe", "--write-task", "nope", str(tmp_path / "x.jsonl")), 2, "unknown built-in task")
