"""`gbcli tour`: the differences between GPT-2 and BERT, one claim per step, each shown on the loaded models.

Every step runs the task of the command it names (attention, generate, fill-mask, context, score, lens ...),
never a second implementation, keeps that task's result as the command's `--json` would print it, picks out the
few figures the claim is about, and reads them in two or three sentences. The sentences are computed from the
figures: a model that does not bear the claim out is said not to (`verdict` "contradicts"), so a random-init model
or a pair of models in the wrong roles shows the contradiction instead of a canned text.

Models are loaded when the first step that needs them runs (so the first step shows while the rest load), through a
callback the command gives; a model that cannot be had skips the steps that need it, with the reason, and a step
that fails says so while the tour goes on.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from gbcli.errors import GbcliError, usage_error
from gbcli.loading.models import LoadedModel, LoadOptions
from gbcli.tasks.finite import check_finite
from gbcli.tasks.labelled_data import LabelledData

StepStatus = Literal["shown", "skipped", "failed"]
Verdict = Literal["agrees", "contradicts", "mixed"]
Figures = dict[str, Any]

# The tour's texts: the tiny test models were taught them, and pretrained GPT-2 and BERT know them as well.
ATTENTION_TEXT = "the duck quacks in the park ."
PROMPT = "once upon a time"
NEW_TOKENS = 10
ALTERNATIVES = 3
MASK_TEXT = "the [MASK] quacks in the park ."
MASK_TARGET = "duck"
CHANGE = "quacks=barks"
SCRAMBLED = "the park quacks in the duck ."
SPAN_TEXT = "the [MASK] in the park ."
SPAN_TOP_K = 3
DEFAULT_BUDGET = 60.0


@dataclass
class TourStep:
    """One step as shown: the claim, the command's own results, the figures read off them, and the reading."""

    number: int
    key: str
    title: str
    claim: str
    commands: list[str]  # the commands that go deeper, exactly as a user reruns them (the first is the main one)
    status: StepStatus = "shown"
    verdict: Verdict | None = None  # whether these models bear the claim out
    reading: list[str] = field(default_factory=list)  # sentences computed from `figures`
    figures: Figures = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # each command's result, as its --json prints it
    note: str | None = None  # why a step was skipped or failed, or what it leaves out
    seconds: float = 0.0


@dataclass
class Outcome:
    """What a step's runner hands back: the results, the figures, and the reading of them."""

    results: dict[str, Any]
    figures: Figures
    reading: list[str]
    verdict: Verdict
    note: str | None = None
    # Commands that depend on what the step found (step 2 scores the texts the models wrote), after the named ones.
    then: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class StepSpec:
    number: int
    key: str
    title: str
    claim: str
    needs: tuple[str, ...]  # model families
    commands: Callable[[ModelFlags], list[str]]
    run: Callable[[dict[str, LoadedModel], StepContext], Outcome]


@dataclass(frozen=True)
class ModelFlags:
    """The model options as the user gave them, to repeat in each command a step names (--gpt PATH ...)."""

    by_family: dict[str, list[str]] = field(default_factory=dict)  # e.g. {"gpt": ["--gpt", "models/gpt2"]}
    common: list[str] = field(default_factory=list)  # --device, --dtype, --revision, --offline

    def command(self, *words: str, families: tuple[str, ...] = ("gpt", "bert")) -> str:
        flags = [flag for family in families for flag in self.by_family.get(family, [])]
        return shlex.join(["gbcli", *words, *flags, *self.common])


@dataclass(frozen=True)
class TourSettings:
    steps: tuple[int, ...]
    budget: float = DEFAULT_BUDGET  # seconds the slow step (fine-tuning) may take, by its own estimate
    model_flags: ModelFlags = field(default_factory=ModelFlags)
    load: LoadOptions = field(default_factory=LoadOptions)  # device and dtype, for the models fine-tuning builds
    # The built-in labelled tasks the probe and fine-tuning steps learn from, by name (the command reads them:
    # `gbcli.jobs.builtin_tasks`, which a task does not import).
    labelled: dict[str, LabelledData] = field(default_factory=dict)


def _p(value: float | None) -> str:
    """A probability or a small positive number in a sentence: three decimals, or two significant digits."""
    if value is None:
        return "none"
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}"


def _agreement(held: list[bool]) -> Verdict:
    return "agrees" if all(held) else "contradicts" if not any(held) else "mixed"


# ---------------------------------------------------------------------------------------------------------------
# 1. Both are transformers: attention, a triangle against a square
# ---------------------------------------------------------------------------------------------------------------


def attention_figures(result: Any) -> Figures:
    """Over every layer and head of one map: the largest weight on a later token, and the mean share of a token's
    attention that goes to later tokens (0 for a causal triangle, above 0 for a full square)."""
    import numpy as np

    amap = result.main
    weights = amap.weights  # [layer, head, query, key]
    later = np.triu(np.ones(weights.shape[-2:], dtype=bool), k=1)
    above = weights[..., later]
    rows = weights.shape[-2]
    mass = weights * later  # each row's weight on keys to its right
    share_rows = mass.sum(axis=-1)[..., : rows - 1]  # the last query has no later token
    return {
        "layers": amap.layers,
        "heads": amap.heads,
        "max_later_weight": float(above.max()) if above.size else 0.0,
        "mean_later_share": float(share_rows.mean()) if share_rows.size else 0.0,
    }


