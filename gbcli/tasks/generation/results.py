"""What `gbcli generate` returns: each model's continuations, token by token with raw log-probabilities.

Shared by the three columns (gbcli.tasks.generation.causal, .masked and gbcli.tasks.seq2seq): the result types, the
check that a prompt fits a loaded model, and the text each new token adds (what is checked before a load is
gbcli.tasks.generation_options).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gbcli.errors import usage_error
from gbcli.loading.models import LoadedModel
from gbcli.tasks.decoding_options import DecodingSettings

# Called with (family, continuation text so far, which sequence: 0 for the first) as tokens arrive, for streaming
# to a terminal and for keeping what was written when Ctrl-C stops it.
TokenCallback = Callable[[str, str, int], None]


@dataclass
class Alternative:
    """One token the model weighed at a step: its raw log-probability, and whether it is the one written."""

    id: int
    piece: str
    text: str
    logprob: float
    chosen: bool


@dataclass
class GeneratedToken:
    """One produced token and the raw model probability of it (before temperature, top-k or top-p), with the
    most likely tokens of the same distribution, best first (`alternatives`)."""

    id: int
    piece: str
    text: str
    logprob: float
    alternatives: list[Alternative] = field(default_factory=list)


@dataclass
class Continuation:
    text: str
    tokens: list[GeneratedToken]
    mean_logprob: float | None
    stopped_at_eos: bool = False


@dataclass
class ModelGeneration:
    """What one model wrote, how, and how fast."""

    family: str
    model: str
    method: str
    continuations: list[Continuation]
    new_tokens: int
    seconds: float
    tokens_per_second: float
    reads: str = ""  # what the model reads before it writes (GPT-2: <|endoftext|> then the prompt)


@dataclass
class GenerationResult:
    prompt: str
    decoding: str
    settings: DecodingSettings
    columns: list[ModelGeneration] = field(default_factory=list)


def check_room(lm: LoadedModel, prompt_tokens: int, settings: DecodingSettings, reserved: int = 0) -> None:
    """The prompt, the new tokens and `reserved` special tokens must fit in the model's positions."""
    limit = lm.max_positions
    needed = prompt_tokens + settings.max_new_tokens + reserved
    if needed > limit:
        raise usage_error(
            f"{lm.name} can hold {limit} tokens, but the prompt ({prompt_tokens} tokens) plus "
            f"{settings.max_new_tokens} new tokens{' plus special tokens' if reserved else ''} needs {needed}.",
            "Shorten the prompt or lower --max-new-tokens.",
        )


def alternatives_of(lm: LoadedModel, top: list[tuple[int, float]], chosen_id: int) -> list[Alternative]:
    """A step's most likely tokens, (id, log-probability) best first, as the result names them."""
    return [
        Alternative(token_id, _piece(lm, token_id), _token_text(lm, token_id), logprob, token_id == chosen_id)
        for token_id, logprob in top
    ]


def _piece(lm: LoadedModel, token_id: int) -> str:
    # A padded embedding row has no text in the tokenizer: it shows its id.
    return lm.tokenizer.convert_ids_to_tokens(token_id) if token_id < len(lm.tokenizer) else f"<id {token_id}>"


def _token_text(lm: LoadedModel, token_id: int) -> str:
    if token_id >= len(lm.tokenizer):
        return f"<id {token_id}>"
    return lm.tokenizer.decode([token_id], clean_up_tokenization_spaces=False)


def continuation(
    lm: LoadedModel,
    context: list[int],
    new_ids: list[int],
    logprobs: list[float],
    stopped: bool = False,
    text: str | None = None,
    alternatives: list[list[tuple[int, float]]] | None = None,
) -> Continuation:
    """New tokens after `context`, each with the text it adds, its log-probability and the most likely tokens of
    its step (`alternatives`, (id, log-probability) best first, one list per new token); `text` defaults to the
    decoded new tokens."""
    tok = lm.tokenizer
    tokens = []
    before = tok.decode(context, skip_special_tokens=True)
    undecodable = False
    for index, (token_id, logprob) in enumerate(zip(new_ids, logprobs, strict=True)):
        # The text a token adds after the ones before it (WordPiece `##` pieces join up).
        after = tok.decode(context + new_ids[: index + 1], skip_special_tokens=True)
        if index < len(new_ids) - 1:
            # A byte-level token may hold only part of a character (き is three bytes): it adds nothing yet, and
            # the token that completes the character adds it, so the tokens' texts join into the text itself.
            after = after.rstrip("\ufffd")
        added = after[len(before) :] if after.startswith(before) else tok.decode([token_id])
        piece = tok.convert_ids_to_tokens(token_id)
        if token_id >= len(tok):  # a padded embedding row: the tokenizer has no text for it, so it shows its id
            piece = added = f"<id {token_id}>"
            undecodable = True
        weighed = alternatives_of(lm, alternatives[index], token_id) if alternatives else []
        tokens.append(GeneratedToken(token_id, piece, added, logprob, weighed))
        before = after
    if undecodable:
        text = "".join(t.text for t in tokens)
    elif text is None:
        text = tok.decode(new_ids, skip_special_tokens=True)
    mean = sum(logprobs) / len(logprobs) if logprobs else None
    return Continuation(text, tokens, mean, stopped)


def model_generation(
    lm: LoadedModel, method: str, continuations: list[Continuation], new_tokens: int, seconds: float, reads: str = ""
) -> ModelGeneration:
    """One model's column, its speed counted over every continuation it wrote."""
    return ModelGeneration(
        family=lm.family,
        model=lm.name,
        method=method,
        continuations=continuations,
        new_tokens=new_tokens,
        seconds=seconds,
        tokens_per_second=new_tokens * len(continuations) / seconds if seconds > 0 else 0.0,
        reads=reads,
    )
