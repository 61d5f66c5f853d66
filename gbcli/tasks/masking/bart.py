"""BART's column: an encoder-decoder denoiser restores the whole text, and each blank gets a span of any length.

Beam search gives the top-k restorations; the span is read off by matching each one against the text around the
blanks, and a beam that rewrote that text is kept, marked, without a span. Every beam is scored again by teacher
forcing, for the raw model's probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gbcli.errors import GbcliError
from gbcli.loading.models import LoadedModel
from gbcli.tasks import seq2seq
from gbcli.tasks.masking.column import Column
from gbcli.tasks.masking.results import (
    FILLING_METHODS,
    Filling,
    MaskColumn,
    MaskPrediction,
    SpanBeam,
    SpanFill,
    SpanInfilling,
)
from gbcli.tasks.masking.text import TextState, too_long
from gbcli.tasks.masking.tokens import piece


class BartColumn(Column):
    """BART over a batch of texts, one text at a time: its beams already make a batch."""

    def run(self, texts: list[TextState]) -> None:
        """BART restores each text by beam search; each blank's column lists the spans of the beams that kept the
        text around the blanks."""
        lm = self.lm
        for state in texts:
            try:
                state.bart = infill_spans(lm, state.segments, self.top_k)
            except GbcliError as error:
                state.error = error
                continue
            kept = state.bart.fillings
            targets = self._targets(state, kept[0] if kept else None)
            for mask, slot in enumerate(state.slots):
                predictions = _distinct_spans(kept, mask, self.top_k)
                slot.bart = MaskColumn("bart", lm.name, predictions, targets[mask])
            if kept:
                best = kept[0]
                state.fillings.append(
                    Filling(
                        "bart",
                        FILLING_METHODS["bart"],
                        [span.text for span in best.spans or []],
                        best.filled or "",
                        best.logprob,
                        list(range(state.masks)),
                    )
                )

    def _targets(self, state: TextState, best: SpanBeam | None) -> list[list[MaskPrediction]]:
        """Per blank, each --targets word scored as BART's whole output: log p(text with the word in the blank |
        masked text); the other blanks hold BART's best spans. One teacher-forced pass per text."""
        lm = self.lm
        assert state.bart is not None
        if not self.targets:
            return [[] for _ in range(state.masks)]
        tok = lm.tokenizer
        source = seq2seq.infill_source(lm, state.segments)
        start = seq2seq.decoder_start_id(lm)
        plans: list[tuple[int, str, list[int] | None]] = []
        for mask in range(state.masks):
            for word in self.targets:
                if best is None and state.masks > 1:
                    plans.append((mask, word, None))  # no restoration kept the text to hold the other blanks
                    continue
                spans = [s.text for s in best.spans or []] if best is not None else [""]
                spans[mask] = word
                ids = tok(seq2seq.fill_segments(state.segments, spans))["input_ids"]
                plans.append((mask, word, [start, *ids] if len(ids) < lm.max_positions else None))
        scored = iter(seq2seq.teacher_forced_logprobs(lm, source, [ids for _, _, ids in plans if ids is not None]))
        out: list[list[MaskPrediction]] = [[] for _ in range(state.masks)]
        for mask, word, ids in plans:
            pieces_ids = tok(state.space_before(mask) + word, add_special_tokens=False)["input_ids"]
            logprob = math.fsum(next(scored)) if ids is not None else None
            out[mask].append(
                MaskPrediction(
                    word=word,
                    joins_previous=False,
                    text=word,
                    pieces=[piece(lm, t) for t in pieces_ids],
                    token_ids=pieces_ids,
                    prob=math.exp(logprob) if logprob is not None else None,
                    logprob=logprob,
                )
            )
        return out


def _distinct_spans(kept: list[SpanBeam], mask: int, top_k: int) -> list[MaskPrediction]:
    """One blank's column: the first `top_k` different spans the kept beams wrote there, each from the best beam
    that wrote it, in the beam search's order. A beam fills every blank at once, so beams that differ in another
    blank write the same span here: listed once, the column is this blank's candidates."""
    seen: set[tuple[int, ...]] = set()
    predictions = []
    for beam in kept:
        prediction = _span_prediction(beam, mask)
        if tuple(prediction.token_ids) not in seen:
            seen.add(tuple(prediction.token_ids))
            predictions.append(prediction)
    return predictions[:top_k]


