"""What a student meets (issue 32): each rough edge, through the entry point, as a class across commands."""

from __future__ import annotations

import io
import itertools
import json
import re

import pytest
from rich.console import Console
from transformers import AutoTokenizer

from tests.cli_helpers import run

TWO_TEXTS = ("the duck quacks in the park .", "once upon a time there was a lion who lived in the yard .")


def flat(screen: str) -> str:
    """The screen's words in order, panel borders dropped: a phrase wrapped inside a panel reads whole."""
    return " ".join(screen.replace("│", " ").split())


# ---- 2. the method lines of several texts count the work of all of them ----------------------------------------


def test_score_of_several_texts_counts_every_texts_masked_copies(models, bert_path):
    result = run("score", *TWO_TEXTS, *models)
    assert result.exit_code == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    counts = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in TWO_TEXTS]
    assert f"{sum(counts)} masked copies for 2 texts ({counts[0]} + {counts[1]}), batched" in flat(result.stdout)
    assert "2 windows for 2 texts (1 + 1)" in flat(result.stdout)


def test_score_file_counts_every_lines_masked_copies(models, bert_path, tmp_path):
    lines = ["the duck quacks .", *TWO_TEXTS, "the cow moos"]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(lines) + "\n")
    result = run("score", "--file", str(path), *models)
    assert result.exit_code == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    counts = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in lines]
    assert f"{sum(counts)} masked copies for 4 texts ({' + '.join(map(str, counts))})" in flat(result.stdout)


# ---- 3. BART's candidates mark a leading space as GPT's do --------------------------------------------------------


def test_bart_fill_mask_rows_mark_the_leading_space_of_their_first_piece(models, bart_path):
    args = ("fill-mask", "the capital of peru is [MASK] .", "--models", "bart", "--bart", str(bart_path), *models)
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    doc = run(*args, "--json")
    predictions = json.loads(doc.stdout)["masks"][0]["bart"]["predictions"]
    spaced = [p for p in predictions if p["pieces"][0].startswith("Ġ")]
    assert spaced, predictions
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    labels = [row[1] for row in rows]
    for prediction in spaced:
        assert "␣" + prediction["word"] in labels, (prediction, result.stdout)
    # Different tokens never read as the same row.
    shown = [row[1] for row in rows[: len(predictions)]]
    assert len(set(shown)) == len(shown)


# ---- the note on a blank at the end says what GPT's whole-sentence column ranked ---------------------------------


def test_a_blank_at_the_end_is_ranked_by_the_probability_after_the_left_context(models, gpt):
    import torch

    args = ("fill-mask", "the duck [MASK]", "--models", "gpt,bert", *models)
    candidates = json.loads(run(*args, "--json").stdout)["masks"][0]["gpt_whole"]["predictions"]
    words = [c["word"] for c in candidates if not c["joins_previous"]]
    assert not candidates[0]["joins_previous"]  # the premise: the winner is a word of its own
    tokenizer, model = gpt
    prefix = [tokenizer.eos_token_id, *tokenizer("the duck")["input_ids"]]

    def after_left_context(word: str) -> float:
        ids = tokenizer(" " + word)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prefix + ids])).logits[0].log_softmax(-1)
        return sum(float(logits[len(prefix) - 1 + i, t]) for i, t in enumerate(ids))

    best = max(words, key=after_left_context)
    assert f"each candidate's probability after the left context, led by '{best}'" in flat(run(*args).stdout)


def test_a_winner_that_joins_the_word_before_is_said_to_rank_another_sentence(models):
    args = ("fill-mask", "the qua [MASK]", "--models", "gpt,bert", *models)
    winner = json.loads(run(*args, "--json").stdout)["masks"][0]["gpt_whole"]["predictions"][0]
    assert winner["joins_previous"]  # the premise: the tiny GPT's best sentence glues a piece to `qua`
    screen = flat(run(*args).stdout)
    assert f"joins the word before it ('qua{winner['word']}', the space before the blank dropped)" in screen
    assert "next-token ranking" not in screen and "not a next-token probability" in screen


# ---- BART's columns: compare says why it scores more tokens than the text has; fill-mask lists each span once ----


def test_compare_says_why_bart_scores_more_tokens_than_the_text_has(models, bart_path):
    args = ("compare", "the duck quacks in the park .", "--with-bart", "--bart", str(bart_path), *models)
    columns = {c["family"]: c for c in json.loads(run(*args, "--json").stdout)["scores"]["columns"]}
    bart = columns["bart"]
    assert bart["scored_tokens"] > bart["text_tokens"]  # the premise: <s> and </s> are scored too
    screen = flat(run(*args).stdout)
    assert f"BART tokens scored {bart['scored_tokens']}/{bart['text_tokens']}: {bart['first_token']}" in screen
    assert "every token scored, <s> and </s> included" in screen
    assert "GPT tokens scored" not in screen  # 7/7 needs no word


