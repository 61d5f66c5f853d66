"""`gbcli tour`: every step's numbers are those of the command it names, its reading follows those numbers (and
says so when a model contradicts the claim), it pauses only on a terminal, and its handout stands alone.

Off a terminal through the installed entry point (and a warm server) it is tests/test_serve.py's byte-for-byte case.
"""

from __future__ import annotations

import html.parser
import json
import os
import pty
import re
import shlex
import subprocess

import pytest

from tests.cli_helpers import (
    TRACEBACK,
    assert_user_error,
    gbcli_executable,
    read_terminal_until,
    run,
    visible,
)

pytestmark = [pytest.mark.usefixtures("single_torch_thread"), pytest.mark.compat_extras]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def states_cache(tmp_path_factory):
    """The tour keeps the probe's states where `gbcli probe` does: here, a folder of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GBCLI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def every_model(gpt_path, bert_path, bart_path) -> list[str]:
    return ["--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path)]


@pytest.fixture(scope="module")
def tour_run(every_model, tmp_path_factory) -> tuple[dict[int, dict], object, object]:
    """The whole tour on the tiny models once: its JSON Lines, and the handout and notes it wrote meanwhile."""
    folder = tmp_path_factory.mktemp("handout")
    page, notes = folder / "tour.html", folder / "tour.md"
    result = run("tour", "--no-pause", *every_model, "--html", str(page), "--markdown", str(notes), "--json")
    assert result.exit_code == 0, result.stderr
    return {step["number"]: step for step in json_lines(result.stdout)}, page, notes


@pytest.fixture(scope="module")
def tour_steps(tour_run) -> dict[int, dict]:
    return tour_run[0]


@pytest.fixture(scope="module")
def handout(tour_run):
    return tour_run[1], tour_run[2]


def command_json(command: str, env: dict[str, str] | None = None) -> list[dict]:
    """The command a step names, run with --json: its document, or its JSON Lines records."""
    words = shlex.split(command)
    assert words[0] == "gbcli"
    result = run(*words[1:], "--json", env=env)
    assert result.exit_code == 0, f"{command}: {result.stderr}"
    return json_lines(result.stdout) if words[1] == "score" else [json.loads(result.stdout)]


def without(document, *keys: str):
    """A JSON value with the timing fields (which no two runs share) left out, at any depth."""
    if isinstance(document, dict):
        return {k: without(v, *keys) for k, v in document.items() if k not in keys}
    if isinstance(document, list):
        return [without(v, *keys) for v in document]
    return document


def alike(a, b) -> bool:
    """Equal JSON values, floats to 1e-6: a decoding step picks its thread split by timing it (gbcli.lm.fast.threads),
    and another split may sum a dot product in another order."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(alike(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(alike(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_every_step_is_shown_and_names_its_command(tour_steps):
    assert sorted(tour_steps) == [1, 2, 3, 4, 5, 6, 7, 8]
    for number, step in tour_steps.items():
        assert step["commands"] and all(c.startswith("gbcli ") for c in step["commands"])
        assert step["status"] == "shown", step
        if number != 7:  # fine-tuning on reviews whose words the tiny models never saw: see its own test
            assert step["verdict"] == "agrees", step["reading"]  # the trained tiny models bear every claim out


def test_attention_step_is_the_attention_command(tour_steps):
    step = tour_steps[1]
    (document,) = command_json(step["commands"][0])
    assert step["results"]["attention"] == document


def test_generation_step_is_the_generate_command_and_its_judges_the_score_command(tour_steps):
    step = tour_steps[2]
    generate_command, score_command = step["commands"]
    (document,) = command_json(generate_command)
    timing = ("seconds", "tokens_per_second")
    assert alike(without(step["results"]["generate"], *timing), without(document, *timing))
    assert alike(step["results"]["score"], command_json(score_command))
    gpt_text, bert_text = step["results"]["score"]
    assert step["figures"]["gpt_judge"] == {
        "gpt_text": gpt_text["columns"][0]["value"],
        "bert_text": bert_text["columns"][0]["value"],
    }
    assert step["figures"]["bert_judge"] == {
        "gpt_text": gpt_text["columns"][1]["value"],
        "bert_text": bert_text["columns"][1]["value"],
    }


