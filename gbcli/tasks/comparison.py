"""One sentence, both models: what each model is, how it tokenizes, predicts, scores and attends.

`compare` is a composition of the other tasks, called for one model after another, each loaded once: tokenization
(`tasks.tokenization`), the fill-mask views (`tasks.masking`), scores (`tasks.scoring`) and the attention summary
(`tasks.attention`). Every section is therefore the same result the separate command gives for the same input.
Without a mask in the text, the prediction section asks for the next word: GPT-2 causally, BERT for `TEXT [MASK]`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gbcli.loading.models import FAMILY_INFO, LoadedModel, release_model
from gbcli.tasks.masking import DEFAULT_TOP_K, MASK_PATTERN, FillMaskResult, fill_mask_in_turn
from gbcli.tasks.scoring import ModelScore, ScoreSettings, TextScore, score_batch, score_note
from gbcli.tasks.tokenization import TokenizationResult, algorithm_name, check_text, tokenize

SECTIONS = ("predictions", "scores", "attention")


@dataclass
class ModelFacts:
    """What the loaded config and weights say a model is."""

    family: str
    model: str
    architecture: str
    parameters: int
    layers: int | None
    heads: int | None
    hidden_size: int | None
    vocab_size: int | None
    max_positions: int
    attention_direction: str
    objective: str
    tokenizer: str
    # Encoder-decoders only (BART): `layers` and `heads` above are the encoder's.
    decoder_layers: int | None = None
    decoder_heads: int | None = None


@dataclass
class AttentionLine:
    """One model's attention, averaged over every layer, head and query token of the text."""

    family: str
    model: str
    layers: int
    heads: int
    tokens: int
    mean_entropy: float  # bits
    to_first: float  # share of attention on the first token
    to_special: float | None  # share on special tokens; None when the input has none (GPT-2 adds none)
    map: str = "self"  # BART has three: encoder, decoder and cross


@dataclass
class ModelTime:
    """Seconds one model spent: the one-time imports its load triggered, loading, its first forward pass (one-time
    set-up: weights paged in from the memory-mapped checkpoint, kernels chosen), and its later (warm) forward passes
    in each section."""

    family: str
    model: str
    load_seconds: float
    import_seconds: float = 0.0
    first_pass_seconds: float = 0.0
    forward_seconds: dict[str, float] = field(default_factory=dict)  # the later (warm) passes only
    forward_passes: dict[str, int] = field(default_factory=dict)  # every pass, the first one included
    first_pass_section: str | None = None

    @property
    def total_forward_seconds(self) -> float:
        return self.first_pass_seconds + sum(self.forward_seconds.values())


@dataclass
class ComparisonResult:
    text: str
    facts: list[ModelFacts]
    tokenization: TokenizationResult
    predictions_text: str  # TEXT itself, or `TEXT [MASK]` when TEXT has no mask
    predictions_note: str
    predictions: FillMaskResult
    scored_text: str  # TEXT itself, or TEXT with its masks filled
    scores: TextScore
    attention: list[AttentionLine]
    time: list[ModelTime]
    section_seconds: dict[str, float]  # wall-clock time of each section, both models together
    wall_seconds: float = 0.0  # the whole comparison, the models already loaded
    # Whose filling of the blanks was scored (a fill-mask column name: "bert", else "gpt_whole"...); None when TEXT
    # had no blank and is scored as it is.
    scored_filling: str | None = None

    @property
    def startup_seconds(self) -> float:
        """The one-time imports (torch, transformers, each architecture's code) that the loads triggered."""
        return sum(record.import_seconds for record in self.time)


