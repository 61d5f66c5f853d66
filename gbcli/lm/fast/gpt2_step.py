"""GPT-2's decoding step written out, for speed: the one fast path gbcli's decoding loop has for one architecture.

`gpt2_decoder(lm, new_tokens)` is all the rest of gbcli sees: a decoder with `start(input_ids, capacity)` and
`step(token, position)`, as gbcli.lm.fast.decoding_loop's generic one has, or None for a model the step was not
written for, or when this transformers' GPT-2 lacks what the step reads (GPT2_DECODER's probe: 5.0's attention has
no `scaling`); the model's own forward then runs each step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2Config

from gbcli.loading.capability import FastPath, installed_version, missing
from gbcli.loading.models import LoadedModel

# Copying GPT-2-small's output embedding into the [hidden, vocab] layout costs once what a few hundred tokens
# save on it (each token reads the copy a little faster than row blocks of the tied embedding itself), so only a
# long generation makes it (benchmarks/run.py, rows `generate` and `fresh-generate`; benchmarks/HISTORY.md).
RELAYOUT_MIN_TOKENS = 256


def _probe() -> str | None:
    """Why the written-out step cannot run on this transformers (None: it can): the attention's `scaling`, the
    config's attention implementation and the cache's per-layer keys and values, which the step reads."""
    # late: probe (a moved name is this probe's answer)
    from transformers.cache_utils import DynamicCache
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention  # late: probe

    config = GPT2Config(n_embd=4, n_head=1, n_positions=2, vocab_size=2)
    with torch.device("meta"):
        attention = GPT2Attention(config, layer_idx=0)
    reason = missing(attention, "scaling") or missing(config, "_attn_implementation")
    if reason:
        return reason
    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), 0)
    if not hasattr(getattr(cache, "layers", [None])[0], "keys"):
        return f"transformers {installed_version('transformers')}: DynamicCache keeps no layers of keys and values"
    return None


GPT2_DECODER = FastPath("GPT-2 decoding step", "the model's own forward", _probe)


def runs_gpt2_step(lm: LoadedModel) -> bool:
    """Whether this model decodes through the written-out step on this transformers."""
    return type(lm.model).__name__ == "GPT2LMHeadModel" and GPT2_DECODER.on and _Gpt2Decoder.fits(lm.model)


def gpt2_decoder(lm: LoadedModel, new_tokens: int) -> _Gpt2Decoder | None:
    """The written-out decoder for a GPT2LMHeadModel (gpt2, distilgpt2, gpt2-medium, ...), None for other models.

    One per loaded model, as it may hold a re-laid-out copy of the output embedding, made (in `start`, on the
    thread count the prompt runs on) once a generation asks for RELAYOUT_MIN_TOKENS new tokens or more (see
    _Gpt2Decoder). The caller's thread setting now is the number of blocks every product is split into.
    """
    if not runs_gpt2_step(lm):
        return None
    decoder = lm.extras.get("gpt2_decoder")
    if decoder is None:
        decoder = lm.extras["gpt2_decoder"] = _Gpt2Decoder(lm.model)
    decoder.parts = torch.get_num_threads() if decoder.wte.device.type == "cpu" else 1
    decoder.wants_relayout = new_tokens >= RELAYOUT_MIN_TOKENS
    return decoder


class _Gpt2Decoder:
    """GPT-2's decoding step written out (GPT2LMHeadModel: gpt2, distilgpt2, gpt2-medium, ...).

    `model(...)` spends a few milliseconds per token on machinery a one-token step doesn't need (mask building,
    cache objects, output classes); this step calls the same torch ops on the model's own weights in the same order,
    so the hidden state is the model's. Three things differ, all for speed:
    - the KV cache is pre-allocated for the whole generation instead of grown by concatenation;
    - in float32 on CPU (from RELAYOUT_MIN_TOKENS new tokens on) the output projection reads a [hidden, vocab] copy
      of the tied embedding: a matrix-vector product streams that layout faster (row `generate`), and the
      projection reads 30% of GPT-2's weights per token. The logits then differ from `lm_head`'s
      in summation order only (~1e-6). The copy (vocab x hidden floats, 154 MB for GPT-2 small) stays with the
      loaded model for the rest of the process;
    - with T > 1 threads, each matrix-vector product runs as T products over blocks of the same weights
      (`_BlockedProduct` for the blocks' products: contiguous row ranges whose partial sums are added; `_RowBlocks`
      for the output projection without the copy), one per thread: no copy. torch's CPU matrix-vector product
      (MKL's sgemv on the AMD machines measured) runs on one thread whatever the setting, where two row ranges at
      once stream more of the memory's bandwidth (row `generate`). Only the summation order may differ (~1e-6).
      A step on one thread runs the model's own `addmm`, whatever the caller's setting.
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
        # Blocks per matrix-vector product: the caller's thread count when gpt2_decoder() hands this out;
        # a step that runs on fewer threads (gbcli.lm.fast.threads) splits into no more blocks than it has threads.
        self.parts = 1
        self.wants_relayout = False
        self._blocks: dict[int, list[tuple[_BlockedProduct, ...]]] = {}
        self._head_blocks: dict[tuple[bool, int], _BlockedProduct | _RowBlocks] = {}

    def relayout_head(self) -> None:
        """Keep a [hidden, vocab] copy of the output projection (float32 on CPU, where its speed was measured)."""
        head = self.head
        if self.head_t is None and head.dtype == torch.float32 and head.device.type == "cpu":
            self.head_t = head.t().contiguous()

    def start(self, input_ids, capacity: int):
        if self.wants_relayout:
            self.relayout_head()
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
        return self._logits(out.last_hidden_state[:, -1], self._running_parts())

    def step(self, token, position: int):
        """Logits for the token after `token`, which sits at `position`."""
        width = self.wte.shape[1]
        hidden = F.embedding(token, self.wte) + F.embedding(token.new_tensor([[position]]), self.wpe)
        hidden = hidden.view(1, width)
        parts = self._running_parts()
        blocks = self._block_products(parts)
        for index, block in enumerate(self.blocks):
            attn, mlp = block.attn, block.mlp
            c_attn, c_proj, c_fc, mlp_proj = blocks[index]
            x = F.layer_norm(hidden, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
            qkv = c_attn(x)
            query, key, value = (
                part.view(1, 1, self.heads, self.head_dim).transpose(1, 2) for part in qkv.split(width, dim=1)
            )
            self.keys[index, :, :, position : position + 1] = key
            self.values[index, :, :, position : position + 1] = value
            # One query against every cached key: nothing to its right exists yet, so no causal mask is needed.
            context = F.scaled_dot_product_attention(
                query,
                self.keys[index, :, :, : position + 1],
                self.values[index, :, :, : position + 1],
                attn_mask=None,
                dropout_p=0.0,
                scale=attn.scaling,
                is_causal=False,
            )
            context = context.transpose(1, 2).reshape(1, width)
            hidden = c_proj(context) + hidden
            x = F.layer_norm(hidden, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
            x = mlp.act(c_fc(x))
            hidden = hidden + mlp_proj(x)
        return self._logits(self.ln_f(hidden), parts)

    def _running_parts(self) -> int:
        """Blocks for the product about to run: the caller's split, but no more blocks than threads run
        now. One thread given two blocks runs them one after the other through a batched product, slower than the
        model's own `addmm` (0.71 against 1.0 times OMP_NUM_THREADS=1's tokens/s with another process spinning
        on one of two cores), and the model's own op is what a step on one thread should run anyway."""
        return min(self.parts, torch.get_num_threads())

    def _block_products(self, parts: int | None = None) -> list[tuple[_BlockedProduct, ...]]:
        """Each block's four Conv1D products, split into `parts` (default: `self.parts`) blocks (built once per
        count)."""
        parts = self.parts if parts is None else parts
        blocks = self._blocks.get(parts)
        if blocks is None:
            blocks = self._blocks[parts] = [
                tuple(
                    _BlockedProduct(conv.weight, conv.bias, parts)
                    for conv in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
                )
                for block in self.blocks
            ]
        return blocks

    def _logits(self, hidden, parts: int):
        hidden = hidden.reshape(1, -1)
        copied = self.head_t is not None
        head = self._head_blocks.get((copied, parts))
        if head is None:
            head = self._head_blocks[(copied, parts)] = (
                _BlockedProduct(self.head_t, None, parts) if copied else _RowBlocks(self.head, parts)
            )
        return head(hidden).to(torch.float32)


class _BlockedProduct:
    """`bias + x @ weight` for one row x, computed as `parts` products over blocks of `weight`, in parallel.

    In float32, when the rows divide evenly (GPT-2's 768 and 3072), the blocks are row ranges: each thread streams
    one contiguous part of the matrix, and the `parts` partial sums are added: contiguous ranges stream faster than
    column blocks (benchmarks/run.py, row `generate`). Otherwise they are column blocks,
    strided views, overlapping by a few columns where the columns do not divide evenly either (GPT-2's 50,257-token
    vocabulary). Nothing is copied; `torch.bmm` runs one block per thread. Either way only the summation order
    differs from one product (~1e-6). With one part it is the plain `torch.addmm` the model itself runs.
    """

    def __init__(self, weight, bias, parts: int) -> None:
        rows, columns = weight.shape
        self.weight, self.bias, self.columns = weight, bias, columns
        self.parts = parts if parts > 1 and columns >= 2 * parts and weight.stride(1) == 1 else 1
        self.row_ranges = None
        if self.parts == 1:
            return
        # In float32 only: in half precision each partial sum would be rounded before they are added, two
        # roundings where one product has one (bfloat16: errors twice addmm's).
        if rows % self.parts == 0 and weight.is_contiguous() and weight.dtype == torch.float32:
            self.row_ranges = weight.view(self.parts, rows // self.parts, columns)
            return
        width, self.step = _overlapping_ranges(columns, self.parts)
        self.views = weight.as_strided((self.parts, rows, width), (self.step, weight.stride(0), 1))
        self.overlap = self.step < width
        self.bias_blocks = bias.view(self.parts, 1, width) if bias is not None and not self.overlap else None

    def __call__(self, x):
        if self.parts == 1:
            return torch.mm(x, self.weight) if self.bias is None else torch.addmm(self.bias, x, self.weight)
        if self.row_ranges is not None:
            partial = torch.bmm(x.reshape(self.parts, 1, -1), self.row_ranges).sum(0)
            return partial if self.bias is None else partial + self.bias
        rows = x.expand(self.parts, 1, x.shape[1])
        if self.bias_blocks is not None:
            return torch.baddbmm(self.bias_blocks, rows, self.views).view(1, self.columns)
        blocks = torch.bmm(rows, self.views)
        out = _joined(blocks[:, 0], self.step) if self.overlap else blocks.view(1, self.columns)
        return out if self.bias is None else out + self.bias


class _RowBlocks:
    """`x @ weight.T` for one row x, where weight is [vocab, hidden] as the model keeps it (the tied embedding):
    `parts` products over ranges of its rows, in parallel, each range a contiguous part of the matrix. Each logit is
    the same dot product as in `F.linear` (bit for bit for GPT-2's vocabulary here), and no copy of the matrix is
    made. Ranges that do not divide the vocabulary evenly overlap by a few rows, computed twice and kept once."""

    def __init__(self, weight, parts: int) -> None:
        rows, width = weight.shape
        self.weight, self.rows = weight, rows
        self.parts = parts if parts > 1 and rows >= 2 * parts and weight.is_contiguous() else 1
        if self.parts == 1:
            return
        size, self.step = _overlapping_ranges(rows, self.parts)
        self.views = weight.as_strided((self.parts, size, width), (self.step * width, width, 1))

    def __call__(self, x):
        if self.parts == 1:
            return F.linear(x, self.weight)
        blocks = torch.bmm(x.expand(self.parts, 1, x.shape[1]), self.views.transpose(1, 2))
        return _joined(blocks[:, 0], self.step)


def _overlapping_ranges(length: int, parts: int) -> tuple[int, int]:
    """(size, step): `parts` ranges of `size` along `length`, one starting every `step`, the last ending exactly at
    the end; when `parts` does not divide `length`, neighbours overlap by a few (computed twice, kept once)."""
    size = -(-length // parts)
    while (length - size) % (parts - 1):
        size += 1
    return size, (length - size) // (parts - 1)


def _joined(blocks, step: int):
    """One row [1, length] from the [parts, size] results of `_overlapping_ranges`' ranges: each but the last gives
    its first `step` values, the last all of its own."""
    return torch.cat([blocks[:-1, :step].reshape(-1), blocks[-1]]).view(1, -1)


def _output_cache(out):
    """The cache a forward pass returned (`cache` in recent transformers 5.x, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _layer_cache(cache, index: int):
    """(keys, values) of one layer from a transformers cache object (its layout checked by GPT2_DECODER's probe)."""
    return cache.layers[index].keys, cache.layers[index].values