def test_bart_lists_each_span_of_a_blank_once_in_its_beam_search_order(models, bart_path, tmp_path):
    text = "the capital of [MASK] is [MASK] ."
    args = ("--models", "bart", "--bart", str(bart_path), *models)
    doc = json.loads(run("fill-mask", text, *args, "--json").stdout)
    beams = [beam for beam in doc["bart"]["beams"] if not beam["rewrote_context"]]
    for mask, slot in enumerate(doc["masks"]):
        rows = [tuple(p["token_ids"]) for p in slot["bart"]["predictions"]]
        # Each span once, from the first (best) beam that wrote it, in the beams' order.
        firsts = list(dict.fromkeys(tuple(beam["spans"][mask]["token_ids"]) for beam in beams))
        assert rows == firsts[: doc["top_k"]]
        assert len(firsts) < len(beams)  # the premise: beams that differ elsewhere repeat a span here
        best = {tuple(b["spans"][mask]["token_ids"]): b["prob"] for b in reversed(beams)}
        assert [p["prob"] for p in slot["bart"]["predictions"]] == [best[row] for row in rows]
    screen = flat(run("fill-mask", text, *args).stdout)
    assert "rows in the beam search's order (its beam score), so p need not fall" in screen
    path = tmp_path / "lines.txt"
    path.write_text(text + "\n")
    table = run("fill-mask", "--file", str(path), "-k", "3", *args).stdout
    assert "(BART: different spans, in its beam search's order)" in flat(table)
    cell = " ".join(line.split("│")[3] for line in table.splitlines() if line.count("│") > 3)
    for blank, slot in zip(cell.split("#")[1:], doc["masks"], strict=True):
        shown = [word for word in blank.split()[1:] if not word[:1].isdigit()]
        assert shown == ["␣" + p["word"] for p in slot["bart"]["predictions"][:3]], table


# ---- 4. every command warns alike when BERT reads [UNK] for characters of the input ------------------------------

SNOWMAN = "☃"  # a character the tiny BERT's vocabulary lacks: it reads [UNK] there


@pytest.mark.parametrize(
    "args",
    [
        ("fill-mask", f"the {SNOWMAN} [MASK] quacks ."),
        ("score", f"the {SNOWMAN} duck quacks ."),
        ("attention", f"the {SNOWMAN} duck quacks ."),
        ("lens", f"the {SNOWMAN} [MASK] quacks ."),
        ("saliency", f"the {SNOWMAN} [MASK] quacks .", "--steps", "4"),
        ("context", f"the {SNOWMAN} duck quacks .", "--change", "duck=dog"),
        ("generate", f"the {SNOWMAN} duck", "--max-new-tokens", "2"),
        ("compare", f"the {SNOWMAN} [MASK] quacks ."),
        ("pairs", f"the {SNOWMAN} duck quacks .", f"the {SNOWMAN} duck quack ."),
        ("similarity", f"the {SNOWMAN} duck quacks .", "the duck barks ."),
    ],
    ids=lambda args: args[0],
)
def test_every_command_warns_when_bert_reads_unknown_for_the_input(models, bert_path, args):
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    assert tokenizer.unk_token_id in tokenizer(SNOWMAN)["input_ids"]  # the premise: BERT has no token for it
    result = run(*args, "--models", "bert", *models)
    assert result.exit_code == 0, result.stderr
    warning = flat(result.stderr)
    assert "warning: BERT" in warning and "[UNK]" in warning, result.stderr
    if args[0] != "score":  # score names the texts by number
        assert f"'{SNOWMAN}'" in warning
    clean = run(*(a.replace(f"{SNOWMAN} ", "") for a in args), "--models", "bert", *models)
    assert "[UNK]" not in clean.stderr


def labelled_file(tmp_path, texts: list[str]) -> str:
    path = tmp_path / "labelled.csv"
    path.write_text("text,label\n" + "".join(f"{text},{'ab'[i % 2]}\n" for i, text in enumerate(texts)))
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ("probe", "--seeds", "1", "--control", "none", "--no-cache"),
        ("finetune", "--epochs", "1", "--batch-size", "4", "--no-estimate", "--device", "cpu"),
    ],
    ids=lambda args: args[0],
)
def test_probe_and_finetune_warn_when_bert_reads_unknown_in_their_data(models, tmp_path, args):
    # tokenize shows [UNK] in its own table and counts it; tour reads its own sentences: neither warns.
    texts = [
        f"the {animal} {verb} in the park ." for animal in ("duck", "cow", "dog", "cat") for verb in ("runs", "eats")
    ]
    extra = ("-o", str(tmp_path / "out")) if args[0] == "finetune" else ()
    unknown = run(args[0], labelled_file(tmp_path, [f"the {SNOWMAN} duck .", *texts]), *args[1:], *extra, *models)
    assert unknown.exit_code == 0, unknown.stderr
    warning = flat(unknown.stderr)
    assert "warning: BERT" in warning and f"'{SNOWMAN}' in the texts" in warning, unknown.stderr
    assert "warning: GPT" not in warning  # byte-level BPE has a token for every character
    extra = ("-o", str(tmp_path / "out-clean")) if args[0] == "finetune" else ()
    clean = run(args[0], labelled_file(tmp_path, ["the duck quacks .", *texts]), *args[1:], *extra, *models)
    assert clean.exit_code == 0 and "[UNK]" not in clean.stderr, clean.stderr


# ---- 5. one layer numbering: emb = 0, blocks 1..L, in attention as in lens and context ---------------------------


def test_attention_numbers_layers_as_lens_and_context_do(models, gpt_path):
    from tests.test_attention import reference_attention

    weights, _ = reference_attention(gpt_path, "gpt", "the duck quacks .")
    blocks = weights.shape[0]
    screen = run("attention", "the duck quacks .", "--models", "gpt", *models).stdout
    assert f"layer {blocks} (last)" in screen
    lens = run("lens", "the duck [MASK] .", "--models", "gpt", *models).stdout
    assert f"\n{blocks} " in lens or f" {blocks} " in lens  # lens's last block carries the same number
    first = run("attention", "the duck quacks .", "--models", "gpt", "--layer", "1", "--json", *models)
    (entry,) = json.loads(first.stdout)["models"]
    assert entry["layer"] == 1
    # Layer 1 is the first block: attentions[0] in transformers' own indexing.
    import numpy as np

    np.testing.assert_allclose(entry["matrix"], weights[0].mean(0), atol=1e-6)
    embeddings = run("attention", "the duck quacks .", "--models", "gpt", "--layer", "0", *models)
    assert embeddings.exit_code == 2 and "embeddings" in embeddings.stderr


