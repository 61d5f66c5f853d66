"""What each layer knows: a linear probe trained on the frozen hidden states of every layer of each model.

The protocol, the same for every model and layer:

- every example is read by the model once; its vector at each layer (layer 0 = the embeddings) is the states
  `lm.hidden` pools (a word's pieces, or the sentence);
- a fixed split: `seeds` stratified train/test splits (`test_size` held out), or `folds` stratified folds, or one
  given test set; every model and layer sees the same splits;
- on each training part alone: each coordinate standardised, then a logistic regression whose L2 regularisation
  C is chosen by stratified cross-validation (`inner_folds`) among `CS` (scikit-learn's LogisticRegressionCV);
  the test part is scored once, by accuracy;
- per layer, the mean accuracy over the splits and a 95% interval (Student's t over the splits; with one given
  test set, the Wilson interval of its accuracy);
- beside the models: the majority-class baseline (the training part's most frequent label, scored on the test
  part), and as controls the same architectures with random weights (`random-init`: how much is pretraining and
  how much architecture) and, optionally, Hewitt and Liang's control task (each word type given a random label
  in the same proportions; selectivity = accuracy − control-task accuracy).

A coordinate whose values over the training part differ by less than `ROUNDING` of its size is held constant:
such differences are float32 rounding (the same prefix, run in batches of other widths, takes other kernel paths),
not information. That is what keeps a causal model's probe exactly at the majority baseline where its states
cannot see what decides the label.

`probe(models, data)` runs it all in memory; the CLI passes `states=` to read and write the on-disk cache.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gbcli.errors import usage_error
from gbcli.lm.hidden import (
    EncodedInput,
    TextItem,
    encode_inputs,
    layer_states,
    random_init_copy,
    stack_names,
)
from gbcli.loading.families import family_title
from gbcli.loading.models import LoadedModel
from gbcli.tasks.labelled_data import LabelledData, LabelledExample
from gbcli.tasks.probe_options import (  # re-exported: the probe's options are part of its API
    CONTROLS as CONTROLS,
)
from gbcli.tasks.probe_options import (
    PROBE_HINT as PROBE_HINT,
)
from gbcli.tasks.probe_options import (
    Control as Control,
)
from gbcli.tasks.probe_options import (
    ProbeOptions as ProbeOptions,
)
from gbcli.tasks.probe_options import (
    check_options as check_options,
)
from gbcli.tasks.probe_options import (
    require_scikit_learn as require_scikit_learn,
)

CS = (0.001, 0.01, 0.1, 1.0, 10.0)  # the regularisation grid (inverse strength) cross-validation picks from
MAX_ITER = 100  # lbfgs iterations per fit, and its tolerance: a probe's accuracy does not move past these
TOL = 1e-3
ROUNDING = 1e-5  # relative spread below which a coordinate is float32 rounding, not information


@dataclass
class LayerScore:
    layer: str  # emb, 1, 2, …
    accuracy: float  # mean over the splits
    low: float  # the 95% interval
    high: float
    runs: list[float]  # each split's accuracy
    chosen_c: list[float]  # the C cross-validation chose on each split
    control_task: float | None = None  # mean accuracy on the control task's labels
    selectivity: float | None = None  # accuracy − control_task


@dataclass
class ProbeRow:
    """One model's (or BART stack's, or random-init control's) probe, layer by layer."""

    family: str
    title: str  # GPT, BERT, BART enc, …, with "(random init)" for a control
    model: str
    stack: str  # "" or encoder/decoder
    random_init: bool
    layers: list[LayerScore]
    best: int  # index of the best layer (highest mean accuracy; the first of equals)

    @property
    def best_layer(self) -> LayerScore:
        return self.layers[self.best]


@dataclass
class Comparison:
    """Best layer against best layer: do the intervals of two pretrained rows overlap?"""

    a: str
    b: str
    overlap: bool