def model_facts(lm: LoadedModel) -> ModelFacts:
    config = lm.model.config
    info = FAMILY_INFO[lm.family]
    architectures = getattr(config, "architectures", None) or [type(lm.model).__name__]
    # An encoder-decoder's config names its sizes per stack; `layers` and `heads` are then the encoder's.
    seq2seq = lm.kind == "seq2seq"
    return ModelFacts(
        family=lm.family,
        model=lm.name,
        architecture=architectures[0],
        parameters=sum(p.numel() for p in lm.model.parameters()),
        layers=_config_int(config, "encoder_layers" if seq2seq else "num_hidden_layers"),
        heads=_config_int(config, "encoder_attention_heads" if seq2seq else "num_attention_heads"),
        hidden_size=_config_int(config, "d_model" if seq2seq else "hidden_size"),
        vocab_size=_config_int(config, "vocab_size"),
        max_positions=lm.max_positions,
        attention_direction=info.attention_direction,
        objective=info.objective,
        tokenizer=algorithm_name(lm.tokenizer),
        decoder_layers=_config_int(config, "decoder_layers") if seq2seq else None,
        decoder_heads=_config_int(config, "decoder_attention_heads") if seq2seq else None,
    )


def _config_int(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)  # GPT-2's config maps these names onto n_layer, n_head, n_embd
    return int(value) if isinstance(value, int) else None


