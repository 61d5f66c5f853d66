"""Sentence similarity as each family represents sentences: the cosine of pooled hidden states, read against
Ethayarajh's anisotropy baseline.

Each text is pooled at a layer (`lm.hidden`: the mean of its own pieces by default, or its first or last piece)
and every pair of texts gets the cosine of their vectors. A model's vectors are not spread evenly in every
direction (anisotropy; Ethayarajh 2019): in GPT-2's upper layers any two sentences have a cosine near 1. So the
baseline of each layer is the mean cosine between the unrelated sentences of `REFERENCE_SENTENCES`, pooled the
same way, and the adjusted similarity is cosine − baseline: 0 is "as alike as two unrelated sentences".

No language-model head is needed, so a bare encoder (a sentence-transformers folder) works. BART gives its
encoder's and its decoder's vectors. Cosines are computed in float64 from the float32 states.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gbcli.lm.hidden import Pool, TextItem, encode_inputs, layer_states, stack_names
from gbcli.loading.families import family_title
from gbcli.loading.models import LoadedModel
from gbcli.tasks.layer_choice import layer_index
from gbcli.tasks.similarity_options import check_inputs

# Unrelated sentences for the anisotropy baseline: different topics, lengths and forms, none about another.
REFERENCE_SENTENCES: tuple[str, ...] = (
    "the train to the coast leaves at seven .",
    "she planted tomatoes along the fence last spring .",
    "interest rates rose for the third month in a row .",
    "my grandfather repaired old clocks in his spare time .",
    "the museum is closed on mondays .",
    "a thick fog covered the harbour all morning .",
    "he forgot his umbrella at the library again .",
    "the recipe needs two eggs and a cup of flour .",
    "volcanoes form where tectonic plates meet .",
    "our team lost the final by a single goal .",
    "please turn off the lights when you leave .",
    "the novel was translated into forty languages .",
    "wolves hunt in packs during the winter .",
    "the software update fixed the login problem .",
    "they painted the kitchen a pale shade of green .",
    "the concert was cancelled because of the storm .",
)


@dataclass
class PairCosine:
    a: int  # 1-based text numbers
    b: int
    cosine: float
    adjusted: float  # cosine − the layer's baseline


@dataclass
class ModelSimilarity:
    """One model's (or BART stack's) similarities at the chosen layer."""

    family: str
    title: str
    model: str
    stack: str
    layer: str  # emb, 1, 2, …
    layer_index: int
    layers: int  # how many the model has, the embeddings included
    baseline: float  # mean cosine of the reference sentences at this layer
    matrix: list[list[float]]  # cosine of every pair of texts (1 on the diagonal)
    pairs: list[PairCosine]


@dataclass
class LayerCurve:
    """--by-layer: two texts' cosine at every layer of one model, with each layer's baseline."""

    family: str
    title: str
    model: str
    stack: str
    layers: list[str]
    cosine: list[float]
    baseline: list[float]
    adjusted: list[float]


@dataclass
class SimilarityResult:
    texts: list[str]
    pool: str
    by_layer: bool
    reference_sentences: int
    models: list[ModelSimilarity] = field(default_factory=list)
    curves: list[LayerCurve] = field(default_factory=list)
    note: str = ""


NOTE = (
    "cosine of the pooled states; baseline = the mean cosine of {n} unrelated reference sentences at the same "
    "layer (Ethayarajh 2019); adjusted = cosine − baseline, 0 = as alike as unrelated sentences"
)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """[n, n] cosines of the rows, in float64."""
    rows = vectors.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """The mean cosine over every pair of distinct rows."""
    matrix = cosine_matrix(vectors)
    upper = np.triu_indices(len(vectors), k=1)
    return float(matrix[upper].mean())


def similarity(
    models: Sequence[LoadedModel],
    texts: Sequence[str],
    *,
    pool: Pool = "mean",
    layer: int | None = None,
    by_layer: bool = False,
) -> SimilarityResult:
    """Each model's cosines between the texts (at `layer`, default the last), with the anisotropy baseline."""
    check_inputs(texts, pool, by_layer)
    result = SimilarityResult(
        list(texts), pool, by_layer, len(REFERENCE_SENTENCES), note=NOTE.format(n=len(REFERENCE_SENTENCES))
    )
    for lm in models:
        items = [TextItem(text) for text in [*texts, *REFERENCE_SENTENCES]]
        inputs = encode_inputs(lm, items, pool)
        for number, item in enumerate(inputs[: len(texts)], start=1):
            lm.check_fits(len(item.ids), f"text {number} with its special tokens")
        for stack, states in zip(stack_names(lm), layer_states(lm, inputs), strict=True):
            title = family_title(lm.family) + (f" {stack[:3]}" if stack else "")
            count = states.shape[0]
            baselines = [mean_pairwise_cosine(states[i, len(texts) :]) for i in range(count)]
            names = ["emb", *[str(i) for i in range(1, count)]]
            if by_layer:
                cosines = [float(cosine_matrix(states[i, :2])[0, 1]) for i in range(count)]
                result.curves.append(
                    LayerCurve(
                        lm.family,
                        title,
                        lm.name,
                        stack,
                        names,
                        cosines,
                        baselines,
                        [c - b for c, b in zip(cosines, baselines, strict=True)],
                    )
                )
                continue
            index = layer_index(layer, count, lm.name)
            matrix = cosine_matrix(states[index, : len(texts)])
            pairs = [
                PairCosine(a + 1, b + 1, float(matrix[a, b]), float(matrix[a, b]) - baselines[index])
                for a, b in itertools.combinations(range(len(texts)), 2)
            ]
            result.models.append(
                ModelSimilarity(
                    lm.family,
                    title,
                    lm.name,
                    stack,
                    names[index],
                    index,
                    count,
                    baselines[index],
                    matrix.tolist(),
                    pairs,
                )
            )
    return result