def _attention_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.attention import build_report, compute_attention

    results = [compute_attention(models[family], ATTENTION_TEXT) for family in ("gpt", "bert")]
    report = build_report(ATTENTION_TEXT, results)
    gpt, bert = (attention_figures(result) for result in results)
    figures = {"gpt": gpt, "bert": bert}
    reading = []
    maps = f"all {gpt['layers']} layers × {gpt['heads']} heads"
    if gpt["max_later_weight"] == 0:
        reading.append(f"GPT-2 puts exactly 0 attention on every later token in {maps}: each map is a triangle, "
                       "because a token it is trained to predict must not be seen.")
    else:
        reading.append(f"GPT-2 puts up to {_p(gpt['max_later_weight'])} of a token's attention on a later token: "
                       "its maps are not triangles, so this model is not reading left to right.")
    bert_maps = f"{bert['layers']} layers × {bert['heads']} heads"
    if bert["mean_later_share"] > 0:
        reading.append(f"BERT gives on average {bert['mean_later_share']:.0%} of a token's attention to the tokens "
                       f"on its right ({bert_maps}): a full square, each token sees both sides.")
    else:
        reading.append(f"BERT gives no attention to the tokens on a token's right ({bert_maps}): this model's "
                       "maps are triangles too, not the square the claim expects.")
    verdict = _agreement([gpt["max_later_weight"] == 0, bert["mean_later_share"] > 0])
    return Outcome({"attention": report}, figures, reading, verdict)


# ---------------------------------------------------------------------------------------------------------------
# 2. GPT-2 writes; BERT, made to fill blanks, writes poorly
# ---------------------------------------------------------------------------------------------------------------


def _generation_settings() -> Any:
    from gbcli.tasks.decoding_settings import DecodingSettings

    return DecodingSettings.from_options(max_new_tokens=NEW_TOKENS, greedy=True, alternatives=ALTERNATIVES)


def _generation_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.generation import GenerationResult, generate_causal, generate_masked
    from gbcli.tasks.scoring import ScoreSettings, score_texts

    settings = _generation_settings()
    generation = GenerationResult(prompt=PROMPT, decoding=settings.describe(), settings=settings)
    generation.columns.append(generate_causal(models["gpt"], PROMPT, settings))
    generation.columns.append(generate_masked(models["bert"], PROMPT, settings))
    texts = [PROMPT + column.continuations[0].text for column in generation.columns]
    judged = score_texts([models["gpt"], models["bert"]], texts, ScoreSettings())
    # judged[text][judge]: the GPT-2 judge's perplexity and the BERT judge's pseudo-perplexity of each model's text.
    gpt_judge = [record.columns[0].value for record in judged]
    bert_judge = [record.columns[1].value for record in judged]
    figures = {
        "gpt_text": texts[0], "bert_text": texts[1],
        "gpt_judge": {"gpt_text": gpt_judge[0], "bert_text": gpt_judge[1]},
        "bert_judge": {"gpt_text": bert_judge[0], "bert_text": bert_judge[1]},
    }
    gpt_steps = generation.columns[0].continuations[0].tokens
    doubt = _least_sure(gpt_steps)
    if doubt is not None:
        figures["gpt_least_sure"] = doubt
    gpt_prefers = _lower(gpt_judge[0], gpt_judge[1])
    bert_prefers = _lower(bert_judge[0], bert_judge[1])
    reading = [
        f"GPT-2 wrote {texts[0]!r} one token after another; BERT, appending a [MASK] and filling it, wrote "
        f"{texts[1]!r}.",
        *([f"GPT-2 weighed its next token at each step and was least sure at step {doubt['step']}, where it wrote "
           f"{doubt['written']!r} (p {_p(doubt['p'])}) over {doubt['runner_up']!r} (p {_p(doubt['runner_up_p'])})."]
          if doubt is not None else []),
        f"Judged by GPT-2's perplexity, GPT-2's text scores {_ppl(gpt_judge[0])} and BERT's {_ppl(gpt_judge[1])}; "
        f"by BERT's pseudo-perplexity, {_ppl(bert_judge[0])} and {_ppl(bert_judge[1])} (lower is more likely).",
    ]
    if gpt_prefers and bert_prefers:
        reading.append("Both judges prefer GPT-2's text, BERT too, although its own text is the one it chose word "
                       "by word: filling blanks one after another is not how BERT learnt to write.")
    elif not gpt_prefers and not bert_prefers:
        reading.append("Both judges prefer BERT's text: these models do not bear the claim out.")
    else:
        winner = "its own" if gpt_prefers and not bert_prefers else "the other's"
        reading.append(f"Each judge prefers {winner} text, so these numbers settle nothing: each model favours "
                       "the words it chose.")
    verdict = _agreement([gpt_prefers, bert_prefers])
    return Outcome({"generate": generation, "score": judged}, figures, reading, verdict, then=[["score", *texts]])