class ForwardClock:
    """Time spent inside each model's forward passes, per section, whichever task makes the call.

    Hooks sit on the transformer body and on the output (vocabulary) layer, the two parts every task runs,
    so the time of a section that runs both models at once (fill-mask) is still split between them.
    """

    def __init__(self, models: list[LoadedModel]) -> None:
        self.times = {lm.family: ModelTime(lm.family, lm.name, lm.load_seconds, lm.import_seconds) for lm in models}
        self._warm: set[int] = set()  # the parts whose first call is behind them
        self.section_seconds: dict[str, float] = {}
        self._section: str | None = None
        self._handles: list[Any] = []
        for lm in models:
            body = lm.model.base_model
            parts = [body]
            head = lm.model.get_output_embeddings()
            if head is not None and head is not body:
                parts.append(head)
            for part in parts:
                self._handles.append(part.register_forward_pre_hook(self._start))
                self._handles.append(part.register_forward_hook(self._stop(lm.family, counts=part is body)))
        self._started: dict[int, float] = {}

    def _start(self, module: Any, args: Any) -> None:
        self._started[id(module)] = time.perf_counter()

    def _stop(self, family: str, *, counts: bool):
        def hook(module: Any, args: Any, output: Any) -> None:
            started = self._started.pop(id(module), None)
            if started is None or self._section is None:
                return
            record = self.times[family]
            seconds = time.perf_counter() - started
            if counts:
                record.forward_passes[self._section] = record.forward_passes.get(self._section, 0) + 1
            if id(module) not in self._warm:
                # A first call pays set-up costs no later call pays: it is shown apart, not as the section's speed.
                self._warm.add(id(module))
                record.first_pass_seconds += seconds
                record.first_pass_section = self._section
                return
            record.forward_seconds[self._section] = record.forward_seconds.get(self._section, 0.0) + seconds

        return hook

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time a stretch of one section; a section done in several stretches (one per model) adds them up."""
        self._section = name
        started = time.perf_counter()
        try:
            yield
        finally:
            self.section_seconds[name] = self.section_seconds.get(name, 0.0) + time.perf_counter() - started
            self._section = None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def attention_lines(lm: LoadedModel, text: str) -> list[AttentionLine]:
    """The `attention --summary` means of one model, one line per attention map (BART has three)."""
    # late: start-up (attention's maps import numpy, which compare's text check does without)
    from gbcli.tasks.attention import ATTENTION_FREE, compute_attention, summarize

    if lm.model.config.model_type in ATTENTION_FREE:  # Mamba, RWKV: no attention, so no line
        return []
    result = compute_attention(lm, text)
    lines = []
    for amap in result.maps:
        summary = summarize(result, amap.name)
        lines.append(
            AttentionLine(
                family=lm.family,
                model=lm.name,
                layers=summary.layers,
                heads=summary.heads,
                tokens=len(amap.queries),
                mean_entropy=float(summary.mean["entropy"] or 0.0),
                to_first=float(summary.mean["to_first"] or 0.0),
                to_special=summary.mean["to_special"],
                map=amap.name,
            )
        )
    return lines


def prediction_input(text: str) -> tuple[str, str]:
    """The text the prediction section fills, and a sentence saying what was asked."""
    if MASK_PATTERN.search(text):
        return text, "the blanks of the text: BERT reads both sides, GPT the words before (and ranks whole sentences)"
    return (
        f"{text.rstrip()} [MASK]",
        "the next word: GPT predicts it from the text (causally); BERT fills `TEXT [MASK]`, where it also sees "
        "the [SEP] that closes its input",
    )


def scored_input(text: str, predictions: FillMaskResult) -> tuple[str, str | None]:
    """Scores need a real sentence: masks are filled with BERT's choice (GPT-2's whole-sentence one without BERT),
    the first column done, so each model is scored and let go as soon as its predictions are in. Returns the text
    and whose filling it is (None: the text had no blank)."""
    if not MASK_PATTERN.search(text):
        return text, None
    for column in SCORED_FILLINGS:
        filling = predictions.filling(column)  # type: ignore[arg-type]
        if filling is not None:
            return filling.text, column
    return text, None  # pragma: no cover - fill_mask always fills with at least one model


# Whose filling compare scores, in order of preference: the first that ran.
SCORED_FILLINGS = ("bert", "gpt_whole", "bart", "gpt_left")


def compare(
    models: list[LoadedModel],
    text: str,
    top_k: int = DEFAULT_TOP_K,
    settings: ScoreSettings | None = None,
    *,
    release: bool = False,
) -> ComparisonResult:
    """Every section for one text. Each model is used as loaded, each task called once per model.

    The models are used one after the other (BERT, then GPT-2, then BART: the order their predictions depend on
    each other): each model's prediction column, score and attention are done before the next model runs. With
    `release`, each model's weights are let go as soon as its sections are done (`release_model`), so that the
    peak memory is that of the largest model rather than the sum; the caller hands the models over and must not
    use them afterwards. The result is the same either way.
    """
    started = time.perf_counter()
    text = check_text(text)
    settings = settings or ScoreSettings()
    by_family = {lm.family: lm for lm in models}
    clock = ForwardClock(models)
    scores: dict[str, ModelScore] = {}
    attention: dict[str, list[AttentionLine]] = {}
    scored_text: str | None = None
    scored_filling: str | None = None
    try:
        facts = [model_facts(lm) for lm in models]
        with clock.section("tokenization"):
            tokenization = tokenize(models, text)
        predictions_text, predictions_note = prediction_input(text)
        steps = fill_mask_in_turn(by_family, predictions_text, top_k)
        while True:
            with clock.section("predictions"):
                step = next(steps, None)
            if step is None:
                break
            family, predictions = step
            lm = by_family[family]
            if scored_text is None:
                # The first column done is the one scored_input prefers (BERT's filling, else GPT-2's).
                scored_text, scored_filling = scored_input(text, predictions)
            with clock.section("scores"):
                scores[family] = score_batch([lm], [scored_text], [1], settings).records[0].columns[0]
            with clock.section("attention"):
                attention[family] = attention_lines(lm, text)
            if release:
                release_model(lm)
    finally:
        clock.close()
        if release:
            for lm in models:
                release_model(lm)
    assert scored_text is not None
    return ComparisonResult(
        text=text,
        facts=facts,
        tokenization=tokenization,
        predictions_text=predictions_text,
        predictions_note=predictions_note,
        predictions=predictions,
        scored_text=scored_text,
        scores=TextScore(
            index=1, text=scored_text, columns=[scores[lm.family] for lm in models], note=score_note(models)
        ),
        attention=[line for lm in models for line in attention[lm.family]],
        time=list(clock.times.values()),
        section_seconds=clock.section_seconds,
        wall_seconds=time.perf_counter() - started,
        scored_filling=scored_filling,
    )
