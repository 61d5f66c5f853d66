"""The causal LM's two columns: the next token from the left context alone, then whole sentences ranked.

A causal LM was trained to predict the next token from the ones before it, so at the blank it knows only the left
context (`gpt_left`). It can still judge complete sentences: put each candidate in the blank (BERT's top-k, its
own left top-k and the targets) and compare the likelihoods of the whole sentences (`gpt_whole`), normalised over
the candidates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gbcli.errors import usage_error
from gbcli.lm.fast.shared_prefix import Prefix, continuation_logprobs, grouped_logprobs, run_prefix
from gbcli.lm.reads import Reads, next_tokens, run_reads, scored_tokens, token_logprobs
from gbcli.loading.models import LoadedModel
from gbcli.tasks.masking.column import Column, RunSettings, as_fill
from gbcli.tasks.masking.masks import Fill, fill_text
from gbcli.tasks.masking.results import FILLING_METHODS, JOINT_BEAMS, Filling, MaskColumn, MaskPrediction
from gbcli.tasks.masking.text import TextState, too_long
from gbcli.tasks.masking.tokens import piece

BLANK = " ___"  # the blank a column predicts, in the context it read
# A sentence's tokens are scored from position 1: after <|endoftext|> that is every one of them; a model without
# a start token cannot score the first.
SCORE_FROM = 1

# One target word at one blank of the left-context column: the word, its pieces, and the query that scores it.
_ScoredTarget = tuple[str, list[int] | None, Reads | None]


@dataclass
class GptReading:
    """GPT-2's part of one text: its left-to-right filling, each blank's candidates, and the whole-sentence best."""

    candidates: list[list[Fill]] = field(default_factory=list)  # per mask: GPT-2's top next tokens as fills
    filling: list[Fill] = field(default_factory=list)  # left to right, each mask its most likely next token
    filling_logprob: float = 0.0
    best: list[Fill] = field(default_factory=list)  # the best whole-sentence filling found (JOINT_BEAMS search)
    best_text: str = ""  # the text with every best candidate in
    best_logprob: float = 0.0  # log-likelihood of best_text
    pools: list[list[Fill]] = field(default_factory=list)  # per mask: the candidates the whole-sentence column ranks


@dataclass
class _Ranking:
    """One blank of one text for the whole-sentence column: the candidates, one sentence (token ids) each, and
    each sentence's log-likelihood once scored."""

    text: TextState
    mask: int
    candidates: list[Fill]
    sentences: list[list[int]]
    totals: list[float] = field(default_factory=list)


def _reading(state: TextState) -> GptReading:
    assert state.gpt is not None
    return state.gpt


def _joint(state: TextState) -> list[Fill]:
    """What the other blanks hold while GPT-2 ranks one: BERT's joint filling, or without BERT GPT-2's own."""
    return state.bert.filling if state.bert is not None else _reading(state).filling


