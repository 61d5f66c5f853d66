"""`gbcli saliency`: gradient × input and integrated gradients on the input embeddings, checked against autograd."""

from __future__ import annotations

import re

import pytest
import torch
from rich.cells import cell_len
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from gbcli.render.saliency import format_amount, format_attribution, format_share
from tests.cli_helpers import assert_user_error, run, run_json
from tests.fixtures.tiny_models import BERT_MASKED_DUCK, GPT_CAPITAL_PROMPT


@pytest.fixture(scope="module")
def models(gpt_path, bert_path, bart_path):
    return ["--gpt", str(gpt_path), "--bert", str(bert_path), "--bart", str(bart_path)]


@pytest.fixture(scope="module")
def duck(models):
    doc = run_json("saliency", BERT_MASKED_DUCK, *models, "--with-bart")
    assert doc["methods"] == ["gxi", "ig"] and doc["steps"] == 50
    return {m["family"]: m for m in doc["models"]}


class Reference:
    """An independent f = log p(target) at the blank, as a function of the token embeddings, on a fresh model."""

    def __init__(self, family: str, path) -> None:
        self.tok = AutoTokenizer.from_pretrained(path)
        loader = {"gpt": AutoModelForCausalLM, "bert": AutoModelForMaskedLM, "bart": AutoModelForSeq2SeqLM}[family]
        self.model = loader.from_pretrained(path).eval()
        self.family = family
        self.decoder = None
        if family == "bert":
            self.ids = self.tok(BERT_MASKED_DUCK, return_tensors="pt")["input_ids"]
            self.position = self.ids[0].tolist().index(self.tok.mask_token_id)
        elif family == "gpt":  # the left context only, after <|endoftext|>
            self.ids = torch.tensor([[self.tok.eos_token_id] + self.tok("the")["input_ids"]])
            self.position = self.ids.shape[1] - 1
        else:
            source = BERT_MASKED_DUCK.replace("[MASK]", self.tok.mask_token)
            self.ids = self.tok(source, return_tensors="pt")["input_ids"]
            self.decoder = torch.tensor(
                [
                    [self.model.config.decoder_start_token_id, self.tok.bos_token_id]
                    + self.tok("the", add_special_tokens=False)["input_ids"]
                ]
            )
            self.position = self.decoder.shape[1] - 1
        self.embeddings = self.model.get_input_embeddings()(self.ids).detach()
        self.special = torch.tensor([i in self.tok.all_special_ids for i in self.ids[0].tolist()])

    def f(self, embeddings: torch.Tensor, target: int) -> torch.Tensor:
        extra = {} if self.decoder is None else {"decoder_input_ids": self.decoder.expand(embeddings.shape[0], -1)}
        logits = self.model(inputs_embeds=embeddings, **extra).logits[:, self.position]
        return torch.log_softmax(logits, dim=-1)[:, target]

    def baseline(self) -> torch.Tensor:
        return torch.where(self.special[None, :, None], self.embeddings, torch.zeros_like(self.embeddings))

    def gradient_x_input(self, target: int) -> torch.Tensor:
        x = self.embeddings.clone().requires_grad_(True)
        with torch.enable_grad():
            self.f(x, target).sum().backward()
        return ((self.embeddings - self.baseline()) * x.grad)[0].sum(-1)


@pytest.fixture(scope="module")
def references(gpt_path, bert_path, bart_path):
    return {
        "gpt": Reference("gpt", gpt_path),
        "bert": Reference("bert", bert_path),
        "bart": Reference("bart", bart_path),
    }


def _attributed(saliency: dict, key: str) -> dict[int, float]:
    return {t["index"]: t[key] for t in saliency["tokens"] if t["role"] == "text"}


# --- faithfulness ---------------------------------------------------------------------------------------------


@pytest.mark.compat
@pytest.mark.parametrize("family", ["gpt", "bert", "bart"])
def test_gradient_x_input_equals_an_independent_autograd_computation(duck, references, family):
    saliency, reference = duck[family], references[family]
    expected = reference.gradient_x_input(saliency["target"]["id"])
    got = _attributed(saliency, "gradient_x_input")
    assert got, "no token was attributed"
    for index, value in got.items():
        assert value == pytest.approx(float(expected[index]), rel=1e-4, abs=1e-9)
    # The special tokens are held at the baseline: the reference gives them exactly 0 too.
    for token in saliency["tokens"]:
        if token["role"] == "special":
            assert token["gradient_x_input"] is None and float(expected[token["index"]]) == 0.0


@pytest.mark.compat
@pytest.mark.parametrize("family", ["gpt", "bert", "bart"])
def test_integrated_gradients_are_complete(duck, references, family):
    saliency, reference = duck[family], references[family]
    check = saliency["completeness"]
    target = saliency["target"]["id"]
    with torch.no_grad():
        f_x = float(reference.f(reference.embeddings, target)[0])
        f_base = float(reference.f(reference.baseline(), target)[0])
    assert check["f_input"] == pytest.approx(f_x, abs=1e-5)
    assert check["f_baseline"] == pytest.approx(f_base, abs=1e-5)
    total = sum(_attributed(saliency, "integrated_gradients").values())
    assert check["attribution_sum"] == pytest.approx(total, abs=1e-9)
    assert abs(total - (f_x - f_base)) == pytest.approx(check["error"], abs=1e-5)
    assert check["relative_error"] <= check["tolerance"] == 0.01 and check["holds"] is True