def test_fill_mask_context_and_score_steps_are_their_commands(tour_steps):
    for number, name in ((3, "fill-mask"), (4, "context")):
        (document,) = command_json(tour_steps[number]["commands"][0])
        assert tour_steps[number]["results"][name] == document, name
    assert tour_steps[5]["results"]["score"] == command_json(tour_steps[5]["commands"][0])


def test_probe_and_similarity_steps_are_their_commands(tour_steps, tmp_path):
    for number in (4, 6):
        # Once from the states the tour stored in the cache, once computed afresh in another cache.
        (cached,) = command_json(tour_steps[number]["commands"][1 if number == 4 else 0])
        assert cached["cache"] == {"GPT": "hit", "BERT": "hit"}
        (document,) = command_json(
            tour_steps[number]["commands"][1 if number == 4 else 0],
            env={"GBCLI_CACHE_DIR": str(tmp_path / f"fresh-{number}")},
        )
        assert document["cache"] == {"GPT": "stored", "BERT": "stored"}
        assert without(tour_steps[number]["results"]["probe"], "cache") == without(document, "cache")
        assert without(cached, "cache") == without(document, "cache")
        rows = {row["family"]: row for row in document["rows"]}
        for family in ("gpt", "bert"):
            figures = tour_steps[number]["figures"]["probe"][family]
            assert figures["accuracy_by_layer"] == [layer["accuracy"] for layer in rows[family]["layers"]]
    (document,) = command_json(tour_steps[6]["commands"][1])
    assert tour_steps[6]["results"]["similarity"] == document
    for model in document["models"]:
        figures = tour_steps[6]["figures"][model["family"]]
        assert figures["baseline"] == model["baseline"]
        assert figures["related_cosine"] == model["matrix"][0][1]
        assert figures["unrelated_cosine"] == model["matrix"][0][2]


def test_the_right_context_probe_puts_gpt_exactly_at_the_majority_baseline(tour_steps):
    probe = tour_steps[4]["figures"]["probe"]
    assert probe["gpt"]["at_majority"] and set(probe["gpt"]["accuracy_by_layer"]) == {probe["majority"]}
    assert probe["bert"]["best_accuracy"] > probe["majority"]
    assert "exactly at the majority baseline" in " ".join(tour_steps[4]["reading"])
    # Step 6 reads the same probe layer by layer: where BERT's accuracy first clears the baseline's interval.
    layers = tour_steps[6]["results"]["probe"]["rows"]
    bert = next(row for row in layers if row["family"] == "bert")
    high = tour_steps[6]["results"]["probe"]["majority"]["high"]
    first = next(layer["layer"] for layer in bert["layers"] if layer["low"] > high)
    assert tour_steps[6]["figures"]["probe"]["bert"]["first_layer_above"] == first
    assert tour_steps[6]["figures"]["probe"]["gpt"]["first_layer_above"] is None
    assert f"it appears at layer {first}" in " ".join(tour_steps[6]["reading"])


def test_bart_step_is_its_two_commands(tour_steps):
    step = tour_steps[8]
    attention_command, fill_command = step["commands"]
    (attention,) = command_json(attention_command)
    # The tour shows BART's encoder and decoder (the claim); the command adds cross-attention after them.
    assert step["results"]["attention"]["models"] == attention["models"][:2]
    assert [m["map"] for m in attention["models"][:2]] == ["encoder", "decoder"]
    (filled,) = command_json(fill_command)
    assert step["results"]["fill-mask"] == filled
    span = filled["masks"][0]["bart"]["predictions"][0]
    assert step["figures"]["span"] == span["word"] and step["figures"]["span_p"] == span["prob"]


