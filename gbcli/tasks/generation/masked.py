"""BERT's column of `gbcli generate`: a masked LM made to write by iterative mask filling.

BERT was trained to fill blanks inside a sentence; the closest it gets to writing is to append a `[MASK]`, fill
it, and repeat (Wang and Cho 2019, "BERT has a Mouth, and It Must Speak"), greedily, by sampling, or by beam
search over the fills.
"""

from __future__ import annotations

import time

import torch

from gbcli.errors import usage_error
from gbcli.lm.fast.threads import threads_for_steps
from gbcli.lm.heads import logits_at, model_inputs
from gbcli.lm.reads import TopTokens, top_tokens
from gbcli.loading.models import LoadedModel
from gbcli.tasks.decoding_options import DecodingSettings
from gbcli.tasks.generation.results import ModelGeneration, TokenCallback, check_room, continuation, model_generation

BERT_METHOD = "iterative mask filling: append [MASK], fill it, repeat (Wang and Cho 2019); not how BERT was trained"


def generate_masked(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Make a masked LM write: append a mask before the final separator, fill it, and repeat."""
    tok = lm.tokenizer
    lm.require_mask_token("fill blanks", "Use a masked LM for --bert.")
    ids = tok(prompt)["input_ids"]
    # Keep the closing special token ([SEP] or </s>) after the text, as in pre-training.
    closing = [ids[-1]] if ids and ids[-1] in tok.all_special_ids else []
    body = ids[: len(ids) - len(closing)]
    if len(body) <= (1 if body and body[0] in tok.all_special_ids else 0):
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    check_room(lm, len(ids), settings, reserved=0)
    banned = torch.tensor(sorted(set(tok.all_special_ids)), device=lm.device)
    processors = settings.logits_processors()
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    started = time.perf_counter()
    with threads_for_steps():
        if settings.mode == "beam":
            beams = _beam_fill(lm, body, closing, settings, processors, banned, on_token)
        else:
            beams = []
            for sequence in range(settings.num_return_sequences):
                beams.append(
                    _sample_fill(lm, body, closing, settings, processors, banned, generator, on_token, sequence)
                )
    seconds = time.perf_counter() - started
    continuations = [
        continuation(lm, body, new_ids, logprobs, text=_continuation_text(lm, body, new_ids), alternatives=alternatives)
        for new_ids, logprobs, alternatives in beams
    ]
    shown = tok.convert_ids_to_tokens([*body[:1], tok.mask_token_id, *closing])
    opening = f"{shown[0]} " if body and body[0] in tok.all_special_ids else ""
    reads = f"{opening}the prompt, the tokens written so far, {' '.join(shown[1:])}"
    return model_generation(lm, BERT_METHOD, continuations, settings.max_new_tokens, seconds, reads=reads)


def _continuation_text(lm: LoadedModel, body: list[int], new_ids: list[int]) -> str:
    """The new text as it reads after the prompt: WordPiece joins `##` pieces to the word before them."""
    tok = lm.tokenizer
    head = tok.decode(body, skip_special_tokens=True)
    full = tok.decode(body + new_ids, skip_special_tokens=True)
    return full[len(head) :] if full.startswith(head) else tok.decode(new_ids, skip_special_tokens=True)


def _mask_logits(lm: LoadedModel, bodies: list[list[int]], closing: list[int]):
    """Logits at the appended mask for each body (all the same length), in one batched forward pass; the
    vocabulary is projected at the mask alone (`gbcli.lm.heads.logits_at`)."""
    mask = lm.tokenizer.mask_token_id
    position = len(bodies[0])
    ids = torch.tensor([b + [mask] + closing for b in bodies], device=lm.device)
    rows = torch.arange(len(bodies), device=lm.device)
    cols = torch.full((len(bodies),), position, device=lm.device)
    with torch.inference_mode():
        return logits_at(lm, model_inputs(lm, ids, torch.ones_like(ids)), rows, cols).float()


def _sample_fill(lm, body, closing, settings, processors, banned, generator, on_token, sequence=0):
    body = list(body)
    start = len(body)
    logprobs: list[float] = []
    alternatives: list[TopTokens] = []
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
        # What BERT weighed at the mask, from the logits the choice came from (special tokens included: BERT may
        # prefer [SEP] or "." there, though the loop never writes a special token).
        alternatives.append(top_tokens(raw[0], settings.alternatives))
        if on_token is not None:
            on_token(lm.family, _continuation_text(lm, body[:start], body[start:]), sequence)
    return body[start:], logprobs, alternatives


def _beam_fill(lm, body, closing, settings, processors, banned, on_token=None):
    """Beam search over left-to-right mask filling, ranked like `generate`: by summed processed log-probs. After
    each step `on_token` gets the best beam so far (as `generate`'s beam search reports it)."""
    start = len(body)
    beams: list[tuple[list[int], float, list[float], list[TopTokens]]] = [(list(body), 0.0, [], [])]
    for _ in range(settings.max_new_tokens):
        logits = _mask_logits(lm, [b for b, _, _, _ in beams], closing)
        raw = torch.log_softmax(logits, dim=-1)
        scores = logits.clone()
        scores[:, banned] = float("-inf")
        scores = torch.log_softmax(processors(torch.tensor([b for b, _, _, _ in beams], device=lm.device), scores), -1)
        totals = scores + torch.tensor([s for _, s, _, _ in beams], device=lm.device)[:, None]
        top = torch.topk(totals.flatten(), settings.num_beams)
        vocab = totals.shape[1]
        new_beams = []
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            beam, token = divmod(flat, vocab)
            ids, _, lps, tops = beams[beam]
            new_beams.append(
                (
                    ids + [token],
                    value,
                    lps + [float(raw[beam, token])],
                    tops + [top_tokens(raw[beam], settings.alternatives)],
                )
            )
        beams = new_beams
        if on_token is not None:
            on_token(lm.family, _continuation_text(lm, body, beams[0][0][start:]), 0)
    return [(ids[start:], lps, tops) for ids, _, lps, tops in beams[: settings.num_return_sequences]]
