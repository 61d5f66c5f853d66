"""Text generation: GPT-2 continues a prompt; BERT is made to by iterative mask filling.

GPT-2 was trained to predict the next token, so generation is what it does. BERT was trained to fill blanks
inside a sentence; the closest it gets to writing is to append a `[MASK]`, fill it, and repeat (Wang and Cho
2019, "BERT has a Mouth, and It Must Speak"). Running both with the same decoding settings shows the difference.

Speed (issue 6): one stream (greedy or sampling) is decoded by a loop of our own instead of `model.generate`, so
that each token's raw log-probability is read from the logits that chose it (no second scoring pass) and no
per-token work is spent on machinery gbcli does not use. It makes the same forward calls `generate` makes and picks
tokens the same way, so greedy output equals `generate`'s and a seed reproduces `generate`'s sample; the tests in
tests/test_generation_speed_paths.py hold it to that. Beam search and several sequences stay on `model.generate`.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

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


def continuation(lm: LoadedModel, context: list[int], new_ids: list[int], logprobs: list[float],
                 stopped: bool = False, text: str | None = None) -> Continuation:
    """New tokens after `context`, each with the text it adds and its log-probability; `text` defaults to the
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
        added = after[len(before):] if after.startswith(before) else tok.decode([token_id])
        piece = tok.convert_ids_to_tokens(token_id)
        if token_id >= len(tok):  # a padded embedding row: the tokenizer has no text for it, so it shows its id
            piece = added = f"<id {token_id}>"
            undecodable = True
        tokens.append(GeneratedToken(token_id, piece, added, logprob))
        before = after
    if undecodable:
        text = "".join(t.text for t in tokens)
    elif text is None:
        text = tok.decode(new_ids, skip_special_tokens=True)
    mean = sum(logprobs) / len(logprobs) if logprobs else None
    return Continuation(text, tokens, mean, stopped)


def model_generation(lm: LoadedModel, method: str, continuations: list[Continuation], new_tokens: int,
                     seconds: float) -> ModelGeneration:
    """One model's column, its speed counted over every continuation it wrote."""
    return ModelGeneration(
        family=lm.family,
        model=lm.name,
        method=method,
        continuations=continuations,
        new_tokens=new_tokens,
        seconds=seconds,
        tokens_per_second=new_tokens * len(continuations) / seconds if seconds > 0 else 0.0,
    )


# --------------------------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------------------------


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def other_busy_cores() -> float:
    """How many cores other processes keep busy right now.

    Linux counts the runnable tasks at this instant (/proc/loadavg's fourth field); this process's own running
    threads (OpenMP workers spin for a while after each op) are taken off. The least of three looks ignores a task
    that is runnable only for a moment. Elsewhere, the one-minute load average less this process stands in: it
    lags by a minute, which is why StepThreads also times the steps.
    """
    try:
        looks = []
        for _ in range(3):
            with open("/proc/loadavg") as f:
                runnable = int(f.read().split()[3].split("/")[0])
            own = 0
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/stat") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
            looks.append(max(0, runnable - own))
        return float(min(looks))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return max(0.0, os.getloadavg()[0] - 1)
    except (AttributeError, OSError):  # pragma: no cover - not available on Windows
        return 0.0


def step_threads(current: int) -> int:
    """How many threads token-by-token work should use: the cores no other process is busy on, at most `current`.

    Decoding one token is ~150 small ops, and an OpenMP team waits at the end of each op for its slowest thread.
    When another process holds one of the cores, every op waits for a time slice: on a busy 2-core machine a
    GPT-2-small token took 270 ms with 2 threads and 26 ms with 1. A single core streams the weights (the real cost
    of a decoding step) about as fast as two here. OMP_NUM_THREADS, when set, is the user's choice and is kept.
    """
    if os.environ.get("OMP_NUM_THREADS") or current <= 1:
        return current
    idle = int(usable_cores() - other_busy_cores())
    return max(1, min(current, idle))


@contextmanager
def _threads_for_steps() -> Iterator[None]:
    """Run token-by-token loops on `step_threads()` threads, and give the caller its setting back afterwards."""
    import torch

    before = torch.get_num_threads()
    wanted = step_threads(before)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != before:
            torch.set_num_threads(before)