def test_finetune_step_is_the_finetune_command(tour_steps, tmp_path, monkeypatch):
    step = tour_steps[7]
    assert step["status"] == "shown", step["note"]
    monkeypatch.chdir(tmp_path)  # the command keeps its run in ./gbcli-tour-finetune
    (document,) = command_json(step["commands"][0])
    ours, theirs = step["results"]["finetune"], document
    for mine, its in zip(ours["families"], theirs["families"], strict=True):
        assert [p["accuracy"] for p in mine["curve"]] == [p["accuracy"] for p in its["curve"]]
        assert mine["final_accuracy"] == its["final_accuracy"]
        assert step["figures"][mine["family"]]["accuracy_by_step"] == [p["accuracy"] for p in its["curve"]]
    assert ours["majority_baseline"] == theirs["majority_baseline"] == step["figures"]["majority_baseline"]
    # The tiny models have no word of the reviews: neither learns, and the reading says the claim is not shown.
    learned = [f["final_accuracy"] > ours["majority_baseline"] for f in ours["families"]]
    assert step["verdict"] == ("agrees" if all(learned) else "contradicts" if not any(learned) else "mixed")
    if not any(learned):
        assert "neither learned the task" in " ".join(step["reading"])


def test_fine_tuning_over_the_budget_is_skipped_with_its_estimate(gpt_path, bert_path):
    result = run(
        "tour",
        "--no-pause",
        "--steps",
        "7",
        "--budget",
        "0.001",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(bert_path),
        "--json",
    )
    (step,) = json_lines(result.stdout)
    assert step["status"] == "skipped"
    estimate = float(re.search(r"about (\d+) s", step["note"]).group(1))
    assert estimate >= 0 and "more than --budget 0.001 s" in step["note"]


def test_attention_figures_match_the_models_own_attention(tour_steps, gpt, bert):
    """The triangle and the square, from transformers' own eager attention weights on the same text."""
    import torch

    from gbcli.tasks.tour.claims import ATTENTION_TEXT

    for family, (tokenizer, model) in (("gpt", gpt), ("bert", bert)):
        model.set_attn_implementation("eager")
        with torch.no_grad():
            out = model(**tokenizer(ATTENTION_TEXT, return_tensors="pt"), output_attentions=True)
        weights = torch.stack([a[0] for a in out.attentions])  # [layer, head, query, key]
        upper = torch.triu(torch.ones(weights.shape[-2:], dtype=torch.bool), diagonal=1)
        later_share = (weights * upper).sum(-1)[..., :-1].mean().item()
        figures = tour_steps[1]["figures"][family]
        assert figures["max_later_weight"] == pytest.approx(weights[..., upper].max().item(), abs=1e-6)
        assert figures["mean_later_share"] == pytest.approx(later_share, abs=1e-5)
    assert tour_steps[1]["figures"]["gpt"]["max_later_weight"] == 0.0
    assert tour_steps[1]["figures"]["bert"]["mean_later_share"] > 0.1


def test_bart_figures_match_its_own_encoder_and_decoder_attention(tour_steps, bart):
    import torch

    from gbcli.tasks.tour.claims import ATTENTION_TEXT

    tokenizer, model = bart
    model.set_attn_implementation("eager")
    ids = tokenizer(ATTENTION_TEXT, return_tensors="pt")["input_ids"]
    decoder_ids = torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), ids[:, :-1]], dim=1)
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=decoder_ids, output_attentions=True)
    figures = tour_steps[8]["figures"]
    for name, attentions in (("encoder", out.encoder_attentions), ("decoder", out.decoder_attentions)):
        weights = torch.stack([a[0] for a in attentions])
        upper = torch.triu(torch.ones(weights.shape[-2:], dtype=torch.bool), diagonal=1)
        assert figures[name]["max_later_weight"] == pytest.approx(weights[..., upper].max().item(), abs=1e-6)
        assert figures[name]["mean_later_share"] == pytest.approx(
            (weights * upper).sum(-1)[..., :-1].mean().item(), abs=1e-5
        )
    assert figures["decoder"]["max_later_weight"] == 0.0 and figures["encoder"]["mean_later_share"] > 0.1