def _span_prediction(beam: SpanBeam, mask: int) -> MaskPrediction:
    """One BART beam in one blank's column: the span it wrote there, with the probability of its whole output."""
    assert beam.spans is not None
    span = beam.spans[mask]
    return MaskPrediction(
        word=span.text,
        joins_previous=False,
        text=span.text,
        pieces=span.pieces,
        token_ids=span.token_ids,
        prob=beam.prob,
        logprob=beam.logprob,
    )


def infill_spans(lm: LoadedModel, segments: Sequence[str], top_k: int) -> SpanInfilling:
    """BART fills the blanks between `segments`: beam search with 2 × top_k beams (at least 4), best first.

    Beams whose output rewrites the text around the blanks are kept and marked, not dropped: they are what the
    model wrote. Every beam is then scored once more by teacher forcing, for the raw model's probabilities.
    """
    import torch

    seq2seq.check_seq2seq(lm)
    source = seq2seq.infill_source(lm, segments)
    if len(source) > lm.max_positions:
        raise too_long(lm, len(source), "with its special tokens")
    beams = min(max(2 * top_k, 4), seq2seq.MAX_BEAMS)
    settings = seq2seq.infill_settings(lm, len(source), len(segments) - 1, beams)
    input_ids = torch.tensor([source], device=lm.device)
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=seq2seq.pad_id(lm),
            **settings,
        )
    eos = seq2seq.eos_id(lm)
    sequences = []
    for row in output.sequences.tolist():
        ids = list(row)
        if eos is not None and eos in ids[1:]:  # drop the padding after </s> (the start token is </s> too)
            ids = ids[: ids.index(eos, 1) + 1]
        sequences.append(ids)
    logprobs = seq2seq.teacher_forced_logprobs(lm, source, sequences)
    result = SpanInfilling(
        model=lm.name,
        method=seq2seq.INFILL_METHOD,
        source=seq2seq.decode(lm, source),
        generate_settings=settings,
        sequence_score=seq2seq.SEQUENCE_SCORE,
    )
    scores = output.sequences_scores.tolist()
    for rank, (ids, token_logprobs, score) in enumerate(zip(sequences, logprobs, scores, strict=True), start=1):
        result.beams.append(_span_beam(lm, segments, rank, ids, token_logprobs, score))
    return result


def _span_beam(
    lm: LoadedModel, segments: Sequence[str], rank: int, ids: list[int], token_logprobs: list[float], score: float
) -> SpanBeam:
    text_ids = seq2seq.body_ids(lm, ids)
    output = seq2seq.decode(lm, text_ids)
    total = math.fsum(token_logprobs)
    ranges = seq2seq.match_spans(segments, output)
    spans = None
    if ranges is not None:
        # Token i of text_ids is token offset + i of the decoder sequence, whose log-prob is token_logprobs[offset +
        # i - 1]: the first entry scores the token after the decoder start.
        offset = 1 + (1 if len(ids) > 1 and ids[1] == lm.tokenizer.bos_token_id else 0)
        ends = seq2seq.token_ends(lm, text_ids)
        starts = [0, *ends[:-1]]
        spans = []
        for start, end in ranges:
            # The tokens that overlap the span (a token may reach past it, e.g. a word glued to the blank).
            inside = [i for i in range(len(text_ids)) if start < end and starts[i] < end and ends[i] > start]
            logprob = math.fsum(token_logprobs[offset + i - 1] for i in inside)
            spans.append(
                SpanFill(
                    text=output[start:end],
                    pieces=[piece(lm, text_ids[i]) for i in inside],
                    token_ids=[text_ids[i] for i in inside],
                    logprob=logprob,
                    prob=math.exp(logprob),
                )
            )
    return SpanBeam(
        rank=rank,
        output=output,
        token_ids=ids,
        sequence_score=score,
        logprob=total,
        prob=math.exp(total),
        rewrote_context=ranges is None,
        spans=spans,
        filled=seq2seq.fill_segments(segments, [s.text for s in spans]) if spans is not None else None,
    )