# ---- 10. no legend names a colour the screen does not show --------------------------------------------------------


@pytest.mark.parametrize("colour", [False, True], ids=["NO_COLOR", "colour"])
def test_attention_legend_names_magenta_only_where_colour_shows(models, colour):
    import io

    from rich.console import Console

    from gbcli.loading.models import load_model
    from gbcli.render.attention import attention_view
    from gbcli.tasks.attention import build_report, compute_attention

    lm = load_model("bert", models[models.index("--bert") + 1])
    report = build_report(
        "the duck quacks .",
        [compute_attention(lm, "the duck quacks .")],
        layer=None,
        head=None,
        summary=False,
        stat="entropy",
        token=None,
        top=5,
    )
    for width in (80, 120):
        console = Console(width=width, record=True, file=io.StringIO(), color_system="truecolor" if colour else None)
        console.print(attention_view(report, 0))
        screen = console.export_text()
        assert ("magenta" in screen) == colour
        assert "special tokens" in flat(screen)
    piped = run("attention", "the duck quacks .", "--models", "bert", *models)
    assert "magenta" not in piped.stdout and "special tokens ([CLS]" in flat(piped.stdout)


# ---- 6. context --word: the emb row differs by position, and the note says so ------------------------------------


def test_context_word_note_says_the_embeddings_differ_by_position(models, bert):
    import torch

    texts = ["the duck quacks in the park .", "a duck swims .", "once upon a time there was a duck ."]
    doc = json.loads(run("context", "--word", "duck", *texts, "--models", "bert", "--json", *models).stdout)
    (similarity,) = doc["similarities"]
    positions = [occurrence["positions"][0] for occurrence in similarity["occurrences"]]
    tokenizer, model = bert
    with torch.no_grad():
        embedded = [
            model.bert.embeddings(input_ids=tokenizer(text, return_tensors="pt")["input_ids"])[0, position]
            for text, position in zip(texts, positions, strict=True)
        ]
    for pair in similarity["pairs"]:
        a, b = embedded[pair["a"] - 1], embedded[pair["b"] - 1]
        expected = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        assert pair["cosine"][0] == pytest.approx(expected, abs=1e-5)
        assert pair["identical"][0] == (positions[pair["a"] - 1] == positions[pair["b"] - 1])
    assert "position" in doc["note"] and "ignore the context" not in doc["note"]
    screen = flat(run("context", "--word", "duck", *texts, "--models", "bert", *models).stdout)
    assert "only for sentences where the word sits at the same position" in screen


# ---- 7. one BOS convention: generate reads <|endoftext|> before the prompt, as score does, and says so ------------


def test_generates_first_token_has_the_probability_score_gives_it(models):
    prompt = "once upon a time"
    doc = json.loads(
        run("generate", prompt, "--greedy", "--max-new-tokens", "1", "--models", "gpt", "--json", *models).stdout
    )
    (first,) = doc["columns"][0]["continuations"][0]["tokens"]
    scored = json.loads(
        run("score", prompt + first["text"], "--tokens", "--models", "gpt", "--json", *models).stdout.splitlines()[0]
    )
    last = scored["columns"][0]["tokens"][-1]
    assert last["id"] == first["id"]
    assert last["logprob"] == pytest.approx(first["logprob"], abs=1e-5)
    screen = flat(run("generate", prompt, "--greedy", "--max-new-tokens", "1", "--models", "gpt", *models).stdout)
    assert "reads <|endoftext|> then the prompt, as score, fill-mask and lens read a text" in screen


# ---- 8. compare says whose filling it scored and why, once, with the p columns' footnotes -------------------------


def test_compare_names_whose_filling_it_scores_and_the_ones_that_differ(models, bart_path):
    args = ("compare", "the capital of [MASK] is [MASK] .", "--with-bart", "--bart", str(bart_path), *models)
    doc = json.loads(run(*args, "--json").stdout)
    fillings = {f["column"]: f["text"] for f in doc["predictions"]["fillings"]}
    assert doc["scored_filling"] == "bert" and doc["scored_text"] == fillings["bert"]
    screen = flat(run(*args).stdout)
    assert screen.count(doc["scored_text"]) >= 1 and "scored with the blanks filled" not in screen
    assert screen.count("Scores of:") == 1
    assert "filled by BERT (both sides), which runs first; all models score this sentence" in screen
    differing = {text for column, text in fillings.items() if text != doc["scored_text"] and column != "gpt_left"}
    assert differing  # the premise: the views disagree on this text
    for text in differing:
        assert f'filled it differently: {text} (gbcli score "{text}" scores it)' in screen
    # The p columns are explained on the compact screen too.
    assert "BERT p: softmax over the whole vocabulary" in screen and "GPT whole p(sent.)" in screen


# ---- 9. fill-mask --file's table honours -k, and says how many each cell holds ------------------------------------


def test_fill_mask_file_table_shows_the_k_best_of_each_blank(models, tmp_path):
    path = tmp_path / "blanks.txt"
    path.write_text("the [MASK] quacks .\nthe capital of [MASK] is [MASK] .\n")
    records = [
        json.loads(line)
        for line in run(
            "fill-mask", "--file", str(path), "-k", "3", "--json", "--models", "bert", *models
        ).stdout.splitlines()
    ]
    screen = run("fill-mask", "--file", str(path), "-k", "3", "--models", "bert", *models, env={"COLUMNS": "120"})
    assert screen.exit_code == 0, screen.stderr
    lines = flat(screen.stdout)
    for record in records:
        for slot in record["masks"]:
            assert len(slot["bert"]["predictions"]) == 3
            for prediction in slot["bert"]["predictions"]:
                assert f"{prediction['word']} {prediction['prob']:.4f}" in lines
    assert "each cell: the 3 best candidates of each blank" in lines
    default = flat(run("fill-mask", "--file", str(path), "--models", "bert", *models).stdout)
    second = records[0]["masks"][0]["bert"]["predictions"][1]
    assert f"{second['word']} {second['prob']:.4f}" not in default
    assert "each cell: the best candidate of each blank; -k N shows the N best" in default


