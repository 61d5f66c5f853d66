"""The eight steps in order, and the tour that runs them: each step's models loaded when it comes, a model that
cannot be had skipping its steps, a step that fails said while the tour goes on."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gbcli.errors import GbcliError
from gbcli.loading.models import LoadedModel
from gbcli.tasks.finite import check_finite
from gbcli.tasks.tour.choice import RIGHT_CONTEXT_TASK
from gbcli.tasks.tour.claims import (
    ALTERNATIVES,
    ATTENTION_TEXT,
    CHANGE,
    MASK_TARGET,
    MASK_TEXT,
    NEW_TOKENS,
    PROMPT,
    SCRAMBLED,
    SPAN_TEXT,
    SPAN_TOP_K,
    attention_step,
    bart_step,
    context_step,
    fill_mask_step,
    generation_step,
    score_step,
)
from gbcli.tasks.tour.learning import (
    PROBE_OPTIONS,
    SIMILAR_TEXTS,
    finetune_step,
    finetune_words,
    layers_step,
)
from gbcli.tasks.tour.results import StepContext, StepSpec, StepUnavailable, TourSettings, TourStep

STEPS: tuple[StepSpec, ...] = (
    StepSpec(
        1,
        "attention",
        "Both are transformers",
        "Both read a text through attention; GPT-2's is a triangle (each token sees its left), BERT's a "
        "square (each token sees both sides).",
        ("gpt", "bert"),
        lambda f: [f.command("attention", ATTENTION_TEXT)],
        attention_step,
    ),
    StepSpec(
        2,
        "generate",
        "GPT-2 is autoregressive",
        "GPT-2 writes token by token, each from the ones before; BERT, made to write by filling blanks, writes poorly.",
        ("gpt", "bert"),
        lambda f: [
            f.command(
                "generate", PROMPT, "--greedy", "--max-new-tokens", str(NEW_TOKENS), "--alternatives", str(ALTERNATIVES)
            )
        ],
        generation_step,
    ),
    StepSpec(
        3,
        "fill-mask",
        "Two pre-training objectives",
        "GPT-2 learnt to predict the next word, BERT the masked word: BERT fills 'the [MASK] quacks' from the "
        "right side, GPT-2 cannot.",
        ("gpt", "bert"),
        lambda f: [f.command("fill-mask", MASK_TEXT, "--targets", MASK_TARGET)],
        fill_mask_step,
    ),
    StepSpec(
        4,
        "context",
        "Unidirectional against bidirectional",
        "Changing a later word moves none of GPT-2's earlier states and all of BERT's; a probe that needs the "
        "right context finds nothing in GPT-2.",
        ("gpt", "bert"),
        lambda f: [
            f.command("context", ATTENTION_TEXT, "--change", CHANGE),
            f.command("probe", "--task", RIGHT_CONTEXT_TASK, *PROBE_OPTIONS),
        ],
        context_step,
    ),
    StepSpec(
        5,
        "score",
        "Perplexity against pseudo-perplexity",
        "GPT-2's perplexity and BERT's pseudo-perplexity measure different things: they are not on one scale.",
        ("gpt", "bert"),
        lambda f: [f.command("score", ATTENTION_TEXT, SCRAMBLED)],
        score_step,
    ),
    StepSpec(
        6,
        "layers",
        "Understanding: which layers know what",
        "What a model knows about a word is built layer by layer, and its sentence vectors are alike only "
        "as read against the anisotropy baseline.",
        ("gpt", "bert"),
        lambda f: [
            f.command("probe", "--task", RIGHT_CONTEXT_TASK, *PROBE_OPTIONS),
            f.command("similarity", *SIMILAR_TEXTS),
        ],
        layers_step,
    ),
    StepSpec(
        7,
        "finetune",
        "Fine-tuning",
        "Both are pre-trained, then fine-tuned: the same small task and recipe give two learning curves.",
        ("gpt", "bert"),
        lambda f: [f.command(*finetune_words())],
        finetune_step,
    ),
    StepSpec(
        8,
        "bart",
        "BART, between the two",
        "BART pairs a bidirectional encoder with an autoregressive decoder, and is pre-trained to restore "
        "spans of any length.",
        ("bart",),
        lambda f: [
            f.command("attention", ATTENTION_TEXT, "--models", "bart", families=("bart",)),
            f.command("fill-mask", SPAN_TEXT, "--top-k", str(SPAN_TOP_K), "--models", "bart", families=("bart",)),
        ],
        bart_step,
    ),
)


Loader = Callable[[str], LoadedModel]  # a family's model, loaded; raises GbcliError when it cannot be had


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
    step.results, step.figures, step.reading, step.verdict = (
        outcome.results,
        {**step.figures, **outcome.figures},
        outcome.reading,
        outcome.verdict,
    )
    step.note = outcome.note
    step.commands += [flags.command(*words) for words in outcome.then]
