"""How far each hidden state moves when one word of the text changes, and how alike one word's vectors are.

Two readings of "unidirectional vs bidirectional" in numbers:

- `--change WORD=NEW` (or two texts that differ in one place): both texts run through the model and, at every
  layer and position, the state of the first text is compared with the state at the same place in the second:
  cosine distance (1 − cos) and relative L2 (‖h − h'‖ / ‖h‖). A causal model's state at position i is computed
  from tokens 0..i only, so before the change it cannot move: the states are bit-identical, exactly 0 in float32.
  A bidirectional encoder mixes every token into every state from its first layer on. Positions are aligned
  from the start up to the change and from the end after it, so the changed word may have a different number of
  pieces in the two texts (its own rows are then compared only where both have a piece).
- `--word W` over several sentences: W's contextual vector (the mean of its pieces' states) in each sentence,
  and the cosine similarity of every pair of sentences at every layer.

No language-model head is needed: the body's hidden states are read, so a bare encoder works. BART shows its
encoder (bidirectional) and its decoder (causal, but reading the whole encoded text) separately; the decoder
reads the text shifted right after its start token, as in training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gbcli.errors import usage_error
from gbcli.loading.models import LoadedModel
from gbcli.tasks.attention import label_tokens
from gbcli.tasks.seq2seq import decoder_start_id, is_seq2seq

if TYPE_CHECKING:
    import torch

Region = Literal["before", "changed", "after"]
MAX_SENTENCES = 8  # --word compares every pair: 8 sentences are already 28 columns

SHIFT_NOTE = (
    "cosine = 1 − cos(h, h'); L2 = ‖h − h'‖ / ‖h‖, h from the first text, h' from the second at the same place; "
    "0 means bit-identical states. emb = the embeddings (GPT-2: its last layer is after ln_f)."
)
WORD_NOTE = (
    "cosine similarity of the word's vectors (mean of its pieces) between two sentences, per layer; 1 exactly: "
    "bit-identical vectors. The embeddings (emb) ignore the other words but not where the word stands: each adds "
    "its position's embedding (BERT also a segment embedding, the same for every one-sentence text), so emb is 1 "
    "only for sentences where the word sits at the same position. A causal model's vector sees only the words "
    "before it, so sentences that agree up to the word stay at 1 in every layer. Compare pairs within a layer: "
    "deep-layer vectors are all alike (anisotropy), so levels across layers or models are not comparable."
)


@dataclass
class PositionShift:
    """One position of the first text and how far its state moves at each layer (None: no counterpart)."""

    index: int
    token: str
    other: str | None  # the token at the same place in the second text, where it differs
    region: Region
    cosine: list[float | None]
    relative_l2: list[float | None]


@dataclass
class ModelShift:
    """One model's (or one BART stack's) shifts: a row per position, a value per layer."""

    family: str
    model: str
    stack: str  # "" for GPT-2 and BERT; encoder or decoder for BART
    causal: bool
    layers: list[str]
    positions: list[PositionShift]
    before_unchanged: bool  # every state before the change is bit-identical at every layer
    before_max_cosine: list[float | None]  # per layer, over the positions before the change (None: there are none)
    before_max_l2: list[float | None]
    first_moving_layer: int | None  # the first layer at which a state before the change moves


@dataclass
class WordOccurrence:
    """Where the word is in one sentence: its characters and the positions of its pieces."""

    sentence: int  # 1-based
    start: int
    end: int
    pieces: list[str]
    positions: list[int]


@dataclass
class PairSimilarity:
    """The cosine similarity of the word's vectors in sentences a and b (1-based), per layer."""

    a: int
    b: int
    cosine: list[float]
    identical: list[bool]  # the two vectors are bit-identical at that layer (cosine exactly 1)


@dataclass
class WordSimilarity:
    family: str
    model: str
    stack: str
    causal: bool
    layers: list[str]
    occurrences: list[WordOccurrence]
    pairs: list[PairSimilarity]


@dataclass
class ContextResult:
    """Everything `gbcli context` says: shifts for one change, or a word's similarities across sentences."""

    mode: Literal["change", "word"]
    texts: list[str]
    change: str | None = None  # "WORD=NEW" as given
    word: str | None = None
    shifts: list[ModelShift] = field(default_factory=list)
    similarities: list[WordSimilarity] = field(default_factory=list)
    note: str = ""


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def word_pattern(word: str) -> re.Pattern[str]:
    """The word alone, not inside a longer one (`bank` is not in `banks`)."""
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")