# ---- 11. the docs' offline snippet works as written --------------------------------------------------------------


def test_readme_offline_snippet_saves_every_folder_its_command_uses(gpt_path, bert_path, tmp_path, monkeypatch):
    """The snippet's Python runs for real, each hub name read from the tiny model of its kind (the hub is out of
    reach), then its gbcli command runs on the folders it wrote."""
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "docs" / "models.md").read_text()
    block = readme[readme.index("## Offline, with local checkpoints") :]
    block = block[block.index("```bash") + len("```bash") : block.index("```", block.index("```bash") + 7)]
    script = re.search(r"python - <<'EOF'\n(.*?)\nEOF\n", block, re.DOTALL).group(1)
    command = next(line for line in block.splitlines() if line.startswith("gbcli "))
    sources = {"gpt2": str(gpt_path), "bert-base-uncased": str(bert_path)}
    monkeypatch.chdir(tmp_path)
    exec(script.replace(".from_pretrained(name)", ".from_pretrained(SOURCES[name])"), {"SOURCES": sources})
    args = shlex.split(command)[1:]
    for option in ("--gpt", "--bert"):
        assert (tmp_path / args[args.index(option) + 1] / "config.json").exists(), option
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert "Scores" in result.stdout


# ---- 12. a mistake in the text itself is refused before torch is imported -----------------------------------------

TOO_MANY_MASKS = " ".join(["[MASK]"] * 33)


@pytest.mark.parametrize(
    "args",
    [
        ("fill-mask", "no mask here"),
        ("fill-mask", TOO_MANY_MASKS),
        ("compare", TOO_MANY_MASKS),
        ("compare", "  "),
        ("lens", "the [MASK] and [MASK] ."),
        ("generate", "  "),
        ("context", "the duck", "--change", "zebra=dog"),
        ("generate", "hi", "--max-new-tokens", "64"),  # the tiny models hold 64 tokens: no room for the prompt
        ("similarity", "only one text"),
        ("similarity", "a b", "c d", "--pool", "max"),
        ("saliency", "  "),
        ("saliency", "the [MASK] quacks", "--method", "bogus"),
        ("tour", "--steps", "bogus"),
        ("probe", "--task", "right-context", "--test", "x.jsonl", "--folds", "3"),
        ("finetune", "data.csv", "--resume", "--force"),
    ],
    ids=lambda args: f"{args[0]}-{' '.join(args[1:])[:16].strip() or 'empty'}",
)
def test_a_usage_error_in_the_text_comes_before_any_heavy_import(args, models):
    from tests.test_startup import modules_imported_by

    assert modules_imported_by([*args, *models], ("torch", "transformers")) == []
    result = run(*args, *models)
    assert result.exit_code == 2 and "error:" in result.stderr and "hint:" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("attention", "the duck", "--layer", "40"), "gpt has {gpt.n_layer} layers, numbered 1 to {gpt.n_layer}"),
        (("attention", "the duck", "--head", "-9"), "gpt has {gpt.n_head} heads per layer, numbered 0 to"),
        (
            ("attention", "the duck", "--models", "bert", "--layer", "0"),
            "bert's attention layers are 1 to {bert.num_hidden_layers}",
        ),
        (
            ("attention", "the duck", "--models", "bart", "--head", "7"),
            "bart's encoder has {bart.encoder_attention_heads} heads per layer",
        ),
        (
            ("similarity", "the duck", "the cow", "--layer", "9"),
            "gpt has layers 0 (the embeddings) to {gpt.n_layer}; --layer 9 is not one",
        ),
    ],
    ids=["attention-layer", "attention-head", "attention-layer-0", "attention-bart-head", "similarity-layer"],
)
def test_a_layer_or_head_out_of_range_is_refused_from_config_json_before_torch(
    args, message, models, gpt_path, bert_path, bart_path
):
    from transformers import AutoConfig

    from tests.test_startup import modules_imported_by

    every_model = [*models, "--bart", str(bart_path)]
    assert modules_imported_by([*args, *every_model], ("torch", "transformers")) == []
    result = run(*args, *every_model)
    assert result.exit_code == 2 and "hint:" in result.stderr, result.stderr
    paths = {"gpt": gpt_path, "bert": bert_path, "bart": bart_path}
    configs = {family: AutoConfig.from_pretrained(path) for family, path in paths.items()}
    assert message.format(**configs) in flat(result.stderr)


def test_a_config_whose_counts_have_other_names_waits_for_the_load():
    from gbcli.loading.shapes import StackShape, stacks_of

    assert stacks_of({"n_layer": 12, "n_head": 12}) == [StackShape("", 12, 12)]
    assert stacks_of({"is_encoder_decoder": True, "num_layers": 6, "num_heads": 8}) is None  # T5's names
    assert stacks_of({"hidden_size": 8}) is None


# ---- 13. tokenize reads the tokenizers alone: no weights, no torch ------------------------------------------------


def test_tokenize_loads_no_model_and_imports_no_torch(models, gpt_path, bert_path):
    from tests.test_startup import modules_imported_by

    assert modules_imported_by(["tokenize", "the duck quacks .", *models], ("torch",)) == []
    doc = json.loads(run("tokenize", "the duck quacks .", "--json", *models).stdout)
    for family, path in (("gpt", gpt_path), ("bert", bert_path)):
        expected = AutoTokenizer.from_pretrained(path)("the duck quacks .")["input_ids"]
        (column,) = [c for c in doc["columns"] if c["family"] == family]
        assert [p["id"] for p in column["pieces"]] == expected


