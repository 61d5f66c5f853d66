"""Text generation: GPT-2 continues a prompt; BERT is made to by iterative mask filling.

GPT-2 was trained to predict the next token, so generation is what it does. BERT was trained to fill blanks
inside a sentence; the closest it gets to writing is to append a `[MASK]`, fill it, and repeat (Wang and Cho
2019, "BERT has a Mouth, and It Must Speak"). Running both with the same decoding settings shows the difference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gbcli.errors import GbcliError, usage_error
from gbcli.models import LoadedModel
from gbcli.tasks.decoding import DecodingSettings

# Called with (family, continuation text so far) as tokens arrive, for streaming to a terminal.
TokenCallback = Callable[[str, str], None]

BERT_METHOD = "iterative mask filling: append [MASK], fill it, repeat (Wang and Cho 2019); not how BERT was trained"
GPT_METHOD = "autoregressive decoding: each token predicted from the tokens to its left, as in pre-training"


@dataclass
class GeneratedToken:
    """One produced token and the raw model probability of it (before temperature, top-k or top-p)."""

    id: int
    piece: str
    text: str
    logprob: float


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


@dataclass
class GenerationResult:
    prompt: str
    decoding: str
    settings: DecodingSettings
    columns: list[ModelGeneration] = field(default_factory=list)


def check_prompt(prompt: str) -> str:
    if not prompt.strip():
        raise usage_error("The prompt is empty.", 'Give some text, e.g. gbcli generate "Once upon a time".')
    return prompt


def _check_length(lm: LoadedModel, prompt_tokens: int, settings: DecodingSettings, reserved: int = 0) -> None:
    limit = lm.max_positions
    needed = prompt_tokens + settings.max_new_tokens + reserved
    if needed > limit:
        raise usage_error(
            f"{lm.name} can hold {limit} tokens, but the prompt ({prompt_tokens} tokens) plus "
            f"{settings.max_new_tokens} new tokens{' plus special tokens' if reserved else ''} needs {needed}.",
            "Shorten the prompt or lower --max-new-tokens.",
        )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _tokens(lm: LoadedModel, context: list[int], new_ids: list[int], logprobs: list[float]) -> list[GeneratedToken]:
    """Each new token with the text it adds after the ones before it (WordPiece `##` pieces join up)."""
    tok = lm.tokenizer
    tokens = []
    before = tok.decode(context, skip_special_tokens=True)
    for index, (token_id, logprob) in enumerate(zip(new_ids, logprobs, strict=True)):
        after = tok.decode(context + new_ids[: index + 1], skip_special_tokens=True)
        text = after[len(before):] if after.startswith(before) else tok.decode([token_id])
        tokens.append(GeneratedToken(token_id, tok.convert_ids_to_tokens(token_id), text, logprob))
        before = after
    return tokens


def generate_causal(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Continue the prompt with `model.generate`, then read each produced token's raw log-probability."""
    import torch

    tok = lm.tokenizer
    encoded = tok(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"].to(lm.device)
    if input_ids.shape[1] == 0:
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    _check_length(lm, input_ids.shape[1], settings)
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    kwargs: dict = {
        "max_new_tokens": settings.max_new_tokens,
        "num_return_sequences": settings.num_return_sequences,
        "pad_token_id": pad,
        "repetition_penalty": settings.repetition_penalty,
    }
    if settings.mode == "sample":
        kwargs.update(do_sample=True, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    elif settings.mode == "beam":
        kwargs.update(do_sample=False, num_beams=settings.num_beams, early_stopping=True)
    else:
        kwargs.update(do_sample=False)
    streams = on_token is not None and settings.num_beams == 1 and settings.num_return_sequences == 1
    if streams:
        kwargs["streamer"] = _CallbackStreamer(lm, on_token)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    started = time.perf_counter()
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=input_ids, attention_mask=encoded["attention_mask"].to(lm.device), **kwargs
        )
    seconds = time.perf_counter() - started
    prompt_len = input_ids.shape[1]
    continuations = []
    produced = 0
    for row in output:
        new_ids = row[prompt_len:].tolist()
        # Generation pads finished sequences; keep everything up to and including the first EOS.
        stopped = eos is not None and eos in new_ids
        if stopped:
            new_ids = new_ids[: new_ids.index(eos) + 1]
        produced = max(produced, len(new_ids))
        logprobs = score_continuation(lm, input_ids[0].tolist(), new_ids)
        tokens = _tokens(lm, input_ids[0].tolist(), new_ids, logprobs)
        text = tok.decode(new_ids, skip_special_tokens=True)
        continuations.append(Continuation(text, tokens, _mean(logprobs), stopped))
    return ModelGeneration(
        family=lm.family,
        model=lm.name,
        method=GPT_METHOD,
        continuations=continuations,
        new_tokens=produced,
        seconds=seconds,
        tokens_per_second=produced * len(continuations) / seconds if seconds > 0 else 0.0,
    )


def score_continuation(lm: LoadedModel, prompt_ids: list[int], new_ids: list[int]) -> list[float]:
    """log p(token | everything before it) for each new token, from one teacher-forced forward pass."""
    import torch

    if not new_ids:
        return []
    ids = torch.tensor([prompt_ids + new_ids], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, torch.tensor(new_ids, device=lm.device)[:, None])[:, 0].tolist()


class _CallbackStreamer:
    """A `generate` streamer that hands the decoded continuation to a callback after every token."""

    def __init__(self, lm: LoadedModel, on_token: TokenCallback) -> None:
        self.lm = lm
        self.on_token = on_token
        self.ids: list[int] = []
        self.seen_prompt = False

    def put(self, value) -> None:
        if not self.seen_prompt:  # generate() first hands over the prompt itself
            self.seen_prompt = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self.on_token(self.lm.family, self.lm.tokenizer.decode(self.ids, skip_special_tokens=True))

    def end(self) -> None:
        pass


def generate_masked(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Make a masked LM write: append a mask before the final separator, fill it, and repeat."""
    import torch

    tok = lm.tokenizer
    if tok.mask_token_id is None:
        raise GbcliError(f"{lm.name} has no mask token, so it cannot fill blanks.", "Use a masked LM for --bert.")
    ids = tok(prompt)["input_ids"]
    # Keep the closing special token ([SEP] or </s>) after the text, as in pre-training.
    closing = [ids[-1]] if ids and ids[-1] in tok.all_special_ids else []
    body = ids[: len(ids) - len(closing)]
    if len(body) <= (1 if body and body[0] in tok.all_special_ids else 0):
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    _check_length(lm, len(ids), settings, reserved=0)
    banned = torch.tensor(sorted(set(tok.all_special_ids)), device=lm.device)
    processors = settings.logits_processors()
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    started = time.perf_counter()
    if settings.mode == "beam":
        beams = _beam_fill(lm, body, closing, settings, processors, banned)
    else:
        beams = []
        for _ in range(settings.num_return_sequences):
            beams.append(_sample_fill(lm, body, closing, settings, processors, banned, generator, on_token))
    seconds = time.perf_counter() - started
    continuations = []
    for new_ids, logprobs in beams:
        tokens = _tokens(lm, body, new_ids, logprobs)
        continuations.append(Continuation(_continuation_text(lm, body, new_ids), tokens, _mean(logprobs)))
    produced = settings.max_new_tokens
    return ModelGeneration(
        family=lm.family,
        model=lm.name,
        method=BERT_METHOD,
        continuations=continuations,
        new_tokens=produced,
        seconds=seconds,
        tokens_per_second=produced * len(continuations) / seconds if seconds > 0 else 0.0,
    )


def _continuation_text(lm: LoadedModel, body: list[int], new_ids: list[int]) -> str:
    """The new text as it reads after the prompt: WordPiece joins `##` pieces to the word before them."""
    tok = lm.tokenizer
    head = tok.decode(body, skip_special_tokens=True)
    full = tok.decode(body + new_ids, skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tok.decode(new_ids, skip_special_tokens=True)


def _mask_logits(lm: LoadedModel, bodies: list[list[int]], closing: list[int]):
    """Logits at the appended mask for each body (all the same length), in one batched forward pass."""
    import torch

    mask = lm.tokenizer.mask_token_id
    ids = torch.tensor([b + [mask] + closing for b in bodies], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return logits[:, len(bodies[0])].float()


def _sample_fill(lm, body, closing, settings, processors, banned, generator, on_token):
    import torch

    body = list(body)
    start = len(body)
    logprobs: list[float] = []
    for _ in range(settings.max_new_tokens):
        logits = _mask_logits(lm, [body], closing)
        raw = torch.log_softmax(logits, dim=-1)
        scores = logits.clone()
        scores[:, banned] = float("-inf")
        scores = processors(torch.tensor([body], device=lm.device), scores)
        if settings.mode == "greedy":
            choice = int(scores[0].argmax())
        else:
            probs = torch.softmax(scores[0], dim=-1).cpu()
            choice = int(torch.multinomial(probs, 1, generator=generator))
        body.append(choice)
        logprobs.append(float(raw[0, choice]))
        if on_token is not None:
            on_token(lm.family, _continuation_text(lm, body[:start], body[start:]))
    return body[start:], logprobs


def _beam_fill(lm, body, closing, settings, processors, banned):
    """Beam search over left-to-right mask filling, ranked like `generate`: by summed processed log-probs."""
    import torch

    start = len(body)
    beams: list[tuple[list[int], float, list[float]]] = [(list(body), 0.0, [])]
    for _ in range(settings.max_new_tokens):
        logits = _mask_logits(lm, [b for b, _, _ in beams], closing)
        raw = torch.log_softmax(logits, dim=-1)
        scores = logits.clone()
        scores[:, banned] = float("-inf")
        scores = torch.log_softmax(processors(torch.tensor([b for b, _, _ in beams], device=lm.device), scores), -1)
        totals = scores + torch.tensor([s for _, s, _ in beams], device=lm.device)[:, None]
        top = torch.topk(totals.flatten(), settings.num_beams)
        vocab = totals.shape[1]
        new_beams = []
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            beam, token = divmod(flat, vocab)
            ids, _, lps = beams[beam]
            new_beams.append((ids + [token], value, lps + [float(raw[beam, token])]))
        beams = new_beams
    return [(ids[start:], lps) for ids, _, lps in beams[: settings.num_return_sequences]]