@dataclass
class ProbeResult:
    source: str
    level: str  # word, sentence or pair
    labels: list[str]
    label_counts: dict[str, int]
    examples: int
    protocol: str  # one line saying the splits, the fit and the interval
    pool: str  # the pooling used (word level: of the word's pieces)
    splits: int
    train_size: int  # of the first split
    test_size: int
    majority: LayerScore  # the majority-class baseline (same at every layer)
    rows: list[ProbeRow]
    comparisons: list[Comparison] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)
    cache: dict[str, str] = field(default_factory=dict)  # column title → hit, stored or off


# (the pretrained model, its inputs, whether its random-init control is wanted) → per stack, per layer, the states
StatesFor = Callable[[LoadedModel, list[EncodedInput], bool], list[Sequence["np.ndarray"]]]


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def encode_examples(
    lm: LoadedModel, examples: Sequence[LabelledExample], sources: Sequence[str], options: ProbeOptions
) -> list[EncodedInput]:
    """Each example as `lm` reads it; a word on no piece, or a text longer than the model's context (without
    `truncate`), is refused naming its line of its source."""
    word_level = examples[0].word is not None
    items = [TextItem(e.text, e.text_b, e.word_span) for e in examples]
    encoded = encode_inputs(lm, items, options.word_pool if word_level else options.pool)
    limit = lm.max_positions
    checked = []
    for example, source, item in zip(examples, sources, encoded, strict=True):
        where = f"line {example.line_number} of {source}"
        if not item.positions:
            raise usage_error(
                f"{lm.name} reads no piece of the word '{example.word}' on {where}.",
                "Choose a word the tokenizer keeps.",
            )
        if len(item.ids) > limit:
            if not options.truncate:
                raise lm.too_long_error(
                    len(item.ids),
                    f"the text on {where}",
                    "Shorten it, or add --truncate to cut every text at the model's limit.",
                )
            if word_level and max(item.positions) >= limit:
                raise usage_error(
                    f"The probed word on {where} is beyond {lm.name}'s {limit} tokens.",
                    "Shorten the text, or move the word closer to its start.",
                )
            kept = [p for p in item.positions if p < limit] or [limit - 1]  # --pool last: the last one kept
            item = EncodedInput(item.ids[:limit], item.token_types[:limit] if item.token_types else None, kept)
        checked.append(item)
    return checked


# --------------------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------------------