# ---- 14. a long score shows its masked copies as they are done, here and through the server ----------------------

LONG_TEXT = " ".join(["the duck quacks in the park ."] * 6)


def bert_tokens(bert_path, text: str) -> int:
    return len(AutoTokenizer.from_pretrained(bert_path)(text, add_special_tokens=False)["input_ids"])


def test_a_long_score_counts_its_masked_copies_on_a_terminal(models, bert_path):
    result = run("score", LONG_TEXT, *models, env={"TTY_COMPATIBLE": "1", "NO_COLOR": ""})
    assert result.exit_code == 0, result.stderr
    copies = bert_tokens(bert_path, LONG_TEXT)
    assert "BERT masked copies" in result.stderr and f"{copies}/{copies}" in result.stderr
    assert "GPT windows" in result.stderr
    piped = run("score", LONG_TEXT, *models)  # no terminal: no bar at all
    assert "masked copies" not in piped.stderr


# ---- 14 (NO_COLOR). a terminal with NO_COLOR gets the same progress, as plain lines free of escape codes -----------

NO_COLOR_TERMINAL = {"TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # Rich takes stderr for a terminal; NO_COLOR is set
ESCAPE = "\x1b"


def test_a_long_score_counts_its_masked_copies_in_plain_lines_under_no_color(models, bert_path, monkeypatch):
    import gbcli.render.progress

    monkeypatch.setattr(gbcli.render.progress, "PLAIN_EVERY", 0.0)  # a line at every count: the tiny model is quick
    result = run("score", LONG_TEXT, *models, env=NO_COLOR_TERMINAL)
    assert result.exit_code == 0, result.stderr
    copies = bert_tokens(bert_path, LONG_TEXT)
    lines = result.stderr.splitlines()
    assert any(f"BERT masked copies {copies}/{copies}" in line and "left)" in line for line in lines), lines
    assert ESCAPE not in result.stderr


@pytest.mark.parametrize("command", ["pairs", "fill-mask"])
def test_file_commands_under_no_color_count_their_lines_without_escape_codes(command, models, tmp_path, monkeypatch):
    import gbcli.render.progress

    monkeypatch.setattr(gbcli.render.progress, "PLAIN_EVERY", 0.0)
    path = tmp_path / "lines.txt"
    if command == "pairs":
        path.write_text("the duck quacks .\tthe duck quack .\n" * 8)
    else:
        path.write_text("the [MASK] quacks in the park .\n" * 8)
    result = run(command, "--file", str(path), *models, env=NO_COLOR_TERMINAL)
    assert result.exit_code == 0, result.stderr
    assert ESCAPE not in result.stderr  # the bar drew itself with cursor moves here before
    assert "8/8" in result.stderr, result.stderr


def test_generate_under_no_color_says_where_its_writing_is_in_plain_lines(models, monkeypatch):
    import gbcli.render.progress

    monkeypatch.setattr(gbcli.render.progress, "PLAIN_EVERY", 0.0)
    args = ("generate", "once upon a time", "-n", "2", "--max-new-tokens", "4", "--seed", "1", "--models", "gpt")
    result = run(*args, *models, env=NO_COLOR_TERMINAL)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("GPT · gpt: sequence")]
    assert lines[0].startswith("GPT · gpt: sequence 1 of 2, ") and lines[-1].startswith("GPT · gpt: sequence 2 of 2")
    assert lines[-1].endswith("words so far") and ESCAPE not in result.stderr + result.stdout
    assert "sequence" not in run(*args, *models).stderr  # off a terminal: no progress


def test_the_cold_load_says_its_steps_in_plain_lines_under_no_color(gpt_path):
    from tests.cli_helpers import run_installed

    completed = run_installed(
        "score",
        "the duck quacks .",
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        env={**NO_COLOR_TERMINAL, "GBCLI_NO_SERVER": "1"},
    )
    assert completed.returncode == 0, completed.stderr.decode()
    lines = completed.stderr.decode().splitlines()
    assert lines[:2] == ["Importing torch and transformers (once per process) …", f"Loading GPT model {gpt_path} …"]
    assert ESCAPE not in completed.stderr.decode() + completed.stdout.decode()
    piped = run_installed("score", "the duck quacks .", "--models", "gpt", "--gpt", str(gpt_path))
    assert b"Loading" not in piped.stderr  # off a terminal: no progress at all


# ---- 15. the cold spinner says the wait is the imports, then names the model --------------------------------------


def test_the_cold_spinner_names_the_imports_before_the_model(gpt_path):
    from tests.cli_helpers import run_installed

    completed = run_installed(
        "score",
        "the duck quacks .",
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        env={"TTY_COMPATIBLE": "1", "NO_COLOR": "", "GBCLI_NO_SERVER": "1"},
    )
    assert completed.returncode == 0, completed.stderr.decode()
    shown = completed.stderr.decode()
    importing, loading = shown.find("Importing torch and transformers (once per process)"), shown.find("Loading GPT")
    assert 0 <= importing < loading, shown


def test_generates_live_view_names_the_imports_before_the_model(gpt_path):
    from tests.cli_helpers import run_installed

    completed = run_installed(
        "generate",
        "the duck",
        "--max-new-tokens",
        "2",
        "--models",
        "gpt",
        "--gpt",
        str(gpt_path),
        env={"TTY_COMPATIBLE": "1", "NO_COLOR": "", "GBCLI_NO_SERVER": "1"},
    )
    assert completed.returncode == 0, completed.stderr.decode()
    shown = completed.stdout.decode()
    importing, loading = shown.find("importing torch and transformers (once per process)"), shown.find("loading gpt")
    assert 0 <= importing < loading, shown