def apply_change(text: str, change: str) -> str:
    """`the duck quacks` with `duck=dog` → `the dog quacks` (the first time the word stands alone)."""
    word, sep, new = change.partition("=")
    word, new = word.strip(), new.strip()
    if not sep or not word or not new:
        raise usage_error(f"--change '{change}' is not WORD=NEW.", 'For example --change "duck=dog".')
    match = word_pattern(word).search(text)
    if match is None:
        raise usage_error(
            f"The word '{word}' of --change is not in the text.",
            'Give a word exactly as it is written in the text, e.g. --change "duck=dog".',
        )
    if word == new:
        raise usage_error(f"--change '{change}' replaces the word by itself.", "Give a different NEW word.")
    return text[: match.start()] + new + text[match.end() :]


def check_texts(texts: list[str], change: str | None, word: str | None) -> tuple[list[str], str]:
    """The texts to run and the mode, refusing any combination that does not say what to compare."""
    if any(not t.strip() for t in texts):
        raise usage_error("A text is empty.", 'For example: gbcli context "the duck quacks ." --change duck=dog')
    if word is not None:
        if change is not None:
            raise usage_error("--word and --change cannot be combined.", "Choose one comparison.")
        if not 2 <= len(texts) <= MAX_SENTENCES:
            raise usage_error(
                f"--word compares the word across 2 to {MAX_SENTENCES} sentences; {len(texts)} given.",
                'For example: gbcli context --word bank "the river bank" "the bank lends money"',
            )
        for number, text in enumerate(texts, start=1):
            if word_pattern(word).search(text) is None:
                raise usage_error(
                    f"The word '{word}' is not in sentence {number}.", "Write the word as it stands in every sentence."
                )
        return texts, "word"
    if change is not None:
        if len(texts) != 1:
            raise usage_error("--change takes one text.", "Give one TEXT, or two texts without --change.")
        return [texts[0], apply_change(texts[0], change)], "change"
    if len(texts) != 2:
        raise usage_error(
            "Give one text with --change WORD=NEW, two texts that differ in one place, or "
            "--word W with several sentences.",
            'For example: gbcli context "the duck quacks in the park ." --change duck=dog',
        )
    if texts[0] == texts[1]:
        raise usage_error("The two texts are the same.", "Change one word in the second.")
    return texts, "change"


# --------------------------------------------------------------------------------------------------------------
# Hidden states
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Stack:
    name: str
    causal: bool
    ids: list[int]
    states: torch.Tensor  # [layer + 1, position, hidden], float32 on the CPU


def _stacks(lm: LoadedModel, text: str) -> list[_Stack]:
    """Every layer's hidden states of the model's body on the text (BART: its encoder's, then its decoder's)."""
    import torch

    ids = lm.tokenizer(text)["input_ids"]
    if not ids:
        raise usage_error("A text tokenizes to nothing.", "Give some visible text.")
    lm.check_fits(len(ids), "the text")
    body = lm.model.base_model
    input_ids = torch.tensor([ids], device=lm.device)
    # One text per forward pass, never a padded batch: the states before a change then come from the very same
    # computation in both texts, which is what makes a causal model's zero exact.
    with torch.inference_mode():
        if is_seq2seq(lm):
            decoder_ids = [decoder_start_id(lm), *ids[:-1]]
            out = body(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                decoder_input_ids=torch.tensor([decoder_ids], device=lm.device),
                output_hidden_states=True,
            )
            return [
                _Stack("encoder", False, ids, _stacked(out.encoder_hidden_states)),
                _Stack("decoder", True, decoder_ids, _stacked(out.decoder_hidden_states)),
            ]
        out = body(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True)
    return [_Stack("", lm.kind == "causal", ids, _stacked(out.hidden_states))]