def _least_sure(tokens: list[Any]) -> Figures | None:
    """The step whose written token had the lowest probability, and the best token it passed over there."""
    weighed = [(i, t) for i, t in enumerate(tokens, start=1) if len(t.alternatives) > 1]
    if not weighed:
        return None
    step, token = min(weighed, key=lambda item: item[1].logprob)
    other = next(a for a in token.alternatives if not a.chosen)
    return {"step": step, "written": token.text.strip(), "p": math.exp(token.logprob),
            "runner_up": other.text.strip(), "runner_up_p": math.exp(other.logprob)}


def _lower(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and a < b


def _ppl(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------------------------------------------------------
# 3. Pre-training objectives: the next word against the masked word
# ---------------------------------------------------------------------------------------------------------------


def _fill_mask_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.masking import fill_mask

    result = fill_mask({"bert": models["bert"], "gpt": models["gpt"]}, MASK_TEXT, 5, [MASK_TARGET])
    slot = result.masks[0]
    assert slot.bert is not None and slot.gpt_left is not None and slot.gpt_whole is not None
    bert_top, left_top, whole_top = (column.predictions[0] for column in (slot.bert, slot.gpt_left, slot.gpt_whole))
    bert_target, left_target = slot.bert.targets[0].prob, slot.gpt_left.targets[0].prob
    figures = {
        "target": MASK_TARGET,
        "bert_top": bert_top.word, "bert_top_p": bert_top.prob, "bert_target_p": bert_target,
        "gpt_left_top": left_top.word.strip(), "gpt_left_top_p": left_top.prob, "gpt_left_target_p": left_target,
        "gpt_whole_top": whole_top.word.strip(),
    }
    bert_first = bert_top.word.strip() == MASK_TARGET
    more_likely = bert_target is not None and left_target is not None and bert_target > left_target
    reading = []
    if bert_first:
        reading.append(f"BERT, pre-trained to restore a masked word from both sides, reads 'quacks' to the right "
                       f"of the blank and puts {MASK_TARGET!r} first (p {_p(bert_target)}).")
    else:
        reading.append(f"BERT, pre-trained to restore a masked word from both sides, puts {bert_top.word!r} first "
                       f"(p {_p(bert_top.prob)}), not {MASK_TARGET!r} (p {_p(bert_target)}): this model does not "
                       "use the right-hand side here.")
    reading.append(f"GPT-2, pre-trained to predict the next word, sees only 'the': its top word is "
                   f"{figures['gpt_left_top']!r} (p {_p(left_top.prob)}), and {MASK_TARGET!r} gets p "
                   f"{_p(left_target)}" + (f", {bert_target / left_target:.3g} times less than BERT gives it."
                                           if more_likely and left_target else "."))
    if not more_likely:
        reading.append(f"BERT gives {MASK_TARGET!r} no more probability than GPT-2 does from the left alone: these "
                       "models do not bear the claim out.")
    else:
        reading.append(f"Ranking whole sentences instead, which reads the right side too, GPT-2 picks "
                       f"{figures['gpt_whole_top']!r}.")
    verdict = _agreement([bert_first, more_likely])
    return Outcome({"fill-mask": result}, figures, reading, verdict)


# ---------------------------------------------------------------------------------------------------------------
# 4. Unidirectional against bidirectional, as a measurement
# ---------------------------------------------------------------------------------------------------------------


def _context_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.context import apply_change, context_shift

    texts = [ATTENTION_TEXT, apply_change(ATTENTION_TEXT, CHANGE)]
    result = context_shift([models["gpt"], models["bert"]], texts, CHANGE)
    figures: Figures = {}
    reading = []
    held = []
    old, new = CHANGE.split("=")
    for shift in result.shifts:
        before = [p for p in shift.positions if p.region == "before"]
        moved = [p for p in before if any((v or 0.0) > 0 for v in p.relative_l2)]
        largest = max((v for v in shift.before_max_cosine if v is not None), default=0.0)
        name = "GPT-2" if shift.family == "gpt" else "BERT"
        figures[shift.family] = {
            "before": len(before), "moved": len(moved), "layers": len(shift.layers),
            "first_moving_layer": None if shift.first_moving_layer is None else shift.layers[shift.first_moving_layer],
            "max_cosine_before": largest,
        }
        if shift.family == "gpt":
            held.append(not moved)
            if not moved:
                reading.append(f"Changing {old!r} to {new!r} moves none of GPT-2's {len(before)} states before it, "
                               f"at any of its {len(shift.layers)} layers: they are bit-identical (exactly 0), as a "
                               "state computed from the left cannot see a later word.")
            else:
                reading.append(f"Changing {old!r} to {new!r} moves {len(moved)} of GPT-2's {len(before)} states "
                               f"before it (up to {_p(largest)}): this model reads the right side.")
        else:
            held.append(len(moved) == len(before) and bool(before))
            every = "all" if len(moved) == len(before) else f"{len(moved)} of the"
            if moved:
                layer = figures[shift.family]["first_moving_layer"]
                reading.append(f"It moves {every} {len(before)} of {name}'s states before it, from layer {layer} on "
                               f"(cosine distance up to {_p(largest)}): every BERT state reads both sides.")
            else:
                reading.append(f"It moves none of {name}'s {len(before)} states before it: this model does not read "
                               "the right side, against the claim.")
    probed = _probe(models, context)
    figures["probe"] = probe_figures(probed)
    gpt, bert = figures["probe"]["gpt"], figures["probe"]["bert"]
    majority = figures["probe"]["majority"]
    if gpt["at_majority"]:
        reading.append(f"A probe for the number of 'sheep' in 'the sheep is/are ...', which only the verb to its "
                       f"right gives away, scores GPT-2's states exactly at the majority baseline ({majority:.2f}) "
                       "at every layer: they have not read the verb.")
    else:
        reading.append(f"A probe for the number of 'sheep', which only the verb to its right gives away, scores "
                       f"GPT-2 up to {gpt['best_accuracy']:.2f} (majority baseline {majority:.2f}): its states know "
                       "something they should not be able to see.")
    bert_above = bert["best_accuracy"] > majority
    reading.append(f"BERT's states reach {bert['best_accuracy']:.2f} at layer {bert['best_layer']}"
                   + ("." if bert_above else ", no better than the baseline: this BERT does not carry the verb's "
                                             "number back to 'sheep'."))
    held += [gpt["at_majority"], bert_above]
    return Outcome({"context": result, "probe": probed}, figures, reading, _agreement(held))


RIGHT_CONTEXT_TASK = "right-context"
PROBE_OPTIONS = ("--seeds", "1", "--control", "none")  # one split and no random-weight rows: the tour's setting


def _probe(models: dict[str, LoadedModel], context: StepContext) -> Any:
    """The right-context probe of GPT-2 and BERT, once per tour (steps 4 and 6 read the same result)."""
    from gbcli.tasks.probe import ProbeOptions, probe

    if RIGHT_CONTEXT_TASK not in context.memo:
        data = context.settings.labelled[RIGHT_CONTEXT_TASK]
        context.memo[RIGHT_CONTEXT_TASK] = probe([models["gpt"], models["bert"]], data,
                                                 ProbeOptions(seeds=1, control="none"))
    return context.memo[RIGHT_CONTEXT_TASK]


def probe_figures(result: Any) -> Figures:
    """Each model's best layer and accuracy, whether it sits exactly on the majority baseline at every layer
    (the same predictions, split by split), and its accuracy by layer."""
    figures: Figures = {"majority": result.majority.accuracy}
    for row in result.rows:
        if row.random_init:
            continue
        figures[row.family] = {
            "best_layer": row.best_layer.layer, "best_accuracy": row.best_layer.accuracy,
            "at_majority": all(score.runs == result.majority.runs for score in row.layers),
            "accuracy_by_layer": [score.accuracy for score in row.layers],
            "layer_names": [score.layer for score in row.layers],
            # The first layer whose accuracy is above the whole majority interval: what that layer knows.
            "first_layer_above": next((score.layer for score in row.layers if score.low > result.majority.high),
                                      None),
        }
    return figures


# ---------------------------------------------------------------------------------------------------------------
# 5. Perplexity against pseudo-perplexity
# ---------------------------------------------------------------------------------------------------------------


def _score_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.scoring import ScoreSettings, score_texts

    records = score_texts([models["gpt"], models["bert"]], [ATTENTION_TEXT, SCRAMBLED], ScoreSettings())
    gpt = [record.columns[0].value for record in records]
    bert = [record.columns[1].value for record in records]
    figures = {"gpt_perplexity": {"natural": gpt[0], "scrambled": gpt[1]},
               "bert_pseudo_perplexity": {"natural": bert[0], "scrambled": bert[1]}}
    reading = [f"On {ATTENTION_TEXT!r} GPT-2's perplexity is {_ppl(gpt[0])} and BERT's pseudo-perplexity "
               f"{_ppl(bert[0])}."]
    if _lower(bert[0], gpt[0]):
        reading.append("BERT's number is the lower one, yet that does not make BERT the better model: each of its "
                       "predictions sees the rest of the sentence, GPT-2's only the words before. Two scales.")
    else:
        reading.append("BERT's number is not the lower one here, although each of its predictions sees the rest of "
                       "the sentence and GPT-2's only the words before: either way, the two are on different scales.")
    held = []
    for name, values in (("GPT-2", gpt), ("BERT", bert)):
        prefers = _lower(values[0], values[1])
        held.append(prefers)
        if prefers:
            ratio = values[1] / values[0]  # type: ignore[operator]
            reading.append(f"{name} finds the scrambled {SCRAMBLED!r} {ratio:.3g} times as perplexing.")
        else:
            reading.append(f"{name} does not find the scrambled {SCRAMBLED!r} more perplexing: this model has not "
                           "learnt what the sentence should be.")
    reading.append("Compare each number across texts, never with the other model's.")
    return Outcome({"score": records}, figures, reading, _agreement(held))


# ---------------------------------------------------------------------------------------------------------------
# 6. Which layers know what
# ---------------------------------------------------------------------------------------------------------------


SIMILAR_TEXTS = ("the duck quacks in the park .", "the dog barks in the park .", "the capital of france is paris .")


def _layers_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.similarity import similarity

    probed = _probe(models, context)
    compared = similarity([models["gpt"], models["bert"]], list(SIMILAR_TEXTS))
    figures: Figures = {"probe": probe_figures(probed)}
    majority = figures["probe"]["majority"]
    held = []
    reading = []
    scores = []
    for family, name in (("gpt", "GPT-2"), ("bert", "BERT")):
        row = figures["probe"][family]
        by_layer = ", ".join(f"{layer} {accuracy:.2f}" for layer, accuracy in
                             zip(row["layer_names"], row["accuracy_by_layer"], strict=True))
        first = row["first_layer_above"]
        if family == "gpt":
            held.append(first is None)
            where = ("no layer knows it" if first is None else
                     f"it appears from layer {first} on, although no state at 'sheep' has read the verb")
        else:
            held.append(first is not None)
            where = ("no layer knows it" if first is None else "it is in the embeddings already, which read one "
                     "token each" if first == "emb" else f"the embeddings do not know it; it appears at layer {first}")
        scores.append(f"{name} {by_layer}: {where}")
    reading.append(f"Layer by layer, the probe of step 4 (majority baseline {majority:.2f}) scores "
                   + "; ".join(scores) + ".")
    for model in compared.models:
        related, unrelated = model.pairs[0], model.pairs[1]  # texts 1–2 (animals in the park), 1–3 (a capital)
        figures[model.family] = {"baseline": model.baseline, "layer": model.layer,
                                 "related_cosine": related.cosine, "related_adjusted": related.adjusted,
                                 "unrelated_cosine": unrelated.cosine, "unrelated_adjusted": unrelated.adjusted}
        name = "GPT-2" if model.family == "gpt" else "BERT"
        apart = related.adjusted > unrelated.adjusted
        held.append(apart)
        reading.append(
            f"At {name}'s last layer two unrelated reference sentences already have a mean cosine of "
            f"{model.baseline:.2f} (anisotropy): the duck and dog sentences have {related.cosine:.2f} "
            f"({related.adjusted:+.2f} against that baseline), the duck and the capital {unrelated.cosine:.2f} "
            f"({unrelated.adjusted:+.2f})" + ("." if apart else ": this model does not tell the related pair "
                                                                "from the unrelated one."))
    return Outcome({"probe": probed, "similarity": compared}, figures, reading, _agreement(held))


# ---------------------------------------------------------------------------------------------------------------
# 7. Fine-tuning
# ---------------------------------------------------------------------------------------------------------------


FINETUNE_TASK = "sentiment"
FINETUNE_SAMPLES = 128
FINETUNE_EPOCHS = 2
FINETUNE_BATCH = 16
FINETUNE_EVAL_EVERY = 2
FINETUNE_LR = 1e-4  # above BERT's 2e-5: sixteen steps must show a curve
FINETUNE_SEED = 42


def _finetune_recipe() -> Any:
    from gbcli.tasks.finetune.recipe import Recipe, check_recipe

    return check_recipe(Recipe(learning_rate=FINETUNE_LR, epochs=FINETUNE_EPOCHS, batch_size=FINETUNE_BATCH,
                               eval_every=FINETUNE_EVAL_EVERY))


def _finetune_words() -> list[str]:
    """The options of `gbcli finetune` that give the tour's small, fast setting (also its deeper command)."""
    return ["finetune", "--task", FINETUNE_TASK, "--max-train-samples", str(FINETUNE_SAMPLES), "--epochs",
            str(FINETUNE_EPOCHS), "--batch-size", str(FINETUNE_BATCH), "--lr", f"{FINETUNE_LR:g}", "--eval-every",
            str(FINETUNE_EVAL_EVERY), "--seed", str(FINETUNE_SEED), "--output-dir", "gbcli-tour-finetune"]


def forward_seconds(lm: LoadedModel, texts: list[str]) -> float:
    """Seconds of one forward pass of the model's body over `texts` as one padded batch (no head: a classifier's
    head is small), the second of two so that the first pays for the kernels' warm-up."""
    import torch

    tokenizer = lm.tokenizer
    ids = [tokenizer(text)["input_ids"] for text in texts]
    width = max(len(row) for row in ids)
    batch = torch.tensor([row + [lm.pad_id] * (width - len(row)) for row in ids], device=lm.device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=lm.device)
    body = lm.model.base_model
    seconds = 0.0
    with torch.inference_mode():
        for _ in range(2):
            began = time.perf_counter()
            if getattr(lm.model.config, "is_encoder_decoder", False):
                body(input_ids=batch, attention_mask=mask, decoder_input_ids=batch)
            else:
                body(input_ids=batch, attention_mask=mask)
            seconds = time.perf_counter() - began
    return seconds


def finetune_estimate(models: dict[str, LoadedModel], data: Any, recipe: Any) -> float:
    """Seconds the run would take, before any classifier is built: a training step costs about three forward
    passes (forward, and a backward pass of about twice that), an evaluation a forward pass per batch of dev."""
    texts = [example.text for example in data.train[: recipe.batch_size]]
    steps = recipe.total_steps(len(data.train))
    evaluations = 1 + -(-steps // recipe.evaluation_interval(len(data.train)))
    dev_batches = -(-len(data.dev) // max(recipe.batch_size, 32))
    total = 0.0
    for family in ("gpt", "bert"):
        forward = forward_seconds(models[family], texts)
        total += steps * 3 * forward + evaluations * dev_batches * forward * max(recipe.batch_size, 32) / len(texts)
    return total


def _finetune_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    import tempfile
    from pathlib import Path

    from gbcli.tasks.finetune.comparison import Plan, compare_finetuning
    from gbcli.tasks.finetune.data import prepare

    settings = context.settings
    data = prepare(settings.labelled[FINETUNE_TASK].examples, None, f"task {FINETUNE_TASK}",
                   max_train_samples=FINETUNE_SAMPLES)
    recipe = _finetune_recipe()
    budget = f"more than --budget {settings.budget:g} s; raise --budget to see it, or run the command below"
    first = finetune_estimate(models, data, recipe)
    if first > settings.budget:
        raise StepUnavailable(f"fine-tuning would take about {first:.0f} s on these models (from one timed forward "
                              f"pass of each), {budget}")
    estimated: list[float] = []

    def within_budget(estimates: list[Any]) -> None:
        """`gbcli finetune`'s own estimate, from a few timed training steps: a run over the budget is not started."""
        estimated.append(sum(e.seconds for e in estimates))
        if estimated[0] > settings.budget:
            raise StepUnavailable(f"fine-tuning would take about {estimated[0]:.0f} s on these models (timed on a "
                                  f"few training steps), {budget}")

    started = time.perf_counter()
    # The run's folder (models, Trainer state) is the tour's scratch: the deeper command keeps its own.
    with tempfile.TemporaryDirectory(prefix="gbcli-tour-") as folder:
        plan = Plan([(family, models[family].spec) for family in ("gpt", "bert")],
                    {family: recipe for family in ("gpt", "bert")}, [FINETUNE_SEED], Path(folder),
                    device=settings.load.device, dtype=settings.load.dtype, revision=settings.load.revision,
                    offline=settings.load.offline)
        try:
            result = compare_finetuning(data, plan, None, within_budget)
        except ImportError as error:
            raise StepUnavailable(f"fine-tuning needs accelerate and scikit-learn ({error}): "
                                  "pip install 'gbcli[train]'") from None
    seconds = time.perf_counter() - started
    majority = result.majority_baseline
    figures: Figures = {"task": FINETUNE_TASK, "train_examples": result.train_examples,
                        "dev_examples": result.dev_examples, "majority_baseline": majority,
                        "estimated_seconds": estimated[0] if estimated else first, "seconds": seconds}
    learned = []
    for family in result.families:
        figures[family.family] = {"final_accuracy": family.final_accuracy,
                                  "accuracy_by_step": [point.accuracy for point in family.curve],
                                  "reached_examples": family.reached_examples}
        learned.append(family.final_accuracy > majority)
    reading = [f"Both were given a classification head and trained on the same {result.train_examples} "
               f"{FINETUNE_TASK} examples with the same recipe (learning rate {FINETUNE_LR:g}, batch "
               f"{FINETUNE_BATCH}, {FINETUNE_EPOCHS} epochs), scored on {result.dev_examples} held-out ones."]
    reading += result.reading
    if not any(learned):
        reading.append("In this small setting neither learned the task: the claim is not shown by these models.")
    elif not all(learned):
        reading.append("In this small setting only one of them learned the task; the deeper command trains longer.")
    reading.append(f"It took {seconds:.0f} s here (estimated {figures['estimated_seconds']:.0f} s before training).")
    return Outcome({"finetune": result}, figures, reading, _agreement(learned))


# ---------------------------------------------------------------------------------------------------------------
# 8. BART: a bidirectional encoder, an autoregressive decoder, and span infilling
# ---------------------------------------------------------------------------------------------------------------


def _bart_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    from gbcli.tasks.attention import build_report, compute_attention
    from gbcli.tasks.masking import fill_mask

    lm = models["bart"]
    attention = compute_attention(lm, ATTENTION_TEXT)
    # The encoder against the decoder is the claim; the command shows cross-attention too.
    report = build_report(ATTENTION_TEXT, [_only_maps(attention, "encoder", "decoder")])
    encoder = attention_figures(_only_maps(attention, "encoder"))
    decoder = attention_figures(_only_maps(attention, "decoder"))
    filled = fill_mask({"bart": lm}, SPAN_TEXT, SPAN_TOP_K)
    slot = filled.masks[0]
    span = slot.bart.predictions[0] if slot.bart is not None and slot.bart.predictions else None
    figures = {"encoder": encoder, "decoder": decoder,
               "span": None if span is None else span.word, "span_p": None if span is None else span.prob,
               "span_words": 0 if span is None else len(span.word.split())}
    reading = []
    held = [encoder["mean_later_share"] > 0, decoder["max_later_weight"] == 0]
    reading.append(
        (f"BART's encoder gives on average {encoder['mean_later_share']:.0%} of a token's attention to the tokens "
         "on its right, like BERT" if held[0] else
         "BART's encoder gives no attention to later tokens, unlike BERT")
        + "; " + ("its decoder puts exactly 0 on every later token, like GPT-2."
                  if held[1] else f"its decoder puts up to {_p(decoder['max_later_weight'])} on later tokens, "
                                  "unlike GPT-2.")
    )
    if span is None:
        reading.append(f"No beam kept the text around the blank of {SPAN_TEXT!r}, so no span can be read off.")
        held.append(False)
    else:
        words = figures["span_words"]
        reading.append(f"Pre-trained to restore corrupted text, it fills the one blank of {SPAN_TEXT!r} with "
                       f"{span.word!r} ({words} word{'s' if words != 1 else ''}, p {_p(span.prob)}): a span of any "
                       "length, where BERT writes one token per [MASK].")
    return Outcome({"attention": report, "fill-mask": filled}, figures, reading, _agreement(held))


def _only_maps(result: Any, *names: str) -> Any:
    """The result with only these maps, the first as the main one (which `attention_figures` reads)."""
    from dataclasses import replace

    return replace(result, maps=[result.map(name) for name in names])


# ---------------------------------------------------------------------------------------------------------------
# The steps, and the tour that runs them
# ---------------------------------------------------------------------------------------------------------------


class StepUnavailable(Exception):
    """A step that this build or these models cannot show: skipped with the reason, not failed."""


STEPS: tuple[StepSpec, ...] = (
    StepSpec(1, "attention", "Both are transformers",
             "Both read a text through attention; GPT-2's is a triangle (each token sees its left), BERT's a "
             "square (each token sees both sides).",
             ("gpt", "bert"), lambda f: [f.command("attention", ATTENTION_TEXT)], _attention_step),
    StepSpec(2, "generate", "GPT-2 is autoregressive",
             "GPT-2 writes token by token, each from the ones before; BERT, made to write by filling blanks, "
             "writes poorly.",
             ("gpt", "bert"),
             lambda f: [f.command("generate", PROMPT, "--greedy", "--max-new-tokens", str(NEW_TOKENS),
                                  "--alternatives", str(ALTERNATIVES))],
             _generation_step),
    StepSpec(3, "fill-mask", "Two pre-training objectives",
             "GPT-2 learnt to predict the next word, BERT the masked word: BERT fills 'the [MASK] quacks' from the "
             "right side, GPT-2 cannot.",
             ("gpt", "bert"), lambda f: [f.command("fill-mask", MASK_TEXT, "--targets", MASK_TARGET)],
             _fill_mask_step),
    StepSpec(4, "context", "Unidirectional against bidirectional",
             "Changing a later word moves none of GPT-2's earlier states and all of BERT's; a probe that needs the "
             "right context finds nothing in GPT-2.",
             ("gpt", "bert"),
             lambda f: [f.command("context", ATTENTION_TEXT, "--change", CHANGE),
                        f.command("probe", "--task", RIGHT_CONTEXT_TASK, *PROBE_OPTIONS)],
             _context_step),
    StepSpec(5, "score", "Perplexity against pseudo-perplexity",
             "GPT-2's perplexity and BERT's pseudo-perplexity measure different things: they are not on one scale.",
             ("gpt", "bert"), lambda f: [f.command("score", ATTENTION_TEXT, SCRAMBLED)], _score_step),
    StepSpec(6, "layers", "Understanding: which layers know what",
             "What a model knows about a word is built layer by layer, and its sentence vectors are alike only "
             "as read against the anisotropy baseline.",
             ("gpt", "bert"),
             lambda f: [f.command("probe", "--task", RIGHT_CONTEXT_TASK, *PROBE_OPTIONS),
                        f.command("similarity", *SIMILAR_TEXTS)],
             _layers_step),
    StepSpec(7, "finetune", "Fine-tuning",
             "Both are pre-trained, then fine-tuned: the same small task and recipe give two learning curves.",
             ("gpt", "bert"), lambda f: [f.command(*_finetune_words())], _finetune_step),
    StepSpec(8, "bart", "BART, between the two",
             "BART pairs a bidirectional encoder with an autoregressive decoder, and is pre-trained to restore "
             "spans of any length.",
             ("bart",),
             lambda f: [f.command("attention", ATTENTION_TEXT, "--models", "bart", families=("bart",)),
                        f.command("fill-mask", SPAN_TEXT, "--top-k", str(SPAN_TOP_K), "--models", "bart",
                                  families=("bart",))],
             _bart_step),
)
STEP_NUMBERS = tuple(spec.number for spec in STEPS)
LABELLED_TASKS = (RIGHT_CONTEXT_TASK, FINETUNE_TASK)  # the built-in tasks the tour learns from


def parse_steps(raw: str | None) -> tuple[int, ...]:
    """`1,4,7` → (1, 4, 7), in tour order, each once; None → every step."""
    if raw is None:
        return STEP_NUMBERS
    chosen: set[int] = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) not in STEP_NUMBERS:
            raise usage_error(f"--steps: there is no step '{part}'.",
                              f"Choose from {STEP_NUMBERS[0]} to {STEP_NUMBERS[-1]}, e.g. --steps 1,4,7.")
        chosen.add(int(part))
    if not chosen:
        raise usage_error("--steps names no step.", "For example --steps 1,4,7.")
    return tuple(sorted(chosen))


def check_budget(budget: float) -> float:
    if not math.isfinite(budget) or budget <= 0:
        raise usage_error(f"--budget must be a number of seconds above 0, not {budget}.", "For example --budget 60.")
    return budget


def needed_families(settings: TourSettings) -> list[str]:
    """The model families the chosen steps need, in tour order."""
    families: list[str] = []
    for spec in STEPS:
        if spec.number in settings.steps:
            families += [f for f in spec.needs if f not in families]
    return families


Loader = Callable[[str], LoadedModel]  # a family's model, loaded; raises GbcliError when it cannot be had


@dataclass
class StepContext:
    """What a step runs with besides its models: the settings, and results an earlier step left for a later one
    (step 6 reads the probe step 4 ran, rather than running it twice)."""

    settings: TourSettings
    memo: dict[str, Any] = field(default_factory=dict)


def chosen_steps(settings: TourSettings) -> list[StepSpec]:
    return [spec for spec in STEPS if spec.number in settings.steps]


class ModelPool:
    """The tour's models, each loaded when the first step that needs it comes, and what could not be had."""

    def __init__(self, load: Loader, chosen: list[str]) -> None:
        self.load, self.chosen = load, chosen
        self.loaded: dict[str, LoadedModel] = {}
        self.missing: dict[str, str] = {}
        self.memo: dict[str, Any] = {}  # results one step leaves for a later one

    def prepare(self, spec: StepSpec) -> str | None:
        """Load what the step needs; the reason it cannot run, if a model is not chosen or cannot be had."""
        for family in spec.needs:
            if family not in self.chosen:
                return f"it needs the {family.upper()} model, which --models leaves out"
            if family in self.missing:
                return self.missing[family]
            if family not in self.loaded:
                try:
                    self.loaded[family] = self.load(family)
                except GbcliError as error:
                    self.missing[family] = f"the {family.upper()} model cannot be had: {error.message}"
                    return self.missing[family]
        return None


def run_step(spec: StepSpec, settings: TourSettings, pool: ModelPool, reason: str | None) -> TourStep:
    """One step on the pool's models (already prepared), or skipped for `reason`."""
    step = TourStep(spec.number, spec.key, spec.title, spec.claim, spec.commands(settings.model_flags))
    started = time.perf_counter()
    if reason is not None:
        step.status, step.note = "skipped", reason
    else:
        _run_step(spec, step, {f: pool.loaded[f] for f in spec.needs}, StepContext(settings, pool.memo))
    step.seconds = time.perf_counter() - started
    return step


def run_tour(settings: TourSettings, load: Loader, chosen: list[str]) -> Iterator[TourStep]:
    """Each chosen step in turn, yielded as soon as it is done; `chosen` are the families the user allows."""
    pool = ModelPool(load, chosen)
    for spec in chosen_steps(settings):
        yield run_step(spec, settings, pool, pool.prepare(spec))


def _run_step(spec: StepSpec, step: TourStep, models: dict[str, LoadedModel], context: StepContext) -> None:
    flags = context.settings.model_flags
    try:
        outcome = spec.run(models, context)
        check_finite(outcome.results, list(models.values()))  # a NaN fails this step, not the tour
    except StepUnavailable as reason:
        step.status, step.note = "skipped", str(reason)
        return
    except GbcliError as error:
        step.status, step.note = "failed", error.message
        return
    except (MemoryError, RuntimeError, ValueError, IndexError, KeyError, AssertionError) as error:
        # A failure below us (a model that cannot take the step's text, say): said, and the tour goes on.
        first_line = (str(error).strip().splitlines() or [""])[0]
        step.status, step.note = "failed", f"{type(error).__name__}: {first_line}"
        return
    step.results, step.figures, step.reading, step.verdict = (outcome.results, {**step.figures, **outcome.figures},
                                                              outcome.reading, outcome.verdict)
    step.note = outcome.note
    step.commands += [flags.command(*words) for words in outcome.then]
