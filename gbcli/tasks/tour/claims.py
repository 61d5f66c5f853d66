"""The claims about what each family is, shown with the command that shows each: attention (1), generation (2),
the two pre-training objectives (3), left against both contexts (4), perplexity against pseudo-perplexity (5) and
BART (8). Each runs that command's own task, and reads the figures it got."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from gbcli.loading.models import LoadedModel
from gbcli.tasks.attention import build_report, compute_attention
from gbcli.tasks.context import apply_change, context_shift
from gbcli.tasks.decoding_options import settings_from_options
from gbcli.tasks.generation import GenerationResult
from gbcli.tasks.generation.causal import generate_causal
from gbcli.tasks.generation.masked import generate_masked
from gbcli.tasks.masking import fill_mask
from gbcli.tasks.scoring import ScoreSettings, score_texts
from gbcli.tasks.tour.learning import probe_figures, right_context_probe
from gbcli.tasks.tour.results import Figures, Outcome, StepContext, Verdict, agreement, lower, say_p, say_ppl

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


# ---------------------------------------------------------------------------------------------------------------
# 1. Both are transformers: attention, a triangle against a square
# ---------------------------------------------------------------------------------------------------------------


def attention_figures(result: Any) -> Figures:
    """Over every layer and head of one map: the largest weight on a later token, and the mean share of a token's
    attention that goes to later tokens (0 for a causal triangle, above 0 for a full square)."""
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


def attention_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    results = [compute_attention(models[family], ATTENTION_TEXT) for family in ("gpt", "bert")]
    report = build_report(ATTENTION_TEXT, results)
    gpt, bert = (attention_figures(result) for result in results)
    figures = {"gpt": gpt, "bert": bert}
    reading = []
    maps = f"all {gpt['layers']} layers × {gpt['heads']} heads"
    if gpt["max_later_weight"] == 0:
        reading.append(
            f"GPT-2 puts exactly 0 attention on every later token in {maps}: each map is a triangle, "
            "because a token it is trained to predict must not be seen."
        )
    else:
        reading.append(
            f"GPT-2 puts up to {say_p(gpt['max_later_weight'])} of a token's attention on a later token: "
            "its maps are not triangles, so this model is not reading left to right."
        )
    bert_maps = f"{bert['layers']} layers × {bert['heads']} heads"
    if bert["mean_later_share"] > 0:
        reading.append(
            f"BERT gives on average {bert['mean_later_share']:.0%} of a token's attention to the tokens "
            f"on its right ({bert_maps}): a full square, each token sees both sides."
        )
    else:
        reading.append(
            f"BERT gives no attention to the tokens on a token's right ({bert_maps}): this model's "
            "maps are triangles too, not the square the claim expects."
        )
    verdict = agreement([gpt["max_later_weight"] == 0, bert["mean_later_share"] > 0])
    return Outcome({"attention": report}, figures, reading, verdict)


# ---------------------------------------------------------------------------------------------------------------
# 2. GPT-2 writes; BERT, made to fill blanks, writes poorly
# ---------------------------------------------------------------------------------------------------------------


def _generation_settings() -> Any:
    return settings_from_options(max_new_tokens=NEW_TOKENS, greedy=True, alternatives=ALTERNATIVES)


def generation_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
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
        "gpt_text": texts[0],
        "bert_text": texts[1],
        "gpt_judge": {"gpt_text": gpt_judge[0], "bert_text": gpt_judge[1]},
        "bert_judge": {"gpt_text": bert_judge[0], "bert_text": bert_judge[1]},
    }
    gpt_steps = generation.columns[0].continuations[0].tokens
    doubt = _least_sure(gpt_steps)
    if doubt is not None:
        figures["gpt_least_sure"] = doubt
    gpt_prefers = lower(gpt_judge[0], gpt_judge[1])
    bert_prefers = lower(bert_judge[0], bert_judge[1])
    reading = [
        f"GPT-2 wrote {texts[0]!r} one token after another; BERT, appending a [MASK] and filling it, wrote "
        f"{texts[1]!r}.",
        *(
            [
                f"GPT-2 weighed its next token at each step and was least sure at step {doubt['step']}, where it wrote "
                f"{doubt['written']!r} (p {say_p(doubt['p'])}) over {doubt['runner_up']!r} "
                f"(p {say_p(doubt['runner_up_p'])})."
            ]
            if doubt is not None
            else []
        ),
        f"Judged by GPT-2's perplexity, GPT-2's text scores {say_ppl(gpt_judge[0])} and BERT's "
        f"{say_ppl(gpt_judge[1])}; by BERT's pseudo-perplexity, {say_ppl(bert_judge[0])} and "
        f"{say_ppl(bert_judge[1])} (lower is more likely).",
    ]
    if gpt_prefers and bert_prefers:
        reading.append(
            "Both judges prefer GPT-2's text, BERT too, although its own text is the one it chose word "
            "by word: filling blanks one after another is not how BERT learnt to write."
        )
    elif not gpt_prefers and not bert_prefers:
        reading.append("Both judges prefer BERT's text: these models do not bear the claim out.")
    elif gpt_prefers:
        reading.append(
            "Each judge prefers its own text, so these numbers do not settle it: a model favours the "
            "words it chose itself."
        )
    else:
        reading.append("Each judge prefers the other model's text, so these numbers do not settle it.")
    verdict: Verdict = agreement([gpt_prefers, bert_prefers]) if gpt_prefers == bert_prefers else "unsettled"
    return Outcome({"generate": generation, "score": judged}, figures, reading, verdict, then=[["score", *texts]])


def _least_sure(tokens: list[Any]) -> Figures | None:
    """The step whose written token had the lowest probability, and the best token it passed over there."""
    weighed = [(i, t) for i, t in enumerate(tokens, start=1) if len(t.alternatives) > 1]
    if not weighed:
        return None
    step, token = min(weighed, key=lambda item: item[1].logprob)
    other = next(a for a in token.alternatives if not a.chosen)
    return {
        "step": step,
        "written": token.text.strip(),
        "p": math.exp(token.logprob),
        "runner_up": other.text.strip(),
        "runner_up_p": math.exp(other.logprob),
    }


# ---------------------------------------------------------------------------------------------------------------
# 3. Pre-training objectives: the next word against the masked word
# ---------------------------------------------------------------------------------------------------------------


def fill_mask_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    result = fill_mask({"bert": models["bert"], "gpt": models["gpt"]}, MASK_TEXT, 5, [MASK_TARGET])
    slot = result.masks[0]
    assert slot.bert is not None and slot.gpt_left is not None and slot.gpt_whole is not None
    bert_top, left_top, whole_top = (column.predictions[0] for column in (slot.bert, slot.gpt_left, slot.gpt_whole))
    bert_target, left_target = slot.bert.targets[0].prob, slot.gpt_left.targets[0].prob
    figures = {
        "target": MASK_TARGET,
        "bert_top": bert_top.word,
        "bert_top_p": bert_top.prob,
        "bert_target_p": bert_target,
        "gpt_left_top": left_top.word.strip(),
        "gpt_left_top_p": left_top.prob,
        "gpt_left_target_p": left_target,
        "gpt_whole_top": whole_top.word.strip(),
    }
    bert_first = bert_top.word.strip() == MASK_TARGET
    more_likely = bert_target is not None and left_target is not None and bert_target > left_target
    reading = []
    if bert_first:
        reading.append(
            f"BERT, pre-trained to restore a masked word from both sides, reads 'quacks' to the right "
            f"of the blank and puts {MASK_TARGET!r} first (p {say_p(bert_target)})."
        )
    else:
        reading.append(
            f"BERT, pre-trained to restore a masked word from both sides, puts {bert_top.word!r} first "
            f"(p {say_p(bert_top.prob)}), not {MASK_TARGET!r} (p {say_p(bert_target)}): this model does not "
            "use the right-hand side here."
        )
    reading.append(
        f"GPT-2, pre-trained to predict the next word, sees only 'the': its top word is "
        f"{figures['gpt_left_top']!r} (p {say_p(left_top.prob)}), and {MASK_TARGET!r} gets p "
        f"{say_p(left_target)}"
        + (f", {bert_target / left_target:.3g} times less than BERT gives it." if more_likely and left_target else ".")
    )
    if not more_likely:
        reading.append(
            f"BERT gives {MASK_TARGET!r} no more probability than GPT-2 does from the left alone: these "
            "models do not bear the claim out."
        )
    else:
        reading.append(
            f"Ranking whole sentences instead, which reads the right side too, GPT-2 picks "
            f"{figures['gpt_whole_top']!r}."
        )
    verdict = agreement([bert_first, more_likely])
    return Outcome({"fill-mask": result}, figures, reading, verdict)


# ---------------------------------------------------------------------------------------------------------------
# 4. Unidirectional against bidirectional, as a measurement
# ---------------------------------------------------------------------------------------------------------------


def context_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
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
            "before": len(before),
            "moved": len(moved),
            "layers": len(shift.layers),
            "first_moving_layer": None if shift.first_moving_layer is None else shift.layers[shift.first_moving_layer],
            "max_cosine_before": largest,
        }
        if shift.family == "gpt":
            held.append(not moved)
            if not moved:
                reading.append(
                    f"Changing {old!r} to {new!r} moves none of GPT-2's {len(before)} states before it, "
                    f"at any of its {len(shift.layers)} layers: they are bit-identical (exactly 0), as a "
                    "state computed from the left cannot see a later word."
                )
            else:
                reading.append(
                    f"Changing {old!r} to {new!r} moves {len(moved)} of GPT-2's {len(before)} states "
                    f"before it (up to {say_p(largest)}): this model reads the right side."
                )
        else:
            held.append(len(moved) == len(before) and bool(before))
            every = "all" if len(moved) == len(before) else f"{len(moved)} of the"
            if moved:
                layer = figures[shift.family]["first_moving_layer"]
                reading.append(
                    f"It moves {every} {len(before)} of {name}'s states before it, from layer {layer} on "
                    f"(cosine distance up to {say_p(largest)}): every BERT state reads both sides."
                )
            else:
                reading.append(
                    f"It moves none of {name}'s {len(before)} states before it: this model does not read "
                    "the right side, against the claim."
                )
    probed = right_context_probe(models, context)
    figures["probe"] = probe_figures(probed)
    gpt, bert = figures["probe"]["gpt"], figures["probe"]["bert"]
    majority = figures["probe"]["majority"]
    if gpt["at_majority"]:
        reading.append(
            f"A probe for the number of 'sheep' in 'the sheep is/are ...', which only the verb to its "
            f"right gives away, scores GPT-2's states exactly at the majority baseline ({majority:.2f}) "
            "at every layer: they have not read the verb."
        )
    else:
        reading.append(
            f"A probe for the number of 'sheep', which only the verb to its right gives away, scores "
            f"GPT-2 up to {gpt['best_accuracy']:.2f} (majority baseline {majority:.2f}): its states know "
            "something they should not be able to see."
        )
    bert_above = bert["best_accuracy"] > majority
    reading.append(
        f"BERT's states reach {bert['best_accuracy']:.2f} at layer {bert['best_layer']}"
        + (
            "."
            if bert_above
            else ", no better than the baseline: this BERT does not carry the verb's number back to 'sheep'."
        )
    )
    held += [gpt["at_majority"], bert_above]
    return Outcome({"context": result, "probe": probed}, figures, reading, agreement(held))


# ---------------------------------------------------------------------------------------------------------------
# 5. Perplexity against pseudo-perplexity
# ---------------------------------------------------------------------------------------------------------------


def score_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    records = score_texts([models["gpt"], models["bert"]], [ATTENTION_TEXT, SCRAMBLED], ScoreSettings())
    gpt = [record.columns[0].value for record in records]
    bert = [record.columns[1].value for record in records]
    figures = {
        "gpt_perplexity": {"natural": gpt[0], "scrambled": gpt[1]},
        "bert_pseudo_perplexity": {"natural": bert[0], "scrambled": bert[1]},
    }
    reading = [
        f"On {ATTENTION_TEXT!r} GPT-2's perplexity is {say_ppl(gpt[0])} and BERT's pseudo-perplexity "
        f"{say_ppl(bert[0])}."
    ]
    if lower(bert[0], gpt[0]):
        reading.append(
            "BERT's number is the lower one, yet that does not make BERT the better model: each of its "
            "predictions sees the rest of the sentence, GPT-2's only the words before. Two scales."
        )
    else:
        reading.append(
            "BERT's number is not the lower one here, although each of its predictions sees the rest of "
            "the sentence and GPT-2's only the words before: either way, the two are on different scales."
        )
    held = []
    for name, values in (("GPT-2", gpt), ("BERT", bert)):
        prefers = lower(values[0], values[1])
        held.append(prefers)
        if prefers:
            ratio = values[1] / values[0]  # type: ignore[operator]
            reading.append(f"{name} finds the scrambled {SCRAMBLED!r} {ratio:.3g} times as perplexing.")
        else:
            reading.append(
                f"{name} does not find the scrambled {SCRAMBLED!r} more perplexing: this model has not "
                "learnt what the sentence should be."
            )
    reading.append("Compare each number across texts, never with the other model's.")
    return Outcome({"score": records}, figures, reading, agreement(held))


# ---------------------------------------------------------------------------------------------------------------
# 8. BART: a bidirectional encoder, an autoregressive decoder, and span infilling
# ---------------------------------------------------------------------------------------------------------------


def bart_step(models: dict[str, LoadedModel], context: StepContext) -> Outcome:
    lm = models["bart"]
    attention = compute_attention(lm, ATTENTION_TEXT)
    # The encoder against the decoder is the claim; the command shows cross-attention too.
    report = build_report(ATTENTION_TEXT, [_only_maps(attention, "encoder", "decoder")])
    encoder = attention_figures(_only_maps(attention, "encoder"))
    decoder = attention_figures(_only_maps(attention, "decoder"))
    filled = fill_mask({"bart": lm}, SPAN_TEXT, SPAN_TOP_K)
    slot = filled.masks[0]
    span = slot.bart.predictions[0] if slot.bart is not None and slot.bart.predictions else None
    figures = {
        "encoder": encoder,
        "decoder": decoder,
        "span": None if span is None else span.word,
        "span_p": None if span is None else span.prob,
        "span_words": 0 if span is None else len(span.word.split()),
    }
    reading = []
    held = [encoder["mean_later_share"] > 0, decoder["max_later_weight"] == 0]
    reading.append(
        (
            f"BART's encoder gives on average {encoder['mean_later_share']:.0%} of a token's attention to the tokens "
            "on its right, like BERT"
            if held[0]
            else "BART's encoder gives no attention to later tokens, unlike BERT"
        )
        + "; "
        + (
            "its decoder puts exactly 0 on every later token, like GPT-2."
            if held[1]
            else f"its decoder puts up to {say_p(decoder['max_later_weight'])} on later tokens, unlike GPT-2."
        )
    )
    if span is None:
        reading.append(f"No beam kept the text around the blank of {SPAN_TEXT!r}, so no span can be read off.")
        held.append(False)
    else:
        words = figures["span_words"]
        reading.append(
            f"Pre-trained to restore corrupted text, it fills the one blank of {SPAN_TEXT!r} with "
            f"{span.word!r} ({words} word{'s' if words != 1 else ''}, p {say_p(span.prob)}): a span of any "
            "length, where BERT writes one token per [MASK]."
        )
    return Outcome({"attention": report, "fill-mask": filled}, figures, reading, agreement(held))


def _only_maps(result: Any, *names: str) -> Any:
    """The result with only these maps, the first as the main one (which `attention_figures` reads)."""
    return replace(result, maps=[result.map(name) for name in names])
