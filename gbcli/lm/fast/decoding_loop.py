"""gbcli's own decoding loop for one stream of a causal LM (greedy or sampled), instead of `model.generate`.

Speed (issue 6): the loop reads each token's raw log-probability from the logits that chose it (no second scoring
pass) and spends no per-token work on machinery gbcli does not use. It makes the same forward calls `generate`
makes and picks tokens the same way, so greedy output equals `generate`'s and a seed reproduces `generate`'s
sample; tests/test_generation_speed_paths.py holds it to that. GPT-2 steps through its written-out decoder
(gbcli.lm.fast.gpt2_step), any other causal LM through its own forward (ModelDecoder); the thread count of each step
is chosen by gbcli.lm.fast.threads. Beam search and several sequences stay on `model.generate` (gbcli.lm.hf_generate).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from transformers import GenerationMixin

from gbcli.lm.decoding_settings import DecodingSettings
from gbcli.lm.fast.gpt2_step import gpt2_decoder, runs_gpt2_step
from gbcli.lm.fast.threads import on_fastest_threads
from gbcli.lm.reads import TopTokens, top_tokens
from gbcli.loading.capability import FastPath, lacks_parameters, missing
from gbcli.loading.models import LoadedModel

# Generation-config fields that don't change which token is picked, or that gbcli always sets itself.
_NEUTRAL_GENERATION_FIELDS = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "_from_model_config",
    "transformers_version",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "num_beams",
    "num_return_sequences",
}


def _probe() -> str | None:
    """Why ModelDecoder cannot step a model on this transformers (None: it can): it calls generate's own input
    preparation with the arguments 5.1 and later take, and its private `_update_model_kwargs_for_generation`."""
    return (
        missing(GenerationMixin, "_update_model_kwargs_for_generation")
        or lacks_parameters(GenerationMixin.prepare_inputs_for_generation, "next_sequence_length", "is_first_iteration")
        or lacks_parameters(GenerationMixin._update_model_kwargs_for_generation, "is_encoder_decoder")
    )


MODEL_STEPS = FastPath("own decoding loop", "model.generate", _probe)


def decodes_in_own_loop(lm: LoadedModel, settings: DecodingSettings) -> bool:
    """One stream, nothing in the model's generation config that our loop would not apply as `generate` does, and
    a step this transformers lets the loop take: GPT-2's written-out one, or the model's own (MODEL_STEPS)."""
    if settings.mode == "beam" or settings.num_return_sequences != 1 or lm.model.config.is_encoder_decoder:
        return False
    extra = set(lm.model.generation_config.to_diff_dict()) - _NEUTRAL_GENERATION_FIELDS
    return not extra and (runs_gpt2_step(lm) or MODEL_STEPS.on)


def decode_one_stream(
    lm: LoadedModel,
    input_ids: Any,
    settings: DecodingSettings,
    on_text: Callable[[str], None] | None = None,
) -> tuple[list[int], list[float], bool, list[TopTokens]]:
    """Greedy or sampled decoding of one sequence: (new ids, each one's raw log-probability, stopped at EOS, the
    `settings.alternatives` most likely tokens at each step). The alternatives and the chosen token's
    log-probability are read from the very logits the token was chosen from.

    Token choice is `generate`'s, step for step: float32 logits of the last position, the same logits processors
    (repetition penalty, then temperature, top-k, top-p), then argmax, or softmax and `torch.multinomial` on the
    global generator seeded with `torch.manual_seed`, so that a seed gives `generate`'s sample. `on_text` gets the
    decoded continuation after every token.
    """
    processors = settings.logits_processors()
    eos = _eos_ids(lm)
    prompt_len = input_ids.shape[1]
    # Every id so far, for the repetition penalty; pre-allocated, as the cache is.
    sequence = torch.empty((1, prompt_len + settings.max_new_tokens), dtype=input_ids.dtype, device=input_ids.device)
    sequence[:, :prompt_len] = input_ids
    new_ids: list[int] = []
    logprobs: list[float] = []
    alternatives: list[TopTokens] = []
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    with torch.inference_mode(), on_fastest_threads(decoder_for(lm, settings.max_new_tokens)) as decoder:
        logits = decoder.start(input_ids, prompt_len + settings.max_new_tokens)
        for step in range(settings.max_new_tokens):
            length = prompt_len + step
            scores = processors(sequence[:, :length], logits) if processors else logits
            if settings.mode == "sample":
                choice = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
            else:
                choice = torch.argmax(scores, dim=-1, keepdim=True)
            token = int(choice)
            new_ids.append(token)
            raw = torch.log_softmax(logits[0], dim=-1)
            logprobs.append(float(raw[token]))
            alternatives.append(top_tokens(raw, settings.alternatives))
            sequence[:, length] = token
            if on_text is not None:
                on_text(lm.tokenizer.decode(new_ids, skip_special_tokens=True))
            if token in eos:
                return new_ids, logprobs, True, alternatives
            if step + 1 < settings.max_new_tokens:
                logits = decoder.step(choice, length)
    return new_ids, logprobs, False, alternatives


def _eos_ids(lm: LoadedModel) -> set[int]:
    """The tokens that end a sequence for `generate`: the generation config's, as `generate` reads them."""
    eos = lm.model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def decoder_for(lm: LoadedModel, new_tokens: int) -> Any:
    """GPT-2-family models get the written-out decoding step; any other causal LM runs its own forward."""
    fast = gpt2_decoder(lm, new_tokens)
    return fast if fast is not None else ModelDecoder(lm.model)


class ModelDecoder:
    """Any causal LM: its own forward with its own cache, called with the inputs `generate` gives it.

    Those inputs come from the model's own `prepare_inputs_for_generation` and `_update_model_kwargs_for_generation`,
    as in `generate`, because models differ in what a cached step takes: most want the attention mask over every
    position so far, Mamba multiplies its hidden states by the mask and is given none after the prompt (a
    full-length mask there changed its greedy tokens from the third one on), and RWKV carries a `state` instead
    of a cache.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        parameters = inspect.signature(model.forward).parameters
        self.initial_kwargs: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in parameters:
            # Only the last position's logits are needed: skip the vocabulary projection everywhere else.
            self.initial_kwargs["logits_to_keep"] = 1
        self.kwargs: dict[str, Any] = {}

    def start(self, input_ids: Any, capacity: int) -> Any:
        """Logits after the prompt, from one batched pass; room is kept for `capacity` ids in all."""
        length = input_ids.shape[1]
        self.ids = torch.empty((1, capacity), dtype=input_ids.dtype, device=input_ids.device)
        self.ids[:, :length] = input_ids
        self.kwargs = {**self.initial_kwargs, "attention_mask": torch.ones_like(input_ids)}
        inputs = self.model.prepare_inputs_for_generation(self.ids[:, :length], is_first_iteration=True, **self.kwargs)
        return self._keep(self.model(**inputs, return_dict=True))

    def step(self, token: Any, position: int) -> Any:
        """Logits for the token after `token`, which sits at `position`."""
        self.ids[:, position] = token.view(-1)
        inputs = self.model.prepare_inputs_for_generation(
            self.ids[:, : position + 1], next_sequence_length=1, is_first_iteration=False, **self.kwargs
        )
        return self._keep(self.model(**inputs, return_dict=True))

    def _keep(self, out: Any) -> Any:
        # The cache (or RWKV's state) and the grown attention mask, for the next step.
        self.kwargs = self.model._update_model_kwargs_for_generation(out, self.kwargs, is_encoder_decoder=False)
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)