def make_splits(labels: Sequence[str], options: ProbeOptions, test_count: int = 0) -> list[tuple[list[int], list[int]]]:
    """(train, test) indices of every split. With `test_count`, the last `test_count` examples are the one given
    test set; else `folds` stratified folds or `seeds` stratified random splits."""
    from sklearn.model_selection import StratifiedKFold, train_test_split  # late: extra

    counts = Counter(labels[: len(labels) - test_count])
    rarest, fewest = min(counts.items(), key=lambda item: item[1])
    if test_count:
        train = list(range(len(labels) - test_count))
        splits = [(train, list(range(len(labels) - test_count, len(labels))))]
    elif options.folds is not None:
        if fewest < options.folds:
            raise usage_error(
                f"The label '{rarest}' has {fewest} example(s), fewer than the {options.folds} folds.",
                "Give more examples of it, or fewer --folds.",
            )
        folds = StratifiedKFold(options.folds, shuffle=True, random_state=0)
        splits = [(list(a), list(b)) for a, b in folds.split(list(range(len(labels))), labels)]
    else:
        held = math.ceil(len(labels) * options.test_size)
        if fewest < 2 or held < len(counts) or len(labels) - held < len(counts):
            raise usage_error(
                f"Too few examples to split: the label '{rarest}' has {fewest}, and {held} of "
                f"{len(labels)} would be held out for {len(counts)} labels.",
                "Give more examples, or change --test-size.",
            )
        splits = [
            tuple(
                map(
                    list,
                    train_test_split(
                        list(range(len(labels))), test_size=options.test_size, stratify=labels, random_state=seed
                    ),
                )
            )
            for seed in range(options.seeds)
        ]
    for train, _test in splits:
        train_counts = Counter(labels[i] for i in train)
        label, count = min(train_counts.items(), key=lambda item: item[1])
        if count < options.inner_folds:
            raise usage_error(
                f"A training part has {count} example(s) of '{label}', fewer than the "
                f"{options.inner_folds} folds that choose the regularisation.",
                "Give more examples of every label.",
            )
    return splits  # type: ignore[return-value]


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both parts centred and scaled by the training part's statistics (float64); a coordinate whose spread is
    rounding (see ROUNDING) is held at 0."""
    train64 = train.astype(np.float64)
    mean = train64.mean(axis=0)
    std = train64.std(axis=0)
    size = np.abs(train64).max(axis=0)
    spread = train64.max(axis=0) - train64.min(axis=0)
    constant = spread <= ROUNDING * np.maximum(size, np.finfo(np.float32).tiny)
    scale = np.where(constant | (std == 0), 1.0, std)
    scaled_train = (train64 - mean) / scale
    scaled_test = (test.astype(np.float64) - mean) / scale
    scaled_train[:, constant] = 0.0
    scaled_test[:, constant] = 0.0
    return scaled_train, scaled_test


def fit_accuracy(
    train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str], inner_folds: int, seed: int
) -> tuple[float, float]:
    """(test accuracy, chosen C) of the standardised logistic regression, C chosen on the training part only."""
    from sklearn.exceptions import ConvergenceWarning  # late: extra

    train_x, test_x = standardise(train_x, test_x)
    model = probe_classifier(inner_folds, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the CV picks among the fits as they are
        # The control task's random labels may leave a label rarer than the inner folds; its folds are then uneven.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        model.fit(train_x, np.asarray(train_y))
    predicted = model.predict(test_x)
    return float(np.mean(predicted == np.asarray(test_y))), float(model.C_)


def probe_classifier(inner_folds: int, seed: int) -> Any:
    """The probe: L2 logistic regression, C chosen among CS by stratified `inner_folds`-fold cross-validation."""
    from sklearn.linear_model import LogisticRegressionCV  # late: extra
    from sklearn.model_selection import StratifiedKFold  # late: extra

    return LogisticRegressionCV(
        Cs=list(CS),
        l1_ratios=(0.0,),
        cv=StratifiedKFold(inner_folds, shuffle=True, random_state=seed),
        scoring="accuracy",
        max_iter=MAX_ITER,
        tol=TOL,
        use_legacy_attributes=False,
    )


def majority_accuracy(train_y: Sequence[str], test_y: Sequence[str]) -> float:
    """The accuracy of always answering the training part's most frequent label (ties: the first in order)."""
    counts = Counter(train_y)
    top = max(sorted(counts), key=lambda label: counts[label])
    return sum(1 for y in test_y if y == top) / len(test_y)


def interval(runs: Sequence[float], test_size: int) -> tuple[float, float, float]:
    """(mean, low, high): Student's t 95% interval over the splits, or Wilson's for one test set."""
    from scipy import stats  # late: extra

    mean = sum(runs) / len(runs)
    if len(runs) == 1:
        z = 1.959963984540054
        n = test_size
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    sd = math.sqrt(sum((r - mean) ** 2 for r in runs) / (len(runs) - 1))
    half = float(stats.t.ppf(0.975, len(runs) - 1)) * sd / math.sqrt(len(runs))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def control_labels(examples: Sequence[LabelledExample], labels: Sequence[str], seed: int = 0) -> list[str]:
    """Hewitt and Liang's control task: each word type (lowercased) gets one label drawn at random with the
    labels' own proportions, and every example of that type carries it."""
    rng = random.Random(seed)
    types: dict[str, str] = {}
    for example in examples:
        key = (example.word or "").lower()
        if key not in types:
            types[key] = rng.choice(list(labels))
    return [types[(example.word or "").lower()] for example in examples]


