"""What a checkpoint is, and whether its parts belong together: checks that refuse, by name, a model whose numbers
would not be its own.

- `classify_config`: causal, masked, seq2seq or a bare encoder, from the architecture it was saved as;
  `refuse_unsupported_architecture`: a "causal" LM that does not read left to right (XLNet, BERT without is_decoder).
- `check_layer_count`: a config.json asking for more layers than the weights hold (before anything is built);
  `check_shapes`: tensors whose shapes differ from the config's; `check_finite_weights`: a NaN or an infinity.
- `check_tokenizer_matches`: a tokenizer that does not belong to the input embeddings.

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from gbcli.errors import GbcliError


def classify_config(config: Any) -> str:
    """causal, masked, seq2seq or encoder: what a checkpoint is, from the architecture it was saved as."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    seq2seq = set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values())
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    masked = set(MODEL_FOR_MASKED_LM_MAPPING_NAMES.values())
    for arch in getattr(config, "architectures", None) or []:
        # Order matters: BART's conditional-generation class is also listed as a masked LM.
        if arch in seq2seq:
            return "seq2seq"
        if arch in masked:
            return "masked"
        if arch in causal:
            return "causal"
        if arch.endswith(("Model", "Encoder")) and "For" not in arch:
            return "encoder"
    # No architecture recorded: fall back on the model type.
    model_type = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False) or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return "seq2seq"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "masked"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    return "encoder"


# Checkpoints transformers lists among its causal LMs that do not predict each token from the ones to its left:
# gbcli's left-to-right numbers (generate, score, fill-mask) would not be the model's. Architecture → why.
NOT_LEFT_TO_RIGHT: dict[str, str] = {
    "XLNetLMHeadModel": "XLNet is a permutation language model: it predicts tokens in sampled orders through "
    "two-stream attention over memory",
}


# Encoders whose causal-LM head (BertLMHeadModel, RobertaForCausalLM ...) masks the right context only when the
# config sets is_decoder; without it the "causal" model reads both sides.
DECODER_ONLY_IF_CONFIGURED = frozenset(
    {
        "bert",
        "big_bird",
        "camembert",
        "data2vec-text",
        "electra",
        "ernie",
        "megatron-bert",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "roc_bert",
        "roformer",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
    }
)


def refuse_unsupported_architecture(config: Any, kind: str, spec: str, flag: str) -> None:
    """Refuse, by name, an architecture whose numbers gbcli cannot give as the model's own."""
    arch = architecture_name(config)
    reason = NOT_LEFT_TO_RIGHT.get(arch)
    decoder_only_if_configured = kind == "causal" and config.model_type in DECODER_ONLY_IF_CONFIGURED
    if reason is None and decoder_only_if_configured and not getattr(config, "is_decoder", False):
        reason = f"{arch} attends to both sides unless its config sets is_decoder, and this one does not"
    if reason is not None:
        raise GbcliError(
            f"'{spec}' for {flag} is {arch}, not a left-to-right causal LM: {reason}.",
            "Use a left-to-right causal LM such as gpt2, or a masked LM with --bert.",
            exit_code=2,
        )


def check_shapes(spec: str, flag: str, mismatched: Any) -> None:
    """Refuse weights whose shapes differ from what config.json builds, naming the tensor and both shapes."""
    if not mismatched:
        return
    name, stored, expected = sorted(mismatched, key=lambda item: item[0])[0]
    more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
    raise GbcliError(
        f"The weights of '{spec}' for {flag} do not fit its config.json: {name} is {list(stored)} in the "
        f"checkpoint but {list(expected)} in the model the config describes{more}.",
        "Use the config.json that was saved with these weights.",
    )


def checkpoint_tensor_names(folder: Path) -> list[str] | None:
    """The tensor names of a local safetensors checkpoint, from its header or index alone (no weight is read)."""
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():
            return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
        single = folder / "model.safetensors"
        if not single.is_file():
            return None
        with single.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:  # not a real header: the loader will call the file corrupt
                return None
            return [k for k in json.loads(handle.read(length)) if k != "__metadata__"]
    except (OSError, ValueError, struct.error):
        return None  # unreadable or corrupt: the loader explains it


_LAYER_INDEX = re.compile(r"^(.*?\.(?:h|layer|layers|block|blocks))\.(\d+)\.")