def test_readings_follow_the_figures(tour_steps):
    assert_generation_reading_follows_its_judges(tour_steps[2])
    fill = tour_steps[3]["figures"]
    assert f"p {fill['bert_target_p']:.3f}" in tour_steps[3]["reading"][0]
    assert f"{fill['bert_target_p'] / fill['gpt_left_target_p']:.3g} times less" in tour_steps[3]["reading"][1]
    context = tour_steps[4]["figures"]
    for shift in tour_steps[4]["results"]["context"]["shifts"]:  # counted again from the command's own rows
        before = [p for p in shift["positions"] if p["region"] == "before"]
        moved = [p for p in before if any(v for v in p["relative_l2"])]
        assert (context[shift["family"]]["before"], context[shift["family"]]["moved"]) == (len(before), len(moved))
    assert context["gpt"]["moved"] == 0 and context["bert"]["moved"] == context["bert"]["before"] > 0
    assert f"none of GPT-2's {context['gpt']['before']} states" in tour_steps[4]["reading"][0]
    score = tour_steps[5]["figures"]
    ratio = score["gpt_perplexity"]["scrambled"] / score["gpt_perplexity"]["natural"]
    assert f"{ratio:.3g} times as perplexing" in " ".join(tour_steps[5]["reading"])
    assert tour_steps[5]["results"]["score"][0]["columns"][0]["value"] == score["gpt_perplexity"]["natural"]


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory, bert_path):
    """A BERT with random weights and the tiny BERT's vocabulary: it has learnt nothing, so it knows no duck."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("random-bert")
    tokenizer = AutoTokenizer.from_pretrained(bert_path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def assert_generation_reading_follows_its_judges(step: dict) -> None:
    """Step 2's verdict and last sentence, from which text each judge finds the more likely."""
    judges = step["figures"]
    gpt_prefers = judges["gpt_judge"]["gpt_text"] < judges["gpt_judge"]["bert_text"]
    bert_prefers = judges["bert_judge"]["gpt_text"] < judges["bert_judge"]["bert_text"]
    said = step["reading"][-1]
    if gpt_prefers and bert_prefers:
        assert step["verdict"] == "agrees" and said.startswith("Both judges prefer GPT-2's text")
    elif not gpt_prefers and not bert_prefers:
        assert step["verdict"] == "contradicts" and said.startswith("Both judges prefer BERT's text")
    else:
        assert step["verdict"] == "unsettled"
        assert said.startswith("Each judge prefers its own text" if gpt_prefers else "Each judge prefers the other")


def test_a_model_that_contradicts_a_claim_is_said_to(gpt_path, random_bert):
    result = run("tour", "--no-pause", "--steps", "2,3,5", "--gpt", str(gpt_path), "--bert", str(random_bert), "--json")
    assert result.exit_code == 0, result.stderr
    generation, fill, score = json_lines(result.stdout)
    assert_generation_reading_follows_its_judges(generation)
    figures = fill["figures"]
    assert figures["bert_top"] != "duck" and figures["bert_target_p"] < figures["gpt_left_target_p"]
    assert fill["verdict"] == "contradicts"
    assert "not 'duck'" in fill["reading"][0] and "do not bear the claim out" in fill["reading"][-1]
    # Whatever the random BERT makes of the scrambled sentence, the reading says what its numbers say.
    bert = score["figures"]["bert_pseudo_perplexity"]
    said = " ".join(score["reading"])
    if bert["natural"] < bert["scrambled"]:
        assert "BERT finds the scrambled" in said
    else:
        assert "BERT does not find the scrambled" in said and score["verdict"] != "agrees"