def _stacked(hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
    import torch

    return torch.stack([h[0] for h in hidden]).float().cpu()


def _layer_names(count: int) -> list[str]:
    return ["emb"] + [str(i) for i in range(1, count)]


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """1 − cos(a, b), in float64; exactly 0 for bit-identical vectors (rounding would otherwise leave ~1e-8)."""
    import torch

    if torch.equal(a, b):
        return 0.0
    a64, b64 = a.double(), b.double()
    return float(1.0 - (a64 @ b64) / (a64.norm() * b64.norm()))


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    if bool((a == b).all()):
        return 0.0
    return float((a.double() - b.double()).norm() / a.double().norm())


# --------------------------------------------------------------------------------------------------------------
# --change: the shift of every state
# --------------------------------------------------------------------------------------------------------------


def context_shift(models: list[LoadedModel], texts: list[str], change: str | None = None) -> ContextResult:
    """Each model's state shifts between two texts (the second is the first with one word changed)."""
    result = ContextResult(mode="change", texts=list(texts), change=change, note=SHIFT_NOTE)
    for lm in models:
        first, second = _stacks(lm, texts[0]), _stacks(lm, texts[1])
        for a, b in zip(first, second, strict=True):
            result.shifts.append(_shift(lm, a, b))
    return result


def _shift(lm: LoadedModel, a: _Stack, b: _Stack) -> ModelShift:
    prefix = 0
    while prefix < min(len(a.ids), len(b.ids)) and a.ids[prefix] == b.ids[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(a.ids), len(b.ids)) - prefix and a.ids[-1 - suffix] == b.ids[-1 - suffix]:
        suffix += 1
    labels_a, labels_b = label_tokens(lm.tokenizer, a.ids), label_tokens(lm.tokenizer, b.ids)
    layers = a.states.shape[0]
    positions = []
    for i in range(len(a.ids)):
        if i < prefix:
            region: Region = "before"
            j: int | None = i
        elif i >= len(a.ids) - suffix:
            region, j = "after", i - len(a.ids) + len(b.ids)
        else:
            region = "changed"
            j = i - len(a.ids) + len(b.ids) if len(a.ids) == len(b.ids) else (i if i < len(b.ids) - suffix else None)
        cosine: list[float | None] = [None] * layers
        l2: list[float | None] = [None] * layers
        if j is not None:
            for layer in range(layers):
                cosine[layer] = _cosine_distance(a.states[layer, i], b.states[layer, j])
                l2[layer] = _relative_l2(a.states[layer, i], b.states[layer, j])
        other = labels_b[j].label if j is not None and labels_b[j].id != a.ids[i] else None
        if region == "changed" and j is None:
            other = "—"
        positions.append(PositionShift(i, labels_a[i].label, other, region, cosine, l2))
    before = [p for p in positions if p.region == "before"]

    def layer_max(values: list[list[float | None]], layer: int) -> float | None:
        column = [v[layer] for v in values if v[layer] is not None]
        return max(column) if column else None

    before_cos = [layer_max([p.cosine for p in before], layer) for layer in range(layers)]
    before_l2 = [layer_max([p.relative_l2 for p in before], layer) for layer in range(layers)]
    moving = [layer for layer in range(layers) if (before_l2[layer] or 0.0) > 0.0]
    return ModelShift(
        lm.family,
        lm.name,
        a.name,
        a.causal,
        _layer_names(layers),
        positions,
        before_unchanged=bool(before) and not moving,
        before_max_cosine=before_cos,
        before_max_l2=before_l2,
        first_moving_layer=moving[0] if moving else None,
    )


# --------------------------------------------------------------------------------------------------------------
# --word: one word's vectors across sentences
# --------------------------------------------------------------------------------------------------------------


def word_similarity(models: list[LoadedModel], texts: list[str], word: str) -> ContextResult:
    """The cosine similarity of the word's contextual vectors between every pair of sentences, per layer."""
    import torch

    result = ContextResult(mode="word", texts=list(texts), word=word, note=WORD_NOTE)
    for lm in models:
        per_text = [_stacks(lm, text) for text in texts]
        for index, stack in enumerate(per_text[0]):
            occurrences, vectors = [], []
            for number, (text, stacks) in enumerate(zip(texts, per_text, strict=True), start=1):
                occurrence = _find_word(lm, text, word, number, decoder=stacks[index].name == "decoder")
                occurrences.append(occurrence)
                vectors.append(stacks[index].states[:, occurrence.positions].mean(dim=1))
            layers = range(vectors[0].shape[0])
            pairs = [
                PairSimilarity(
                    a + 1,
                    b + 1,
                    [1.0 - _cosine_distance(vectors[a][layer], vectors[b][layer]) for layer in layers],
                    [bool(torch.equal(vectors[a][layer], vectors[b][layer])) for layer in layers],
                )
                for a in range(len(texts))
                for b in range(a + 1, len(texts))
            ]
            result.similarities.append(
                WordSimilarity(
                    lm.family, lm.name, stack.name, stack.causal, _layer_names(vectors[0].shape[0]), occurrences, pairs
                )
            )
    return result


def _find_word(lm: LoadedModel, text: str, word: str, number: int, decoder: bool) -> WordOccurrence:
    """The pieces that cover the word's first standalone occurrence, from the tokenizer's character offsets."""
    match = word_pattern(word).search(text)
    assert match is not None  # check_texts made sure
    encoded = lm.tokenizer(text, return_offsets_mapping=True)
    positions = [
        i
        for i, (start, end) in enumerate(encoded["offset_mapping"])
        if end > start and start < match.end() and end > match.start()
    ]
    if not positions:
        raise usage_error(f"{lm.name} has no piece for '{word}' in sentence {number}.", "Choose another word.")
    if decoder:
        # The decoder reads the text shifted right: the piece at i is fed at i + 1, after the start token.
        positions = [i + 1 for i in positions]
    ids = encoded["input_ids"]
    pieces = [label_tokens(lm.tokenizer, [ids[i - 1 if decoder else i]])[0].label for i in positions]
    return WordOccurrence(number, match.start(), match.end(), pieces, positions)