def check_layer_count(spec: str, flag: str, source: str, config: Any) -> None:
    """Refuse a config.json that asks for more layers than the checkpoint holds, before anything is built.

    A config with `n_layer: 10000` next to GPT-2's 12 layers of weights would first build 10,000 layers (minutes,
    gigabytes) only to find them missing; counting the layer indices in the safetensors header costs nothing.
    """
    folder = Path(source)
    names = checkpoint_tensor_names(folder) if folder.is_dir() else None
    if not names:
        return
    stacks: dict[str, int] = {}
    for name in names:
        match = _LAYER_INDEX.match(name)
        if match:
            stacks[match.group(1)] = max(stacks.get(match.group(1), 0), int(match.group(2)) + 1)
    if not stacks:
        return
    wanted = (getattr(config, "encoder_layers", 0) or 0) + (getattr(config, "decoder_layers", 0) or 0)
    wanted = wanted or getattr(config, "num_hidden_layers", 0) or 0
    held = sum(stacks.values())
    if isinstance(wanted, int) and wanted > held:
        raise GbcliError(
            f"The config.json of '{spec}' for {flag} asks for {wanted} layers, but its weights hold {held}: the "
            "rest would be random, and building them first could exhaust the memory.",
            "Use the config.json that was saved with these weights.",
        )


def check_finite_weights(spec: str, flag: str, model: Any) -> None:
    """Refuse a model with a NaN or an infinity in its weights: every number it computes would be meaningless.

    One float32 sum per tensor is a NaN or an infinity if any element is one: a single pass over the weights, far
    cheaper than reading them from disk. A sum that merely overflowed is told apart by the exact (slower) test.
    """
    import torch

    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
            continue
        bad = tensor[~torch.isfinite(tensor)]
        if bad.numel():
            kind = "NaN" if bool(bad.isnan().any()) else "infinite values"
            raise GbcliError(
                f"The weights of '{spec}' for {flag} hold {kind} ({bad.numel()} in {name}), so every number the "
                "model computes would be meaningless.",
                "The checkpoint is damaged: download or save it again.",
            )


# Files that hold a tokenizer's vocabulary, one of which every saved tokenizer with a vocabulary has.
TOKENIZER_VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "*.tiktoken",
    "vocab.*",
    "spiece.*",
    "sentencepiece*",
)


def tokenizer_covers_embeddings(tokens: int, rows: int) -> bool:
    """Whether a tokenizer of `tokens` ids can belong to input embeddings of `rows` rows.

    More tokens than rows never: an id past the last row has no embedding. Fewer is normal by a little: embeddings
    are padded to a multiple of 64 or 128 for speed (OPT: 50,265 tokens, 50,272 rows; T5: 32,100 and 32,128), or
    keep a few percent of rows in reserve (Phi-2: 50,295 and 51,200, 1.8 %; Qwen2: 0.2 %). Far fewer means the
    tokenizer is not the model's: transformers 5 builds an empty default tokenizer (BERT's has 5 tokens) for a
    folder without tokenizer files, and every word would become [UNK]. So fewer tokens pass when the unused rows
    are padding (rows a multiple of 64, fewer than 128 unused, and the tokenizer holds most of them) or at most 5 %.
    """
    if tokens > rows:
        return False
    unused = rows - tokens
    padding = rows % 64 == 0 and unused < 128 and tokens * 2 > rows
    return padding or unused <= rows * 0.05


def check_tokenizer_files(spec: str, flag: str, source: str, replacement: str = "an empty default tokenizer") -> None:
    """Refuse a local model folder that holds no tokenizer vocabulary: transformers 5 would load a default tokenizer
    that knows almost no token instead of failing."""
    folder = Path(source)
    if folder.is_dir() and not any(any(folder.glob(p)) for p in TOKENIZER_VOCABULARY_FILES):
        raise GbcliError(
            f"'{spec}' for {flag} has no tokenizer files (tokenizer.json, vocab.txt, ...): transformers would put "
            f"{replacement}, and every number would be about unknown tokens.",
            "Save the tokenizer into the model folder with tokenizer.save_pretrained().",
        )


def check_tokenizer_matches(spec: str, flag: str, source: str, tokens: int, rows: int) -> None:
    """Refuse a tokenizer that does not belong to the model's embeddings (see tokenizer_covers_embeddings)."""
    if tokenizer_covers_embeddings(tokens, rows):
        return
    if tokens < rows:
        check_tokenizer_files(
            spec,
            flag,
            source,
            f"an empty tokenizer of {tokens} token{'s' if tokens != 1 else ''} in place of the model's {rows}",
        )
    if tokens > rows:
        relation = f"{tokens} tokens but the model's embeddings hold only {rows}"
    else:
        relation = f"only {tokens} tokens but the model's embeddings hold {rows}"
    raise GbcliError(
        f"The tokenizer of '{spec}' for {flag} has {relation}: they do not belong together.",
        "Save the model and the tokenizer it was trained with into one folder.",
    )


def architecture_name(config: Any) -> str:
    archs = getattr(config, "architectures", None) or [getattr(config, "model_type", "unknown")]
    return archs[0]
