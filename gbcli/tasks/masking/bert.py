"""The masked LM's column: both sides of every blank, and the joint filling of all the blanks.

A masked LM was trained to predict hidden tokens from the whole sentence, so it can use what follows the blank.
Its top-k at each mask is a softmax over the whole vocabulary, as `pipeline("fill-mask")` gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gbcli.errors import usage_error
from gbcli.lm.reads import Reads, run_reads
from gbcli.tasks.masking.column import Column, as_fill
from gbcli.tasks.masking.masks import MASK_SPELLINGS, Fill, fill_text
from gbcli.tasks.masking.results import FILLING_METHODS, Filling, MaskColumn
from gbcli.tasks.masking.text import TextState, too_long


@dataclass
class BertReading:
    """BERT's part of one text: its ids with BERT's own mask token in every blank, and what the column found."""

    ids: list[int]
    positions: list[int]  # where each blank's mask token sits in ids
    candidates: list[list[Fill]] = field(default_factory=list)  # per mask: BERT's top tokens, for GPT-2 to rank
    filling: list[Fill] = field(default_factory=list)  # the joint filling: one fill per mask
    # (mask, target word of several pieces) → the word's log-prob, summed piece by piece
    word_logprobs: dict[tuple[int, str], float] = field(default_factory=dict)


def _reading(state: TextState) -> BertReading:
    """BERT's part of a text that reached its column (only texts it tokenized do)."""
    assert state.bert is not None
    return state.bert


@dataclass
class _JointFilling:
    """BERT's joint filling of one text so far: its ids with the chosen tokens in, and the masks still open."""

    text: TextState
    positions: list[int]  # where each blank's mask token sits in ids
    ids: list[int]
    open: list[int]
    chosen: dict[int, int] = field(default_factory=dict)  # mask → token id
    order: list[int] = field(default_factory=list)
    logprob: float = 0.0

    def fill(self, mask: int, token_id: int, logprob: float) -> None:
        self.ids[self.positions[mask]] = token_id
        self.chosen[mask] = token_id
        self.order.append(mask)
        self.open.remove(mask)
        self.logprob += logprob