def probe_layers(
    layers: Sequence[np.ndarray],
    labels: Sequence[str],
    splits: list[tuple[list[int], list[int]]],
    options: ProbeOptions,
    control: Sequence[str] | None = None,
) -> list[LayerScore]:
    """The protocol on one row's states: a LayerScore per layer. The fits (layer × split, and the control task's)
    are independent and run on as many threads as there are cores, each on one BLAS thread: the products are
    small, and a team of BLAS threads per fit beside the others would only wait on each other."""
    from joblib import Parallel, delayed  # late: extra
    from threadpoolctl import threadpool_limits  # late: extra

    y = np.asarray(labels)
    targets = [y] if control is None else [y, np.asarray(control)]
    matrices = [np.asarray(states) for states in layers]
    jobs = [
        (layer, seed, target)
        for layer in range(len(matrices))
        for seed in range(len(splits))
        for target in range(len(targets))
    ]

    def fit(layer: int, seed: int, target: int) -> tuple[float, float]:
        train, test = splits[seed]
        z = targets[target]
        return fit_accuracy(matrices[layer][train], z[train], matrices[layer][test], z[test], options.inner_folds, seed)

    with threadpool_limits(limits=1, user_api="blas"):
        fitted = Parallel(n_jobs=min(len(jobs), os.cpu_count() or 1), prefer="threads")(
            delayed(fit)(*job) for job in jobs
        )
    results = dict(zip(jobs, fitted, strict=True))
    scores = []
    for layer in range(len(matrices)):
        runs = [results[(layer, seed, 0)][0] for seed in range(len(splits))]
        chosen = [results[(layer, seed, 0)][1] for seed in range(len(splits))]
        mean, low, high = interval(runs, len(splits[0][1]))
        score = LayerScore("emb" if layer == 0 else str(layer), mean, low, high, runs, chosen)
        if control is not None:
            control_runs = [results[(layer, seed, 1)][0] for seed in range(len(splits))]
            score.control_task = sum(control_runs) / len(control_runs)
            score.selectivity = mean - score.control_task
        scores.append(score)
    return scores


# --------------------------------------------------------------------------------------------------------------
# The whole probe
# --------------------------------------------------------------------------------------------------------------


def row_title(lm: LoadedModel, stack: str, random_init: bool) -> str:
    title = family_title(lm.family) + (f" {stack[:3]}" if stack else "")
    return title + (" (random init)" if random_init else "")