def test_the_view_shows_each_step_its_reading_and_command_at_80_columns(every_model, tour_steps):
    from gbcli.tasks.tour.steps import STEPS

    result = run("tour", "--no-pause", *every_model, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    screen = result.stdout
    assert max(len(line) for line in screen.splitlines()) <= 80
    flat = " ".join(screen.split())
    for spec in STEPS:
        assert f"Step {spec.number}/8 · {spec.title}" in screen
        step = tour_steps[spec.number]
        for sentence in step["reading"]:  # the same sentences as --json, wrapped (but for the time one took)
            if not sentence.startswith("It took"):
                assert " ".join(sentence.split()) in flat, sentence
    assert screen.count("✓ these models bear the claim out") == 7
    assert "✗ these models contradict the claim" in screen  # step 7: see its own test
    assert "deeper:" in screen and "gbcli context 'the duck quacks in the park .' --change quacks=barks" in screen
    assert "before the change: every state bit-identical" in screen  # the context command's own view
    assert "tour done: 8 shown; contradicted at step 7" in screen


def test_steps_chooses_the_steps(every_model):
    result = run("tour", "--no-pause", "--steps", "8,1", *every_model, "--json")
    assert [step["number"] for step in json_lines(result.stdout)] == [1, 8]


def test_a_missing_model_skips_its_steps_and_the_tour_goes_on(gpt_path, bert_path, tmp_path):
    result = run(
        "tour",
        "--no-pause",
        "--steps",
        "1,8",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(bert_path),
        "--bart",
        str(tmp_path / "no-such-bart"),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    first, bart = json_lines(result.stdout)
    assert first["status"] == "shown"
    assert bart["status"] == "skipped" and "BART model cannot be had" in bart["note"]
    assert "no-such-bart" in bart["note"]


def test_no_model_at_all_is_an_error_after_the_skipped_steps(tmp_path):
    result = run(
        "tour", "--no-pause", "--steps", "1", "--gpt", str(tmp_path / "none"), "--bert", str(tmp_path / "none")
    )
    assert result.exit_code == 1 and "skipped: the GPT model cannot be had" in result.stdout
    assert "error: No step of the tour could be shown" in result.stderr


def test_models_leaves_out_the_steps_of_the_others(gpt_path, bert_path):
    result = run(
        "tour",
        "--no-pause",
        "--steps",
        "1,8",
        "--models",
        "gpt,bert",
        "--gpt",
        str(gpt_path),
        "--bert",
        str(bert_path),
        "--json",
    )
    first, bart = json_lines(result.stdout)
    assert first["status"] == "shown" and bart["status"] == "skipped" and "--models leaves out" in bart["note"]


@pytest.fixture(scope="module")
def short_gpt(tmp_path_factory, gpt_path):
    """A GPT-2 that holds 4 positions: every step that gives it a whole sentence fails."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("short-gpt")
    tokenizer = AutoTokenizer.from_pretrained(gpt_path)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=4,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_failing_step_is_said_and_the_tour_goes_on(short_gpt, bert_path, bart_path):
    result = run(
        "tour",
        "--no-pause",
        "--steps",
        "1,8",
        "--gpt",
        str(short_gpt),
        "--bert",
        str(bert_path),
        "--bart",
        str(bart_path),
    )
    assert result.exit_code == 1
    assert "Step 1/8" in result.stdout and "failed:" in result.stdout
    assert "Step 8/8" in result.stdout and "✓ these models bear the claim out" in result.stdout
    assert "error: Step 1 of the tour failed" in result.stderr and TRACEBACK not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--steps", "9"), 2, "no step '9'"),
        (("--steps", "one"), 2, "no step 'one'"),
        (("--steps", ","), 2, "names no step"),
        (("--budget", "0"), 2, "--budget must be"),
        (("--html", "/no/such/folder/handout.html"), 2, "does not exist"),
        (("--markdown", ""), 2, "needs a file name"),
    ],
)
def test_bad_input_is_refused_before_any_model_loads(args, code, fragment, tmp_path):
    # The models do not exist: an error about them would mean the check came too late.
    result = run("tour", "--no-pause", *args, "--gpt", str(tmp_path / "none"), "--bert", str(tmp_path / "none"))
    assert_user_error(result, code, fragment)


def test_an_existing_handout_is_kept_without_force(tmp_path, every_model):
    page = tmp_path / "handout.html"
    page.write_text("mine")
    assert_user_error(run("tour", "--html", str(page), "--gpt", str(tmp_path / "none")), 2, "already exists")
    assert page.read_text() == "mine"


class PageCheck(html.parser.HTMLParser):
    """Every tag and attribute of a page, and whether its elements close in order."""

    VOID = frozenset({"meta", "br", "img", "link", "input", "hr", "circle", "rect", "line", "polyline", "path"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def test_the_handout_is_one_self_contained_page_with_its_figures_inline(handout):
    page, _ = handout
    text = page.read_text()
    check = PageCheck()
    check.feed(text)
    check.close()
    assert not check.errors and not check.open, (check.errors, check.open)
    assert "script" not in check.tags and "link" not in check.tags and "img" not in check.tags
    fetched = [
        (tag, name, value)
        for tag, name, value in check.attributes
        if name in {"src", "href"} and not value.startswith(("#", "data:"))
    ]
    assert not fetched
    assert (
        "@import" not in text
        and "url(" not in text
        and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    # Two heatmaps in step 1, two shift grids and the probe curves in step 4, the probe curves in step 6, the
    # learning curves in step 7, two BART heatmaps in step 8.
    assert check.tags.count("svg") == 9
    for number in range(1, 9):
        assert f'id="step-{number}"' in text
    assert "gbcli context &#x27;the duck quacks in the park .&#x27; --change quacks=barks" in text


def test_the_markdown_notes_have_each_step_and_its_commands(handout, tour_steps):
    _, notes = handout
    text = notes.read_text()
    for number, step in tour_steps.items():
        assert f"## Step {number} of 8: {step['title']}" in text
        for command in step["commands"]:
            assert f"$ {command}" in text
    assert tour_steps[3]["reading"][0] in text


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_the_handout_loads_in_a_headless_browser_with_nothing_fetched(handout, tmp_path):
    page, _ = handout
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'ud'}",
    ]
    shot = tmp_path / "first-screen.png"
    done = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1100,900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1100, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and heatmaps drawn, not a blank page
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert b"Step 1 of 8" in dom.stdout and dom.stdout.count(b"<svg") == 9


def test_it_pauses_on_a_terminal_enter_goes_on_and_q_stops(every_model):
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [gbcli_executable(), "tour", "--steps", "1,3,4", *every_model],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    try:
        shown = read_terminal_until(leader, b"Enter: next step", 120, shown=visible)
        assert b"Step 1/8" in shown and b"Step 3/8" not in shown  # it waits before step 3
        os.write(leader, b"\r")
        shown = read_terminal_until(leader, b"Enter: next step", 120, shown=visible)
        assert b"Step 3/8" in shown and b"Step 4/8" not in shown
        os.write(leader, b"q\r")
        shown = read_terminal_until(leader, b"tour stopped", 60, shown=visible)
        assert b"tour stopped: 2 shown" in shown and b"Step 4/8" not in shown
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        os.close(leader)


def test_tour_is_listed_and_its_help_names_the_options():
    result = run("tour", "--help")
    for option in ("--steps", "--no-pause", "--budget", "--html", "--markdown", "--json", "--gpt"):
        assert option in result.stdout
    assert re.search(r"\btour\b", run("--help").stdout)
    from gbcli.tasks.tour import DEFAULT_BUDGET

    assert f"[default: {DEFAULT_BUDGET}]" in " ".join(result.stdout.split())  # the option's default is the tour's


def test_the_step_numbers_the_options_accept_are_the_tours_steps():
    """`choice.STEP_NUMBERS` is written out so that --steps is checked before the steps (and torch) are imported."""
    from gbcli.tasks.tour.choice import STEP_NUMBERS
    from gbcli.tasks.tour.steps import STEPS

    assert tuple(spec.number for spec in STEPS) == STEP_NUMBERS