# ---- 16. -n samples one sequence after the other: each streams, and Ctrl-C keeps the ones written ----------------


def test_the_first_of_several_samples_is_the_one_sample_of_the_same_seed(models):
    one = json.loads(
        run(
            "generate", "once upon a time", "--seed", "5", "--max-new-tokens", "6", "--models", "gpt", "--json", *models
        ).stdout
    )
    three = json.loads(
        run(
            "generate",
            "once upon a time",
            "--seed",
            "5",
            "--max-new-tokens",
            "6",
            "-n",
            "3",
            "--models",
            "gpt",
            "--json",
            *models,
        ).stdout
    )
    first = [t["id"] for t in one["columns"][0]["continuations"][0]["tokens"]]
    sequences = [[t["id"] for t in c["tokens"]] for c in three["columns"][0]["continuations"]]
    assert len(sequences) == 3 and sequences[0] == first
    again = json.loads(
        run(
            "generate",
            "once upon a time",
            "--seed",
            "5",
            "--max-new-tokens",
            "6",
            "-n",
            "3",
            "--models",
            "gpt",
            "--json",
            *models,
        ).stdout
    )
    # The same tokens; their log-probabilities to 1e-5, since the decoding step chooses its thread split by timing
    # it (gbcli.lm.fast.threads) and another split sums a dot product in another order.
    repeated = again["columns"][0]["continuations"]
    assert [[t["id"] for t in c["tokens"]] for c in repeated] == sequences
    pairs = zip(repeated, three["columns"][0]["continuations"], strict=True)
    assert all(
        abs(a["logprob"] - b["logprob"]) <= 1e-5
        for c, d in pairs
        for a, b in zip(c["tokens"], d["tokens"], strict=True)
    )


def interrupted_generation(long_context_gpt, *options: str) -> list[str]:
    """`gbcli generate "once upon a time" OPTIONS` on the never-ending GPT-2, piped, sent SIGINT once it is past
    start-up's CPU seconds: the lines it kept (exit 130, no traceback)."""
    import os
    import signal
    import subprocess

    from tests.cli_helpers import TRACEBACK, gbcli_executable
    from tests.test_signals import _wait_for_cpu_seconds

    process = subprocess.Popen(
        [
            gbcli_executable(),
            "generate",
            "once upon a time",
            *("--models", "gpt", "--gpt", str(long_context_gpt)),
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "GBCLI_NO_SERVER": "1", "OMP_NUM_THREADS": "1"},
    )
    _wait_for_cpu_seconds(process.pid, 8, timeout=240)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert TRACEBACK.encode() not in stderr
    return stdout.decode().splitlines()


def test_ctrl_c_during_many_samples_keeps_the_ones_written(long_context_gpt):
    lines = interrupted_generation(long_context_gpt, "--max-new-tokens", "40", "-n", "64", "--seed", "1")
    whole = [line for line in lines if " (whole): once upon a time" in line]
    cut = [line for line in lines if " (interrupted): once upon a time" in line]
    assert len(whole) >= 1 and len(cut) == 1, lines
    assert whole[0].startswith("GPT · ") and " #1 (whole)" in whole[0]


@pytest.mark.parametrize("family", ["gpt", "bert", "bart"])
def test_a_beam_search_shows_its_best_beam_at_every_step(family, long_context_gpt, bert_path, bart_path):
    """Beam search cannot stream its answer (known only at the end): each step reports the beam ranked first so far,
    and when the search runs its full length that last report is the answer it returns first."""
    from gbcli.loading.models import load_model
    from gbcli.tasks.decoding_options import settings_from_options
    from gbcli.tasks.generation.causal import generate_causal
    from gbcli.tasks.generation.masked import generate_masked
    from gbcli.tasks.seq2seq import generate_seq2seq

    path = {"gpt": long_context_gpt, "bert": bert_path, "bart": bart_path}[family]
    runner = {"gpt": generate_causal, "bert": generate_masked, "bart": generate_seq2seq}[family]
    settings = settings_from_options(max_new_tokens=5, num_beams=3, num_return_sequences=2)
    reports: list[tuple[str, str, int]] = []
    generation = runner(load_model(family, str(path)), "once upon a time", settings, lambda *r: reports.append(r))
    assert reports and all(f == family and sequence == 0 for f, _, sequence in reports)
    assert len(generation.continuations) == 2
    if family == "bart":  # BART writes the prompt again before it continues: fewer steps than max_new_tokens here
        return
    assert len(reports) == 5  # one report per step
    assert reports[-1][1] == generation.continuations[0].text


def test_ctrl_c_during_a_beam_search_keeps_its_best_beam_so_far(long_context_gpt):
    lines = interrupted_generation(long_context_gpt, "--max-new-tokens", "3000", "--num-beams", "4", "-n", "2")
    assert len(lines) == 1, lines
    assert lines[0].startswith("GPT · ") and "(interrupted, best of 4 beams so far): once upon a time" in lines[0]
    assert len(lines[0].split("once upon a time", 1)[1]) > 0  # some of the search was kept


@pytest.mark.parametrize("width", [80, 120])
def test_a_streamed_beam_search_says_its_text_is_the_best_beam_so_far(width):
    from gbcli.render.generation import StreamingView

    view = StreamingView("once upon a time", [("gpt", "tiny-gpt"), ("bert", "tiny-bert")], beams=4)
    view.update("gpt", " there was")
    console = Console(width=width, file=io.StringIO(), no_color=True)
    console.print(view)
    screen = console.file.getvalue()
    assert "GPT · tiny-gpt · best of 4 beams so far" in screen
    assert "BERT · tiny-bert ·" not in screen  # only the column being written
    assert max(len(line) for line in screen.splitlines()) <= width
    assert "(interrupted)" not in screen
    view.interrupted = True  # Ctrl-C: the last frame stays, the text it cut short marked
    console.print(view)
    assert "(interrupted)" in console.file.getvalue()