class StepThreads:
    """Chooses, step by step, the thread count that decodes fastest right now, by timing the steps themselves.

    Candidates are torch's setting, one, and what `step_threads` finds free. A count that needs more cores than are
    free right now (`other_busy_cores`, looked at every LOOK_EVERY steps) is neither used nor probed: one step of a
    team whose threads wait for time slices costs ~10 ordinary steps, so probing it would lose more than it could
    win. Among the counts that fit, each runs PROBE_STEPS steps in turn, the fastest median wins, and every
    PROBE_EVERY steps the others are timed again (the machine may have become idle or busy). `_Gpt2Decoder` splits
    its products by the caller's thread setting, not by the count that runs them, so these give the same bits
    either way; torch's attention kernel alone divides its sums by thread count (in `model.generate` too), which
    moves the last bits (~1e-7). OMP_NUM_THREADS, when set, is the user's choice and is kept.
    """

    PROBE_STEPS = 3  # steps per candidate at the start
    PROBE_EVERY = 32
    LOOK_EVERY = 4  # steps between two looks at how busy the machine is (a look costs ~0.1 ms)

    def __init__(self, threads: int) -> None:
        from collections import deque

        if os.environ.get("OMP_NUM_THREADS") or threads <= 1:
            self.candidates = [threads]
        else:
            self.candidates = sorted({threads, 1, step_threads(threads)}, reverse=True)
        self.times: dict[int, deque[float]] = {count: deque(maxlen=self.PROBE_STEPS) for count in self.candidates}
        self.steps = 0
        self.fitting = self._fitting()

    def _fitting(self) -> list[int]:
        """The candidates that fit in the cores free right now (one thread always does)."""
        if len(self.candidates) == 1:
            return self.candidates
        free = usable_cores() - other_busy_cores()
        return [count for count in self.candidates if count <= max(1.0, free)]

    def next(self) -> int:
        """The thread count for the next step."""
        step = self.steps
        self.steps += 1
        if len(self.candidates) == 1:
            return self.candidates[0]
        if step and step % self.LOOK_EVERY == 0:
            self.fitting = self._fitting()
        fitting = self.fitting
        unprobed = [count for count in fitting if len(self.times[count]) < self.PROBE_STEPS]
        if unprobed and step < self.PROBE_STEPS * len(self.candidates):
            return min(unprobed, key=lambda count: len(self.times[count]))
        if len(fitting) > 1 and step % self.PROBE_EVERY < len(fitting):
            return fitting[step % self.PROBE_EVERY]
        return self.fastest()

    def record(self, threads: int, seconds: float) -> None:
        self.times[threads].append(seconds)

    def fastest(self) -> int:
        def median(count: int) -> float:
            times = sorted(self.times[count])
            return times[len(times) // 2] if times else float("inf")

        return min(self.fitting, key=median)


# --------------------------------------------------------------------------------------------------------------
# GPT: causal decoding
# --------------------------------------------------------------------------------------------------------------


def generate_causal(
    lm: LoadedModel, prompt: str, settings: DecodingSettings, on_token: TokenCallback | None = None
) -> ModelGeneration:
    """Continue the prompt; report each produced token with its raw log-probability."""
    tok = lm.tokenizer
    encoded = tok(prompt, return_tensors="pt")
    input_ids = encoded["input_ids"].to(lm.device)
    if input_ids.shape[1] == 0:
        raise usage_error("The prompt tokenizes to nothing.", "Give some visible text.")
    _check_length(lm, input_ids.shape[1], settings)
    prompt_ids = input_ids[0].tolist()
    if decodes_in_own_loop(lm, settings):
        started = time.perf_counter()
        new_ids, logprobs, stopped = _decode_one_stream(lm, input_ids, settings, on_token)
        seconds = time.perf_counter() - started
        outputs = [(new_ids, logprobs, stopped)]
    else:
        outputs, seconds = _generate_with_model(lm, input_ids, encoded["attention_mask"].to(lm.device), settings,
                                                on_token)
    continuations = [continuation(lm, prompt_ids, new_ids, logprobs, stopped) for new_ids, logprobs, stopped in outputs]
    produced = max(len(new_ids) for new_ids, _, _ in outputs)
    return model_generation(lm, GPT_METHOD, continuations, produced, seconds)


def _eos_ids(lm: LoadedModel) -> set[int]:
    """The tokens that end a sequence for `generate`: the generation config's, as `generate` reads them."""
    eos = lm.model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def _generate_with_model(lm, input_ids, attention_mask, settings, on_token):
    """Beam search and several sequences: `model.generate`, then one teacher-forced pass per sequence for scores."""
    import torch

    tok = lm.tokenizer
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
        output = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    seconds = time.perf_counter() - started
    prompt_len = input_ids.shape[1]
    results = []
    for row in output:
        new_ids = row[prompt_len:].tolist()
        # Generation pads finished sequences; keep everything up to and including the first EOS.
        stopped = eos is not None and eos in new_ids
        if stopped:
            new_ids = new_ids[: new_ids.index(eos) + 1]
        results.append((new_ids, score_continuation(lm, input_ids[0].tolist(), new_ids), stopped))
    return results, seconds


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


# Generation-config fields that don't change which token is picked, or that gbcli always sets itself.
_NEUTRAL_GENERATION_FIELDS = {
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache", "output_attentions",
    "output_hidden_states", "_from_model_config", "transformers_version", "max_length", "max_new_tokens",
    "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams", "num_return_sequences",
}


def decodes_in_own_loop(lm: LoadedModel, settings: DecodingSettings) -> bool:
    """One stream, and nothing in the model's generation config that our loop would not apply as `generate` does."""
    if settings.mode == "beam" or settings.num_return_sequences != 1 or lm.model.config.is_encoder_decoder:
        return False
    extra = set(lm.model.generation_config.to_diff_dict()) - _NEUTRAL_GENERATION_FIELDS
    return not extra


def _decode_one_stream(lm: LoadedModel, input_ids, settings: DecodingSettings, on_token: TokenCallback | None):
    """Greedy or sampled decoding of one sequence, reading each chosen token's raw log-probability on the way.

    Token choice is `generate`'s, step for step: float32 logits of the last position, the same logits processors
    (repetition penalty, then temperature, top-k, top-p), then argmax, or softmax and `torch.multinomial` on the
    global generator seeded with `torch.manual_seed`, so that a seed gives `generate`'s sample.
    """
    import torch

    processors = settings.logits_processors()
    eos = _eos_ids(lm)
    tok = lm.tokenizer
    prompt_len = input_ids.shape[1]
    # Every id so far, for the repetition penalty; pre-allocated, as the cache is.
    sequence = torch.empty((1, prompt_len + settings.max_new_tokens), dtype=input_ids.dtype, device=input_ids.device)
    sequence[:, :prompt_len] = input_ids
    new_ids: list[int] = []
    logprobs: list[float] = []
    stopped = False
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    threads = torch.get_num_threads()
    chooser = StepThreads(threads)
    try:
        with torch.inference_mode():
            decoder = _decoder_for(lm, settings.max_new_tokens)
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
                logprobs.append(float(torch.log_softmax(logits, dim=-1)[0, token]))
                sequence[:, length] = token
                if on_token is not None:
                    on_token(lm.family, tok.decode(new_ids, skip_special_tokens=True))
                if token in eos:
                    stopped = True
                    break
                if step + 1 < settings.max_new_tokens:
                    count = chooser.next()
                    if count != torch.get_num_threads():
                        torch.set_num_threads(count)
                    started = time.perf_counter()
                    logits = decoder.step(choice, length)
                    chooser.record(count, time.perf_counter() - started)
    finally:
        if torch.get_num_threads() != threads:  # the caller's setting back, Ctrl-C included
            torch.set_num_threads(threads)
    return new_ids, logprobs, stopped


# Copying GPT-2-small's output embedding into the faster layout takes ~100 ms, what ~30 tokens then save.
RELAYOUT_MIN_TOKENS = 32


def _decoder_for(lm: LoadedModel, new_tokens: int = RELAYOUT_MIN_TOKENS):
    """GPT-2-family models get the written-out decoding step; any other causal LM runs its own forward."""
    if not _Gpt2Decoder.fits(lm.model):
        return _ModelDecoder(lm.model)
    # One per loaded model, as it may hold a re-laid-out copy of the output embedding (see _Gpt2Decoder).
    decoder = lm.extras.get("gpt2_decoder")
    if decoder is None:
        decoder = lm.extras["gpt2_decoder"] = _Gpt2Decoder(lm.model)
    if new_tokens >= RELAYOUT_MIN_TOKENS:
        decoder.relayout_head()
    return decoder


class _ModelDecoder:
    """Any causal LM: its own forward with its own cache, called with the inputs `generate` gives it.

    Those inputs come from the model's own `prepare_inputs_for_generation` and `_update_model_kwargs_for_generation`,
    as in `generate`, because models differ in what a cached step takes: most want the attention mask over every
    position so far, Mamba multiplies its hidden states by the mask and is given none after the prompt (a
    full-length mask there changed its greedy tokens from the third one on), and RWKV carries a `state` instead
    of a cache.
    """

    def __init__(self, model) -> None:
        self.model = model
        parameters = inspect.signature(model.forward).parameters
        self.initial_kwargs: dict[str, Any] = {"use_cache": True}
        if "logits_to_keep" in parameters:
            # Only the last position's logits are needed: skip the vocabulary projection everywhere else.
            self.initial_kwargs["logits_to_keep"] = 1
        self.kwargs: dict[str, Any] = {}

    def start(self, input_ids, capacity: int):
        import torch

        length = input_ids.shape[1]
        self.ids = torch.empty((1, capacity), dtype=input_ids.dtype, device=input_ids.device)
        self.ids[:, :length] = input_ids
        self.kwargs = {**self.initial_kwargs, "attention_mask": torch.ones_like(input_ids)}
        inputs = self.model.prepare_inputs_for_generation(self.ids[:, :length], is_first_iteration=True,
                                                          **self.kwargs)
        return self._keep(self.model(**inputs, return_dict=True))

    def step(self, token, position: int):
        """Logits for the token after `token`, which sits at `position`."""
        self.ids[:, position] = token.view(-1)
        inputs = self.model.prepare_inputs_for_generation(self.ids[:, : position + 1], next_sequence_length=1,
                                                          is_first_iteration=False, **self.kwargs)
        return self._keep(self.model(**inputs, return_dict=True))

    def _keep(self, out):
        import torch

        # The cache (or RWKV's state) and the grown attention mask, for the next step.
        self.kwargs = self.model._update_model_kwargs_for_generation(out, self.kwargs, is_encoder_decoder=False)
        return out.logits[:, -1].to(dtype=torch.float32, copy=True)


class _Gpt2Decoder:
    """GPT-2's decoding step written out (GPT2LMHeadModel: gpt2, distilgpt2, gpt2-medium, ...).

    `model(...)` spends a few milliseconds per token on machinery a one-token step doesn't need (mask building,
    cache objects, output classes); this step calls the same torch ops on the model's own weights in the same order,
    so the hidden state is the model's. Two things differ, both for speed:
    - the KV cache is pre-allocated for the whole generation instead of grown by concatenation;
    - in float32 on CPU (from RELAYOUT_MIN_TOKENS new tokens on) the output projection reads a [hidden, vocab] copy
      of the tied embedding: a matrix-vector product streams that layout ~1.6x faster here (28 vs 17.5 GB/s
      measured), and the projection reads 30% of GPT-2's weights per token. The logits then differ from `lm_head`'s
      in summation order only (~1e-6). The copy (vocab x hidden floats, 154 MB for GPT-2 small) stays with the
      loaded model for the rest of the process;
    - with T > 1 threads, each matrix-vector product runs as T products over column blocks of the same weights
      (`_ColumnBlocks`: strided views, no copy), one per thread. torch's CPU matrix-vector product (MKL's sgemv on
      this AMD machine) runs on one thread whatever the setting: 22 GB/s for the 340 MB of GPT-2-small's blocks,
      where two column blocks at once stream 34 GB/s, and the output projection goes from 5.2 to 3.1 ms. Each
      output is still one dot product over the same inputs; only the kernel's summation order may differ (~1e-6).
    """

    @staticmethod
    def fits(model) -> bool:
        config = model.config
        return (
            type(model).__name__ == "GPT2LMHeadModel"
            and not config.add_cross_attention
            and not config.reorder_and_upcast_attn
            and getattr(config, "_attn_implementation", None) == "sdpa"
            and model.lm_head.bias is None
        )

    def __init__(self, model) -> None:
        self.model = model
        body = model.transformer
        self.wte = body.wte.weight
        self.wpe = body.wpe.weight
        self.blocks = body.h
        self.ln_f = body.ln_f
        self.heads = model.config.n_head
        self.head_dim = model.config.n_embd // self.heads
        self.head = model.lm_head.weight
        self.head_t = None
        self.keys = self.values = None
        self.parts = 1  # column blocks per matrix-vector product: the thread count when start() runs
        self._blocks: dict[int, list[tuple[_ColumnBlocks, ...]]] = {}
        self._head_blocks: dict[int, _ColumnBlocks] = {}

    def relayout_head(self) -> None:
        """Keep a [hidden, vocab] copy of the output projection (float32 on CPU, where its speed was measured)."""
        import torch

        head = self.head
        if self.head_t is None and head.dtype == torch.float32 and head.device.type == "cpu":
            self.head_t = head.t().contiguous()

    def start(self, input_ids, capacity: int):
        import torch

        self.parts = torch.get_num_threads() if self.wte.device.type == "cpu" else 1
        # The prompt is one batched pass through the model itself; its cache moves into pre-allocated buffers.
        out = self.model.transformer(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=True)
        cache = _output_cache(out)
        shape = (len(self.blocks), 1, self.heads, capacity, self.head_dim)
        self.keys = torch.empty(shape, dtype=self.wte.dtype, device=input_ids.device)
        self.values = torch.empty_like(self.keys)
        length = input_ids.shape[1]
        for index in range(len(self.blocks)):
            keys, values = _layer_cache(cache, index)
            self.keys[index, :, :, :length] = keys
            self.values[index, :, :, :length] = values
        return self._logits(out.last_hidden_state[:, -1])

    def step(self, token, position: int):
        """Logits for the token after `token`, which sits at `position`."""
        import torch.nn.functional as F

        width = self.wte.shape[1]
        hidden = F.embedding(token, self.wte) + F.embedding(token.new_tensor([[position]]), self.wpe)
        hidden = hidden.view(1, width)
        blocks = self._column_blocks()
        for index, block in enumerate(self.blocks):
            attn, mlp = block.attn, block.mlp
            c_attn, c_proj, c_fc, mlp_proj = blocks[index]
            x = F.layer_norm(hidden, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
            qkv = c_attn(x)
            query, key, value = (part.view(1, 1, self.heads, self.head_dim).transpose(1, 2)
                                 for part in qkv.split(width, dim=1))
            self.keys[index, :, :, position : position + 1] = key
            self.values[index, :, :, position : position + 1] = value
            # One query against every cached key: nothing to its right exists yet, so no causal mask is needed.
            context = F.scaled_dot_product_attention(
                query, self.keys[index, :, :, : position + 1], self.values[index, :, :, : position + 1],
                attn_mask=None, dropout_p=0.0, scale=attn.scaling, is_causal=False,
            )
            context = context.transpose(1, 2).reshape(1, width)
            hidden = c_proj(context) + hidden
            x = F.layer_norm(hidden, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
            x = mlp.act(c_fc(x))
            hidden = hidden + mlp_proj(x)
        return self._logits(self.ln_f(hidden))

    def _column_blocks(self) -> list[tuple[_ColumnBlocks, ...]]:
        """Each block's four Conv1D products, split into `self.parts` column blocks (built once per count)."""
        blocks = self._blocks.get(self.parts)
        if blocks is None:
            blocks = self._blocks[self.parts] = [
                tuple(_ColumnBlocks(conv.weight, conv.bias, self.parts)
                      for conv in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj))
                for block in self.blocks
            ]
        return blocks

    def _logits(self, hidden):
        import torch
        import torch.nn.functional as F

        hidden = hidden.reshape(1, -1)
        if self.head_t is not None:
            head = self._head_blocks.get(self.parts)
            if head is None:
                head = self._head_blocks[self.parts] = _ColumnBlocks(self.head_t, None, self.parts)
            return head(hidden)
        return F.linear(hidden, self.head).to(torch.float32)


class _ColumnBlocks:
    """`bias + x @ weight` for one row x, computed as `parts` products over column blocks of `weight`, in parallel.

    The blocks are strided views of the weight, so nothing is copied; `torch.bmm` runs one block per thread. When
    the columns do not divide evenly (GPT-2's 50,257-token vocabulary), neighbouring blocks overlap by a few columns,
    computed twice and kept once. With one part it is the plain `torch.addmm` the model itself runs.
    """

    def __init__(self, weight, bias, parts: int) -> None:
        rows, columns = weight.shape
        self.weight, self.bias, self.columns = weight, bias, columns
        self.parts = parts if parts > 1 and columns >= 2 * parts and weight.stride(1) == 1 else 1
        if self.parts == 1:
            return
        # Blocks of `width` columns starting every `step` columns, the last one ending exactly at the last column.
        width = -(-columns // self.parts)
        while (columns - width) % (self.parts - 1):
            width += 1
        self.step = (columns - width) // (self.parts - 1)
        self.views = weight.as_strided((self.parts, rows, width), (self.step, weight.stride(0), 1))
        self.overlap = self.step < width
        self.bias_blocks = bias.view(self.parts, 1, width) if bias is not None and not self.overlap else None

    def __call__(self, x):
        import torch

        if self.parts == 1:
            return torch.mm(x, self.weight) if self.bias is None else torch.addmm(self.bias, x, self.weight)
        rows = x.expand(self.parts, 1, x.shape[1])
        if self.bias_blocks is not None:
            return torch.baddbmm(self.bias_blocks, rows, self.views).view(1, self.columns)
        blocks = torch.bmm(rows, self.views)
        if self.overlap:
            out = torch.cat([blocks[:-1, 0, : self.step].reshape(-1), blocks[-1, 0]]).view(1, self.columns)
        else:
            out = blocks.view(1, self.columns)
        return out if self.bias is None else out + self.bias


def _output_cache(out):
    """The cache a forward pass returned (`cache` in recent transformers 5.x, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _layer_cache(cache, index: int):
    """(keys, values) of one layer from a transformers cache object, across the 5.x cache layouts."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[index].keys, layers[index].values
    return cache[index]  # pragma: no cover - older cache classes


# --------------------------------------------------------------------------------------------------------------
# BERT: iterative mask filling
# --------------------------------------------------------------------------------------------------------------


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
    with _threads_for_steps():
        if settings.mode == "beam":
            beams = _beam_fill(lm, body, closing, settings, processors, banned)
        else:
            beams = []
            for _ in range(settings.num_return_sequences):
                beams.append(_sample_fill(lm, body, closing, settings, processors, banned, generator, on_token))
    seconds = time.perf_counter() - started
    continuations = [continuation(lm, body, new_ids, logprobs, text=_continuation_text(lm, body, new_ids))
                     for new_ids, logprobs in beams]
    return model_generation(lm, BERT_METHOD, continuations, settings.max_new_tokens, seconds)


def _continuation_text(lm: LoadedModel, body: list[int], new_ids: list[int]) -> str:
    """The new text as it reads after the prompt: WordPiece joins `##` pieces to the word before them."""
    tok = lm.tokenizer
    head = tok.decode(body, skip_special_tokens=True)
    full = tok.decode(body + new_ids, skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tok.decode(new_ids, skip_special_tokens=True)


def masked_lm_parts(model) -> tuple[Any, Any] | None:
    """(encoder, prediction head) of a masked LM whose head is a plain function of one position's hidden state.

    The vocabulary projection is the largest matrix of a BERT-base forward pass on a short sentence; applying the
    head at the mask position alone skips it everywhere else. None for architectures not listed here: they run whole.
    """
    name = type(model).__name__
    if name in {"BertForMaskedLM"}:
        return model.bert, model.cls
    if name in {"RobertaForMaskedLM", "XLMRobertaForMaskedLM", "CamembertForMaskedLM"}:
        return model.roberta, model.lm_head
    return None


def _mask_logits(lm: LoadedModel, bodies: list[list[int]], closing: list[int]):
    """Logits at the appended mask for each body (all the same length), in one batched forward pass."""
    import torch

    mask = lm.tokenizer.mask_token_id
    position = len(bodies[0])
    ids = torch.tensor([b + [mask] + closing for b in bodies], device=lm.device)
    with torch.inference_mode():
        parts = masked_lm_parts(lm.model)
        if parts is None:
            logits = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, position]
        else:
            encoder, head = parts
            hidden = encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            logits = head(hidden[:, position : position + 1])[:, 0]
    return logits.float()


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