class BertColumn(Column):
    """The masked LM over a batch of texts: every blank's top-k and targets, then the joint filling."""

    def tokenize(self, texts: list[TextState]) -> None:
        """BERT's ids with its own mask token in every blank; texts too long for it get their error here."""
        lm = self.lm
        tok = lm.tokenizer
        mask_id = tok.mask_token_id
        if not texts:
            return
        encoded = tok([tok.mask_token.join(t.segments) for t in texts])["input_ids"]
        longest_target = max((len(ids) for w in self.targets for ids in [self.target_ids(w, " ")] if ids), default=1)
        for state, ids in zip(texts, encoded, strict=True):
            positions = [i for i, token in enumerate(ids) if token == mask_id]
            if len(positions) != state.masks:  # e.g. a mask glued inside a word the tokenizer keeps whole
                state.error = usage_error(
                    f"{lm.name} read {len(positions)} masks where the text has {state.masks}.",
                    f"Put spaces or punctuation around each {MASK_SPELLINGS}.",
                )
                continue
            needed = len(ids) + longest_target - 1
            if needed > lm.max_positions:
                what = "with its special tokens" if needed == len(ids) else "with the longest target in a blank"
                state.error = too_long(lm, needed, what)
                continue
            state.bert = BertReading(ids, positions)

    def run(self, texts: list[TextState]) -> None:
        base = [self._base_query(state) for state in texts]
        pieces = [job for state in texts for job in self._piece_queries(state)]
        run_reads(self.lm, base + [q for *_, q in pieces], max_rows=self.batch_size, order="shortest")
        for state, mask, word, query in pieces:
            words = _reading(state).word_logprobs
            words[(mask, word)] = words.get((mask, word), 0.0) + query.target_logprobs[0][0]
        for state, query in zip(texts, base, strict=True):
            self._read_masks(state, query)
        self._joint_filling(texts, base)

    def _base_query(self, state: TextState) -> Reads:
        """One query per text: every mask at once, as pipeline("fill-mask") does; single-piece targets ride along."""
        wanted = []
        for mask in range(state.masks):
            ids = [self.target_ids(w, state.space_before(mask)) for w in self.targets]
            wanted.append([t[0] for t in ids if t is not None and len(t) == 1])
        return Reads(_reading(state).ids, _reading(state).positions, wanted, self.choice_pool())

    def _piece_queries(self, state: TextState) -> list[tuple[TextState, int, str, Reads]]:
        """One query per piece of each target word of several pieces, in every blank of the text.

        A word of k pieces fills k consecutive masks and is scored left to right within the word (the within-word
        PLL of Kauf and Ivanova 2023): log p(w1 | w1..wk masked) + log p(w2 | w1 shown, w2..wk masked) + ...;
        later pieces stay masked so that they cannot give the word away. Never the first piece alone, as
        pipeline("fill-mask") does.
        """
        mask_id, bert_ids = self.lm.tokenizer.mask_token_id, _reading(state).ids
        pieces = []
        for mask, position in enumerate(_reading(state).positions):
            for word in self.targets:
                ids = self.target_ids(word, state.space_before(mask))
                if ids is None or len(ids) == 1:
                    continue
                for j in range(len(ids)):
                    seq = bert_ids[:position] + ids[:j] + [mask_id] * (len(ids) - j) + bert_ids[position + 1 :]
                    pieces.append((state, mask, word, Reads(seq, [position + j], [[ids[j]]])))
        return pieces

    def _read_masks(self, state: TextState, query: Reads) -> None:
        """Each blank's column: the top-k, the targets, and the candidates GPT-2 will rank."""
        assert query.targets is not None
        lm, reading = self.lm, _reading(state)
        for mask, slot in enumerate(state.slots):
            space, gap = state.space_before(mask), self.fill_space(state, mask)
            top_ids, top_lps = query.top_ids[mask][: self.top_k], query.top_logprobs[mask][: self.top_k]
            predictions = [self.prediction([t], gap, lp) for t, lp in zip(top_ids, top_lps, strict=True)]
            single = dict(zip(query.targets[mask], query.target_logprobs[mask], strict=True))
            target_predictions = []
            for word in self.targets:
                ids = self.target_ids(word, space)
                if ids is None:
                    logprob = None
                elif len(ids) == 1:
                    logprob = single[ids[0]]
                else:
                    logprob = reading.word_logprobs[(mask, word)]
                target_predictions.append(self.target_prediction(word, ids, logprob))
            slot.bert = MaskColumn(
                "bert", lm.name, predictions, target_predictions, context=lm.tokenizer.mask_token.join(state.segments)
            )
            reading.candidates.append(self.candidate_pool(query.top_ids[mask], gap))

    def _joint_filling(self, texts: list[TextState], base: list[Reads]) -> None:
        """Fill the most confident mask, re-predict the others with it in place, repeat (one pass per mask)."""
        lm = self.lm
        pool = self.choice_pool()
        # The base query already predicted every mask of every text: it is the first round.
        joints = [
            _JointFilling(state, _reading(state).positions, list(_reading(state).ids), list(range(state.masks)))
            for state in texts
        ]
        pending = list(zip(joints, base, strict=True))
        while pending:
            for joint, query in pending:
                # The query's rows follow joint.open, the masks still to fill.
                options = [
                    (mask, *self.choose(query.top_ids[row], query.top_logprobs[row], self.fill_space(joint.text, mask)))
                    for row, mask in enumerate(joint.open)
                ]
                joint.fill(*max(options, key=lambda option: option[2]))
            pending = [
                (joint, Reads(list(joint.ids), [joint.positions[m] for m in joint.open], top=pool))
                for joint, _ in pending
                if joint.open
            ]
            run_reads(lm, [query for _, query in pending], max_rows=self.batch_size, order="shortest")
        for state, joint in zip(texts, joints, strict=True):
            filling = _reading(state).filling = [
                as_fill(lm, joint.chosen[m], self.fill_space(state, m)) for m in range(state.masks)
            ]
            state.fillings.append(
                Filling(
                    "bert",
                    FILLING_METHODS["bert"],
                    [w for w, _ in filling],
                    fill_text(state.segments, filling),
                    joint.logprob,
                    joint.order,
                )
            )