def test_a_finished_column_is_not_marked_cut_short_when_ctrl_c_comes_during_the_next_load():
    from gbcli.render.generation import StreamingView
    from gbcli.tasks.generation import Continuation, ModelGeneration

    view = StreamingView("once upon a time", [("gpt", "tiny-gpt"), ("bert", "tiny-bert")], beams=4)
    view.update("gpt", " there")  # the beam that led at the last step ...
    finished = [Continuation(" there was", [], None), Continuation(" there is", [], None)]
    view.finish(ModelGeneration("gpt", "tiny-gpt", "", finished, 2, 0.1, 20.0))  # ... and the search's ranking
    view.loading("bert")
    view.interrupted = True
    console = Console(width=80, file=io.StringIO(), no_color=True)
    console.print(view)
    screen = console.file.getvalue()
    assert "(interrupted)" not in screen and "beams so far" not in screen
    assert "#1 once upon a time there was" in screen and "#2 once upon a time there is" in screen


# ---- 17. a typo gets one "did you mean", and a hint about what it got wrong ---------------------------------------


@pytest.mark.parametrize(
    ("args", "message", "guess", "where"),
    [
        (
            ("fil-mask", "x"),
            "No such command 'fil-mask'.",
            "Did you mean fill-mask?",
            "`gbcli --help` lists the commands",
        ),
        (("comapre", "x"), "No such command 'comapre'.", "Did you mean compare?", "`gbcli --help` lists the commands"),
        (
            ("fill-mask", "--topk", "3", "x"),
            "No such option --topk.",
            "Did you mean --top-k?",
            "`gbcli fill-mask --help` lists this command's options",
        ),
    ],
)
def test_a_typo_gets_one_did_you_mean(args, message, guess, where):
    from tests.cli_helpers import run_installed

    completed = run_installed(*args)
    assert completed.returncode == 2
    shown = completed.stderr.decode()
    assert f"error: {message}\n" in shown and f"hint: {guess} {where}" in shown, shown
    assert shown.count("Did you mean") == 1 and "what each option accepts" not in shown


# ---- 18. the shell: no shell inside it, `clear` clears, `set` guesses the option meant ---------------------------


def test_the_shell_refuses_a_shell_inside_it_and_guesses_a_mistyped_option(models):
    result = run("shell", *models, input="shell\nset topk 3\nclear\nexit\n")
    assert "error: This is the gbcli shell already." in result.stderr
    assert "error: No command has an option --topk." in result.stderr and "hint: Did you mean top-k" in result.stderr
    assert "Options:" not in result.stderr  # not sixty names
    assert "compare:" not in result.stdout  # `clear` is the shell's own word, not a text for compare


def test_hints_in_the_shell_show_commands_as_typed_there(models):
    result = run("shell", *models, input="generate the duck\nfil-mask\nshell\n")
    # The shell split an unquoted prompt: its hint shows the line to type in the shell, without `gbcli`.
    assert 'hint: Quote a prompt of several words: generate "the duck"' in result.stderr
    assert "gbcli generate" not in result.stderr
    assert "error: This is the gbcli shell already." in result.stderr
    outside = run("generate", "the", "duck", *models)  # the same mistake on the command line keeps `gbcli`
    assert 'hint: Quote a prompt of several words: gbcli generate "the duck"' in outside.stderr


# ---- 19. error:, hint: and warning: lines wrap between words on a terminal ---------------------------------------


def test_error_and_hint_wrap_between_words_on_an_80_column_terminal(models):
    from rich.cells import cell_len

    args = ("fill-mask", "no blank in this text, so fill-mask refuses it before loading a model")
    shown = run(*args, *models, env={"TTY_COMPATIBLE": "1", "COLUMNS": "80"}).stderr
    piped = run(*args, *models).stderr  # off a terminal: one line each, for grep
    assert len(piped.splitlines()) == 2
    lines = shown.splitlines()
    assert len(lines) > 2 and all(cell_len(line.rstrip()) <= 80 for line in lines)
    # The same words, none cut: wrapped only between words, the continuation under the message.
    assert shown.split() == piped.split()
    assert all(line.startswith(("error: ", "hint: ", "      ")) for line in lines)


# ---- 20. --show-probs off colour: every tag whole, the end token named ----------------------------------------------


def test_probability_tags_stay_whole_and_the_end_token_is_named(models, bart_path):
    import re

    args = (
        "generate",
        "once upon a time",
        "--greedy",
        "--max-new-tokens",
        "14",
        "--with-bart",
        "--bart",
        str(bart_path),
        *models,
    )
    doc = json.loads(run(*args, "--json").stdout)
    for width in ("80", "120"):
        screen = run(*args, "--show-probs", env={"COLUMNS": width}).stdout
        panels = screen.split("\ndecoding:")[0]  # the legend below names the [<.01] tag too
        tags = re.findall(r"\[(?:\d\.\d\d|<\.01)\]", panels)
        written = sum(len(c["continuations"][0]["tokens"]) for c in doc["columns"])
        assert len(tags) == written, screen  # one whole tag per token, none split over two lines
        assert not re.search(r"\[[\d.<]*\s*│?\s*$", screen, re.MULTILINE)
        gpt = doc["columns"][0]["continuations"][0]
        if gpt["stopped_at_eos"]:
            assert "<|endoftext|>[" in screen  # the end token has a name where its tag is