def probe(
    models: Sequence[LoadedModel],
    data: LabelledData,
    options: ProbeOptions = ProbeOptions(),
    *,
    test: LabelledData | None = None,
    states: StatesFor | None = None,
) -> ProbeResult:
    """Probe every layer of each model (and of its random-init control) on `data`, tested on `test` if given,
    else on splits of `data`. `states(lm, inputs, random_init)` gives the pooled states (default: computed here)."""
    check_options(options)
    examples = list(data.examples) + (list(test.examples) if test is not None else [])
    if test is not None and test.level != data.level:
        raise usage_error(
            f"{test.source} holds {test.level} examples, {data.source} {data.level} examples.",
            "Give a test file with the same columns.",
        )
    if options.control_task and data.level != "word":
        raise usage_error(
            "--control-task reassigns labels per word type, so it needs a word-level task.",
            "Give a word column (or --word), or leave --control-task out.",
        )
    labels = [e.label for e in examples]
    sources = [data.source] * len(data.examples) + ([test.source] * len(test.examples) if test is not None else [])
    test_count = len(test.examples) if test is not None else 0
    if test is not None:
        unknown = sorted({e.label for e in test.examples} - set(data.labels))
        if unknown:
            raise usage_error(
                f"{test.source} has label(s) the training data never shows: {', '.join(unknown)}.",
                "Give the training file examples of every label.",
            )
    splits = make_splits(labels, options, test_count)
    control = control_labels(examples, data.labels) if options.control_task else None
    states = states or (
        lambda lm, inputs, random_init: layer_states(random_init_copy(lm) if random_init else lm, inputs)
    )
    rows: list[ProbeRow] = []
    columns = [(lm, False) for lm in models]
    if options.control == "random-init":
        columns += [(lm, True) for lm in models]
    for lm, random_init in columns:
        inputs = encode_examples(lm, examples, sources, options)
        for stack, layers in zip(stack_names(lm), states(lm, inputs, random_init), strict=True):
            scores = probe_layers(layers, labels, splits, options, control)
            best = max(range(len(scores)), key=lambda i: (scores[i].accuracy, -i))
            rows.append(
                ProbeRow(lm.family, row_title(lm, stack, random_init), lm.name, stack, random_init, scores, best)
            )
    majority_runs = [majority_accuracy([labels[i] for i in train], [labels[i] for i in held]) for train, held in splits]
    mean, low, high = interval(majority_runs, len(splits[0][1]))
    majority = LayerScore("all", mean, low, high, majority_runs, [])
    result = ProbeResult(
        source=data.source,
        level=data.level,
        labels=list(data.labels),
        label_counts=dict(Counter(labels)),
        examples=len(examples),
        protocol=protocol_line(options, test is not None, len(splits)),
        pool=options.word_pool if data.level == "word" else options.pool,
        splits=len(splits),
        train_size=len(splits[0][0]),
        test_size=len(splits[0][1]),
        majority=majority,
        rows=rows,
    )
    result.comparisons = compare_best(rows)
    result.reading = reading(result)
    return result


def protocol_line(options: ProbeOptions, given_test: bool, splits: int) -> str:
    if given_test:
        how = "the given test set; 95% Wilson interval of its accuracy"
    elif options.folds is not None:
        how = f"{splits} stratified folds; mean and 95% t interval over them"
    else:
        how = f"{splits} stratified splits holding out {options.test_size:g}; mean and 95% t interval over them"
    return (
        f"logistic regression on standardised states, L2 strength chosen by {options.inner_folds}-fold "
        f"cross-validation on each training part; {how}"
    )


def compare_best(rows: Sequence[ProbeRow]) -> list[Comparison]:
    """Each pair of pretrained rows: does the interval of one's best layer overlap the other's?"""
    trained = [row for row in rows if not row.random_init]
    comparisons = []
    for i, a in enumerate(trained):
        for b in trained[i + 1 :]:
            x, y = a.best_layer, b.best_layer
            comparisons.append(Comparison(a.title, b.title, x.low <= y.high and y.low <= x.high))
    return comparisons


def reading(result: ProbeResult) -> list[str]:
    """The short reading under the table, in numbers."""
    lines = []
    parts = []
    for row in result.rows:
        best = row.best_layer
        if row.random_init:
            parts.append(
                f"random-init {row.title.removesuffix(' (random init)')} {best.accuracy:.2f} (layer {best.layer})"
            )
        else:
            parts.append(
                f"{row.title}'s best layer {best.layer}: {best.accuracy:.2f} [{best.low:.2f}, {best.high:.2f}]"
            )
    lines.append("; ".join(parts) + f"; majority baseline {result.majority.accuracy:.2f}.")
    for comparison in result.comparisons:
        verb = "overlap" if comparison.overlap else "do not overlap"
        lines.append(f"The intervals of {comparison.a}'s and {comparison.b}'s best layers {verb}.")
    at_majority = [
        row.title
        for row in result.rows
        if not row.random_init and all(score.runs == result.majority.runs for score in row.layers)
    ]
    for title in at_majority:
        lines.append(
            f"{title} is exactly at the majority baseline at every layer: its states there cannot tell "
            "the labels apart."
        )
    return lines