class GptColumns(Column):
    """The causal LM over a batch of texts: `gpt_left` blank by blank, then `gpt_whole` for every blank."""

    def __init__(self, lm: LoadedModel, settings: RunSettings) -> None:
        super().__init__(lm, settings)
        # GPT-2 scores a text after <|endoftext|>, so that its first word has a probability too.
        tok = lm.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.prefix: list[int] = [bos] if bos is not None else []
        self._word_ids: dict[str, list[int]] = {}
        self.prefixes: list[Prefix] = []  # contexts the left column ran with their cache kept (one text alone)

    def word_ids(self, text: str) -> list[int]:
        ids = self._word_ids.get(text)
        if ids is None:
            ids = self._word_ids[text] = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def run(self, texts: list[TextState]) -> None:
        self.run_left(texts)
        self.run_whole(texts)

    def run_left(self, texts: list[TextState]) -> None:
        """The left-context column: it needs nothing of BERT's, so it may run while BERT's column does."""
        for state in texts:
            state.gpt = GptReading()
        # Left context only: mask r sees the text before it, earlier masks filled by GPT-2's own choices.
        for r in range(max((s.masks for s in texts), default=0)):
            self._left_round([s for s in texts if s.error is None and s.masks > r], r)

    def run_whole(self, texts: list[TextState]) -> None:
        """The left column's filling, then the whole-sentence column (after BERT's, whose candidates it ranks)."""
        texts = [s for s in texts if s.error is None]
        for state in texts:
            reading = _reading(state)
            state.fillings.append(
                Filling(
                    "gpt_left",
                    FILLING_METHODS["gpt_left"],
                    [w for w, _ in reading.filling],
                    fill_text(state.segments, reading.filling),
                    reading.filling_logprob,
                    list(range(state.masks)),
                )
            )
        self._whole_sentence(texts)

    # ---- left context ------------------------------------------------------------------------------------------

    def _left_round(self, work: list[TextState], r: int) -> None:
        """Mask r of every text that has one: GPT-2's top next tokens after the text before it, and the targets."""
        lefts = []
        for state in work:
            left = fill_text(state.segments[: r + 1], _reading(state).filling[:r])
            lefts.append(left[:-1] if state.space_before(r) else left)  # the space belongs to the next token
        encoded = self.lm.tokenizer(lefts, add_special_tokens=False)["input_ids"] if lefts else []
        jobs: list[tuple[TextState, Reads, list[_ScoredTarget]]] = []
        for state, left_ids in zip(work, encoded, strict=True):
            job = self._left_queries(state, r, self.prefix + left_ids)
            if job is not None:
                jobs.append((state, *job))
        if len(jobs) != 1 or not self._run_alone(*jobs[0][1:]):
            queries = [q for _, q, _ in jobs] + [q for *_, scored in jobs for *_, q in scored if q is not None]
            run_reads(self.lm, queries, max_rows=self.batch_size, order="shortest")
        for state, query, scored in jobs:
            self._read_left(state, r, query, scored)

    def _run_alone(self, query: Reads, scored: list[_ScoredTarget]) -> bool:
        """One text's blank: its context runs once with the model's cache kept, for the whole-sentence ranking of
        the same blank, which starts from it; the targets are scored as continuations of it. False (and nothing
        run) for a model that keeps no such cache."""
        prefix = run_prefix(self.lm, query.ids, SCORE_FROM)
        if prefix is None:
            return False
        values, ids = prefix.next_logprobs.topk(min(query.top, prefix.next_logprobs.shape[-1]))
        query.top_ids, query.top_logprobs = [ids.tolist()], [values.tolist()]
        targets = [q for *_, q in scored if q is not None]
        scores = continuation_logprobs(self.lm, prefix, [q.ids for q in targets], max_rows=self.batch_size)
        for target, values_of_target in zip(targets, scores, strict=True):
            target.target_logprobs = [[v] for v in values_of_target]
        self.prefixes.append(prefix)
        return True

    def _left_queries(self, state: TextState, r: int, context: list[int]) -> tuple[Reads, list[_ScoredTarget]] | None:
        """The queries for mask r after `context`: its next token, and each target in the blank; None (and the
        text's error) when the model cannot read them."""
        lm = self.lm
        if not context:
            state.error = usage_error(
                f"{lm.name} has no start-of-text token, so it cannot predict a text's first word.",
                "Put some words before the first mask.",
            )
            return None
        space = state.space_before(r)
        scored: list[_ScoredTarget] = []
        for word in self.targets:
            ids = self.target_ids(word, space)
            scored.append((word, ids, scored_tokens(context + ids, len(context)) if ids else None))
        longest = max([len(context)] + [len(q.ids) for *_, q in scored if q is not None])
        if longest > lm.max_positions:
            state.error = too_long(lm, longest, "up to a blank, with a word in it")
            return None
        return next_tokens(context, self.choice_pool()), scored

    def _read_left(self, state: TextState, r: int, query: Reads, scored: list[_ScoredTarget]) -> None:
        """Mask r's left-context column, and GPT-2's own choice for it, which the next masks read."""
        reading, space = _reading(state), self.fill_space(state, r)
        predictions = [
            self.prediction([t], space, lp)
            for t, lp in zip(query.top_ids[0][: self.top_k], query.top_logprobs[0][: self.top_k], strict=True)
        ]
        target_predictions = [
            self.target_prediction(word, ids, sum(token_logprobs(q)) if q is not None else None)
            for word, ids, q in scored
        ]
        read = fill_text(state.segments[: r + 1], reading.filling[:r])
        read = read.rstrip() + BLANK if state.space_before(r) else read + BLANK.strip()
        state.slots[r].gpt_left = MaskColumn("gpt_left", self.lm.name, predictions, target_predictions, context=read)
        reading.candidates.append(self.candidate_pool(query.top_ids[0], space))
        token_id, logprob = self.choose(query.top_ids[0], query.top_logprobs[0], space)
        reading.filling.append(as_fill(self.lm, token_id, space))
        reading.filling_logprob += logprob

    # ---- whole sentence ----------------------------------------------------------------------------------------

    def _whole_sentence(self, texts: list[TextState]) -> None:
        """Rank the candidates by GPT-2's likelihood of the complete sentence with each one in the blank.

        The other masks hold the best joint filling (BERT's, or GPT-2's own left-to-right one without BERT).
        One blank's sentences are alike up to it, so that shared start runs once (gbcli.lm.fast.shared_prefix).
        """
        rankings = self._rankings(texts)
        for ranking in rankings:
            longest = max(len(ids) for ids in ranking.sentences)
            if longest > self.lm.max_positions and ranking.text.error is None:
                ranking.text.error = too_long(self.lm, longest, "with the blanks filled in")
        rankings = [r for r in rankings if r.text.error is None]
        scores = grouped_logprobs(
            self.lm, [r.sentences for r in rankings], SCORE_FROM, max_rows=self.batch_size, known=self.prefixes
        )
        self.prefixes = []  # their caches are of no more use
        for ranking, sentence_scores in zip(rankings, scores, strict=True):
            ranking.totals = [sum(values) for values in sentence_scores]
        for state in texts:
            _reading(state).best = [("", False)] * state.masks
        for ranking in rankings:
            self._rank(ranking)
        self._whole_filling([s for s in texts if s.error is None])

    def _rankings(self, texts: list[TextState]) -> list[_Ranking]:
        """Each blank's candidates (BERT's, GPT-2's, the targets), and one sentence with each in the blank."""
        plans: list[tuple[TextState, int, list[Fill], int]] = []  # (text, mask, candidates, first sentence index)
        sentences: list[str] = []
        for state in texts:
            reading = _reading(state)
            for mask in range(state.masks):
                candidates: list[Fill] = []
                if state.bert is not None:
                    candidates += state.bert.candidates[mask]
                candidates += reading.candidates[mask]
                space = state.space_before(mask)
                candidates += [(w, False) for w in self.targets if self.target_ids(w, space) is not None]
                candidates = list(dict.fromkeys(candidates))
                if not candidates:  # every top-k token was special or a padded row: GPT-2's own choice stands
                    candidates = [reading.filling[mask]]
                reading.pools.append(candidates)
                plans.append((state, mask, candidates, len(sentences)))
                for candidate in candidates:
                    fills = list(_joint(state))
                    fills[mask] = candidate
                    sentences.append(fill_text(state.segments, fills))
        encoded = self.lm.tokenizer(sentences, add_special_tokens=False)["input_ids"] if sentences else []
        full = [self.prefix + ids for ids in encoded]
        return [
            _Ranking(state, mask, candidates, full[first : first + len(candidates)])
            for state, mask, candidates, first in plans
        ]

    def _rank(self, ranking: _Ranking) -> None:
        """One blank's whole-sentence column: each candidate's share among the candidates' sentences."""
        lm, state, mask = self.lm, ranking.text, ranking.mask
        space = state.space_before(mask)
        totals = ranking.totals
        norm = _logsumexp(totals)
        scored = []
        for (word, joins), total in zip(ranking.candidates, totals, strict=True):
            ids = self.word_ids(word if joins else space + word)
            scored.append(
                MaskPrediction(
                    word=word,
                    joins_previous=joins,
                    text=lm.tokenizer.decode(ids),
                    pieces=[piece(lm, t) for t in ids],
                    token_ids=ids,
                    prob=math.exp(total - norm),
                    logprob=total - norm,
                    sentence_logprob=total,
                )
            )
        by_candidate = dict(zip(ranking.candidates, scored, strict=True))
        scored.sort(key=lambda p: -(p.logprob or 0.0))
        target_predictions = [
            by_candidate.get((w, False)) or self.target_prediction(w, None, None) for w in self.targets
        ]
        others = list(_joint(state))
        others[mask] = (BLANK.strip(), False)
        state.slots[mask].gpt_whole = MaskColumn(
            "gpt_whole", lm.name, scored, target_predictions, context=fill_text(state.segments, others)
        )
        reading = _reading(state)
        reading.best[mask] = (scored[0].word, scored[0].joins_previous)
        if state.masks == 1:
            reading.best_logprob = scored[0].sentence_logprob or 0.0

    def _whole_filling(self, done: list[TextState]) -> None:
        """The whole-sentence filling: one blank's best candidate, or for several blanks a beam search over their
        candidates (JOINT_BEAMS) that keeps the fillings whose sentences GPT-2 finds most likely."""
        lm = self.lm
        several = [s for s in done if s.masks > 1]
        beams: dict[int, list[tuple[list[Fill], float]]] = {id(s): [([], 0.0)] for s in several}
        for r in range(max((s.masks for s in several), default=0)):
            work = [s for s in several if s.masks > r and s.error is None]
            plans: list[tuple[TextState, list[Fill]]] = []
            texts: list[str] = []
            for state in work:
                last = r == state.masks - 1
                for fills, _ in beams[id(state)]:
                    for candidate in _reading(state).pools[r]:
                        filled = [*fills, candidate]
                        # Up to the next blank (its space belongs to the next token), or the whole sentence.
                        text = (
                            fill_text(state.segments, filled)
                            if last
                            else fill_text(state.segments[: r + 2], filled).rstrip()
                        )
                        plans.append((state, filled))
                        texts.append(text)
            encoded = lm.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
            queries = [scored_tokens(self.prefix + ids, SCORE_FROM) for ids in encoded]
            for (state, _), query in zip(plans, queries, strict=True):
                if len(query.ids) > lm.max_positions and state.error is None:
                    state.error = too_long(lm, len(query.ids), "with the blanks filled in")
            run_reads(
                lm,
                [q for (s, _), q in zip(plans, queries, strict=True) if s.error is None],
                max_rows=self.batch_size,
                order="shortest",
            )
            grown: dict[int, list[tuple[list[Fill], float]]] = {id(s): [] for s in work}
            for (state, filled), query in zip(plans, queries, strict=True):
                if state.error is None:
                    grown[id(state)].append((filled, sum(token_logprobs(query))))
            for state in work:
                beams[id(state)] = sorted(grown[id(state)], key=lambda beam: -beam[1])[:JOINT_BEAMS]
        for state in several:
            if state.error is None:
                reading = _reading(state)
                reading.best, reading.best_logprob = beams[id(state)][0]
        for state in done:
            if state.error is None:
                reading = _reading(state)
                reading.best_text = fill_text(state.segments, reading.best)
                state.fillings.append(
                    Filling(
                        "gpt_whole",
                        FILLING_METHODS["gpt_whole"],
                        [w for w, _ in reading.best],
                        reading.best_text,
                        reading.best_logprob,
                        list(range(state.masks)),
                    )
                )


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