def test_more_steps_make_the_path_integral_more_exact(models):
    errors = [
        run_json("saliency", BERT_MASKED_DUCK, *models, "--models", "gpt", "--method", "ig", "--steps", str(steps))[
            "models"
        ][0]["completeness"]["error"]
        for steps in (4, 64)
    ]
    assert errors[1] < errors[0] / 10


def test_integrated_gradients_equal_the_midpoint_rule_written_out(models, references):
    doc = run_json("saliency", BERT_MASKED_DUCK, *models, "--models", "bert", "--method", "ig", "--steps", "8")
    (saliency,) = doc["models"]
    reference = references["bert"]
    x, base, target = reference.embeddings, reference.baseline(), saliency["target"]["id"]
    total = torch.zeros_like(x)
    for k in range(8):
        point = (base + (k + 0.5) / 8 * (x - base)).requires_grad_(True)
        with torch.enable_grad():
            reference.f(point, target).sum().backward()
        total += point.grad
    expected = ((x - base) * total / 8)[0].sum(-1)
    for index, value in _attributed(saliency, "integrated_gradients").items():
        assert value == pytest.approx(float(expected[index]), rel=1e-4, abs=1e-9)
    assert saliency["tokens"][1]["gradient_x_input"] is None  # --method ig computes IG only


# --- what the trained models show -------------------------------------------------------------------------------


def test_bert_draws_on_quacks_to_the_right_of_the_blank(duck):
    bert = duck["bert"]
    assert bert["target"]["token"] == "duck" and bert["most_salient"] == "quacks"
    (quacks,) = [t for t in bert["tokens"] if t["token"] == "quacks"]
    assert quacks["integrated_gradients_share"] > 0.5 and quacks["integrated_gradients"] > 0
    assert duck["bart"]["most_salient"] == "␣quacks"  # BART's encoder reads it too


def test_gpt2_cannot_draw_on_what_follows_the_blank(duck):
    tokens = duck["gpt"]["tokens"]
    unseen = [t for t in tokens if t["role"] == "unseen"]
    assert [t["token"] for t in unseen] == ["[blank]", "␣quacks", "␣in", "␣the", "␣park", "␣."]
    assert all(t["index"] is None and t["integrated_gradients"] is None for t in unseen)


def test_a_chosen_target_is_explained(models, gpt_path):
    doc = run_json("saliency", GPT_CAPITAL_PROMPT, *models, "--models", "gpt", "--target", "paris")
    (saliency,) = doc["models"]
    tok = AutoTokenizer.from_pretrained(gpt_path)
    assert saliency["target"]["id"] == tok(" paris")["input_ids"][0] and saliency["target"]["chosen"] is True
    assert [t["role"] for t in saliency["tokens"]].count("unseen") == 0


# --- the screen ------------------------------------------------------------------------------------------------


def test_view_fits_80_columns_and_shows_every_number_whole(models, duck):
    out = run("saliency", BERT_MASKED_DUCK, *models, "--with-bart", env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.stderr
    assert max(cell_len(line) for line in out.stdout.splitlines()) <= 80
    words = set(re.findall(r"[^\s,()]+", out.stdout))
    for saliency in duck.values():
        for token in saliency["tokens"]:
            if token["role"] == "text":
                assert {
                    format_attribution(token["gradient_x_input"]),
                    format_share(token["gradient_x_input_share"]),
                    format_attribution(token["integrated_gradients"]),
                    format_share(token["integrated_gradients_share"]),
                } <= words
        check = saliency["completeness"]
        assert f"{check['error']:.1e}" in words and format_amount(check["attribution_sum"]) in words
        assert format_amount(check["f_input"] - check["f_baseline"]) in words


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--target", "zebra"], "not one token"),
        (["--target", "wasp", "--models", "bert"], "not one token"),
        (["--method", "lime"], "--method"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_bad_requests_exit_2(models, args, fragment):
    assert_user_error(run("saliency", BERT_MASKED_DUCK, *models, *args), 2, fragment, "hint:")


def test_bert_needs_a_blank(models):
    assert_user_error(run("saliency", GPT_CAPITAL_PROMPT, *models), 2, "no blank", "hint:")


def test_bare_encoder_is_refused(tiny_models):
    result = run("saliency", BERT_MASKED_DUCK, "--models", "bert", "--bert", str(tiny_models["bert_no_head"]))
    assert_user_error(result, 2, "hint:")


def test_json_bad_input_prints_nothing_on_stdout(models):
    assert_user_error(run("saliency", BERT_MASKED_DUCK, *models, "--target", "zebra", "--json"), 2, "not one token")


def test_gradient_x_input_alone_has_no_completeness(models, duck):
    out = run("saliency", BERT_MASKED_DUCK, *models, "--models", "bert", "--method", "gxi", env={"COLUMNS": "80"})
    assert out.exit_code == 0 and "completeness" not in out.stdout and "G×I" in out.stdout and " IG " not in out.stdout
    doc = run_json("saliency", BERT_MASKED_DUCK, *models, "--models", "bert", "--method", "gxi")
    (saliency,) = doc["models"]
    assert saliency["completeness"] is None
    alone = [t["gradient_x_input"] for t in saliency["tokens"]]
    assert alone == [t["gradient_x_input"] for t in duck["bert"]["tokens"]]


def test_gpt2_with_the_blank_first_has_nothing_to_attribute(models):
    doc = run_json("saliency", "[MASK] quacks in the park .", *models, "--models", "gpt")
    (saliency,) = doc["models"]
    assert saliency["most_salient"] is None
    assert [t["role"] for t in saliency["tokens"]] == ["special"] + ["unseen"] * 6
    assert saliency["completeness"]["attribution_sum"] == 0.0 and saliency["completeness"]["holds"] is True