def test_a_run_of_tokens_wider_than_the_line_breaks_between_tokens():
    import io

    from rich.console import Console

    from gbcli.render.common import ProbText

    pieces = [(" park", 0.22), (".", 1.0), (".", 1.0), (".", 0.5), (" who", 0.97)]
    for width in (11, 14, 17):  # each token and its tag fit; a run of them does not
        console = Console(width=width, file=io.StringIO(), color_system=None, record=True)
        console.print(ProbText(pieces))
        lines = [line.strip() for line in console.export_text().splitlines() if line.strip()]
        assert "".join(lines).replace(" ", "") == "park[0.22].[1.00].[1.00].[0.50]who[0.97]", (width, lines)
        for line in lines:  # every line holds whole tokens with their tags
            assert re.fullmatch(r"(\S+?\[\d\.\d\d\]\s*)+", line), (width, lines)


# ---- 21. BERT's `..` is named as separate tokens ----------------------------------------------------------


def test_joined_punctuation_tokens_are_named_as_tokens(models):
    doc = json.loads(
        run(
            "generate", "once upon a time", "--greedy", "--max-new-tokens", "14", "--models", "bert", "--json", *models
        ).stdout
    )
    tokens = [t["text"] for t in doc["columns"][0]["continuations"][0]["tokens"]]
    assert any(a == b == "." for a, b in itertools.pairwise(tokens))  # the premise: BERT wrote ". ."
    screen = flat(
        run("generate", "once upon a time", "--greedy", "--max-new-tokens", "14", "--models", "bert", *models).stdout
    )
    assert "'..' is 2 tokens, not one sign" in screen


# ---- 22. a long text is excerpted in score's table of many texts ------------------------------------------------


def test_score_table_shows_a_long_texts_beginning_and_length(models, tmp_path):
    paragraph = " ".join(["the duck quacks in the park and the dog barks ."] * 4)  # 44 tokens: BERT holds 64
    path = tmp_path / "texts.txt"
    path.write_text(f"the duck quacks .\n{paragraph}\n")
    screen = run("score", "--file", str(path), *models).stdout
    assert f"… ({len(paragraph.split())} words)" in flat(screen)
    assert len(screen.splitlines()) < 30
    doc = [json.loads(line) for line in run("score", "--file", str(path), "--json", *models).stdout.splitlines()]
    assert doc[1]["text"] == paragraph  # --json keeps it whole


@pytest.mark.parametrize("width", ["80", "120"])
def test_score_of_one_long_text_names_it_by_its_beginning_on_a_full_width_line(gpt_path, tmp_path, width):
    paragraph = " ".join(["the duck quacks in the park and the dog barks ."] * 40)  # GPT-2 slides its window
    path = tmp_path / "one.txt"
    path.write_text(paragraph + "\n")
    screen = run("score", "--file", str(path), "--models", "gpt", "--gpt", str(gpt_path), env={"COLUMNS": width})
    lines = screen.stdout.splitlines()
    assert lines[0].startswith("Scores of: the duck quacks in the park")
    assert f"… ({len(paragraph.split())} words)" in flat(screen.stdout)
    assert len(lines) < 20  # not a narrow strip of the whole paragraph
    assert max(len(line) for line in lines) <= int(width)


# ---- 23. one --json rule: one input, one indented document; many inputs, JSON Lines --------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "once upon a time", "--max-new-tokens", "2", "--greedy"),
        ("fill-mask", "the [MASK] quacks ."),
        ("compare", "the [MASK] quacks ."),
        ("attention", "the duck quacks ."),
        ("tokenize", "the duck quacks ."),
        ("lens", "the [MASK] quacks ."),
        ("pairs", "the duck quacks .", "the duck quack ."),
    ],
    ids=lambda args: args[0],
)
def test_one_input_gives_one_indented_document(args, models):
    out = run(*args, "--json", *models).stdout
    assert out.startswith("{\n  ") and isinstance(json.loads(out), dict)


@pytest.mark.parametrize("texts", [("the duck quacks .",), ("the duck quacks .", "the dog barks .")])
def test_score_prints_json_lines_whatever_the_number_of_texts(texts, models):
    lines = run("score", *texts, "--json", *models).stdout.splitlines()
    assert len(lines) == len(texts) and all(isinstance(json.loads(line), dict) for line in lines)


# ---- 19. legends wrap between their phrases at 80 columns, with colour and without --------------------------------


@pytest.mark.parametrize("colour", [False, True], ids=["NO_COLOR", "colour"])
@pytest.mark.parametrize("width", ["80", "120"])
def test_legends_wrap_between_phrases_never_inside_one(models, colour, width):
    env = {"COLUMNS": width, **({"TTY_COMPATIBLE": "1", "NO_COLOR": "", "FORCE_COLOR": "1"} if colour else {})}

    def lines_of(*args: str) -> list[str]:
        shown = run(*args, *models, env=env).stdout
        return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in shown.splitlines()]

    filled = lines_of("fill-mask", "the capital of [MASK] is [MASK] .")
    for phrase in (
        "Σ log p(word) -",
        "log p(sentence) -",
        "filled in order #",
        "GPT left p: next-token probability from the words before the blank",
    ):
        assert any(phrase in line for line in filled), (phrase, filled)
    attention = lines_of("attention", "the duck quacks .")
    assert any("cell = attention weight:" in line for line in attention)
    assert any("(blank = exactly 0, a masked key)" in line for line in attention)
    if colour:
        assert any(re.search(r"colour: 0 █+ 1", line) for line in attention), attention
    probs = lines_of("generate", "once upon a time", "--max-new-tokens", "3", "--show-probs")
    if not colour:
        assert any("[p] after each token is its probability," in line for line in probs)
